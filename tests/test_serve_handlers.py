"""The daemon's request handlers in-process (engine/serve/handlers/): how each request is checked and
where it goes, without a daemon process (tests/test_serve_daemon.py runs them end to end)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from editor_bridge import frames
from editor_bridge.protocol import (
    ApplyRequest,
    ChannelOrder,
    DeleteModelRequest,
    PingRequest,
    TrainRequest,
)
from engine import families
from engine.errors import BadInputError, IncompatibleModelError
from engine.precision import Precision
from engine.serve.handlers import TABLE, answers, apply, lane_of, models_used, train
from engine.serve.handlers.context import Context
from engine.serve.jobs import QUICK, TRAIN


def context(tmp_path: Path, precision: Precision | None = None) -> Context:
    from engine.serve.registry import Registry

    # Only what checking a request reads: no server, no job lanes.
    return Context(None, None, Registry(tmp_path / "models"), torch.device("cpu"), "torch", precision,  # type: ignore[arg-type]
                   tmp_path, threading.Event())  # fmt: skip


@pytest.fixture
def with_mean_colour(monkeypatch):
    """The tests' throw-away family registered beside ConSinGAN."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "families"))
    monkeypatch.setenv("ENGINE_FAMILIES", "mean_colour")
    monkeypatch.setattr(families, "_families", None)
    yield
    monkeypatch.setattr(families, "_families", None)


def image(buffers: list, h: int = 6, w: int = 5):
    return frames.attach(buffers, np.zeros((h, w, 4), np.uint8), ChannelOrder.RGBA)


def test_every_request_type_has_its_handler():
    assert TABLE[PingRequest] is answers.ping and TABLE[DeleteModelRequest] is answers.delete_model
    assert TABLE[TrainRequest] is train.accept and TABLE[ApplyRequest] is apply.accept


def test_lanes_and_the_models_a_request_reads():
    buffers: list = []
    trains = TrainRequest(task="generation", stored_image="m1")
    tune = TrainRequest(base_model="m2", image=image(buffers))
    stored = ApplyRequest(operation="export", model_id="m3")
    first = ApplyRequest(operation="harmonize", image=image(buffers), background=image(buffers),
                         train_if_missing=True)  # fmt: skip
    refine = ApplyRequest(operation="harmonize", image=image(buffers), model_id="m4", finetune_iters=5)
    assert [lane_of(r) for r in (trains, tune, stored, first, refine)] == [TRAIN, TRAIN, QUICK, TRAIN, TRAIN]
    assert [models_used(r) for r in (trains, tune, stored, first)] == [{"m1"}, {"m2"}, {"m3"}, set()]
    assert models_used(PingRequest()) == set()


def test_a_train_plan_checks_family_task_and_options_in_one_line_each(tmp_path):
    ctx = context(tmp_path, Precision.FP32)
    plan = train.plan(ctx, "consingan", None, {"preset": "tiny", "iters": None})
    assert plan.task.name == "generation"  # the family's first task
    assert plan.options.preset == "tiny" and plan.options.precision == "fp32"  # `engine serve --precision`
    assert (
        train.plan(ctx, None, "editing", {"precision": "bf16"}).options.precision == "bf16"
    )  # the request's
    for family, task, options, words in (
        ("nosuch", None, {}, "no model family 'nosuch': use one of consingan, cyclegan"),
        ("consingan", "painting", {}, "ConSinGAN has no task painting: use one of generation, retarget"),
        ("consingan", None, {"epochs": 2}, "epochs is not a training option of ConSinGAN"),
        ("consingan", None, {"iters": 0}, "iters: Input should be greater than or equal to 1"),
        ("consingan", None, {"preset": "huge"}, "preset: Input should be 'paper', 'fast' or 'tiny'"),
    ):
        with pytest.raises(BadInputError, match=words):
            train.plan(ctx, family, task, options)


