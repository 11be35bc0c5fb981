"""Operations: what a user does with a trained model (harmonize a selection, sample, re-style, ...).

Each family declares its operations as `OperationSpec`s; `table()` gathers them into the one table from
which the CLI builds its commands, `engine batch` picks the whole-image operation of a model's family,
the daemon dispatches apply requests and the editor plugins build their menus (`engine capabilities`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import BadInputError, IncompatibleModelError
from engine.family import MAX_SEED

if TYPE_CHECKING:
    from engine.family import Loaded
    from engine.imageio import Picture


class Returns(str, enum.Enum):
    """What an operation gives back, which decides how a plugin shows it."""

    LAYER = "layer"  # the input picture, changed (in the selection): written over it, one undo
    NEW_LAYER = "new_layer"  # new pictures (samples): a new layer each
    FRAMES = "frames"  # an animation: frames
    FOLDER = "folder"  # files written into a folder
    FILE = "file"  # one file the operation writes itself at --out (an exported graph)


class ParamType(str, enum.Enum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"


@dataclass(frozen=True)
class Param:
    """One parameter of an operation: a CLI option, a field of an apply request, a plugin's field."""

    name: str  # snake_case; the CLI option is --name-with-dashes
    type: ParamType
    help: str
    default: Any = None  # None: the operation decides (and says so in `help`)
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """The value, converted and checked; BadInputError naming the option otherwise."""
        if value is None:
            return self.default
        try:
            if self.type is ParamType.INT:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = int(value)
            elif self.type is ParamType.FLOAT:
                value = float(value)
                if not np.isfinite(value):
                    raise ValueError
            elif self.type is ParamType.BOOL:
                if not isinstance(value, bool):
                    raise ValueError
            elif str(value) not in self.choices:
                raise ValueError
        except (TypeError, ValueError):
            kind = "one of " + ", ".join(self.choices) if self.choices else f"a {self.type.value}"
            raise BadInputError(f"{self.flag} must be {kind} (got {value!r})") from None
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise BadInputError(f"{self.flag} must be between {low:g} and {high:g} (got {value})")
        return value

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type.value, "help": self.help, "default": self.default}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.choices:
            out["choices"] = list(self.choices)
        return out


# Parameters that several single-image families' operations share (their commands are one: `engine sample`,
# `engine animate`), defined once so that they agree.


NOISE_SEED = Param("seed", ParamType.INT, "noise seed, 0 to 2^32-1", default=0, minimum=0, maximum=MAX_SEED)


def sample_params() -> tuple[Param, ...]:
    """`sample`'s count and size: any size, one side alone keeping the training image's aspect ratio."""
    return (
        Param("n", ParamType.INT, "number of samples (default: 1)", default=1, minimum=1, maximum=10_000),
        Param("width", ParamType.INT, "output width in px (default: the training image's; with only one of "
              "--width and --height the other keeps the training image's aspect ratio)", minimum=1,
              maximum=1_000_000),
        Param("height", ParamType.INT, "output height in px (see --width)", minimum=1, maximum=1_000_000),
    )  # fmt: skip


def sample_pixels(params: dict[str, Any], size: tuple[int | None, int | None]) -> int:
    """The pixels of `sample_params`' samples (one side alone keeps the training image's aspect ratio)."""
    w0, h0 = size[0] or 1, size[1] or 1
    width, height = params["width"], params["height"]
    if width is None and height is None:
        width, height = w0, h0
    elif height is None:
        height = round(width * h0 / w0)
    elif width is None:
        width = round(height * w0 / h0)
    return int(params["n"]) * int(width) * int(height)


def animation_params() -> tuple[Param, ...]:
    """`animate`'s options: the random walk in a single-image model's noise (SinGAN's GIFs)."""
    return (
        Param("frames", ParamType.INT, "number of frames (default: 100)", default=100, minimum=2,
              maximum=10_000),
        Param("fps", ParamType.FLOAT, "frames per second of an animated file (default: 10)", default=10.0,
              minimum=0.1, maximum=100.0),
        Param("motion", ParamType.CHOICE, "how much moves: strong (the whole scene, from the coarsest "
              "stage), medium or weak (only fine detail) (default: medium)", default="medium",
              choices=("strong", "medium", "weak")),
        Param("momentum", ParamType.FLOAT, "how much each frame keeps the last one's motion, 0.8 (jittery) "
              "to 0.95 (smooth drifts) (default: 0.9)", default=0.9, minimum=0.8, maximum=0.95),
    )  # fmt: skip


