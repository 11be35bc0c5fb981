"""The wire schema shared by the engine daemon and its clients: one versioned set of pydantic models.

Pixel data never travel inside these models: an `ImageDescriptor` names a raw binary frame by `buffer_index`.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

import msgpack
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Bump on any change that an older peer could misread; peers refuse every other version.
# 2: large frames signed through their chunked digest; crop_to_bbox.
# 3: harmonize/edit take retrain and finetune_iters (the plugins' Retrain and Refine).
# 4: model families: one train request (family, task, data, the family's options), one apply request (any
#    operation of any family, by name, with its parameters); models say their family and task; the ping
#    reply carries the engine's capabilities (families, tasks, operations), from which the plugins' menus
#    are built.
# 5: ApplyRequest.preview and ResultReply.preview (a training-free result first).
# 6: ResultReply.seeds (the seed that draws each image again: a set generator's kept seed).
PROTOCOL_VERSION = 6

# Ids end up in file paths on the daemon side, so no separators, no leading dot.
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_SIDE = 16384
MAX_BUFFERS = 256  # pixel buffers in one message: a reply's images (a 100-frame clip fits)


class MsgType(str, enum.Enum):
    # requests
    PING = "ping"
    LIST_MODELS = "list_models"
    INSPECT_MODEL = "inspect_model"
    RENAME_MODEL = "rename_model"
    DELETE_MODEL = "delete_model"
    TRAIN = "train"
    APPLY = "apply"
    JOB_STATUS = "job_status"
    CANCEL = "cancel"
    STATUS = "status"
    SHUTDOWN = "shutdown"
    # replies and events
    PONG = "pong"
    ACK = "ack"
    OK = "ok"
    RESULT = "result"
    ERROR = "error"
    PROGRESS = "progress"
    MODEL_INFO = "model_info"
    MODEL_LIST = "model_list"
    JOB_INFO = "job_info"
    DAEMON_STATUS = "daemon_status"


class ChannelOrder(str, enum.Enum):
    GRAY = "GRAY"
    GRAYA = "GRAYA"
    RGB = "RGB"
    BGR = "BGR"
    RGBA = "RGBA"  # GIMP
    BGRA = "BGRA"  # Krita

    @property
    def channels(self) -> int:
        return {"GRAY": 1, "GRAYA": 2}.get(self.value, len(self.value))


class BitDepth(str, enum.Enum):
    U8 = "u8"
    U16 = "u16"
    F32 = "f32"

    @property
    def itemsize(self) -> int:
        return {"u8": 1, "u16": 2, "f32": 4}[self.value]


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # daemon died mid-job; resumes from its checkpoint on restart


class ErrorCode(str, enum.Enum):
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    EXPIRED = "expired"
    UNSUPPORTED_VERSION = "unsupported_version"
    MALFORMED = "malformed"
    UNKNOWN_MSG_TYPE = "unknown_msg_type"
    FRAME_TOO_LARGE = "frame_too_large"
    INVALID_REQUEST = "invalid_request"
    BAD_IMAGE = "bad_image"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_JOB = "unknown_job"
    BUSY = "busy"
    CANCELLED = "cancelled"
    JOB_FAILED = "job_failed"
    SHUTTING_DOWN = "shutting_down"
    NOT_IMPLEMENTED = "not_implemented"
    INTERNAL = "internal"


class _Model(BaseModel):
    # Unknown fields are refused rather than ignored: a peer that sends them speaks another version.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Header(_Model):
    msg_id: Id
    msg_type: str  # a str, not MsgType, so an unknown type gets its own error instead of "malformed"
    protocol_version: int
    session: Annotated[str, StringConstraints(max_length=128)]
    date: AwareDatetime

    @classmethod
    def new(cls, msg_type: MsgType | str, session: str) -> Header:
        return cls(
            msg_id=uuid.uuid4().hex,
            msg_type=MsgType(msg_type).value,
            protocol_version=PROTOCOL_VERSION,
            session=session,
            date=datetime.now(timezone.utc),
        )


class BBox(_Model):
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)

    def fits(self, width: int, height: int) -> bool:
        return self.x + self.w <= width and self.y + self.h <= height


class ImageDescriptor(_Model):
    """A layer, mask or preview sent as raw frame `buffer_index` (rows top down, channels interleaved)."""

    width: int = Field(gt=0, le=MAX_SIDE)
    height: int = Field(gt=0, le=MAX_SIDE)
    channels: int = Field(ge=1, le=4)
    channel_order: ChannelOrder
    bit_depth: BitDepth = BitDepth.U8
    bbox: BBox | None = None  # the selection's bounding box, in pixels of this image
    buffer_index: int = Field(ge=0, lt=MAX_BUFFERS)

    @model_validator(mode="after")
    def _consistent(self) -> ImageDescriptor:
        if self.channels != self.channel_order.channels:
            raise ValueError(
                f"channel_order {self.channel_order.value} has {self.channel_order.channels} channels"
            )
        if self.bbox is not None and not self.bbox.fits(self.width, self.height):
            raise ValueError(f"bbox {self.bbox} lies outside the {self.width}x{self.height} image")
        return self

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * self.bit_depth.itemsize


# A family's training options or an operation's parameters: plain values, checked by the engine against
# the family's own options model and the operation's parameter specs (`engine capabilities` lists both).
Value = bool | int | float | str | None
Options = Annotated[dict[Annotated[str, StringConstraints(max_length=64)], Value], Field(max_length=64)]
FamilyName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
EnginePath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]  # on the engine's machine


class Content(_Model):
    msg_type: ClassVar[MsgType]


# ---- requests ----


class PingRequest(Content):
    msg_type = MsgType.PING


class ListModelsRequest(Content):
    msg_type = MsgType.LIST_MODELS
    family: FamilyName | None = None
    task: FamilyName | None = None


class InspectModelRequest(Content):
    msg_type = MsgType.INSPECT_MODEL
    model_id: Id


class RenameModelRequest(Content):
    msg_type = MsgType.RENAME_MODEL
    model_id: Id
    name: Name


class DeleteModelRequest(Content):
    msg_type = MsgType.DELETE_MODEL
    model_id: Id


class TrainRequest(Content):
    """Train a new model of `family` for `task` on one source of data: an attached `image`, the training
    image of a stored model (`stored_image`), or `folders` on the engine's machine (one for a task that
    learns from a set of images, two, domain A then B, for one that learns from unpaired folders).
    With `base_model` the stored model is fine-tuned on the attached image instead (a new model; family
    and task are the base model's). `options` are the family's training options."""

    msg_type = MsgType.TRAIN
    family: FamilyName = "consingan"
    task: FamilyName | None = None  # None: the family's first task
    name: Name | None = None
    image: ImageDescriptor | None = None
    stored_image: Id | None = None
    folders: Annotated[list[EnginePath], Field(max_length=2)] = Field(default_factory=list)
    base_model: Id | None = None
    options: Options = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> TrainRequest:
        sources = (self.image is not None) + (self.stored_image is not None) + bool(self.folders)
        if sources != 1:
            raise ValueError("give exactly one of image (attached), stored_image or folders")
        if self.base_model is not None and self.image is None:
            raise ValueError("base_model is fine-tuned on an attached image: give image")
        return self


class ApplyRequest(Content):
    """Run one operation (`engine capabilities` lists them) with a stored model, or with the model
    trained on `background` when none is stored for it yet (`train_if_missing`: the family's first task
    of the operation, trained with `train` options, found again by the same background and options)."""

    msg_type = MsgType.APPLY
    operation: FamilyName
    model_id: Id | None = None
    image: ImageDescriptor | None = None  # the picture an operation works on
    mask: ImageDescriptor | None = None  # GRAY, same size as image; nonzero where the work applies
    params: Options = Field(default_factory=dict)  # the operation's parameters; unset ones: its defaults
    train_if_missing: bool = False
    background: ImageDescriptor | None = None  # what a missing model is trained on (may reuse image's buffer)
    family: FamilyName | None = None  # of the model trained on background (None: the operation's only one)
    train: Options = Field(default_factory=dict)  # that family's training options
    # True: the result holds only the image's bbox (the selection's bounding box), which is all a plug-in
    # writes back; the pixels outside it would be the input's anyway. Saves sending the rest of the layer.
    crop_to_bbox: bool = False
    # True: train a new model on the background even when one is stored for it, with the next seed not yet
    # used for it, and reuse that model from then on (the way out of an unlucky training run).
    retrain: bool = False
    # Fine-tune the model on this image for this many iterations first (the paper's advice for the best fit,
    # 500; minutes on a CPU) into a new stored model, then apply that. None: apply the model as it is.
    finetune_iters: int | None = Field(default=None, ge=1, le=100_000)
    # True, for harmonize: when a model must be trained first, a training-free result (a ResultReply with
    # preview=True, engine/preview.py) comes within seconds, before the model's own result.
    preview: bool = False

    @model_validator(mode="after")
    def _check(self) -> ApplyRequest:
        if self.mask is not None:
            if self.image is None:
                raise ValueError("a mask needs the image it selects from")
            if self.mask.channel_order is not ChannelOrder.GRAY:
                raise ValueError("mask must be a GRAY image")
            if (self.mask.width, self.mask.height) != (self.image.width, self.image.height):
                mask, image = self.mask, self.image
                raise ValueError(f"mask is {mask.width}x{mask.height}, image {image.width}x{image.height}")
        if self.crop_to_bbox and (self.image is None or self.image.bbox is None):
            raise ValueError("crop_to_bbox needs a bbox on the image")
        if self.model_id is None and not (self.train_if_missing and self.background is not None):
            raise ValueError("give model_id, or train_if_missing=True with a background image")
        if self.retrain and self.model_id is not None:
            raise ValueError("retrain trains on the background: give no model_id with it")
        if self.finetune_iters is not None and self.image is None:
            raise ValueError("finetune_iters fine-tunes on the image: give image")
        return self


class JobStatusRequest(Content):
    """Ask about a job; with `subscribe`, its further progress and its result (or error) follow."""

    msg_type = MsgType.JOB_STATUS
    job_id: Id
    subscribe: bool = False


class CancelRequest(Content):
    msg_type = MsgType.CANCEL
    job_id: Id


class StatusRequest(Content):
    msg_type = MsgType.STATUS


class ShutdownRequest(Content):
    msg_type = MsgType.SHUTDOWN


# ---- replies and events ----


class ModelInfo(_Model):
    model_id: Id
    name: Name
    family: FamilyName
    task: FamilyName
    width: int | None = Field(default=None, gt=0)  # of what it was trained on, where that is one size
    height: int | None = Field(default=None, gt=0)
    n_stages: int | None = Field(default=None, ge=1)  # for pyramid models
    preset: Name | None = None
    created: AwareDatetime
    has_onnx: bool = False


class PongReply(Content):
    msg_type = MsgType.PONG
    protocol_version: int = PROTOCOL_VERSION
    engine_version: str = ""
    pid: int = 0
    # What the engine can do, as `engine capabilities --json` prints it: {"families": [...],
    # "operations": [...]}; the plugins build their menus from the operations.
    capabilities: dict[str, Any] = Field(default_factory=dict)


class AckReply(Content):
    """Long work was accepted as a job; progress events and then a result or error follow."""

    msg_type = MsgType.ACK
    job_id: Id
    position: int = Field(default=0, ge=0)  # jobs ahead of this one in the queue


class OkReply(Content):
    msg_type = MsgType.OK
    detail: str = ""


class ResultReply(Content):
    msg_type = MsgType.RESULT
    job_id: Id | None = None
    images: list[ImageDescriptor] = Field(default_factory=list)
    model: ModelInfo | None = None  # the model trained, fine-tuned or used (None: none was needed)
    path: str | None = None  # e.g. the exported .onnx file
    reused_model: bool = False  # True when a stored model matched and no training ran
    elapsed_s: float | None = None
    # A training-free preview sent while the job goes on (ApplyRequest.preview); the job's own result follows.
    preview: bool = False
    # The seed that draws each image again, for an operation that draws from seeds (a set generator's
    # `sample`: with best_of, the seed kept, which need not be the first); empty otherwise.
    seeds: list[int] = Field(default_factory=list)


class ErrorReply(Content):
    msg_type = MsgType.ERROR
    code: ErrorCode
    message: str  # short, and says what to do
    in_reply_to: str | None = None  # the request's msg_id, when it could be read
    job_id: Id | None = None


class ProgressEvent(Content):
    msg_type = MsgType.PROGRESS
    job_id: Id
    stage: int = Field(ge=0)
    n_stages: int = Field(ge=1)
    iteration: int = Field(ge=0)
    iters: int = Field(ge=1)
    losses: dict[str, float] = Field(default_factory=dict)
    eta_s: float | None = None
    preview: ImageDescriptor | None = None  # a small image in buffer `preview.buffer_index`


class ModelInfoReply(Content):
    msg_type = MsgType.MODEL_INFO
    model: ModelInfo


class ModelListReply(Content):
    msg_type = MsgType.MODEL_LIST
    models: list[ModelInfo] = Field(default_factory=list)


class JobInfo(Content):
    msg_type = MsgType.JOB_INFO
    job_id: Id
    state: JobState
    request_type: MsgType
    created: AwareDatetime
    progress: ProgressEvent | None = None
    error: ErrorReply | None = None
    model_id: Id | None = None


class DaemonStatus(Content):
    msg_type = MsgType.DAEMON_STATUS
    pid: int
    protocol_version: int = PROTOCOL_VERSION
    engine_version: str = ""
    device: str = ""
    home: str = ""
    uptime_s: float = 0.0
    jobs: list[JobInfo] = Field(default_factory=list)  # queued and running
    n_models: int = 0


CONTENT_TYPES: dict[MsgType, type[Content]] = {
    cls.msg_type: cls
    for cls in (
        PingRequest, ListModelsRequest, InspectModelRequest, RenameModelRequest, DeleteModelRequest,
        TrainRequest, ApplyRequest, JobStatusRequest, CancelRequest, StatusRequest, ShutdownRequest,
        PongReply, AckReply, OkReply, ResultReply, ErrorReply, ProgressEvent, ModelInfoReply,
        ModelListReply, JobInfo, DaemonStatus,
    )
}  # fmt: skip

# Requests the client may resend after a timeout: doing them twice does no harm.
IDEMPOTENT = frozenset(
    {MsgType.PING, MsgType.LIST_MODELS, MsgType.INSPECT_MODEL, MsgType.JOB_STATUS, MsgType.STATUS}
)


def pack(obj: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def unpack(data: bytes | memoryview) -> Any:
    """Raises msgpack/ValueError exceptions on garbage; `wire` turns them into a typed error."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def encode_content(content: Content) -> bytes:
    return pack(content.model_dump(mode="json"))


def content_type(msg_type: str) -> type[Content] | None:
    try:
        return CONTENT_TYPES[MsgType(msg_type)]
    except ValueError:
        return None


def decode_content(msg_type: str, data: bytes | memoryview) -> Content:
    """Raises KeyError for an unknown type and pydantic.ValidationError for a bad body."""
    cls = content_type(msg_type)
    if cls is None:
        raise KeyError(msg_type)
    return cls.model_validate(unpack(data))


def iter_images(content: BaseModel) -> list[ImageDescriptor]:
    """Every image descriptor in a message, nested ones included, so buffers can be checked in one place."""
    found: list[ImageDescriptor] = []

    def walk(value: Any) -> None:
        if isinstance(value, ImageDescriptor):
            found.append(value)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(content)
    return found
