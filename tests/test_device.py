"""Device and precision choice, with CUDA GPUs of several generations played by patching torch.cuda (this
machine has none): which GPUs are used, which are refused with a reason, and when bf16 is chosen; and what
the user is told when the GPU's memory runs out, or the machine's (that one for real)."""

from __future__ import annotations

import logging

import pytest
import torch

from engine import device as device_module
from engine.device import default_precision, select_device
from engine.errors import BadInputError
from engine.families.consingan.config import Precision, training_configs

ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # what this project's torch was built for
GPUS = {  # name: compute capability
    "Tesla V100": (7, 0),
    "Tesla T4": (7, 5),
    "A100": (8, 0),
    "RTX 4090": (8, 9),
    "H100": (9, 0),
}


@pytest.fixture
def gpus(monkeypatch):
    """`gpus(name, ...)` makes torch see these GPUs, as cuda:0, cuda:1, ..."""

    def install(*names: str) -> None:
        caps = [GPUS[n] for n in names]

        def index(device=None) -> int:
            if isinstance(device, torch.device):
                return device.index or 0
            return device or 0

        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(names))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(ARCHS))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: caps[index(d)])
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: names[index(d)])

    return install


def test_no_gpu_means_the_cpu_and_asking_for_cuda_is_an_error(gpus):
    gpus()
    assert select_device(None) == torch.device("cpu")
    with pytest.raises(BadInputError, match="no CUDA GPU is available: use --device cpu"):
        select_device("cuda")


def test_a_supported_gpu_is_used_by_default(gpus):
    gpus("H100")
    assert select_device(None) == torch.device("cuda")
    assert select_device("cuda:0") == torch.device("cuda:0")


def test_a_gpu_older_than_this_torch_is_skipped_by_default_and_refused_when_asked_for(gpus, caplog):
    gpus("Tesla V100")
    with caplog.at_level(logging.WARNING, logger=device_module.__name__):
        assert select_device(None) == torch.device("cpu")
    assert (
        "not using the GPU: Tesla V100 (compute capability 7.0) is older than this PyTorch supports (7.5)"
        in (caplog.text)
    )
    with pytest.raises(BadInputError, match="--device cuda: Tesla V100 .* older .*; use --device cpu"):
        select_device("cuda")


def test_newer_gpus_of_a_built_major_version_are_accepted(gpus):
    gpus("RTX 4090")  # 8.9: runs the sm_86 code
    assert select_device(None) == torch.device("cuda")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cuda:2", "this machine has 2 CUDA GPU\\(s\\), cuda:0 to cuda:1"),
        ("cuda:x", "unknown device 'cuda:x'"),
    ],
)
def test_a_gpu_that_is_not_there_is_a_clear_error(gpus, name, message):
    gpus("A100", "A100")
    assert select_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(BadInputError, match=message):
        select_device(name)


@pytest.mark.parametrize(
    ("gpu", "precision"),
    [
        ("Tesla T4", Precision.FP32),
        ("A100", Precision.BF16),
        ("RTX 4090", Precision.BF16),
        ("H100", Precision.BF16),
    ],
)
def test_bf16_only_where_the_gpu_runs_it_natively(gpus, gpu, precision):
    gpus(gpu)
    assert default_precision(torch.device("cuda")) is precision
    assert default_precision(torch.device("cuda"), nfc=16) is Precision.FP32  # the tiny preset


def test_the_precision_of_the_gpu_asked_for_not_of_the_first(gpus):
    gpus("H100", "Tesla T4")
    assert default_precision(torch.device("cuda:0")) is Precision.BF16
    assert default_precision(torch.device("cuda:1")) is Precision.FP32


def test_asking_for_bf16_on_an_older_gpu_warns(gpus, caplog):
    gpus("Tesla T4")
    with caplog.at_level(logging.WARNING, logger=device_module.__name__):
        name, _, train = training_configs("harmonization", torch.device("cuda"), "fast", "bf16")
    assert train.precision is Precision.BF16  # as asked
    assert "bf16 on this GPU is emulated and slow" in caplog.text
    assert name == "fast"


def test_presets_default_to_paper_on_a_gpu_and_fast_on_the_cpu(gpus):
    gpus("H100")
    assert training_configs("generation", torch.device("cuda"))[0] == "paper"
    assert training_configs("generation", torch.device("cpu"))[0] == "fast"


def test_out_of_memory_says_what_to_do_on_the_command_line_and_in_the_daemon(
    tmp_path, monkeypatch, capsys, shared_images
):
    from editor_bridge.protocol import ErrorCode
    from engine import cli
    from engine.errors import out_of_memory
    from engine.families.consingan import training
    from engine.serve.jobs import error_code, error_message

    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "the GPU ran out of memory" in str(out_of_memory(gpu))
    assert "the machine ran out of memory" in str(out_of_memory(MemoryError()))
    assert out_of_memory(RuntimeError("something else")) is None
    assert error_code(gpu) is ErrorCode.JOB_FAILED
    assert error_message(gpu).startswith("the GPU ran out of memory: work at a smaller size")

    def train(*args, **kwargs):
        raise gpu

    monkeypatch.setattr(training, "train", train)
    image = shared_images / "harmonization" / "scream.jpg"
    code = cli.main(
        ["train", str(image), "--mode", "harmonization", "--preset", "tiny", "--out", str(tmp_path / "m")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("engine train: error: the GPU ran out of memory:") and "--device cpu" in err[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_running_out_of_the_machines_memory_is_a_one_line_error_with_either_backend(
    backend, tiny_models, tmp_path
):
    """A real failed allocation, not a patched one: `engine sample` in a process whose address space is
    capped just above what it holds, so the sample's feature maps cannot be allocated. PyTorch's CPU
    allocator raises a RuntimeError and onnxruntime its own error type; both say what to do."""
    import subprocess
    import sys
    import textwrap

    from tests.conftest import ROOT

    model, out = tiny_models["generation"], tmp_path / "samples"
    script = textwrap.dedent(f"""
        import resource, sys
        import cv2, onnxruntime, torch
        from engine import cli
        from engine.families.consingan import store
        from engine.runtime import ensure_sampler

        ensure_sampler(store.load_model({str(model)!r}))  # exported before the cap
        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (size + 600_000_000, resource.RLIM_INFINITY))
        sys.exit(cli.main(["sample", {str(model)!r}, "--out", {str(out)!r}, "--width", "3000",
                           "--height", "2250", "--backend", {backend!r}]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("engine sample")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert lines == [
        "engine sample: error: the machine ran out of memory: work at a smaller size, or close other programs"
    ]
    assert not out.exists() or not any(out.iterdir())