@dataclass(frozen=True)
class EditorUse:
    """How the Krita and GIMP plugins offer an operation: a menu entry (the operation's label) that trains
    the model it needs on the picture when none is stored for it yet, and writes the result as a new layer."""

    layer_name: str  # the new layer's name
    action: str  # the entry's id: Krita's action singan_<action>, GIMP's procedure python-fu-singan-<action>
    # True: the model learns the picture as the artist sees it (without earlier results of this entry) and
    # the result goes on top; False: it learns what lies beneath the active layer.
    picture: bool = False
    object_on_layer: bool = False  # the selection must touch the active layer's pixels (a pasted object)
    retrain: bool = False  # also offer "Retrain and ...": a new model with another seed, reused from then on
    # Ask before each run how much colour match (the settings file's value first) and whether to refine the
    # model on this picture first (where the family fine-tunes the task).
    ask_color_match: bool = False
    tooltip: str = ""  # what the entry does, in the artist's words
    # The artist picks one of the engine's stored models of the operation's family and task (one trained
    # elsewhere, e.g. on folders), and the operation's choice parameters, before each run; nothing is
    # trained on the picture. The entry works on the active layer's own pixels (or the selected part).
    pick_model: bool = False
    # With pick_model: the entry takes the whole active layer (a sketch the model redraws), not the
    # selected part of it, and writes the result over the whole layer.
    whole_layer: bool = False
    # The result is a picture of its own size (an upscaled layer): a new document in Krita, a new image in
    # GIMP. The entry sends the active layer's own pixels (the selected part of them, where there is a
    # selection), and the model learns those.
    new_image: bool = False
    # The operation's number parameters the editors ask for before each run (a dialog in Krita, the
    # procedure's arguments in GIMP), with the parameter's help, range and default.
    ask: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # GIMP leaves actions named ...-set or ...-accel out of its action search and history
        # (gimpaction-history.c): GIMP's procedure is python-fu-singan-<action, "_" as "-">
        if self.action.endswith(("_set", "_accel")):
            raise ValueError(f"editor action {self.action!r}: GIMP's action search hides names ending so")

    def describe(self) -> dict[str, Any]:
        return {
            "tooltip": self.tooltip,
            "pick_model": self.pick_model,
            "whole_layer": self.whole_layer,
            "new_image": self.new_image,
            "ask": list(self.ask),
            "layer_name": self.layer_name,
            "action": self.action,
            "picture": self.picture,
            "object_on_layer": self.object_on_layer,
            "retrain": self.retrain,
            "ask_color_match": self.ask_color_match,
        }


@dataclass
class OperationInput:
    picture: Picture | None = None  # the image to work on (None for operations that make new images)
    mask: np.ndarray | None = None  # H x W float32 in {0, 1}, where the work applies
    params: dict[str, Any] = field(default_factory=dict)  # every Param, checked (defaults filled in)
    # Called before each of an operation's steps (a progress bar's hook), with what runs now.
    on_step: Callable[[str], None] | None = None
    out: Path | None = None  # where a FILE operation writes