def test_an_operation_is_found_for_the_model_or_refused(tmp_path):
    assert apply._spec("consingan", "editing", "edit", "model m1").name == "edit"
    with pytest.raises(
        IncompatibleModelError, match="m1 is a model for generation; harmonize needs .*harmonization"
    ):
        apply._spec("consingan", "generation", "harmonize", "model m1")
    words = (
        "no operation 'fly': use one of animate, edit, export, harmonize, interpolate, paint2image, restyle, "
        "sample, upscale"
    )
    with pytest.raises(BadInputError, match=words):
        apply._spec("consingan", "generation", "fly", "model m1")


def test_an_operation_of_two_families_needs_the_family_to_train(tmp_path, with_mean_colour, monkeypatch):
    from engine import operations

    ctx = context(tmp_path)
    buffers: list = []
    bg = image(buffers)
    request = ApplyRequest(operation="fill", image=bg, mask=None, background=bg, train_if_missing=True)
    plan, op = apply._training_plan(ctx, request)
    assert (plan.family.name, plan.task.name, op.family) == ("meancolour", "fill", "meancolour")
    # A second family with the same operation: which one to train is the request's to say.
    twin = families.get("consingan").operations[0]
    fill = families.get("meancolour").operations[0]
    monkeypatch.setattr(operations, "table", lambda: {"fill": [fill, twin]})
    with pytest.raises(BadInputError, match="fill is an operation of several families .*: give family"):
        apply._training_plan(ctx, request)
    chosen = request.model_copy(update={"family": "meancolour"})
    assert apply._training_plan(ctx, chosen)[1] is fill


def test_the_inputs_an_operation_needs_and_the_pixels_it_may_make(tmp_path):
    buffers: list = []
    ops = {op.name: op for op in families.get("consingan").operations}
    no_mask = ApplyRequest(operation="harmonize", model_id="m1", image=image(buffers))
    with pytest.raises(BadInputError, match="harmonize works on a selection: send mask"):
        apply._check_inputs(ops["harmonize"], no_mask, {}, (64, 48))
    with pytest.raises(BadInputError, match="harmonize works on an image: send image"):
        apply._check_inputs(
            ops["harmonize"], ApplyRequest(operation="harmonize", model_id="m1"), {}, (64, 48)
        )
    sample = ApplyRequest(operation="sample", model_id="m1")
    params = ops["sample"].check_params({"n": 2, "width": 8000})  # the height keeps the model's 4:3
    with pytest.raises(BadInputError, match="sample: 96 MP of new images is over the 64 MP limit"):
        apply._check_inputs(ops["sample"], sample, params, (400, 300))
    apply._check_inputs(ops["sample"], sample, ops["sample"].check_params({"n": 1}), (400, 300))
    # A reply carries at most MAX_BUFFERS images: a longer clip is refused before it is made
    clip = ApplyRequest(operation="animate", model_id="m1")
    with pytest.raises(BadInputError, match=r"animate: 300 images is more than one reply carries \(256\)"):
        apply._check_inputs(ops["animate"], clip, ops["animate"].check_params({"frames": 300}), (40, 30))
    apply._check_inputs(ops["animate"], clip, ops["animate"].check_params({"frames": 256}), (40, 30))
    # Upscale makes the image it is sent larger, not the model's (a large image's model learns a crop)
    upscale = next(op for op in families.get("singan").operations if op.name == "upscale")
    big = ApplyRequest(operation="upscale", model_id="m1", image=image(buffers, 3000, 2000))
    with pytest.raises(BadInputError, match="upscale: 96 MP of new images is over the 64 MP limit"):
        apply._check_inputs(upscale, big, upscale.check_params({"factor": 4.0}), (250, 188))
    apply._check_inputs(upscale, big, upscale.check_params({"factor": 2.0}), (250, 188))


def test_files_an_operation_writes_are_named_by_its_switches():
    export = next(op for op in families.get("consingan").operations if op.name == "export")
    assert apply._file_name(export, {"fp16": False}) == Path("export.onnx")
    assert apply._file_name(export, {"fp16": True}) == Path("export-fp16.onnx")
