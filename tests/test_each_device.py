"""The engine's path on every device this machine has: the CPU always, and a CUDA GPU where there is one.

CI and the development machine have no GPU, so the CUDA cases are skipped there; on a machine with one they
run with the rest of the suite (`python -m pytest tests/test_each_device.py`). Each case is the same check
on each device: training in bf16 autocast and resuming, the model loading on either device, sampling and
harmonizing with both backends (on CUDA: onnxruntime's CUDA provider with IO binding), and, on CUDA,
running out of the GPU's memory; and on CUDA, a Ray cluster's batch and train-many using the GPU.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from safetensors import safe_open

from engine.device import select_device
from engine.errors import CancelledError
from engine.families.consingan import apply, store, training
from engine.families.consingan.apply import TorchBackend
from engine.families.consingan.config import Precision, training_configs
from engine.families.consingan.modes import spec
from engine.imageio import Picture, mask_from_array, read_image, read_mask
from engine.runtime import OnnxBackend, SessionCache, ensure_sampler
from tests.conftest import ROOT, TRAIN_IMAGES

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=GPU)]
# Two runs of one fp32 network on one device: the same to float rounding. Across devices, or between
# PyTorch's and onnxruntime's convolutions on a GPU (both may use TF32 there), two levels of 8 bits.
SAME = {"cpu": 1e-4, "cuda": 2 / 255}
ACROSS_DEVICES = 2 / 255


@pytest.fixture(scope="module", params=DEVICES)
def trained(request, tmp_path_factory) -> tuple[torch.device, store.TrainedModel]:
    """A tiny harmonization model trained on the device in bf16 autocast, as `engine train` would."""
    device = select_device(request.param)
    _, model_cfg, train_cfg = training_configs("harmonization", device, "tiny", Precision.BF16)
    image = read_image(TRAIN_IMAGES["harmonization"]).rgb
    out = training.train(image, model_cfg, train_cfg, tmp_path_factory.mktemp(request.param) / "m", device)
    return device, store.load_model(out, device)


def naive(shared_images, scale: float = 1.0) -> tuple[Picture, np.ndarray]:
    import cv2

    picture = read_image(shared_images / "harmonization" / "scream_naive.jpg")
    mask = read_mask(shared_images / "harmonization" / "scream_naive_mask.jpg", picture.shape)
    if scale != 1.0:
        h, w = round(picture.shape[0] * scale), round(picture.shape[1] * scale)
        picture = Picture(cv2.resize(picture.rgb, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1))
        mask = mask_from_array(cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST))
    return picture, mask


def test_a_bf16_model_trained_on_the_device_is_stored_in_fp32_and_loads_on_either_device(trained):
    device, model = trained
    assert model.device.type == device.type
    with safe_open(str(model.path / "generator.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float32}
    assert all(np.isfinite(a) and a > 0 for a in model.noise_amps[1:])
    on_device = apply.sample(model, 2, seed=5)
    on_cpu = apply.sample(store.load_model(model.path, "cpu"), 2, seed=5)
    assert on_device[0].shape == (*model.shapes[-1], 3)
    assert all(np.isfinite(s).all() and s.std() > 0.01 for s in on_device)
    assert not np.array_equal(on_device[0], on_device[1])
    for a, b in zip(on_device, on_cpu, strict=True):  # the same noise (drawn on the CPU), the same images
        assert np.abs(a - b).max() <= (SAME["cpu"] if device.type == "cpu" else ACROSS_DEVICES)


def test_onnxruntime_runs_on_the_models_device_and_agrees_with_pytorch(trained, shared_images):
    device, model = trained
    onnx = OnnxBackend(ensure_sampler(model), str(device), cache=SessionCache())
    assert onnx.provider == ("CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider")
    picture, mask = naive(shared_images)
    a = apply.apply_to_selection(model, picture, mask, seed=1, backend=onnx)
    b = apply.apply_to_selection(model, picture, mask, seed=1, backend=TorchBackend(model))
    assert np.abs(a.rgb - b.rgb).max() <= SAME[device.type]
    h, w = model.shapes[-1]
    a = apply.sample(model, 1, h + 30, w * 2, seed=3, backend=onnx)[0]
    b = apply.sample(model, 1, h + 30, w * 2, seed=3, backend=TorchBackend(model))[0]
    assert a.shape == (h + 30, w * 2, 3) and np.abs(a - b).max() <= SAME[device.type]


def test_harmonizing_a_large_image_on_the_device_matches_the_cpu_and_keeps_the_rest(trained, shared_images):
    device, model = trained
    picture, mask = naive(shared_images, scale=4.0)  # about 1000 x 1276
    result = apply.apply_to_selection(model, picture, mask, seed=2)
    on_cpu = apply.apply_to_selection(store.load_model(model.path, "cpu"), picture, mask, seed=2)
    soft = apply.feathered_mask(mask, model.shapes[-1], spec(model.model.mode).mask_dilation)
    outside = soft == 0
    assert outside.any() and np.array_equal(result.rgb[outside], picture.rgb[outside])
    assert np.abs(result.rgb - on_cpu.rgb).max() <= (SAME["cpu"] if device.type == "cpu" else ACROSS_DEVICES)
    assert np.abs(result.rgb - picture.rgb)[mask > 0].mean() > 0.01, "nothing was harmonized"


@pytest.mark.parametrize("name", DEVICES)
def test_training_cancelled_on_the_device_resumes_to_a_whole_model(name, tmp_path):
    device = select_device(name)
    _, model_cfg, train_cfg = training_configs("generation", device, "tiny", Precision.BF16, iters=6)
    image = read_image(TRAIN_IMAGES["generation"]).rgb
    cancel = threading.Event()

    def stop_in_stage_two(p: training.Progress) -> None:
        if p.stage == 1 and p.iteration == 3:
            cancel.set()

    with pytest.raises(CancelledError, match="--resume"):
        training.train(image, model_cfg, train_cfg, tmp_path / "m", device, stop_in_stage_two, cancel)
    resumed = store.load_model(training.resume(tmp_path / "m", device), device)
    assert len(resumed.shapes) == model_cfg.n_stages
    sample = apply.sample(resumed, 1, seed=0)[0]
    assert np.isfinite(sample).all() and sample.std() > 0.01


@GPU
def test_running_out_of_gpu_memory_is_a_one_line_error(trained, tmp_path):
    """A real failed allocation: `engine sample` with PyTorch's share of the GPU capped at 1%."""
    device, model = trained
    if device.type != "cuda":
        pytest.skip("a CUDA case")
    script = textwrap.dedent(f"""
        import sys, torch
        from engine import cli

        torch.cuda.set_per_process_memory_fraction(0.01)
        sys.exit(cli.main(["sample", {str(model.path)!r}, "--out", {str(tmp_path / "s")!r}, "--backend",
                           "torch", "--device", "cuda", "--width", "8000", "--height", "6000"]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("engine sample")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("engine sample: error: the GPU ran out of memory: ")


@GPU
def test_a_ray_cluster_with_a_gpu_runs_batch_and_train_many_on_it(trained, tmp_path, shared_images):
    """`engine batch --cluster` gives its actor the GPU (onnxruntime's CUDA provider) and its files match a
    local batch on the GPU; `engine train-many --cluster` trains its row with the GPU."""
    import json

    import cv2
    from cli_helpers import json_result, run_engine

    from bench.local_cluster import LocalCluster

    device, model = trained
    if device.type != "cuda":
        pytest.skip("a CUDA case")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("scream", "oil_tree"):
        image = cv2.imread(str(shared_images / "harmonization" / f"{name}_naive.jpg"))
        cv2.imwrite(str(inputs / f"{name}.png"), cv2.resize(image, (320, 240)))
    (tmp_path / "logs").mkdir()
    cluster = LocalCluster(tmp_path / "logs").start(workers=0)  # `ray start` finds the GPU itself
    try:
        batch = ("batch", model.path, "--input", inputs, "--json")
        remote = json_result(run_engine(*batch, "--output", tmp_path / "ray", "--cluster", cluster.address))
        local = json_result(run_engine(*batch, "--output", tmp_path / "local", "--device", "cuda"))
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"image,mode,preset,name\n{TRAIN_IMAGES['harmonization']},harmonization,tiny,a\n")
        trained_many = json_result(
            run_engine(
                "train-many", manifest, "--out", tmp_path / "models", "--cluster", cluster.address, "--json"
            )
        )
    finally:
        cluster.stop()
    assert remote["done"] == local["done"] == 2 and remote["workers"]["gpus"] == 1, remote
    for name in ("scream.png", "oil_tree.png"):
        a, b = (cv2.imread(str(tmp_path / d / name)).astype(int) for d in ("ray", "local"))
        assert np.abs(a - b).max() <= 2
    assert trained_many["trained"] == 1, trained_many
    meta = json.loads((tmp_path / "models" / "a" / "model.json").read_text())
    assert meta["info"]["device"] == "cuda", meta["info"]
