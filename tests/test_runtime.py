"""onnxruntime backend: default path, session cache, providers and threads, inference without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import runtime
from engine.errors import BackendUnavailableError, BadInputError
from engine.families.consingan.apply import TorchBackend
from engine.families.consingan.store import load_model
from engine.runtime import OnnxBackend, SessionCache, ensure_sampler, make_backend
from engine.standalone import retarget_shapes, session_options, thread_counts
from tests.import_blocker import blocker_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generation(tiny_models):
    model = load_model(tiny_models["generation"])
    return model, ensure_sampler(model)


def test_default_cli_path_runs_onnxruntime(tiny_models, tmp_path, capsys, monkeypatch):
    from engine.cli import main

    # Were the torch generator used anywhere on the default path, this would fail the command.
    def no_torch(self, inputs):
        raise AssertionError("the default path ran the torch generator")

    monkeypatch.setattr(TorchBackend, "generate", no_torch)
    model_dir = tiny_models["generation"]
    args = [
        "sample",
        str(model_dir),
        "--out",
        str(tmp_path / "a"),
        "--width",
        "60",
        "--json",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "onnxruntime" and result["provider"] == "CPUExecutionProvider"
    assert Path(result["onnx"]) == (model_dir / "sampler.onnx").resolve() and result["width"] == 60
    mtime = (model_dir / "sampler.onnx").stat().st_mtime_ns
    hits = runtime.SESSIONS.hits
    assert main([*args[:3], str(tmp_path / "b"), *args[4:]]) == 0
    capsys.readouterr()
    assert runtime.SESSIONS.hits == hits + 1  # the second command reused the cached session...
    assert (model_dir / "sampler.onnx").stat().st_mtime_ns == mtime  # ...and the exported file


def test_torch_backend_still_available(tiny_models, tmp_path, capsys):
    from engine.cli import main

    args = ["sample", str(tiny_models["retarget"]), "--out", str(tmp_path), "--json", "--backend", "torch"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "torch" and result["provider"] == "cpu"


def test_make_backend(generation):
    model, path = generation
    backend = make_backend(model)
    assert isinstance(backend, OnnxBackend) and backend.path == path.resolve()
    assert backend.provider == "CPUExecutionProvider"
    assert isinstance(make_backend(model, "torch"), TorchBackend)
    with pytest.raises(BadInputError, match="onnxruntime"):
        make_backend(model, "tensorflow")


def test_session_cache_reuses_and_refreshes(generation, tmp_path):
    _, path = generation
    cache = SessionCache(maxsize=2)
    copies = [shutil.copy(path, tmp_path / f"s{i}.onnx") for i in range(3)]
    first = cache.get(copies[0])
    assert cache.get(copies[0]) is first and (cache.hits, cache.misses) == (1, 1)
    os.utime(copies[0], ns=(0, 1))  # a re-export changes the mtime: a fresh session replaces the old one
    assert cache.get(copies[0]) is not first and len(cache._sessions) == 1
    cache.get(copies[1])
    cache.get(copies[2])  # least recently used (copies[0]) goes
    assert len(cache._sessions) == 2 and not any(
        k[0] == str(Path(copies[0]).resolve()) for k in cache._sessions
    )


def test_one_session_serves_every_size(generation):
    model, path = generation
    cache = SessionCache()
    backend = OnnxBackend(path, cache=cache)
    g = model.generator
    for h, w in [(32, 48), (45, 45), (70, 30)]:
        shapes = retarget_shapes([list(s) for s in model.shapes], h, w)
        out = backend.generate([torch.randn(1, *g.noise_shape(k, *s)) for k, s in enumerate(shapes)])
        assert out.shape == (1, 3, h, w)
    assert cache.misses == 1


def test_bad_input_sizes_are_an_engine_error(generation):
    _, path = generation
    with pytest.raises(BadInputError, match="stage inputs"):
        OnnxBackend(path).run([np.zeros((1, 3, 16, 24), np.float32)])
    with pytest.raises(BadInputError, match="sizes"):
        OnnxBackend(path).run(
            [np.zeros((1, 3, 16, 24), np.float32), np.zeros((1, 8, 5, 5), np.float32)] * 1
            + [np.zeros((1, 8, 90, 9), np.float32)]
        )


def test_cuda_without_a_working_provider_is_refused(generation):
    """No quiet fall back to the CPU: asking for CUDA where it cannot run is an error that says so."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        OnnxBackend(generation[1], device="cuda", cache=SessionCache())


