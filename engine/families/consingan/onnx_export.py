"""Export a model's sampling path (stage inputs -> image) as one ONNX graph that serves any output size.

The exporter (engine.onnx_graph, shared by every family) keeps the resize sizes that
`Generator.run_stages` reads from its inputs symbolic, so the graph stays dynamic in batch, height and
width of every stage.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from engine.errors import ExportError, OnnxFileError
from engine.families.consingan.modes import spec
from engine.families.consingan.networks import Generator
from engine.families.consingan.pyramid import Shape, retarget_shapes
from engine.families.consingan.store import TrainedModel
from engine.onnx_graph import OPSET, engine_version, run_exporter, sealed, write_graph
from engine.sampler_file import FORMAT_VERSION, verify_file
from engine.standalone import FORMAT, TEXT_KEYS

log = logging.getLogger(__name__)
FP16_MAX = 65504.0
# Bumped whenever the graph built from the same weights changes, so that samplers exported on first use
# by an older engine are exported again.
EXPORTER_REVISION = 3
# fp16 exports match fp32 to within one level of an 8-bit image (2/255 on the [-1, 1] output). fp16 keeps
# 11 significant bits (relative rounding 2^-11, about 5e-4); each convolution sums hundreds of products
# with fp32 accumulation and the final tanh compresses large values, so the error that reaches the output
# is a few times 1e-3 (measured: see docs/onnx.md), below what an 8-bit image can show.
FP16_BOUND = 2 / 255


def input_names(n_stages: int) -> list[str]:
    return ["stage0", *(f"noise{k}" for k in range(1, n_stages))]


def source_digest(model: TrainedModel, fp16: bool = False) -> str:
    """What the export is made from (config, amplitudes, weights, precision): a stale export differs."""
    h = hashlib.sha256()
    shape = [model.model.to_dict(), model.noise_amps, model.shapes, fp16, FORMAT_VERSION, EXPORTER_REVISION]
    h.update(json.dumps(shape).encode())
    for name, tensor in sorted(model.generator.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Fp32Norm(nn.Module):
    """Instance norm in fp32 inside an fp16 graph, as autocast does: fp16 variance over a large map loses
    most of its digits."""

    def __init__(self, norm: nn.InstanceNorm2d) -> None:
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).to(x.dtype)


class _Sampling(nn.Module):
    """The generator with its noise amplitudes baked in, one positional input per stage, fp32 in and out."""

    def __init__(self, generator: Generator, amps: list[float], dtype: torch.dtype) -> None:
        super().__init__()
        self.generator = generator
        self.amps = list(amps)
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.generator([x.to(self.dtype) for x in inputs], self.amps).float()


BAND = 32  # output rows per block of the banded resize
WINDOW = BAND + 4  # input rows one block reads when upsampling (scale <= 1): its span plus the 4 taps


def _banded_weights(n_in, n_out, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D bicubic interpolation with align_corners (A = -0.75, edges clamped), as F.interpolate computes
    it, cut into blocks of BAND output rows: for block j, the WINDOW input rows it reads (clamped indices,
    n_blocks x WINDOW) and its BAND x WINDOW weights (n_blocks x BAND x WINDOW). n_in and n_out may be
    symbolic; the stages only ever upsample, which is what WINDOW allows for."""
    a = -0.75
    n_blocks = (n_out + BAND - 1) // BAND
    # The scale in float32 first, then times the index: F.interpolate's order of rounding, which places
    # the taps identically (the other order moves them by an ulp, enough for 1e-5 at large sizes).
    scale = torch.ones((), dtype=torch.float32, device=like.device) * (n_in - 1) / max(n_out - 1, 1)
    src = torch.arange(n_blocks * BAND, dtype=torch.float32, device=like.device) * scale
    i0 = torch.floor(src)
    t = src - i0
    s = 1.0 - t
    taps = [
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * s - (a + 3)) * s * s + 1,
        ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a,
    ]
    block = torch.arange(n_blocks, dtype=torch.float32, device=like.device)
    first = (torch.floor(block * BAND * scale) - 1).reshape(-1, 1)  # the window's first input row
    window = torch.arange(WINDOW, dtype=torch.float32, device=like.device)
    rows = torch.clamp(first + window.reshape(1, -1), 0, n_in - 1).to(torch.int64)
    offset = (i0 - 1).reshape(-1, BAND) - first  # where each output row's first tap sits in its window
    weights = sum(
        (window.reshape(1, 1, -1) == (offset + k).unsqueeze(2)).to(like.dtype)
        * w.reshape(-1, BAND, 1).to(like.dtype)
        for k, w in enumerate(taps)
    )
    return rows, weights