@dataclass
class OperationOutput:
    pictures: list[Picture]
    # For --json results; "seeds" (the seed that draws each picture again) also goes on the wire.
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OperationSpec:
    name: str  # the CLI command and the wire name: `engine NAME MODEL_DIR ...`
    label: str  # the plugins' menu entry
    family: str
    tasks: tuple[str, ...]  # the model's task must be one of these
    help: str
    takes_image: bool
    takes_mask: bool
    returns: Returns
    run: Callable[[Loaded, OperationInput], OperationOutput]
    params: tuple[Param, ...] = ()
    # `engine batch` without masks applies this operation to whole images (one per family at most).
    whole_image: bool = False
    # How many times `run` calls `on_step`, for its parameters (a progress bar's length).
    steps: Callable[[dict[str, Any]], int] = lambda params: 1
    needs_runner: bool = True  # runs the model (a backend is prepared first); False: reads its weights only
    # The pixels a NEW_LAYER or FRAMES operation makes for its parameters, given the training image's size
    # (width, height; None where the model has none), which the daemon bounds per request. None: as many
    # as its input image has.
    output_pixels: Callable[[dict[str, Any], tuple[int | None, int | None]], int] | None = None
    editor: EditorUse | None = None  # None: not in the editors' menus
    out_suffix: str = ""  # a FILE operation's file name ending (".onnx")
    # Parameters for which no model changes the result (upscale at strength 0: bicubic steps), and the
    # operation run without one then: the CLI and the daemon train and load nothing for them.
    model_free: Callable[[dict[str, Any]], bool] = lambda params: False
    run_without_model: Callable[[OperationInput], OperationOutput] | None = None

    def __post_init__(self) -> None:
        # what an editor asks must be a number with a range and a default (its dialog's field)
        numbers = {
            p.name
            for p in self.params
            if p.type in (ParamType.INT, ParamType.FLOAT) and None not in (p.minimum, p.maximum, p.default)
        }
        asked = set(self.editor.ask) if self.editor is not None else set()
        if asked - numbers:
            raise ValueError(
                f"`{self.name}` asks the editors for {sorted(asked - numbers)}: not numbers with a range and "
                "a default"
            )

    def check_model(self, loaded: Loaded) -> None:
        if loaded.family.name != self.family:
            raise IncompatibleModelError(
                f"{loaded.path} is a {loaded.family.label} model; `engine {self.name}` needs a {self.family} "
                "model"
            )
        if loaded.task not in self.tasks:
            needs = " or ".join(self.tasks)
            raise IncompatibleModelError(
                f"{loaded.path} is a model for {loaded.task}; `engine {self.name}` needs a model trained "
                f"with --mode {needs}"
            )

    def check_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every parameter, checked (defaults filled in). `given` may hold the options of a command that
        several families share: one that is set but is not this operation's is refused."""
        own = {p.name for p in self.params}
        foreign = sorted(k for k, v in given.items() if v is not None and k not in own)
        if foreign:
            flag = "--" + foreign[0].replace("_", "-")
            raise BadInputError(f"{flag} is not an option of {self.family}'s {self.name}")
        return {p.name: p.check(given.get(p.name)) for p in self.params}

    def total_steps(self, params: dict[str, Any], reads_image: bool) -> int:
        """The steps of a command running it: reading, loading, preparing, its own, writing."""
        return int(reads_image) + 2 + self.needs_runner + self.steps(params)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "family": self.family,
            "tasks": list(self.tasks),
            "help": self.help,
            "takes_image": self.takes_image,
            "takes_mask": self.takes_mask,
            "returns": self.returns.value,
            "whole_image": self.whole_image,
            "needs_runner": self.needs_runner,
            "params": [p.describe() for p in self.params],
            "editor": self.editor.describe() if self.editor is not None else None,
        }


def table() -> dict[str, list[OperationSpec]]:
    """Every registered family's operations, by name. Families may share a name (`sample` draws new
    images from any model that can): the command is one, and the model's family picks the spec."""
    from engine import families

    out: dict[str, list[OperationSpec]] = {}
    for family in families.all_families():
        for op in family.operations:
            out.setdefault(op.name, []).append(op)
    return out


def cli_params(specs: list[OperationSpec]) -> list[Param]:
    """The options of a command that several families' operations share: each parameter once, the first
    spec's help (a parameter's type must agree between them)."""
    merged: dict[str, Param] = {}
    for op in specs:
        for param in op.params:
            seen = merged.setdefault(param.name, param)
            if seen.type is not param.type:
                raise ValueError(f"{param.flag} of `{op.name}` has two types in two families")
    return list(merged.values())


def kind_of(loaded: Loaded) -> str:
    """ "a ConSinGAN model for harmonization"; a family with one task is named alone ("a CycleGAN model")."""
    task = f" for {loaded.task}" if len(loaded.family.tasks) > 1 else ""
    return f"a {loaded.family.label} model{task}"


def for_model(loaded: Loaded, name: str) -> OperationSpec:
    """The operation `name` as the model's family does it, refused (one line) when the model cannot."""
    for op in loaded.family.operations:
        if op.name == name:
            op.check_model(loaded)
            return op
    can = sorted(o.name for o in loaded.family.operations if loaded.task in o.tasks)
    raise IncompatibleModelError(
        f"{loaded.path} is {kind_of(loaded)}, which cannot {name}"
        + (f"; it can: {', '.join(can)}" if can else "")
    )


def whole_image(loaded: Loaded) -> OperationSpec:
    """The operation `engine batch` applies to whole images with this model."""
    for op in loaded.family.operations:
        if op.whole_image and loaded.task in op.tasks:
            return op
    raise IncompatibleModelError(
        f"{loaded.path} is {kind_of(loaded)}; batch needs a model that "
        "re-styles whole images (harmonization or editing)"
    )