def test_a_process_without_torch_loads_the_cuda_libraries_for_onnxruntime(generation):
    """onnxruntime's CUDA provider needs the CUDA libraries that pip installs with PyTorch; `import torch`
    loads them, and a torch-free process asking for CUDA (the standalone sampler, the runtime module) has
    them loaded too. Without a GPU the session then falls to the CPU only for want of the driver."""
    import importlib.util

    if importlib.util.find_spec("nvidia") is None:
        pytest.skip("no pip-installed CUDA libraries (nvidia-* wheels) in this environment")
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json, re
        from engine.standalone import CUDA, CPU, Sampler
        try:
            sampler = Sampler({str(generation[1])!r}, providers=[(CUDA, {{}}), CPU])
            provider = sampler.session.get_providers()[0]
        except Exception as e:
            provider = repr(e)
        maps = open("/proc/self/maps").read()
        print(json.dumps({{
            "libraries": sorted(set(re.findall(r"lib(?:cublasLt|cublas|cudart|cudnn)\\.so", maps))),
            "provider": provider,
            "torch": "torch" in sys.modules,
        }}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["torch"]
    assert result["libraries"] == ["libcublas.so", "libcublasLt.so", "libcudart.so", "libcudnn.so"]
    if torch.cuda.is_available():
        assert result["provider"] == "CUDAExecutionProvider"


def test_a_backend_that_releases_memory_holds_less_after_a_large_sample(generation):
    """The daemon's backends give onnxruntime's arena growth back after each run; a command's keep it."""

    def held_after_sample(release: bool) -> float:
        script = textwrap.dedent(f"""
            from engine.families.consingan import apply, store
            from engine.runtime import OnnxBackend, SessionCache

            def resident():
                with open("/proc/self/status") as status:
                    return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

            model = store.load_model({str(generation[0].path)!r})
            backend = OnnxBackend({str(generation[1])!r}, cache=SessionCache(), release_memory={release})
            apply.sample(model, 1, 48, 64, backend=backend)  # the session's first run
            before = resident()
            apply.sample(model, 1, 1500, 2000, backend=backend)
            print(resident() - before)
        """)
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
        )
        return int(done.stdout.strip().splitlines()[-1]) / 1e9

    kept, released = held_after_sample(False), held_after_sample(True)
    assert kept > 0.3, kept  # a tiny model's 2000x1500 sample grows the arena by about 0.7 GB
    assert released < kept / 2, (released, kept)
    print(f"held after a 2000x1500 sample: {kept:.2f} GB kept, {released:.2f} GB with release_memory")


def test_thread_settings():
    assert thread_counts(2) == (2, 1)
    assert thread_counts(128) == (32, 1)
    small = session_options(2)
    assert small.intra_op_num_threads == 2 and small.inter_op_num_threads == 1
    assert small.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(64).intra_op_num_threads == 32


def test_retarget_shapes_match_the_engine():
    from engine.families.consingan.pyramid import retarget_shapes as engine_retarget

    trained = [(25, 34), (32, 42), (42, 56), (63, 84), (126, 167), (188, 250)]
    for h, w in [(188, 250), (100, 400), (1024, 1365), (30, 30)]:
        assert retarget_shapes([list(s) for s in trained], h, w) == engine_retarget(trained, h, w)


BLOCK_TORCH = blocker_source("torch")


def test_inference_without_torch(generation, tmp_path):
    """The standalone module samples with onnxruntime and numpy in a process where torch cannot load, and
    gives the same image as the torch generator for the same noise."""
    model, path = generation
    rng = np.random.default_rng(7)
    g = model.generator
    shapes = retarget_shapes([list(s) for s in model.shapes], 40, 56)
    noise = [rng.standard_normal((1, *g.noise_shape(k, *s))).astype(np.float32) for k, s in enumerate(shapes)]
    np.savez(tmp_path / "noise.npz", *noise)
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json
        import numpy as np
        try:
            import torch
            raise SystemExit("torch was importable")
        except ImportError:
            pass
        from engine.standalone import Sampler, write_png
        from engine.runtime import OnnxBackend

        sampler = Sampler({str(path)!r})
        arrays = np.load({str(tmp_path / "noise.npz")!r})
        out = sampler.run([arrays[f"arr_{{k}}"] for k in range(len(arrays.files))])
        np.save({str(tmp_path / "out.npy")!r}, out)
        image = sampler.sample(height=50, width=64, seed=3)
        write_png({str(tmp_path / "sample.png")!r}, image)
        backend = OnnxBackend({str(path)!r})  # the engine's own runtime module is torch-free too
        assert "torch" not in sys.modules
        result = {{"shape": list(image.shape), "std": float(image.std()), "provider": backend.provider}}
        print(json.dumps(result))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [50, 64, 3] and result["std"] > 1.0
    ref = TorchBackend(model).generate([torch.from_numpy(x) for x in noise]).numpy()
    assert np.abs(np.load(tmp_path / "out.npy") - ref).max() <= 1e-4
    png = (tmp_path / "sample.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 500
    import cv2

    assert cv2.imread(str(tmp_path / "sample.png")).shape == (50, 64, 3)
