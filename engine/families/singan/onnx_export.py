"""Export SinGAN's stage generators as ONNX graphs, one file per stage: inputs `noise` (N x 3 x H+10 x
W+10, already scaled by the stage's amplitude) and `previous` (N x 3 x H x W, the image entering the stage,
in [-1, 1]), output `image` (N x 3 x H x W); batch, height and width dynamic. The pyramid walk between the
stages (bicubic resizes, noise) runs outside the graphs, so one stage can start from a sketch
(paint-to-image) or run again and again (super-resolution). Exported into the model directory on first use
(stages/stage_NN.onnx); `engine export` writes one stage anywhere. Exporter: engine.onnx_graph's."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, cast

import onnx
import torch
from onnx import numpy_helper

from engine.errors import ExportError
from engine.families.singan.config import NAME, PAD
from engine.families.singan.networks import StageGenerator
from engine.onnx_graph import OPSET, engine_version, run_exporter, sealed, write_graph
from engine.sampler_file import SINGAN_STAGE_FORMAT
from engine.standalone import TEXT_KEYS

log = logging.getLogger(__name__)

FOLDER = "stages"
FORMAT_VERSION = 1
EXPORTER_REVISION = 1  # bumped when the graph built from the same weights changes


def file_name(stage: int) -> str:
    return f"{FOLDER}/stage_{stage:02d}.onnx"


def source_digest(generator: StageGenerator) -> str:
    h = hashlib.sha256(json.dumps([generator.channels, FORMAT_VERSION, EXPORTER_REVISION]).encode())
    for name, tensor in sorted(generator.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def folded(generator: StageGenerator) -> StageGenerator:
    """A copy in eval mode with each BatchNorm folded into the convolution before it (what the exporter's
    optimiser does anyway), so that the graph's weights are exactly the module's parameters."""
    copy = StageGenerator(generator.channels)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in generator.state_dict().items()})
    copy.eval().requires_grad_(False)
    for module in copy.body:
        block = cast(torch.nn.Sequential, module)
        conv, norm = cast(torch.nn.Conv2d, block[0]), cast(torch.nn.BatchNorm2d, block[1])
        assert conv.bias is not None and norm.running_var is not None and norm.running_mean is not None
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        conv.weight.copy_(conv.weight * scale[:, None, None, None])
        conv.bias.copy_((conv.bias - norm.running_mean) * scale + norm.bias)
        block[1] = torch.nn.Identity()
    return copy


# One exported graph per stage width: stages of the same width differ only in their weights, which are
# put in place of the template's (torch.export takes seconds a graph; a model has 3 widths and 10 stages).
_TEMPLATES: dict[int, onnx.ModelProto] = {}


def _template(channels: int) -> onnx.ModelProto:
    """The graph of a stage of this width, exported from fresh random weights (none of a model's: the
    exporter's optimiser must not see two equal weights it would merge, or fold one into another)."""
    if channels not in _TEMPLATES:
        from engine.families.singan.networks import init_weights

        fresh = StageGenerator(channels)
        init_weights(fresh, torch.Generator().manual_seed(channels))
        module = folded(fresh)
        h, w = 24, 32
        example = (torch.randn(2, 3, h + 2 * PAD, w + 2 * PAD), torch.randn(2, 3, h, w))
        batch, height, width = torch.export.Dim("n"), torch.export.Dim("height"), torch.export.Dim("width")
        dynamic = {
            "noise": {0: batch, 2: height + 2 * PAD, 3: width + 2 * PAD},
            "previous": {0: batch, 2: height, 3: width},
        }
        with warnings.catch_warnings():  # torch names the derived axes itself, and says so for each
            warnings.filterwarnings("ignore", message="# The axis name")
            _TEMPLATES[channels] = run_exporter(module, example, ["noise", "previous"], ["image"], dynamic)
    return _TEMPLATES[channels]


def export_stage(generator: StageGenerator, stage: int) -> onnx.ModelProto:
    if not all(
        bool(torch.isfinite(t).all()) for t in generator.state_dict().values() if t.is_floating_point()
    ):
        raise ExportError("the model has NaN or infinite weights (training diverged): retrain it")
    module = folded(generator)
    proto = onnx.ModelProto()
    proto.CopyFrom(_template(generator.channels))
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    for tensor in proto.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue  # the graph's own constants (the padding's sizes)
        weight = weights.pop(tensor.name, None)
        if weight is None or tuple(tensor.dims) != weight.shape:
            raise ExportError(f"the exported stage's weight {tensor.name} is not the module's: export again")
        tensor.CopyFrom(numpy_helper.from_array(weight, tensor.name))
    if weights:  # the exporter named a weight otherwise: the template cannot be refilled
        raise ExportError(f"the exported stage has no weight {next(iter(weights))}: export again")
    values: dict[str, Any] = {
        "format": SINGAN_STAGE_FORMAT,
        "format_version": FORMAT_VERSION,
        "engine_version": engine_version(),
        "family": NAME,
        "stage": stage,
        "precision": "fp32",
        "opset": OPSET,
        "source_digest": source_digest(generator),
    }
    return sealed(proto, {k: (v if k in TEXT_KEYS else json.dumps(v)) for k, v in values.items()})


def export(generator: StageGenerator, stage: int, path: str | Path) -> Path:
    """Export to `path`, written atomically (a crash leaves the old file or none, never half of one)."""
    path = write_graph(export_stage(generator, stage), path)
    log.info("exported SinGAN stage %d to %s", stage, path)
    return path