def _banded_resize_rows(x: torch.Tensor, n_out) -> torch.Tensor:
    """Bicubic resize along axis 1 of B x n_in x K: per block of BAND output rows, one matrix product of its
    weights with the WINDOW input rows it reads (gathered as whole K-long rows, which is a memory copy)."""
    rows, weights = _banded_weights(x.shape[1], n_out, x)
    n_blocks = rows.shape[0]
    window = x.index_select(1, rows.reshape(-1)).reshape(x.shape[0], n_blocks, WINDOW, x.shape[2])
    out = torch.matmul(weights, window).reshape(x.shape[0], n_blocks * BAND, x.shape[2])
    return out[:, :n_out]


def banded_upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bicubic resize (align_corners) for export, as banded matrix products, one axis at a time.

    onnxruntime's cubic Resize kernel is scalar code (80% of a 250 px sample); per-tap gathers along the
    width with broadcast multiplies made 11 passes over the output per axis and took 70% of a 1024 px
    sample. Here each axis is one gather of whole rows plus one batched matrix product over blocks of
    BAND output rows (the interpolation matrix is banded, so each block needs only WINDOW input rows).
    The width goes first, on each channel's transposed map, so that the result comes out in NCHW order
    without a transpose of the (largest) output.
    """
    n, c, h, w = x.shape
    y = _banded_resize_rows(x.reshape(n * c, h, w).transpose(1, 2), size[1])  # (NC, W_out, H)
    y = _banded_resize_rows(y.transpose(1, 2), size[0])  # (NC, H_out, W_out)
    return y.reshape(n, c, size[0], size[1])


def _refuse_unexportable(model: TrainedModel, fp16: bool) -> None:
    g = model.generator
    if g.n_stages != len(model.shapes) or len(model.noise_amps) != len(model.shapes):
        raise ExportError(
            f"model has {g.n_stages} generator stages but {len(model.shapes)} stage shapes and "
            f"{len(model.noise_amps)} noise amplitudes: it is damaged, retrain it"
        )
    if not all(math.isfinite(a) for a in model.noise_amps):
        raise ExportError("model has non-finite noise amplitudes (training diverged): retrain it")
    largest = max(float(p.detach().abs().max()) for p in g.parameters())
    if not math.isfinite(largest):
        raise ExportError("model has NaN or infinite weights (training diverged): retrain it")
    if fp16 and largest > FP16_MAX:
        raise ExportError(f"a weight of magnitude {largest:.3g} does not fit in fp16: export without --fp16")


def _name_dimensions(proto: onnx.ModelProto) -> None:
    """Readable names for the symbolic dimensions that the exporter calls s0, s1, ... (users see them)."""
    names: dict[str, str] = {}
    for value in proto.graph.input:
        labels = ("batch", None, f"{value.name}_height", f"{value.name}_width")
        for dim, label in zip(value.type.tensor_type.shape.dim, labels, strict=True):
            if label and dim.dim_param:
                names.setdefault(dim.dim_param, label)
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    output_dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, label in zip(output_dims, ("batch", None, "height", "width"), strict=True):
        if label and not dim.dim_value:
            dim.dim_param = label


def metadata(model: TrainedModel, fp16: bool) -> dict[str, str]:
    """Everything a runtime needs to feed the graph, and where it came from."""
    cfg = model.model
    mode_spec = spec(cfg.mode)
    values: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "engine_version": engine_version(),
        "mode": cfg.mode.value,
        "precision": "fp16" if fp16 else "fp32",
        "opset": OPSET,
        "model_config": cfg.to_dict(),
        "stage_shapes": [list(s) for s in model.shapes],
        "noise_amps": [float(a) for a in model.noise_amps],
        "inputs": input_names(len(model.shapes)),
        # Stage k > 0 takes noise of noise_channels x (H + noise_pad) x (W + noise_pad) for an H x W stage.
        "noise_channels": cfg.nfc,
        "noise_pad": 2 * cfg.num_layers if mode_spec.border_upsampling else 0,
        "conditional": mode_spec.conditional,
        "source_digest": source_digest(model, fp16),
    }
    return {k: (v if k in TEXT_KEYS else json.dumps(v)) for k, v in values.items()}


def example_shapes(model: TrainedModel) -> list[Shape]:
    """The model's stage shapes, retargeted larger if needed so the smallest stage exceeds 2 x BAND px."""
    shortest = min(min(shape) for shape in model.shapes)
    if shortest > 2 * BAND:
        return [(shape[0], shape[1]) for shape in model.shapes]
    factor = (2 * BAND + 2) / shortest
    h, w = model.shapes[-1]
    return retarget_shapes(model.shapes, math.ceil(h * factor), math.ceil(w * factor))


