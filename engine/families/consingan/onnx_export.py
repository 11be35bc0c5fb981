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
from collections.abc import Sequence  # at run time: torch reads the custom operator's annotations
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxscript import opset18
from torch import nn

from engine.errors import ExportError, OnnxFileError
from engine.families.consingan.modes import spec
from engine.families.consingan.networks import Generator, upsample
from engine.families.consingan.store import TrainedModel
from engine.onnx_graph import OPSET, engine_version, run_exporter, sealed, write_graph
from engine.sampler_file import FORMAT_VERSION, verify_file
from engine.standalone import FORMAT, TEXT_KEYS

log = logging.getLogger(__name__)
# The ONNX operators, as the exporter records them while it translates a custom operator (their type stubs
# describe onnxscript's own functions, not recorded values).
op: Any = opset18
assert OPSET == 18, "the translation's operators are opset 18's: import the exporter's opset here"
FP16_MAX = 65504.0
# Bumped whenever what the graph built from the same weights computes changes, so that samplers exported on
# first use by an older engine are exported again.
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


@torch.library.custom_op("singan_studio::banded_upsample", mutates_args=())
def banded_upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic resize (align_corners) between stages, as one operator for the exporter: torch.export
    traces it as a single node (tracing its dozens of shape computations symbolically took most of an
    export) and `_banded_upsample_onnx` writes its ONNX form. In torch it is the generator's own resize."""
    return upsample(x.float(), (size[0], size[1])).to(x.dtype).contiguous()


