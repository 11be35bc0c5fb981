"""plugin_runner against a fake engine on loopback: whole operations, progress, cancel, starting the engine,
settings, and the messages an artist sees."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from plugin_fakes import KEY, PluginFakeEngine, entry
from test_plugin_core import H, W, make_canvas

from editor_bridge.connection import ConnectionInfo, remove_connection_file, write_connection_file
from editor_bridge.errors import (
    AuthenticationError,
    EngineNotRunning,
    JobCancelled,
    RemoteError,
    RequestTimeout,
    UnsupportedVersion,
)
from editor_bridge.plugin_core import Animation, CanvasError, Editor, UnsupportedColorDepth
from editor_bridge.plugin_runner import (
    HARMONIZE_COLOR_MATCH,
    MAX_EDITOR_SEED,
    EngineStartFailed,
    Progress,
    Runner,
    Settings,
    artist_message,
    format_duration,
    progress_percent,
    progress_text,
    start_engine,
)
from editor_bridge.protocol import ApplyRequest, ErrorCode, ProgressEvent

HARMONIZE, EDIT, VARIATION = entry("harmonize"), entry("edit"), entry("variation")
RETRAIN_HARMONIZE, RETRAIN_EDIT = entry("retrain-harmonize"), entry("retrain-edit")


def sent(engine, operation: str) -> list[ApplyRequest]:
    return [r for r in engine.requests if isinstance(r, ApplyRequest) and r.operation == operation]


FAKE_SERVE = Path(__file__).resolve().parent / "plugin_fakes.py"


@pytest.fixture
def engine(tmp_path):
    with PluginFakeEngine(steps=3) as eng:
        write_connection_file(ConnectionInfo(endpoint=eng.endpoint, key=KEY, pid=os.getpid()), home=tmp_path)
        yield eng


def test_harmonize_through_the_engine_with_progress(engine, tmp_path):
    seen: list[Progress] = []
    settings = Settings(home=str(tmp_path), preset="tiny", color_match=0.8, timeout_s=5)
    runner = Runner(settings, on_progress=seen.append)
    canvas = make_canvas(Editor.KRITA)
    patch = runner.run(HARMONIZE, canvas)
    (request,) = sent(engine, "harmonize")
    assert request.params["color_match"] == 0.8 and request.train == {"preset": "tiny"}
    got = np.frombuffer(patch.data, np.uint8).reshape(patch.height, patch.width, 4)
    comp = np.frombuffer(canvas.composite, np.uint8).reshape(H, W, 4)
    box = comp[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width]
    assert (got[..., :3] == 255 - box[..., :3]).all()
    assert [p.percent for p in seen[1:]] == [11, 55, 100]  # the fake reports iteration k+1 of 3 in stage k
    assert seen[-1].text.startswith("Training: stage 3 of 3, 100%")


def test_a_preview_layer_comes_before_the_result(engine, tmp_path):
    previews: list = []
    runner = Runner(Settings(home=str(tmp_path), preset="tiny", timeout_s=5), on_preview=previews.append)
    canvas = make_canvas(Editor.KRITA)
    patch = runner.run(HARMONIZE, canvas)
    (request,) = sent(engine, "harmonize")
    assert request.preview
    (preview,) = previews
    assert preview.name == f"{patch.name} (preview)" and preview.name.startswith(HARMONIZE.layer_name)
    assert (preview.x, preview.y, preview.width, preview.height) == (
        patch.x,
        patch.y,
        patch.width,
        patch.height,
    )
    comp = np.frombuffer(canvas.composite, np.uint8).reshape(H, W, 4)
    box = comp[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width]
    got = np.frombuffer(preview.data, np.uint8).reshape(patch.height, patch.width, 4)
    assert (got[..., :3] == box[..., :3] // 2).all()  # the preview's pixels, not the final's
    final = np.frombuffer(patch.data, np.uint8).reshape(patch.height, patch.width, 4)
    assert (final[..., :3] == 255 - box[..., :3]).all()


def test_a_runs_own_color_match_wins_and_the_default_is_the_engines(engine, tmp_path):
    from engine.families.consingan.modes import Mode as EngineMode
    from engine.families.consingan.modes import spec

    assert HARMONIZE_COLOR_MATCH == spec(EngineMode.HARMONIZATION).color_match
    assert Settings().harmonize_color_match == HARMONIZE_COLOR_MATCH
    settings = Settings(home=str(tmp_path), color_match=0.7, timeout_s=5)
    assert settings.harmonize_color_match == 0.7
    runner = Runner(settings)
    runner.run(HARMONIZE, make_canvas(), color_match=0.0)
    runner.run(RETRAIN_HARMONIZE, make_canvas(), color_match=1.0)
    runner.run(EDIT, make_canvas(), color_match=1.0)  # an edit's colours are the artist's
    requests = [r for r in engine.requests if isinstance(r, ApplyRequest)]
    assert [r.params.get("color_match") for r in requests] == [0.0, 1.0, None]


def test_refine_asks_the_engine_to_finetune_first(engine, tmp_path):
    (tmp_path / "plugin").mkdir()
    settings = {"home": str(tmp_path), "refine_iters": 40}
    (tmp_path / "plugin" / "settings.json").write_text(json.dumps(settings))
    seen: list[Progress] = []
    runner = Runner(Settings.load(tmp_path / "plugin"), on_progress=seen.append)
    runner.run(HARMONIZE, make_canvas(), refine=True)
    assert seen[-1].text.startswith("Training and refining: stage 3 of 3")
    runner.run(HARMONIZE, make_canvas())
    refined, plain = sent(engine, "harmonize")
    assert (refined.finetune_iters, plain.finetune_iters) == (40, None)
    assert Settings().refine_iters == 500  # the paper's fine-tuning length


def test_retrain_actions_ask_for_a_new_model(engine, tmp_path):
    runner = Runner(Settings(home=str(tmp_path), preset="tiny", color_match=0.7, timeout_s=5))
    harmonized = runner.run(RETRAIN_HARMONIZE, make_canvas(Editor.KRITA))
    edited = runner.run(RETRAIN_EDIT, make_canvas(Editor.GIMP))
    runner.run(HARMONIZE, make_canvas(Editor.KRITA))
    harmonize, again = sent(engine, "harmonize")
    (edit,) = sent(engine, "edit")
    assert harmonize.retrain and harmonize.params["color_match"] == 0.7 and harmonize.model_id is None
    assert edit.retrain and "color_match" not in edit.params  # still only Harmonize selection's setting
    assert not again.retrain
    assert (harmonized.name, edited.name) == ("Harmonized", "Edited")


def test_variation_samples_a_model_of_the_picture(engine, tmp_path):
    runner = Runner(Settings(home=str(tmp_path), timeout_s=5))
    canvas = make_canvas(Editor.GIMP, selection=False)
    first = runner.run(VARIATION, canvas)
    second = runner.run(VARIATION, canvas)
    assert first == second and (first.width, first.height) == (W, H) and first.name == "Variation"
    # One request each, with the picture to learn when the engine has no model of it yet (the engine
    # finds the one it trained the first time by the same picture: tests/test_serve_daemon.py).
    one, two = sent(engine, "sample")
    assert one.train_if_missing and one.background is not None and one.params["width"] == W
    # Each variation asks for another sample; a runner given a seed keeps it.
    assert one.params["seed"] != two.params["seed"]
    Runner(Settings(home=str(tmp_path), timeout_s=5), seed=7).run(VARIATION, canvas)
    assert sent(engine, "sample")[-1].params["seed"] == 7


def test_random_seeds_fit_the_editors_seed_boxes(engine, tmp_path):
    """A layer is named with its seed, which the artist may type into the dialog again: Krita's and GIMP's
    seed boxes hold a C int, so random seeds stay at or below MAX_EDITOR_SEED (drawn up to 2**32 before)."""
    runner = Runner(Settings(home=str(tmp_path), timeout_s=5))
    canvas = make_canvas(Editor.GIMP, selection=False)
    for _ in range(16):
        runner.run(VARIATION, canvas)
    seeds = [request.params["seed"] for request in sent(engine, "sample")]
    assert len(set(seeds)) == 16 and all(0 <= seed <= MAX_EDITOR_SEED for seed in seeds)


def test_animate_layer_brings_the_clip_at_the_models_size_for_the_canvas(engine, tmp_path):
    canvas = make_canvas(Editor.KRITA, selection=False)
    clip = Runner(Settings(home=str(tmp_path), timeout_s=5)).run(entry("animate"), canvas)
    assert isinstance(clip, Animation) and clip.name == "Animated" and clip.fps == 10.0
    assert (clip.width, clip.height, clip.canvas_width, clip.canvas_height) == (6, 4, W, H)
    # RGBA bytes whatever the editor's order, opaque; one frame each
    got = [np.frombuffer(f, np.uint8).reshape(4, 6, 4) for f in clip.frames]
    assert [tuple(f[0, 0]) for f in got] == [(k, 10 + k, 20 + k, 255) for k in range(3)]
    assert all((f == f[0, 0]).all() for f in got)
    (request,) = sent(engine, "animate")
    assert request.train_if_missing and request.background is not None and "seed" in request.params
    assert request.family == "consingan" and "width" not in request.params


def test_cancel_from_another_thread(tmp_path):
    with PluginFakeEngine(steps=50, step_s=0.05) as eng:
        write_connection_file(ConnectionInfo(endpoint=eng.endpoint, key=KEY, pid=os.getpid()), home=tmp_path)
        cancel = threading.Event()
        settings = Settings(home=str(tmp_path), color_match=0.9, timeout_s=5)
        runner = Runner(settings, lambda p: cancel.set(), cancel)
        with pytest.raises(JobCancelled) as info:
            runner.run(EDIT, make_canvas())
        (edit,) = sent(eng, "edit")
    assert artist_message(info.value).cancelled
    assert "color_match" not in edit.params  # the plugin's colour match is Harmonize selection's only


def test_engine_down(tmp_path):
    with pytest.raises(EngineNotRunning) as info:
        Runner(Settings(home=str(tmp_path))).run(HARMONIZE, make_canvas())
    message = artist_message(info.value, HARMONIZE)
    assert message.offer_start and "engine serve" in message.text and message.title == "Harmonize selection"
    # a stale file (its daemon died) reads the same to the artist
    write_connection_file(ConnectionInfo(endpoint="tcp://127.0.0.1:9", key=KEY, pid=2**22 + 7), home=tmp_path)
    with pytest.raises(EngineNotRunning):
        Runner(Settings(home=str(tmp_path))).run(HARMONIZE, make_canvas())


def test_engine_that_does_not_answer(tmp_path):
    # a live pid but nobody on the port: the ping fails fast instead of sending the picture into the void
    write_connection_file(
        ConnectionInfo(endpoint="tcp://127.0.0.1:9", key=KEY, pid=os.getpid()), home=tmp_path
    )
    with pytest.raises(RequestTimeout) as info:
        Runner(Settings(home=str(tmp_path), timeout_s=0.3)).run(HARMONIZE, make_canvas())
    assert "engine status" in artist_message(info.value).text


def test_start_engine_then_run(tmp_path):
    settings = Settings(home=str(tmp_path), engine_command=(sys.executable, str(FAKE_SERVE)), timeout_s=5)
    process = start_engine(settings, wait_s=30)
    try:
        patch = Runner(settings).run(HARMONIZE, make_canvas(Editor.GIMP))
        assert patch.name == "Harmonized"
        assert (tmp_path / "engine-started-by-plugin.log").exists()
    finally:
        process.terminate()
        process.wait(10)
        remove_connection_file(home=tmp_path)


def test_start_engine_failures(tmp_path):
    with pytest.raises(EngineStartFailed, match="engine serve"):
        start_engine(Settings(home=str(tmp_path)))
    with pytest.raises(EngineStartFailed, match="exited with code 3"):
        start_engine(
            Settings(home=str(tmp_path), engine_command=(sys.executable, "-c", "raise SystemExit(3)"))
        )


def test_settings_roundtrip_and_defaults(tmp_path):
    assert Settings.load(tmp_path) == Settings()
    settings = Settings(
        home="/h",
        engine_command=("py", "-m", "engine.cli"),
        preset="tiny",
        color_match=0.25,
        timeout_s=7,
        refine_iters=80,
    )
    (tmp_path / "settings.json").write_text(settings.to_json())
    assert Settings.load(tmp_path) == settings
    (tmp_path / "settings.json").write_text("{not json")
    assert Settings.load(tmp_path) == Settings()
    assert json.loads(settings.to_json())["engine_command"] == ["py", "-m", "engine.cli"]


@pytest.mark.parametrize("value", [1.5, -0.1, "0.5", True])
def test_settings_with_a_bad_color_match_use_the_engine_default(tmp_path, caplog, value):
    (tmp_path / "settings.json").write_text(json.dumps({"preset": "fast", "color_match": value}))
    settings = Settings.load(tmp_path)
    assert settings.color_match is None and settings.preset == "fast"
    assert "color_match" in caplog.text and "from 0 to 1" in caplog.text


@pytest.mark.parametrize("value", [0, 2.5, "500", True])
def test_settings_with_bad_refine_iters_use_the_default(tmp_path, caplog, value):
    (tmp_path / "settings.json").write_text(json.dumps({"refine_iters": value}))
    assert Settings.load(tmp_path).refine_iters == 500
    assert "refine_iters" in caplog.text


@pytest.mark.parametrize(
    ("key", "value", "default"),
    [
        ("timeout_s", "30s", 30.0),
        ("timeout_s", 0, 30.0),
        ("timeout_s", True, 30.0),
        ("engine_command", "engine", ()),  # a string, not a list: not a tuple of its letters
        ("engine_command", ["engine", 3], ()),
        ("home", 5, None),
        ("preset", "", None),
    ],
)
def test_settings_with_a_bad_value_use_its_default(tmp_path, caplog, key, value, default):
    """A hand-edited typo must not stop the plugin from loading (Krita's setup, GIMP's registration)."""
    (tmp_path / "settings.json").write_text(json.dumps({"color_match": 0.3, key: value}))
    settings = Settings.load(tmp_path)
    assert getattr(settings, key) == default and settings.color_match == 0.3
    assert key in caplog.text


def test_settings_that_are_not_an_object_are_ignored(tmp_path, caplog):
    (tmp_path / "settings.json").write_text("[1, 2]")
    assert Settings.load(tmp_path) == Settings()
    assert "JSON object" in caplog.text


def test_cancel_stops_the_wait_for_an_engine_that_does_not_answer(tmp_path):
    """A hung engine used to hold a cancelled run for 3 pings of timeout_s each."""
    nobody = ConnectionInfo(endpoint="tcp://127.0.0.1:9", key=KEY, pid=os.getpid())
    write_connection_file(nobody, home=tmp_path)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    runner = Runner(Settings(home=str(tmp_path), timeout_s=20), cancel=cancel)
    with pytest.raises(JobCancelled) as info:
        runner.run(HARMONIZE, make_canvas())
    assert time.monotonic() - start < 3
    assert artist_message(info.value).cancelled


def test_cancel_stops_the_wait_for_a_starting_engine(tmp_path):
    sleeper = (sys.executable, "-c", "import time; time.sleep(5)")  # an engine that never comes up
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(JobCancelled):
        start_engine(Settings(home=str(tmp_path), engine_command=sleeper), wait_s=20, cancel=cancel)
    assert time.monotonic() - start < 3


def test_progress_text():
    event = ProgressEvent(job_id="j", stage=1, n_stages=4, iteration=50, iters=100, eta_s=65.2)
    assert progress_percent(event) == 37
    assert progress_text(event) == "Training: stage 2 of 4, 37%, about 1 min 05 s left"
    assert (
        progress_text(event.model_copy(update={"eta_s": None}), "Sampling") == "Sampling: stage 2 of 4, 37%"
    )
    assert format_duration(3.4) == "3 s" and format_duration(7325) == "2 h 02 min"


@pytest.mark.parametrize(
    "exc,expect",
    [
        (RemoteError(ErrorCode.JOB_FAILED, "out of memory"), "could not finish the job: out of memory"),
        (UnsupportedColorDepth("this image is RGBA F16; ..."), "This image is RGBA F16"),
        (UnsupportedVersion("protocol 2 vs 1"), "come from different releases: protocol 2 vs 1"),
        (AuthenticationError("bad key"), "Reinstall the plugin"),
        (KeyError("boom"), "Unexpected error (KeyError"),
    ],
)
def test_artist_messages(exc, expect):
    message = artist_message(exc)
    assert expect in message.text and not message.offer_start and not message.cancelled


def test_the_menu_comes_from_the_newer_capabilities_file(tmp_path):
    from editor_bridge.plugin_runner import CAPABILITIES_FILE, load_menu
    from engine import families

    plugin, home = tmp_path / "plugin", tmp_path / "home"
    plugin.mkdir()
    home.mkdir()
    settings = Settings(home=str(home))
    with pytest.raises(CanvasError, match="no capabilities.json.*engine plugin install krita"):
        load_menu(settings, plugin)
    caps = families.capabilities()
    (plugin / CAPABILITIES_FILE).write_text(json.dumps(caps))  # as `engine plugin install` writes it
    assert [op.action for op in load_menu(settings, plugin)][:3] == ["harmonize", "edit", "variation"]
    # An engine started later, which can do more, writes its own: its operations are the menu's.
    fill = {**caps["operations"][0], "name": "fill", "label": "Fill selection"}
    fill["editor"] = {**fill["editor"], "action": "fill"}
    (home / CAPABILITIES_FILE).write_text(json.dumps({**caps, "operations": [*caps["operations"], fill]}))
    os.utime(plugin / CAPABILITIES_FILE, (1, 1))
    assert "Fill selection" in [op.label for op in load_menu(settings, plugin)]
    # A damaged file is passed over for the other one, never an error the artist would see at start-up.
    (home / CAPABILITIES_FILE).write_text("{not json")
    assert "Fill selection" not in [op.label for op in load_menu(settings, plugin)]