def export_model(model: TrainedModel, fp16: bool = False) -> onnx.ModelProto:
    """The sampling graph: inputs stage0 (N x 3 x H0 x W0) and noiseK (N x nfc x HK x WK), output `image`
    (N x 3 x H x W in [-1, 1]); amplitudes are constants; fp16 keeps fp32 inputs and output."""
    _refuse_unexportable(model, fp16)
    generator = copy.deepcopy(model.generator).cpu().eval().requires_grad_(False)
    # The training code's interpolation matrices would be frozen at the example size; these taps are
    # computed in the graph from the inputs' shapes.
    generator.resize = banded_upsample  # type: ignore[method-assign]
    dtype = torch.float16 if fp16 else torch.float32
    generator.to(dtype)
    if fp16:
        for parent in list(generator.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.InstanceNorm2d):
                    setattr(parent, name, _Fp32Norm(child))
    wrapper = _Sampling(generator, model.noise_amps, dtype).eval()
    names = input_names(len(model.shapes))
    # A batch of 2 keeps the batch dimension symbolic (torch.export specialises sizes of 1), and so does an
    # example size at which every resize has at least 2 blocks of BAND rows per axis.
    example = tuple(
        torch.randn(2, *generator.noise_shape(k, *s)) for k, s in enumerate(example_shapes(model))
    )
    dynamic = tuple(
        {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC} for _ in names
    )
    proto = run_exporter(wrapper, example, names, ["image"], {"inputs": dynamic})
    _name_dimensions(proto)
    return sealed(proto, metadata(model, fp16))


def export(model: TrainedModel, path: str | Path, fp16: bool = False) -> Path:
    """Export to `path`, written atomically."""
    path = write_graph(export_model(model, fp16), path)
    log.info("exported %s (%s) to %s", model.path or "model", "fp16" if fp16 else "fp32", path)
    return path


def load_checked(path: str | Path) -> dict:
    """Check an exported sampler (parse, weights checksum, onnx.checker) and return its metadata.

    OnnxFileError when the file is missing, truncated, corrupted, foreign or from a newer engine.
    """
    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"no ONNX file at {path}: export one with `engine export MODEL_DIR --out {path}`")
    meta = verify_file(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise OnnxFileError(f"{path} fails onnx.checker ({e}): export it again") from e
    return meta
