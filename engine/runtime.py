"""Inference with onnxruntime: cached sessions on the CUDA or CPU provider, exporting on first use.

Importing this module does not import torch (the daemon and plugins can use it); only exporting a model
and handing tensors to the engine do, and they import it when called.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from engine.errors import (
    BackendUnavailableError,
    BadInputError,
    DiskFullError,
    EngineError,
    ExportError,
    OnnxFileError,
    out_of_memory,
)
from engine.sampler_file import SAMPLER_FILE, verify_file
from engine.standalone import (
    CPU,
    CUDA,
    FORMAT,
    load_cuda_libraries,
    read_metadata,
    session_options,
)

if TYPE_CHECKING:
    import torch

    from engine.families.consingan.apply import Backend
    from engine.families.consingan.store import TrainedModel

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch")
DEFAULT_BACKEND = "onnxruntime"


def cuda_provider_options(device_id: int = 0) -> dict[str, str]:
    return {
        "device_id": str(device_id),
        # Grow the memory arena by what a request needs, not by powers of two: a long-running engine
        # keeps several sessions, and an arena never shrinks.
        "arena_extend_strategy": "kSameAsRequested",
        # Sizes change from request to request; an exhaustive cuDNN search would re-run (seconds) for
        # every new size, while the heuristic choice is within a few percent for 3x3 convolutions.
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
    }


def _create_session(source: str, device: str, format: str = FORMAT) -> ort.InferenceSession:
    """`device`: "cpu", "cuda" or "cuda:N"; `format`: what the file must be (engine.sampler_file)."""
    verify_file(source, format)
    gpu = device.startswith("cuda")
    if gpu:
        if CUDA not in ort.get_available_providers():
            raise BackendUnavailableError(
                "this onnxruntime has no CUDA provider: install onnxruntime-gpu, or use --device cpu"
            )
        load_cuda_libraries()
        index = int(device.partition(":")[2] or 0)
        providers: list = [(CUDA, cuda_provider_options(index)), CPU]
    else:
        providers = [CPU]
    try:
        session = ort.InferenceSession(source, session_options(), providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise OnnxFileError(
            f"onnxruntime cannot load {source} (truncated or corrupted?): export it again ({e})"
        ) from e
    # onnxruntime quietly drops to the CPU when CUDA or cuDNN libraries are missing: refuse instead, so
    # that a broken GPU setup shows up as an error and not as a slow engine.
    if gpu and session.get_providers()[0] != CUDA:
        raise BackendUnavailableError(
            "onnxruntime could not start its CUDA provider (CUDA/cuDNN libraries missing or mismatched?): "
            "fix the CUDA install, or use --device cpu or --backend torch"
        )
    log.info("onnxruntime session for %s on %s", source, session.get_providers()[0])
    return session


class SessionCache:
    """Sessions keyed by (file, modification time, size, device), least recently used dropped first.

    Creating a session optimises the graph (tens to hundreds of ms), so every request for the same file
    reuses one; a re-exported file has a new mtime and gets a fresh session, replacing the stale one.
    One session serves every input size (the graph's dimensions are symbolic).
    """

    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._sessions: collections.OrderedDict[tuple, ort.InferenceSession] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path, device: str = "cpu", format: str = FORMAT) -> ort.InferenceSession:
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError as e:
            raise OnnxFileError(f"no ONNX file at {path}: export one with `engine export`") from e
        key = (str(path), stat.st_mtime_ns, stat.st_size, device)
        with self._lock:
            if key in self._sessions:
                self.hits += 1
                self._sessions.move_to_end(key)
                return self._sessions[key]
            self.misses += 1
        session = _create_session(str(path), device, format)
        with self._lock:
            for old in [k for k in self._sessions if k[0] == key[0] and k[3] == device]:
                del self._sessions[old]
            self._sessions[key] = session
            while len(self._sessions) > self.maxsize:
                self._sessions.popitem(last=False)
        return session

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


SESSIONS = SessionCache()


def run_options(release_memory: bool) -> ort.RunOptions:
    """`release_memory`: the run gives what its CPU memory arena grew by back to the system at its end. A
    long-running engine would otherwise hold the peak of the largest sample it made (a 4000x3000 one:
    8 GB more, against 3 GB) for the session's lifetime; the next large run costs more (about 12 s
    against 9 s there), so a process that ends after its work does not ask for it."""
    options = ort.RunOptions()
    if release_memory:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class GraphRunner:
    """An exported graph of another family (a CycleGAN generator, a set generator) on onnxruntime: its
    session from SESSIONS, checked as `format`; `run` maps a failure to out-of-memory or a one-line error."""

    name = "onnxruntime"
    failure = "onnxruntime could not run the generator"  # the one-line error's beginning

    def __init__(self, path: Path, device: str, format: str, release_memory: bool = False) -> None:
        self.path = Path(path)
        self.session = SESSIONS.get(self.path, device, format)
        self.options = run_options(release_memory)
        self.provider = self.session.get_providers()[0]
        self.gpu = self.provider == CUDA

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feed, self.options)
        except Exception as e:
            memory = out_of_memory(e, gpu=self.gpu)
            error: EngineError = memory or BadInputError(f"{self.failure} ({e})")
            raise error from e

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "provider": self.provider, "onnx": str(self.path)}


class OnnxBackend:
    """The Backend protocol (engine.families.consingan.apply) on an exported sampler file."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        cache: SessionCache = SESSIONS,
        release_memory: bool = False,
    ) -> None:
        self.path = Path(path).resolve()
        self.device = device
        self.run_options = run_options(release_memory)
        self.session = cache.get(self.path, device)
        self.meta = read_metadata(self.session)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.provider = self.session.get_providers()[0]

    def describe(self) -> dict:
        return {"backend": self.name, "provider": self.provider, "onnx": str(self.path)}

    def run(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Stage inputs as float32 arrays -> N x 3 x H x W image in [-1, 1]."""
        if len(arrays) != len(self.input_names):
            raise BadInputError(f"the sampler takes {len(self.input_names)} stage inputs, got {len(arrays)}")
        pairs = zip(self.input_names, arrays, strict=True)
        feed = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in pairs}
        try:
            return self.session.run(None, feed, self.run_options)[0]
        except Exception as e:
            raise self._run_error(e) from e

    def _run_error(self, exc: Exception) -> EngineError:
        if (memory := out_of_memory(exc, gpu=self.provider == CUDA)) is not None:
            return memory
        return BadInputError(f"onnxruntime could not run the sampler on these input sizes ({exc})")

    def generate(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        import torch

        if self.provider == CUDA:
            return self._generate_bound(inputs)
        out = self.run([x.detach().float().cpu().numpy() for x in inputs])
        return torch.from_numpy(out).to(inputs[0].device)

    def _generate_bound(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """IO binding: CUDA tensors are read where they are, with no host round trip of the inputs."""
        import torch

        binding = self.session.io_binding()
        keep = []  # the bound buffers must outlive the run
        for name, x in zip(self.input_names, inputs, strict=True):
            x = x.detach().float().contiguous()
            keep.append(x)
            if x.is_cuda:
                binding.bind_input(name, "cuda", x.device.index or 0, np.float32, list(x.shape), x.data_ptr())
            else:
                binding.bind_cpu_input(name, x.numpy())
        if any(x.is_cuda for x in keep):
            # onnxruntime reads on its own stream: the producers on torch's stream must have finished.
            torch.cuda.current_stream(inputs[0].device).synchronize()
        binding.bind_output("image", "cuda", inputs[0].device.index or 0)
        try:
            self.session.run_with_iobinding(binding, self.run_options)
        except Exception as e:
            raise self._run_error(e) from e
        # On the CPU: every caller turns the image into pixels there, so a copy back to the GPU is waste.
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0])


def _cache_dir() -> Path:
    from engine.files import user_cache

    return user_cache("samplers")


_CHECKED: dict[tuple, str] = {}  # (path, mtime_ns, size) -> source digest recorded in that file


def _recorded_digest(path: Path, format: str) -> str | None:
    """The source digest stored in an existing export, or None when there is no usable file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CHECKED:
        try:
            _CHECKED[key] = verify_file(path, format)["source_digest"]
        except OnnxFileError as e:  # damaged or foreign: it is only a cache, so export it again
            log.warning("re-exporting %s: the existing file is unusable (%s)", path, e)
            return None
    return _CHECKED[key]


def ensure_export(
    digest: str, in_model_dir: Path | None, export: Callable[[Path], Path], format: str = FORMAT
) -> Path:
    """An export made on first use and reused while what it is made from (`digest`) is unchanged.

    It lives in the model directory (`in_model_dir`, e.g. MODEL_DIR/sampler.onnx); a model held only in
    memory, or whose directory cannot be written, uses a per-user cache keyed by the digest.
    `export(path)` writes the file."""
    candidates = [in_model_dir] if in_model_dir is not None else []
    candidates.append(_cache_dir() / f"{digest[:32]}.onnx")
    for path in candidates:
        if _recorded_digest(path, format) == digest:
            return path
    last_error: ExportError | DiskFullError | None = None
    for path in candidates:
        try:
            return export(path)
        except (ExportError, DiskFullError) as e:
            if isinstance(e, ExportError) and not isinstance(e.__cause__, OSError):
                raise
            log.warning("cannot write %s (%s); trying the next place", path, e)
            last_error = e
    if isinstance(last_error, DiskFullError):
        raise last_error
    raise ExportError(f"no writable place for the exported file: {last_error}")


def ensure_sampler(model: TrainedModel) -> Path:
    """The model's exported sampler (MODEL_DIR/sampler.onnx), exported on first use (ensure_export)."""
    from engine.families.consingan.onnx_export import export, source_digest

    in_model_dir = model.path / SAMPLER_FILE if model.path is not None else None
    return ensure_export(source_digest(model), in_model_dir, lambda path: export(model, path))


def make_backend(model: TrainedModel, name: str = DEFAULT_BACKEND, release_memory: bool = False) -> Backend:
    """The backend that runs `model`: onnxruntime (default; on the model's device) or torch.
    `release_memory`: onnxruntime gives memory back after each run (`run_options`), for the daemon."""
    if name == "torch":
        from engine.families.consingan.apply import TorchBackend

        return TorchBackend(model)
    if name != "onnxruntime":
        raise BadInputError(f"unknown backend '{name}': use one of {', '.join(BACKENDS)}")
    return OnnxBackend(ensure_sampler(model), str(model.device), release_memory=release_memory)


def describe_backend(backend: Backend) -> dict:
    """What ran, for --json results and logs: backend name and execution provider (or torch device)."""
    if isinstance(backend, OnnxBackend):
        return backend.describe()
    model = getattr(backend, "model", None)
    device = str(model.device) if model is not None else "unknown"
    return {"backend": "torch", "provider": device}
