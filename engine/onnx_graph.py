"""What every family's ONNX exporter shares: the opset, the exporter call, the sealing (metadata, digest,
checker) and the atomic write. A family's own onnx_export builds its module and metadata and calls these.

Exporter: torch.onnx.export with dynamo=True at opset 18. The TorchScript exporter traces Python ints, so
sizes read from inputs were frozen at the example size; torch.export keeps them symbolic and the graphs stay
dynamic in batch, height and width. Opset 18 is the lowest the dynamo exporter writes natively (no version
conversion pass) and runs on onnxruntime 1.14 and later, so exported files also work with older runtimes.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from engine.errors import ExportError
from engine.files import atomic_write_bytes
from engine.sampler_file import weights_digest

OPSET = 18
TORCHVISION_NOTICE = "torchvision is not installed"
EXPORTER_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


class _NoTorchvisionNotice(logging.Filter):
    """torch's exporter warns, for each torchvision op it knows, that torchvision is not installed. These
    graphs use no torchvision op and the engine does not need torchvision: on a user's terminal the four
    warnings only look like something is missing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TORCHVISION_NOTICE)


logging.getLogger(EXPORTER_REGISTRY_LOGGER).addFilter(_NoTorchvisionNotice())


def engine_version() -> str:
    try:
        return importlib.metadata.version("singan-studio")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_exporter(
    module: nn.Module,
    example: tuple,
    inputs: list[str],
    outputs: list[str],
    dynamic_shapes: dict,
    translations: dict[Any, Callable] | None = None,
) -> onnx.ModelProto:
    """torch.onnx.export with dynamo at OPSET, any failure as one ExportError, the exporter's per-node
    provenance dropped, this engine named as the producer. (Every family's exporter uses it.)
    `translations` maps a custom operator to the onnxscript function that writes its ONNX form."""
    try:
        program = torch.onnx.export(
            module,
            example,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            custom_translation_table=translations,
            external_data=False,
            verbose=False,
        )
    except Exception as e:  # the exporter raises many unrelated types; all mean the same to the user
        root: BaseException = e
        while root.__cause__ is not None:  # the innermost error says what failed, the outer ones where
            root = root.__cause__
        first_line = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        raise ExportError(f"torch could not export this model: {first_line}") from e
    if program is None:  # only with dynamo=False, which is not used
        raise ExportError("torch returned no ONNX program")
    proto = program.model_proto
    for node in proto.graph.node:
        # The exporter's per-node provenance (stack traces with local paths): most of a small file's bytes.
        del node.metadata_props[:]
    proto.producer_name = "singan-studio"
    proto.producer_version = engine_version()
    return proto


def sealed(proto: onnx.ModelProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """The graph with `metadata` and its weights' digest as its only metadata, checked by onnx.checker."""
    del proto.metadata_props[:]
    props = {**metadata, "weights_digest": weights_digest(proto.graph)}
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph fails onnx.checker: {e}") from e
    return proto


def write_graph(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write atomically (a crash leaves the old file or none, never half of one)."""
    path = Path(path)
    try:
        atomic_write_bytes(path, proto.SerializeToString())
    except OSError as e:
        raise ExportError(f"cannot write {path} ({e.strerror or e}): choose another --out") from e
    return path
