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


class ModelDamagedError(ModelNotFoundError):
    """A model directory's files are there but unusable (non-finite weights, nonsense values)."""


class IncompatibleModelError(EngineError):
    """The model exists but cannot do what was asked (wrong mode, newer format...)."""


class DiskFullError(EngineError):
    """A write found its disk full (or a quota reached); nothing half-written was left (engine.files)."""

    def __init__(self, where: str, amount: str, next_step: str = "try again") -> None:
        super().__init__(f"no space left on {where}: {amount}, then {next_step}")
        self.where, self.amount, self.next_step = where, amount, next_step

    def then(self, next_step: str) -> "DiskFullError":
        """The same error with another next step (`engine train --resume DIR`, say)."""
        return DiskFullError(self.where, self.amount, next_step)


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


GPU_MEMORY = (
    "the GPU ran out of memory: work at a smaller size (a smaller image or --max-size), or run on the CPU "
    "(--device cpu)"
)
MACHINE_MEMORY = "the machine ran out of memory: work at a smaller size, or close other programs"
# What a failed allocation says where it is not a MemoryError or torch.OutOfMemoryError: PyTorch's CPU
# allocator (a RuntimeError) and onnxruntime's memory arena (its own error types, CPU or GPU).
_ALLOCATION_FAILED = ("DefaultCPUAllocator: can't allocate memory", "Failed to allocate memory")


def out_of_memory(exc: BaseException, gpu: bool = False) -> EngineError | None:
    """What to tell the user when `exc` is the GPU's or the machine's memory running out; None otherwise.
    `gpu`: the failed allocation was for a GPU, where the exception does not say so itself (onnxruntime)."""
    torch = sys.modules.get("torch")  # not imported: it cannot have raised
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return EngineError(GPU_MEMORY)
    if isinstance(exc, MemoryError) or any(text in str(exc) for text in _ALLOCATION_FAILED):
        return EngineError(GPU_MEMORY if gpu else MACHINE_MEMORY)
    return None
