"""Export one direction of a CycleGAN model (a generator) as an ONNX graph for any picture size.

Two graphs, both `networks.Restyler`:
- `engine export` writes the generator as trained, for any runtime: input `image` (N x 3 x H x W in
  [-1, 1], any H and W: padded to a multiple of 4 inside, cropped back), output `image_out`, each picture
  normalised by its own statistics;
- the engine's own runner (MODEL_DIR/restyle_a2b.onnx, exported on first use) also takes `statistics`
  (1 x S) and `use_given` (1 value) and gives `statistics_out` (N x S, the input's own), to re-style a large
  picture tile by tile with the whole picture's statistics (restyle.py). Inputs with default values in the
  file would make one graph serve both, but onnxruntime warns about such inputs on every load.

Exporter: engine.onnx_graph's, as for every family; the file is checked as every exported file is
(engine.sampler_file).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from engine.errors import ExportError
from engine.families.cyclegan.config import NAME, Config
from engine.families.cyclegan.networks import Generator, Restyler
from engine.onnx_graph import OPSET, engine_version, run_exporter, sealed, write_graph
from engine.sampler_file import RESTYLER_FORMAT
from engine.standalone import TEXT_KEYS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of exported CycleGAN generators
EXPORTER_REVISION = 1  # bumped when the graph built from the same weights changes
INPUTS = ("image", "statistics", "use_given")
OUTPUTS = ("image_out", "statistics_out")


def file_name(direction: str) -> str:
    """The export the engine makes on first use, in the model directory."""
    return f"restyle_{direction}.onnx"


def source_digest(generator: Generator, direction: str, tiles: bool) -> str:
    """What the export is made from: the generator's shape (ngf, blocks, upsample) and weights, the
    direction, the graph's kind and the exporter's revision. Not the model's training settings: a field
    added to those would leave every stored model's export stale (as SAGAN's d_recon once did)."""
    h = hashlib.sha256()
    h.update(json.dumps([generator.shape, direction, tiles, FORMAT_VERSION, EXPORTER_REVISION]).encode())
    for name, tensor in sorted(generator.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _AsTrained(nn.Module):
    """The Restyler with each picture's own statistics: image in, image out."""

    def __init__(self, restyler: Restyler, size: int) -> None:
        super().__init__()
        self.restyler = restyler
        self.register_buffer("statistics", torch.zeros(1, size))
        self.register_buffer("use_given", torch.zeros(1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.restyler(image, self.statistics, self.use_given)[0]


def _name_dimensions(proto: onnx.ModelProto) -> None:
    """batch, height and width for the exporter's s0, s1, ... and its expressions for the cropped output."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim  # image
    names = {dims[0].dim_param: "batch", dims[2].dim_param: "height", dims[3].dim_param: "width"}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    labels = {"image_out": ("batch", None, "height", "width"), "statistics_out": ("batch", None)}
    for value in proto.graph.output:
        for dim, label in zip(value.type.tensor_type.shape.dim, labels[value.name], strict=True):  # noqa
            if label:
                dim.dim_param = label


def export_model(config: Config, generator: Generator, direction: str, tiles: bool) -> onnx.ModelProto:
    """The graph of `generator` (one direction of a model trained with `config`): with `tiles` the
    engine's runner, else image in, image out."""
    if not all(bool(torch.isfinite(p).all()) for p in generator.parameters()):
        raise ExportError("the model has NaN or infinite weights (training diverged): retrain it")
    copy = Generator(*generator.shape)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in generator.state_dict().items()})
    restyler = Restyler(copy.eval().requires_grad_(False)).eval()
    size = copy.statistics_size
    # A batch of 2 and an odd size keep batch, height and width symbolic (torch.export specialises 1s).
    image = torch.rand(2, 3, 70, 90) * 2 - 1
    dynamic = torch.export.Dim.DYNAMIC
    shapes: dict[str, Any] = {"image": {0: dynamic, 2: dynamic, 3: dynamic}}
    module: nn.Module = restyler if tiles else _AsTrained(restyler, size).eval()
    example: tuple[torch.Tensor, ...] = (image, torch.zeros(1, size), torch.zeros(1)) if tiles else (image,)
    inputs, outputs = (INPUTS, OUTPUTS) if tiles else (INPUTS[:1], OUTPUTS[:1])
    if tiles:
        shapes.update(statistics=None, use_given=None)
    proto = run_exporter(module, example, list(inputs), list(outputs), shapes)
    _name_dimensions(proto)
    values: dict[str, Any] = {
        "format": RESTYLER_FORMAT,
        "format_version": FORMAT_VERSION,
        "engine_version": engine_version(),
        "family": NAME,
        "direction": direction,
        "precision": "fp32",
        "opset": OPSET,
        "model_config": config.to_dict(),
        "inputs": list(inputs),
        "statistics_size": size,
        "source_digest": source_digest(generator, direction, tiles),
    }
    return sealed(proto, {k: (v if k in TEXT_KEYS else json.dumps(v)) for k, v in values.items()})


def export(
    config: Config, generator: Generator, direction: str, path: str | Path, tiles: bool = False
) -> Path:
    """Export to `path`, written atomically (a crash leaves the old file or none, never half of one)."""
    path = write_graph(export_model(config, generator, direction, tiles), path)
    log.info("exported the %s generator to %s", direction, path)
    return path
