"""Typed errors raised by the engine; each message says what the user can do about it."""

import sys


class EngineError(Exception):
    """Base class: the CLI prints the message and exits non-zero; the daemon sends it as an error reply."""

    exit_code = 2
    # What the command still found out (the CLI prints it with the error, and adds it to the --json object).
    details: dict | None = None


class BadInputError(EngineError):
    """An input file or value is unusable (unreadable image, wrong mask size, impossible size...)."""


class ModelNotFoundError(EngineError):
    """A model directory is missing, incomplete or not a model."""


class IncompatibleModelError(EngineError):
    """The model exists but cannot do what was asked (wrong mode, newer format...)."""


class CancelledError(EngineError):
    """Work was cancelled by the user; training leaves a checkpoint behind for --resume."""

    exit_code = 130


class TrainingDivergedError(EngineError):
    """Training produced non-finite values: no model is written."""


class ExportError(EngineError):
    """A model cannot be exported to ONNX (damaged weights, unsupported shape, unwritable output...)."""


class OnnxFileError(EngineError):
    """An .onnx file is missing, truncated, corrupted or not a sampler exported by this engine."""


class BackendUnavailableError(EngineError):
    """The inference backend asked for cannot run here (no onnxruntime, or its CUDA provider fails)."""


def out_of_memory(exc: BaseException) -> EngineError | None:
    """What to tell the user when `exc` is the GPU's or the machine's memory running out; None otherwise."""
    torch = sys.modules.get("torch")  # not imported: it cannot have raised
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return EngineError(
            "the GPU ran out of memory: work at a smaller size (a smaller image or --max-size), or run on "
            "the CPU (--device cpu)"
        )
    if isinstance(exc, MemoryError):
        return EngineError("the machine ran out of memory: work at a smaller size, or close other programs")
    return None
