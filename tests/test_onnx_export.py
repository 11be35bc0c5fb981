"""ONNX export: parity with PyTorch per mode and size, fp16 bound, metadata, damaged files, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import ExportError, OnnxFileError
from engine.families.consingan.apply import TorchBackend, output_shapes
from engine.families.consingan.config import ModelConfig
from engine.families.consingan.onnx_export import FP16_BOUND, export, load_checked
from engine.families.consingan.store import load_model
from engine.runtime import OnnxBackend, SessionCache, ensure_sampler

MODES = ["generation", "retarget", "harmonization", "editing"]
FP32_BOUND = 1e-4


def stage_inputs(model, shapes, seed: int) -> list[torch.Tensor]:
    """Noise for every stage; conditional modes get an image-like stage 0 (values in [-1, 1])."""
    rng = torch.Generator().manual_seed(seed)
    g = model.generator
    inputs = [torch.randn(1, *g.noise_shape(k, *s), generator=rng) for k, s in enumerate(shapes)]
    if model.model.mode.value in ("harmonization", "editing"):
        inputs[0] = torch.rand(inputs[0].shape, generator=rng) * 2 - 1
    return inputs


def sizes(model) -> list[list[tuple[int, int]]]:
    """The training pyramid and two retargeted ones (larger and non-proportional, smaller and taller)."""
    th, tw = model.shapes[-1]
    return [
        list(model.shapes),
        output_shapes(model, th + 9, tw * 3 // 2),
        output_shapes(model, th * 5 // 4, tw - 7),
    ]


@pytest.fixture(scope="module")
def samplers(tiny_models) -> dict:
    """Each tiny model with its fp32 sampler, exported through the engine's first-use path (shared with
    test_runtime: the file lands in the model directory)."""
    out = {}
    for mode in MODES:
        model = load_model(tiny_models[mode])
        out[mode] = (model, ensure_sampler(model))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_parity_fp32_at_three_sizes(samplers, mode):
    model, path = samplers[mode]
    onnx_backend, torch_backend = OnnxBackend(path, cache=SessionCache()), TorchBackend(model)
    for i, shapes in enumerate(sizes(model)):
        inputs = stage_inputs(model, shapes, seed=i)
        ours, ref = onnx_backend.generate(inputs), torch_backend.generate(inputs)
        assert ours.shape == ref.shape == (1, 3, *shapes[-1])
        diff = float((ours - ref).abs().max())
        print(f"parity {mode} {shapes[-1]}: max abs diff {diff:.1e}")  # docs/onnx.md quotes these (-s)
        assert diff <= FP32_BOUND, (mode, shapes[-1])


def test_batch_dimension_is_dynamic(samplers):
    model, path = samplers["retarget"]
    inputs = [torch.cat([x, -x]) for x in stage_inputs(model, model.shapes, seed=5)]
    ours = OnnxBackend(path).generate(inputs)
    ref = TorchBackend(model).generate(inputs)
    assert ours.shape[0] == 2 and float((ours - ref).abs().max()) <= FP32_BOUND


def test_fp16_export_cli_within_stated_bound(samplers, tmp_path, capsys):
    from engine.cli import main

    model, path32 = samplers["harmonization"]  # instance norm and an injected image
    path16 = tmp_path / "harmonization16.onnx"
    assert main(["export", str(model.path), "--out", str(path16), "--fp16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["onnx"] == str(path16) and result["precision"] == "fp16"
    assert load_checked(path16)["precision"] == "fp16"
    assert main(["export", str(tmp_path / "missing"), "--out", str(path16), "--json"]) != 0
    fp32, fp16 = OnnxBackend(path32), OnnxBackend(path16)
    for i, shapes in enumerate(sizes(model)):
        inputs = stage_inputs(model, shapes, seed=10 + i)
        diff = float((fp16.generate(inputs) - fp32.generate(inputs)).abs().max())
        assert diff <= FP16_BOUND, (shapes[-1], diff)
    import onnx

    def weight_bytes(path):
        return sum(len(t.raw_data) for t in onnx.load(str(path)).graph.initializer)

    # The weights really are stored in half precision (instance-norm scales stay fp32).
    assert weight_bytes(path16) < 0.6 * weight_bytes(path32)


def test_metadata_round_trip(samplers):
    model, path = samplers["generation"]
    meta = load_checked(path)
    assert meta["format_version"] == 1 and meta["mode"] == "generation" and meta["precision"] == "fp32"
    assert ModelConfig.from_dict(meta["model_config"]) == model.model
    assert [tuple(s) for s in meta["stage_shapes"]] == list(model.shapes)
    assert meta["noise_amps"] == pytest.approx(model.noise_amps)
    assert meta["inputs"] == ["stage0", "noise1", "noise2"]
    assert meta["noise_pad"] == 2 * model.model.num_layers and meta["conditional"] is False
    # The torch-free reader (onnxruntime's view of the same props) agrees.
    assert OnnxBackend(path).meta == meta


def test_graph_is_dynamic_and_named(samplers):
    import onnx

    graph = onnx.load(str(samplers["editing"][1])).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert dims["stage0"] == ["batch", 3, "stage0_height", "stage0_width"]
    assert dims["noise2"] == ["batch", 8, "noise2_height", "noise2_width"]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [
        "batch",
        3,
        "height",
        "width",
    ]


@pytest.mark.parametrize("damage", ["truncated", "weights_flipped", "garbage", "empty"])
def test_damaged_file_gives_clear_error(samplers, tmp_path, damage):
    data = samplers["retarget"][1].read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "weights_flipped":
        # Flip bytes inside a weight tensor: still valid protobuf, so only the checksum can tell.
        import onnx

        weights = max(onnx.load_from_string(data).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
        at = data.index(weights) + len(weights) // 2
        data = data[:at] + bytes(b ^ 0xFF for b in data[at : at + 8]) + data[at + 8 :]
    elif damage == "garbage":
        data = b"\x00\xffnot an onnx file" * 100
    else:
        data = b""
    path = tmp_path / "damaged.onnx"
    path.write_bytes(data)
    with pytest.raises(OnnxFileError, match="export"):
        load_checked(path)
    with pytest.raises(OnnxFileError, match="export"):
        OnnxBackend(path, cache=SessionCache())


def test_missing_file_and_foreign_onnx(tmp_path):
    import onnx
    from onnx import helper

    with pytest.raises(OnnxFileError, match="engine export"):
        load_checked(tmp_path / "nope.onnx")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    foreign = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [x],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(OnnxFileError, match="not a sampler"):
        load_checked(tmp_path / "foreign.onnx")


def test_refuses_unexportable_models(samplers, tmp_path):
    model, _ = samplers["harmonization"]
    broken = load_model(model.path)
    with torch.no_grad():
        next(broken.generator.parameters())[0, 0, 0, 0] = float("nan")
    with pytest.raises(ExportError, match="retrain"):
        export(broken, tmp_path / "x.onnx")
    huge = load_model(model.path)
    with torch.no_grad():
        next(huge.generator.parameters())[0, 0, 0, 0] = 1e6
    with pytest.raises(ExportError, match="fp16"):
        export(huge, tmp_path / "x.onnx", fp16=True)
    short = load_model(model.path)
    short.shapes = short.shapes[:1]
    with pytest.raises(ExportError, match="damaged"):
        export(short, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_unwritable_output_is_refused_without_leftovers(samplers, tmp_path, monkeypatch):
    import engine.families.consingan.onnx_export as onnx_export
    import engine.onnx_graph

    def fail(path, data):
        raise PermissionError(13, "Permission denied")

    model, _ = samplers["harmonization"]
    monkeypatch.setattr(engine.onnx_graph, "atomic_write_bytes", fail)
    monkeypatch.setattr(onnx_export, "export_model", lambda m, fp16=False: __import__("onnx").ModelProto())
    with pytest.raises(ExportError, match="--out"):
        export(model, tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_apply_paths_agree_end_to_end(samplers):
    """Harmonize and sample through consingan.apply with both backends: the same images (to 1e-4)."""
    from engine.families.consingan import apply
    from engine.imageio import Picture

    model, path = samplers["harmonization"]
    rng = np.random.default_rng(0)
    picture = Picture(rng.random((70, 90, 3), dtype=np.float32), None, 8)
    mask = np.zeros((70, 90), np.float32)
    mask[20:50, 30:60] = 1
    a = apply.apply_to_selection(model, picture, mask, seed=1, backend=OnnxBackend(path))
    b = apply.apply_to_selection(model, picture, mask, seed=1, backend=TorchBackend(model))
    assert np.abs(a.rgb - b.rgb).max() <= FP32_BOUND
    model, path = samplers["generation"]
    a = apply.sample(model, 2, 40, 70, seed=3, backend=OnnxBackend(path))
    b = apply.sample(model, 2, 40, 70, seed=3, backend=TorchBackend(model))
    assert all(np.abs(x - y).max() <= FP32_BOUND for x, y in zip(a, b, strict=True))


def test_exporter_notice_about_torchvision_is_not_shown(capfd):
    """torch's exporter warns that torchvision (which the engine does not use) is not installed, once per
    torchvision op; the engine silences exactly that notice, and the exporter's other warnings still show."""
    import logging

    import engine.families.consingan.onnx_export  # noqa: F401 - installs the filter

    exporter = logging.getLogger("torch.onnx._internal.exporter._registration")
    exporter.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
    exporter.warning("another exporter warning")
    err = capfd.readouterr().err
    assert "torchvision is not installed" not in err
    assert "another exporter warning" in err