@banded_upsample.register_fake
def _(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return x.new_empty((x.shape[0], x.shape[1], size[0], size[1]))


def _ints(*values: int) -> Any:
    return op.Constant(value_ints=list(values))


def _floats(value: float) -> Any:
    return op.Constant(value_float=float(value))


def _horner(u: Any, coefficients: list[float]) -> Any:
    """c0 u^n + c1 u^(n-1) + ... in Horner's order, as the bicubic weights are written."""
    y = op.Mul(_floats(coefficients[0]), u)
    for k, coefficient in enumerate(coefficients[1:], 2):
        y = op.Add(y, _floats(coefficient)) if coefficient else y
        y = op.Mul(y, u) if k < len(coefficients) else y
    return y


def _cubic_taps(t: Any) -> list[Any]:
    """The 4 bicubic weights (A = -0.75) of the input rows at fractional distances 1 + t, t, 1 - t and
    2 - t from the output row, as F.interpolate computes them."""
    a = -0.75
    s = op.Sub(_floats(1), t)
    far = [a, -5 * a, 8 * a, -4 * a]  # ((A u - 5A) u + 8A) u - 4A for 1 <= u < 2
    near = [a + 2, -(a + 3), 0, 1]  # ((A + 2) u - (A + 3)) u u + 1 for u < 1
    return [
        _horner(op.Add(t, _floats(1)), far),
        _horner(t, near),
        _horner(s, near),
        _horner(op.Add(s, _floats(1)), far),
    ]


def _banded_resize_rows(x: Any, n_out: Any) -> Any:
    """ONNX: bicubic resize along axis 1 of B x n_in x K to n_out (a 1-element int64 tensor) rows.

    Per block of BAND output rows, one matrix product of its BAND x WINDOW weights with the WINDOW input
    rows it reads (gathered as whole K-long rows, which is a memory copy). onnxruntime's cubic Resize kernel
    is scalar code (80% of a 250 px sample); per-tap gathers with broadcast multiplies took 70% of a 1024 px
    sample. The stages only ever upsample, which is what WINDOW allows for."""
    float32, int64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    n_in = op.Shape(x, start=1, end=2)
    n_blocks = op.Div(op.Add(n_out, _ints(BAND - 1)), _ints(BAND))
    # The scale in float32 first, then times the index: F.interpolate's order of rounding, which places
    # the taps identically (the other order moves them by an ulp, enough for 1e-5 at large sizes).
    last_in = op.Cast(op.Sub(n_in, _ints(1)), to=float32)
    scale = op.Div(last_in, op.Cast(op.Max(op.Sub(n_out, _ints(1)), _ints(1)), to=float32))
    zero, one = op.Constant(value_int=0), op.Constant(value_int=1)
    src = op.Mul(op.Cast(op.Range(zero, op.Squeeze(op.Mul(n_blocks, _ints(BAND))), one), to=float32), scale)
    i0 = op.Floor(src)
    t = op.Sub(src, i0)
    taps = _cubic_taps(t)
    block = op.Cast(op.Range(zero, op.Squeeze(n_blocks), one), to=float32)
    first = op.Unsqueeze(op.Sub(op.Floor(op.Mul(op.Mul(block, _floats(BAND)), scale)), _floats(1)), _ints(1))
    window = op.Constant(value_floats=[float(i) for i in range(WINDOW)])
    read = op.Add(first, op.Unsqueeze(window, _ints(0)))  # n_blocks x WINDOW: the input rows each block reads
    rows = op.Cast(op.Clip(read, _floats(0), op.Squeeze(last_in)), to=int64)
    offset = op.Sub(op.Reshape(op.Sub(i0, _floats(1)), _ints(-1, BAND)), first)  # first tap's place in window
    positions = op.Reshape(window, _ints(1, 1, WINDOW))
    weights = None
    for k, tap in enumerate(taps):
        hit = op.CastLike(op.Equal(positions, op.Unsqueeze(op.Add(offset, _floats(k)), _ints(2))), x)
        term = op.Mul(hit, op.CastLike(op.Reshape(tap, _ints(-1, BAND, 1)), x))
        weights = term if weights is None else op.Add(weights, term)
    batch, k_len = op.Shape(x, start=0, end=1), op.Shape(x, start=2, end=3)
    gathered = op.Gather(x, op.Reshape(rows, _ints(-1)), axis=1)
    windows = op.Reshape(gathered, op.Concat(batch, n_blocks, _ints(WINDOW), k_len, axis=0))
    out = op.Reshape(op.MatMul(weights, windows), op.Concat(batch, _ints(-1), k_len, axis=0))
    return op.Slice(out, _ints(0), n_out, _ints(1))


def _banded_upsample_onnx(x: Any, size: Sequence[Any]) -> Any:
    """ONNX form of `banded_upsample`: one axis at a time, the width first on each channel's transposed map,
    so that the result comes out in NCHW order without a transpose of the (largest) output."""
    h_out, w_out = (_ints(v) if isinstance(v, int) else op.Reshape(v, _ints(1)) for v in size)
    batch_channels = op.Shape(x, start=0, end=2)
    planes = op.Reshape(x, op.Concat(_ints(-1), op.Shape(x, start=2, end=4), axis=0))  # (NC, H, W)
    y = _banded_resize_rows(op.Transpose(planes, perm=[0, 2, 1]), w_out)  # (NC, W_out, H)
    y = _banded_resize_rows(op.Transpose(y, perm=[0, 2, 1]), h_out)  # (NC, H_out, W_out)
    return op.Reshape(y, op.Concat(batch_channels, h_out, w_out, axis=0))


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


def export_model(model: TrainedModel, fp16: bool = False) -> onnx.ModelProto:
    """The sampling graph: inputs stage0 (N x 3 x H0 x W0) and noiseK (N x nfc x HK x WK), output `image`
    (N x 3 x H x W in [-1, 1]); amplitudes are constants; fp16 keeps fp32 inputs and output."""
    _refuse_unexportable(model, fp16)
    generator = copy.deepcopy(model.generator).cpu().eval().requires_grad_(False)
    # The training code's interpolation matrices would be frozen at the example size; these taps are
    # computed in the graph from the inputs' shapes.
    generator.resize = lambda x, size: banded_upsample(x, [size[0], size[1]])  # type: ignore[method-assign]
    dtype = torch.float16 if fp16 else torch.float32
    generator.to(dtype)
    if fp16:
        for parent in list(generator.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.InstanceNorm2d):
                    setattr(parent, name, _Fp32Norm(child))
    wrapper = _Sampling(generator, model.noise_amps, dtype).eval()
    names = input_names(len(model.shapes))
    # A batch of 2 keeps the batch dimension symbolic (torch.export specialises sizes of 1). The resize is
    # one operator to torch.export, so the model's own sizes serve as the example.
    example = tuple(torch.randn(2, *generator.noise_shape(k, *s)) for k, s in enumerate(model.shapes))
    dynamic = tuple(
        {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC} for _ in names
    )
    translations = {torch.ops.singan_studio.banded_upsample.default: _banded_upsample_onnx}
    proto = run_exporter(wrapper, example, names, ["image"], {"inputs": dynamic}, translations)
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
