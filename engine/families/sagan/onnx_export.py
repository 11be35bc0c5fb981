"""Export a set generator as an ONNX graph: input `latent` (N x z_dim, standard normal), output `image`
(N x C x S x S in [-1, 1]; C = 4 carries alpha, colour premultiplied). The engine exports it into the
model directory on first use (onnxruntime is the default backend); `engine export` writes it anywhere.
Exporter: engine.onnx_graph's, as for every family; the file is checked as every exported file is."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import onnx
import torch

from engine.errors import ExportError
from engine.families.sagan.config import NAME, Config
from engine.families.sagan.networks import Generator
from engine.onnx_graph import OPSET, engine_version, run_exporter, sealed, write_graph
from engine.sampler_file import SET_GENERATOR_FORMAT
from engine.standalone import TEXT_KEYS

log = logging.getLogger(__name__)

FILE_NAME = "generator.onnx"  # exported on first use, in the model directory
FORMAT_VERSION = 1
EXPORTER_REVISION = 1  # bumped when the graph built from the same weights changes


def source_digest(generator: Generator) -> str:
    """What the graph is made from: the generator's shape and weights and the exporter's revision. Not the
    model's training settings: with them, each field added to those (d_recon) left every stored model's
    export stale, and each model exported itself again on first use."""
    g = generator
    shape = [g.z_dim, g.dim, g.size, g.channels, g.upsample, g.norm]
    h = hashlib.sha256()
    h.update(json.dumps([shape, FORMAT_VERSION, EXPORTER_REVISION]).encode())
    for name, tensor in sorted(generator.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_model(config: Config, generator: Generator) -> onnx.ModelProto:
    if not all(bool(torch.isfinite(p).all()) for p in generator.parameters()):
        raise ExportError("the model has NaN or infinite weights (training diverged): retrain it")
    g = generator
    copy = g.blank()
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in g.state_dict().items()})
    copy.eval().requires_grad_(False)
    example = (torch.randn(2, g.z_dim),)  # a batch of 2 keeps the batch symbolic
    proto = run_exporter(copy, example, ["latent"], ["image"], {"latent": {0: torch.export.Dim.DYNAMIC}})
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    values: dict[str, Any] = {
        "format": SET_GENERATOR_FORMAT,
        "format_version": FORMAT_VERSION,
        "engine_version": engine_version(),
        "family": NAME,
        "precision": "fp32",
        "opset": OPSET,
        "model_config": config.to_dict(),
        "channels": g.channels,
        "source_digest": source_digest(g),
    }
    return sealed(proto, {k: (v if k in TEXT_KEYS else json.dumps(v)) for k, v in values.items()})


def export(config: Config, generator: Generator, path: str | Path) -> Path:
    """Export to `path`, written atomically (a crash leaves the old file or none, never half of one)."""
    path = write_graph(export_model(config, generator), path)
    log.info("exported the set generator to %s", path)
    return path
