"""`engine serve` end to end: a real daemon process on loopback, real clients, real (tiny) training."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import zmq
from bridge_fakes import forge
from serve_helpers import ENV, Daemon, harmonize_request, krita_layers

from editor_bridge import frames
from editor_bridge.errors import BridgeError, JobCancelled, RemoteError
from editor_bridge.protocol import ApplyRequest, BBox, ErrorCode, JobState, TrainRequest
from editor_bridge.signing import present_key
from editor_bridge.wire import WireCodec
from engine.families.consingan.apply import feathered_mask

MAX_FRAME_MB = 4
MEMORY_GB = "1"  # for one sample: a tiny model's 4000x3000 needs 3.6 GB


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve") / "home"
    d = Daemon(home, "--max-frame-mb", str(MAX_FRAME_MB), env={"ENGINE_MEMORY_GB": MEMORY_GB})
    try:
        yield d.wait_ready()
    finally:
        d.stop()


@pytest.fixture(scope="module")
def layers(shared_images):
    return krita_layers(shared_images)


@pytest.fixture(scope="module")
def previews() -> list:
    """(progress events heard before it, the preview message) for each preview of `first_harmonize`."""
    return []


@pytest.fixture(scope="module")
def first_harmonize(daemon, layers, previews):
    """The plugin's one call on a fresh engine: a training-free preview first, then it trains on the
    background and harmonizes."""
    events: list = []
    request, buffers = harmonize_request(layers, preview=True)
    with daemon.client() as client:
        reply = client.run_job(
            request,
            buffers,
            on_progress=lambda event, preview: events.append((event, preview)),
            on_preview=lambda message: previews.append((len(events), message)),
        )
        return reply, np.array(reply.image(reply.content.images[0])), events


def test_connection_file_is_private_and_complete(daemon):
    path = daemon.connection_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert {"endpoint", "key", "signature_scheme", "protocol_version", "pid"} <= info.keys()
    assert info["endpoint"].startswith("tcp://127.0.0.1:") and info["pid"] == daemon.proc.pid
    with daemon.client() as client:
        assert client.ping().pid == daemon.proc.pid


def test_second_daemon_for_the_same_home_reports_the_first(daemon):
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--home", str(daemon.home)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 3
    assert "already running" in proc.stderr and str(daemon.proc.pid) in proc.stderr
    assert json.loads(daemon.connection_file.read_text())["pid"] == daemon.proc.pid


def test_non_loopback_endpoint_needs_curve_keys(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        "--home",
        str(tmp_path),
        "--endpoint",
        "tcp://0.0.0.0:0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 2 and "--curve-keys" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was written: no log, no file


def _raw_exchange(daemon, frames_out: list[bytes]) -> dict:
    """Send hand-made frames on a bare DEALER and return the content of the daemon's (signed) answer."""
    info = json.loads(daemon.connection_file.read_text())
    codec = WireCodec(info["key"])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    present_key(sock, info["key"])
    try:
        sock.connect(info["endpoint"])
        sock.send_multipart(frames_out)
        assert sock.poll(20_000), "the daemon did not answer"
        message = codec.deserialize(sock.recv_multipart())
    finally:
        sock.close()
        ctx.term()
    return message.content.model_dump()


def test_malformed_unsigned_forged_and_oversized_messages_get_error_replies(daemon):
    key = json.loads(daemon.connection_file.read_text())["key"]
    garbage = _raw_exchange(daemon, [b"<IDS|MSG>", b"sig", b"\x00\xff garbage", b"x", b"y", b"z"])
    assert garbage["code"] in (ErrorCode.MALFORMED, ErrorCode.BAD_SIGNATURE)
    unsigned = _raw_exchange(daemon, forge(key=key, signature=b""))
    assert unsigned["code"] == ErrorCode.UNSIGNED
    forged = _raw_exchange(daemon, forge(key="b" * 64))
    assert forged["code"] == ErrorCode.BAD_SIGNATURE
    unknown = _raw_exchange(daemon, forge(key=key, msg_type="make_coffee"))
    assert unknown["code"] == ErrorCode.UNKNOWN_MSG_TYPE
    big = np.zeros((MAX_FRAME_MB * 2**20 + 1,), np.uint8)
    oversized = _raw_exchange(daemon, forge(key=key, buffers=[big.tobytes()]))
    assert oversized["code"] == ErrorCode.FRAME_TOO_LARGE and "limit" in oversized["message"]
    with daemon.client() as client:  # still serving
        assert client.ping().pid == daemon.proc.pid


def _peak_rss_mb(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def test_a_peer_without_the_key_cannot_make_the_engine_hold_memory(daemon):
    # 240 MiB in frames each under the frame limit, from a peer that does not know the key: refused in
    # ZeroMQ's handshake, so the engine never buffers them (it held gigabytes for seconds when the
    # signature was the first check, made once the whole message was in).
    info = json.loads(daemon.connection_file.read_text())
    peak_before = _peak_rss_mb(daemon.proc.pid)
    ctx = zmq.Context()
    stranger = ctx.socket(zmq.DEALER)
    stranger.linger = 0
    # A DEALER blocks sending while it has no connection, and the refused handshake drops it again and
    # again: without a limit the send could wait for ever (it did once, on a loaded machine).
    stranger.sndtimeo = 10_000
    stranger.connect(info["endpoint"])
    frame = bytearray(MAX_FRAME_MB * 2**20)
    try:
        try:
            parts = [b"<IDS|MSG>", b"0" * 64, b"h", b"p", b"m", b"c", *[frame] * 60]
            stranger.send_multipart(parts, copy=False)
        except zmq.Again:
            pass  # refused before a byte could be queued: the engine holds nothing either way
        with daemon.client() as client:
            for _ in range(20):  # other clients are served meanwhile, at once
                started = time.monotonic()
                assert client.ping().pid == daemon.proc.pid
                assert time.monotonic() - started < 1.0
                time.sleep(0.1)
        grown = _peak_rss_mb(daemon.proc.pid) - peak_before
        assert grown < 50, f"the engine's peak memory grew by {grown:.0f} MB"
        assert not stranger.poll(100)  # not even an error reply
    finally:
        stranger.close()
        ctx.term()


def test_invalid_requests_are_refused_before_any_work(daemon, layers):
    key = json.loads(daemon.connection_file.read_text())["key"]
    request, buffers = harmonize_request(layers)
    body = request.model_dump(mode="json")
    # Sent raw: the Client itself refuses to send these, a buggy plugin might not.
    short = [bytes(buffers[0])[:-4], *map(bytes, buffers[1:])]
    reply = _raw_exchange(daemon, forge(key=key, content=body, msg_type="apply", buffers=short))
    assert reply["code"] == ErrorCode.BAD_IMAGE and "bytes" in reply["message"]
    small_mask = frames.describe(np.zeros((10, 10, 1), np.uint8), "GRAY", 1).model_dump(mode="json")
    other = [bytes(buffers[0]), bytes(100), bytes(buffers[2])]
    reply = _raw_exchange(
        daemon, forge(key=key, content=body | {"mask": small_mask}, msg_type="apply", buffers=other)
    )
    assert reply["code"] == ErrorCode.INVALID_REQUEST and "mask is 10x10" in reply["message"]

    with daemon.client() as client:
        # NaN or infinite float pixels are refused before any work, as the CLI refuses such files.
        floats = {k: v.astype(np.float32) / 255 for k, v in layers.items() if k != "mask"}
        floats["naive"][5, 5, 0], floats["background"][6, 6, 1] = np.nan, np.inf
        nan_request, nan_buffers = harmonize_request({**floats, "mask": layers["mask"]})
        with pytest.raises(RemoteError) as err:
            client.run_job(nan_request, nan_buffers)
        assert err.value.code is ErrorCode.BAD_IMAGE and "NaN or infinite" in str(err.value)

        with pytest.raises(RemoteError) as err:
            client.run_job(request.model_copy(update={"model_id": "nosuchmodel"}), buffers)
        assert err.value.code is ErrorCode.UNKNOWN_MODEL and "list_models" in str(err.value)

        absurd = TrainRequest(task="generation", stored_image="x", options={"iters": 10**7})
        with pytest.raises(RemoteError) as err:
            client.call(absurd)
        assert err.value.code is ErrorCode.INVALID_REQUEST and "iters" in str(err.value)
        for bad, words in (
            (TrainRequest(family="nosuch", task="x", stored_image="x"), "no model family 'nosuch'"),
            (TrainRequest(task="painting", stored_image="x"), "ConSinGAN has no task painting"),
            (TrainRequest(task="generation", stored_image="x", options={"epochs": 3}), "epochs is not"),
            (ApplyRequest(operation="fly", model_id="m"), "no operation 'fly'"),
        ):
            with pytest.raises(RemoteError, match=words) as err:
                client.call(bad)
            assert err.value.code is ErrorCode.INVALID_REQUEST

        with pytest.raises(RemoteError) as err:
            client.job_status("nosuchjob")
        assert err.value.code is ErrorCode.UNKNOWN_JOB
        assert client.ping().pid == daemon.proc.pid
        assert client.status().jobs == []  # nothing was queued by any of them


def _sample(model_id: str, **params) -> ApplyRequest:
    return ApplyRequest(operation="sample", model_id=model_id, params=params)


def _first(desc):
    return desc.model_copy(update={"buffer_index": 0})


def test_harmonize_trains_once_and_returns_the_layer_as_sent(first_harmonize, layers):
    reply, out, progress = first_harmonize
    result = reply.content
    assert result.job_id is not None and not result.reused_model  # a job: it had to train
    events = [e for e, _ in progress]
    assert events and all(e.job_id == result.job_id for e in events)
    # Each stage's end at least brings a small preview of the current samples.
    previews = [p for _, p in progress if p is not None]
    assert len(previews) >= result.model.n_stages
    assert all(p.ndim == 3 and p.shape[2] == 3 and max(p.shape[:2]) <= 128 and p.std() > 0 for p in previews)
    assert (result.model.family, result.model.task, result.model.preset) == (
        "consingan",
        "harmonization",
        "tiny",
    )
    desc = result.images[0]
    assert (desc.width, desc.height, desc.channel_order.value) == (96, 72, "BGRA")
    naive, mask = layers["naive"], layers["mask"][:, :, 0]
    assert out.shape == naive.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 3], naive[..., 3])  # alpha untouched
    changed = np.abs(out.astype(int) - naive).sum(axis=2) > 0
    assert changed[mask > 0].mean() > 0.5  # the selection was worked on
    # Outside the feathered selection the layer comes back exactly as sent.
    soft = feathered_mask((mask > 0).astype(np.float32), (result.model.height, result.model.width), 7)
    assert (soft == 0).any() and np.array_equal(out[soft == 0], naive[soft == 0])


def test_a_preview_comes_while_the_model_trains_then_the_models_result(first_harmonize, previews, layers):
    reply, out, progress = first_harmonize
    assert len(previews) == 1, previews
    heard, message = previews[0]
    preview = message.content
    assert preview.preview and preview.job_id == reply.content.job_id and not reply.content.preview
    # it came while the model was still training: before the last stage's last progress event
    last = progress[-1][0]
    assert last.iteration == last.iters and last.stage == last.n_stages - 1
    assert heard < len(progress), "the preview came after training had finished"
    image = np.array(message.image(preview.images[0]))
    naive, mask = layers["naive"], layers["mask"][:, :, 0] > 0
    assert image.shape == naive.shape and image.dtype == np.uint8
    assert np.array_equal(image[..., 3], naive[..., 3])
    moved = np.abs(image.astype(int) - naive).sum(axis=2) > 0
    assert moved[mask].mean() > 0.5 and not np.array_equal(image, out)  # worked on, and not the final
    far = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3) > 6
    assert np.array_equal(image[far], naive[far])


def test_same_background_reuses_the_stored_model(daemon, layers, first_harmonize):
    first, first_out, _ = first_harmonize
    model_id = first.content.model.model_id
    with daemon.client() as client:
        events: list = []
        for order in ("BGRA", "RGBA"):  # Krita and GIMP send the same pixels in different orders
            request, buffers = harmonize_request(layers, order)
            reply = client.run_job(request, buffers, on_progress=lambda e, p: events.append(e))
            result = reply.content
            assert result.reused_model and result.model.model_id == model_id
            assert result.job_id is None and events == []  # answered at once: no job, no training
            out = np.array(reply.image(result.images[0]))
            assert np.array_equal(frames.from_canonical(out, order), frames.from_canonical(first_out, "BGRA"))
        assert [m.model_id for m in client.list_models()] == [model_id]


def test_crop_to_bbox_returns_only_the_selection_region(daemon, layers, first_harmonize):
    _, full, _ = first_harmonize
    assert layers["mask"][8:48, 10:60].any()
    box = BBox(x=10, y=8, w=50, h=40)
    request, buffers = harmonize_request(layers)
    request = request.model_copy(
        update={"image": request.image.model_copy(update={"bbox": box}), "crop_to_bbox": True}
    )
    with daemon.client() as client:
        reply = client.run_job(request, buffers)
    desc = reply.content.images[0]
    assert (desc.width, desc.height, desc.bbox) == (50, 40, None)
    crop = np.array(reply.image(desc))
    # The selection limited to the box, and only the box's pixels on the wire.
    mask = np.zeros_like(layers["mask"])
    mask[8:48, 10:60] = layers["mask"][8:48, 10:60]
    request2, buffers2 = harmonize_request({**layers, "mask": mask})
    with daemon.client() as client:
        reply2 = client.run_job(request2, buffers2)
    boxed_full = np.array(reply2.image(reply2.content.images[0]))
    assert boxed_full.shape == full.shape
    assert np.array_equal(crop, boxed_full[8:48, 10:60])


def test_quick_requests_answered_while_training_runs_and_each_client_gets_its_events(
    daemon, layers, first_harmonize
):
    model_id = first_harmonize[0].content.model.model_id
    request, buffers = harmonize_request(layers)
    train_image = buffers[2]
    train = TrainRequest(
        task="harmonization",
        image=_first(request.background),
        # long enough (seconds) to be still running after the quick work below, on a loaded machine
        options={"preset": "tiny", "iters": 80, "seed": 7},
        name="long",
    )
    followers: dict[str, list] = {"a": [], "c": []}
    results: dict[str, object] = {}

    def follow(name: str, client, job_id: str) -> None:
        reply = client.wait_job(job_id, on_progress=lambda e, p: followers[name].append(e), timeout=240)
        results[name] = reply.content

    with daemon.client() as a, daemon.client() as b, daemon.client() as c:
        job_id = a.submit(train, [train_image])
        deadline = time.monotonic() + 60
        while b.job_status(job_id).state is not JobState.RUNNING:
            assert time.monotonic() < deadline, "the training job did not start"
            time.sleep(0.05)
        threads = [threading.Thread(target=follow, args=(n, cl, job_id)) for n, cl in (("a", a), ("c", c))]
        for t in threads:
            t.start()
        # Client b: quick requests while the training runs.
        assert b.ping().pid == daemon.proc.pid
        assert [j.job_id for j in b.status().jobs] == [job_id]
        quick, quick_buffers = harmonize_request(layers, model_id=model_id)
        reply = b.run_job(quick.model_copy(update={"background": None, "train_if_missing": False}),
                          quick_buffers[:2])  # fmt: skip
        assert reply.content.model.model_id == model_id
        sample = b.run_job(_sample(model_id, n=2, width=64, height=48)).content
        assert [(d.width, d.height) for d in sample.images] == [(64, 48), (64, 48)]
        assert b.job_status(job_id).state is JobState.RUNNING  # the quick work did not wait behind it
        for t in threads:
            t.join(240)
    assert results["a"].model == results["c"].model and results["a"].model.name == "long"
    assert results["a"].model.model_id != model_id  # other training settings: a new model
    for name, events in followers.items():
        assert events and all(e.job_id == job_id for e in events), name


def test_cancel_a_running_training(daemon, layers):
    request, buffers = harmonize_request(layers)
    train = TrainRequest(
        task="harmonization", image=_first(request.background), options={"preset": "tiny", "iters": 5000}
    )
    with daemon.client() as client:
        job_id = client.submit(train, [buffers[2]])
        cancel = threading.Event()

        def on_progress(event, preview):
            cancel.set()  # cancel once it is really training

        with pytest.raises(JobCancelled) as cancelled:
            client.wait_job(job_id, on_progress=on_progress, cancel=cancel, timeout=120)
        assert client.job_status(job_id).state is JobState.CANCELLED
        assert "--resume" not in str(cancelled.value)  # its folder is gone: nothing to resume
        assert not (daemon.home / "jobs" / job_id).exists()
        assert client.ping().pid == daemon.proc.pid


def test_engine_cancel_command(daemon, layers):
    request, buffers = harmonize_request(layers)
    train = TrainRequest(
        task="harmonization", image=_first(request.background), options={"preset": "tiny", "iters": 5000}
    )

    def cancel(job_id: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "engine.cli", "cancel", job_id, "--home", str(daemon.home), "--json"]
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)

    with daemon.client() as client:
        job_id = client.submit(train, [buffers[2]])
        deadline = time.monotonic() + 60
        while client.job_status(job_id).state is not JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc = cancel(job_id)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"ok": True, "job": job_id, "state": "cancelled"}
        assert client.job_status(job_id).state is JobState.CANCELLED
        again = cancel(job_id)  # an ended job: nothing to do, and said so
        assert again.returncode == 0 and json.loads(again.stdout)["state"] == "cancelled"
    unknown = cancel("j" + "0" * 16)
    assert unknown.returncode == 2 and json.loads(unknown.stdout)["ok"] is False
    assert "no job 'j0000000000000000'" in unknown.stderr and "`engine status`" in unknown.stderr


def test_a_result_over_the_frame_limit_is_an_error_reply_not_silence(daemon, first_harmonize):
    model_id = first_harmonize[0].content.model.model_id
    with daemon.client(timeout=120) as client:
        start = time.monotonic()  # 1500 x 1000 RGB is 4.3 MiB, over the daemon's --max-frame-mb 4
        with pytest.raises(BridgeError, match="the result cannot be sent: .*frame"):
            client.run_job(_sample(model_id, n=1, width=1500, height=1000))
        assert time.monotonic() - start < 60, "the client had to time out"
        assert client.ping().pid == daemon.proc.pid  # and the engine goes on


def test_a_sample_too_big_for_the_memory_is_an_error_reply_and_the_engine_goes_on(daemon, first_harmonize):
    """Running out of memory would get the engine killed by the system: a canvas-sized variation that
    needs more than the machine has is refused with the size that fits."""
    model_id = first_harmonize[0].content.model.model_id
    with daemon.client(timeout=120) as client:
        with pytest.raises(BridgeError, match="a 4000x3000 sample needs about 3.6 GB of memory and 1.0 GB"):
            client.run_job(_sample(model_id, n=1, width=4000, height=3000))
        assert client.ping().pid == daemon.proc.pid
        small = client.run_job(_sample(model_id, n=1, width=64, height=48))
        assert small.image(small.content.images[0]).shape == (48, 64, 3)


def test_a_model_in_use_cannot_be_deleted(daemon, layers, first_harmonize):
    base = first_harmonize[0].content.model.model_id
    request, buffers = harmonize_request(layers)
    with daemon.client() as client:
        # A model of its own to delete: the module's first model stays for the other tests.
        train = TrainRequest(task="harmonization", stored_image=base, options={"preset": "tiny", "iters": 2})
        doomed = client.run_job(train, timeout=240).content.model.model_id
        tune = TrainRequest(base_model=doomed, image=_first(request.image), options={"iters": 50_000})
        job_id = client.submit(tune, [buffers[0]])
        with pytest.raises(RemoteError) as err:
            client.delete_model(doomed)  # the fine-tuning job, queued or running, reads it
        assert err.value.code is ErrorCode.BUSY and job_id in str(err.value) and "cancel" in str(err.value)
        assert doomed in [m.model_id for m in client.list_models()]
        client.cancel(job_id)
        deadline = time.monotonic() + 60
        while client.job_status(job_id).state is not JobState.CANCELLED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.delete_model(doomed)
        assert [m.model_id for m in client.list_models()].count(doomed) == 0
        assert base in [m.model_id for m in client.list_models()]


def _seed(daemon, model_id: str) -> int:
    return json.loads((daemon.home / "models" / model_id / "model.json").read_text())["training"]["seed"]


def test_retrain_trains_another_seed_which_later_requests_reuse(daemon, layers):
    # A background of its own (mirrored), so the other tests' stored model stays the one they find.
    mirrored = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in layers.items()}
    with daemon.client() as client:

        def harmonize(**fields):
            reply = client.run_job(*harmonize_request(mirrored, **fields), timeout=240)
            return reply.content, np.array(reply.image(reply.content.images[0]))

        first, first_out = harmonize()
        retrained, retrained_out = harmonize(retrain=True)
        assert not retrained.reused_model and retrained.job_id is not None
        assert retrained.model.model_id != first.model.model_id
        assert (_seed(daemon, first.model.model_id), _seed(daemon, retrained.model.model_id)) == (0, 1)
        assert not np.array_equal(retrained_out, first_out)  # another model paints another result
        # From now on the retrained model is the one found for this background...
        again, again_out = harmonize()
        assert again.reused_model and again.model.model_id == retrained.model.model_id
        assert np.array_equal(again_out, retrained_out)
        # ...and the next retrain takes the next seed; the first model stays listed.
        third, _ = harmonize(retrain=True)
        assert _seed(daemon, third.model.model_id) == 2
        ids = [m.model_id for m in client.list_models()]
        assert {first.model.model_id, retrained.model.model_id, third.model.model_id} <= set(ids)


def test_harmonize_with_finetune_fits_a_new_model_to_the_paste(daemon, layers, first_harmonize):
    first, first_out, _ = first_harmonize
    base = first.content.model.model_id
    base_files = {p.name: p.read_bytes() for p in (daemon.home / "models" / base).glob("*.safetensors")}
    with daemon.client() as client:
        events: list = []
        reply = client.run_job(
            *harmonize_request(layers, finetune_iters=6),
            on_progress=lambda e, p: events.append(e),
            timeout=240,
        )
        tuned = reply.content
        assert tuned.job_id is not None and not tuned.reused_model and events  # a job, with progress
        assert tuned.model.model_id != base and tuned.model.name.endswith("(fine-tuned)")
        entry = json.loads((daemon.home / "models" / tuned.model.model_id / "registry.json").read_text())
        assert entry["parent"] == base and entry["training_key"] is None
        out = np.array(reply.image(tuned.images[0]))
        assert out.shape == first_out.shape and not np.array_equal(out, first_out)
        naive, mask = layers["naive"], layers["mask"][:, :, 0]
        soft = feathered_mask((mask > 0).astype(np.float32), (tuned.model.height, tuned.model.width), 7)
        assert np.array_equal(out[soft == 0], naive[soft == 0])  # outside the selection: the input's
        # With a model named: that model is fine-tuned, the same way.
        request, buffers = harmonize_request(layers, finetune_iters=3)
        named = client.run_job(request.model_copy(update={"model_id": base}), buffers, timeout=240).content
        assert named.job_id is not None and named.model.model_id not in (base, tuned.model.model_id)
        # The base model is untouched and still the one the background finds.
        again = client.run_job(*harmonize_request(layers)).content
        assert again.reused_model and again.model.model_id == base
    assert base_files == {
        p.name: p.read_bytes() for p in (daemon.home / "models" / base).glob("*.safetensors")
    }


def test_engine_status_command(daemon, first_harmonize):
    cmd = [sys.executable, "-m", "engine.cli", "status", "--home", str(daemon.home), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)
    status = json.loads(proc.stdout)
    assert proc.returncode == 0 and status["running"] and status["pid"] == daemon.proc.pid
    assert status["device"] == "cpu"
    assert any(first_harmonize[0].content.model.model_id in line for line in status["models"])


def test_curve_keys_encrypt_and_admit_only_known_clients(tmp_path):
    import zmq.auth

    from editor_bridge import Client

    keys = tmp_path / "keys"
    (keys / "clients").mkdir(parents=True)
    zmq.auth.create_certificates(keys, "server")
    zmq.auth.create_certificates(keys / "clients", "editor")  # its public half in clients/ admits it
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    client_key, client_secret = zmq.auth.load_certificate(keys / "clients" / "editor.key_secret")
    daemon = Daemon(tmp_path / "home", "--curve-keys", str(keys)).wait_ready()
    try:
        ctx = zmq.Context()
        ctx.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        ctx.setsockopt(zmq.CURVE_PUBLICKEY, client_key)
        ctx.setsockopt(zmq.CURVE_SECRETKEY, client_secret)
        with Client.from_connection_file(home=daemon.home, context=ctx, timeout=20) as client:
            assert client.ping().pid == daemon.proc.pid
        ctx.term()
        with Client.from_connection_file(home=daemon.home, timeout=2) as plain:
            assert not plain.is_alive(timeout=2)  # no Curve handshake: not even an error reply
    finally:
        daemon.stop()


def test_export_is_a_job_that_writes_the_graph_into_the_models_folder(daemon, first_harmonize):
    import onnxruntime as ort

    model_id = first_harmonize[0].content.model.model_id
    with daemon.client(timeout=120) as client:
        request = ApplyRequest(operation="export", model_id=model_id, params={"fp16": True})
        reply = client.run_job(request, timeout=240).content
        assert reply.job_id is not None and reply.model.model_id == model_id  # a job, on the quick lane
        path = daemon.home / "models" / model_id / "export-fp16.onnx"
        assert reply.path == str(path) and path.stat().st_size > 0
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()  # a graph onnxruntime loads
        # Another operation's parameter is refused before any work, in one line.
        with pytest.raises(RemoteError, match="--seed is not an option of consingan's export") as err:
            client.call(ApplyRequest(operation="export", model_id=model_id, params={"seed": 1}))
        assert err.value.code is ErrorCode.INVALID_REQUEST


def test_upscale_at_strength_0_or_factor_1_trains_no_model_and_answers_at_once(daemon, layers):
    """Upscale layer at strength 0 (SinGAN's bicubic steps) or factor 1 needs no model: the reply comes at
    once with the picture twice as large (alpha too), no job, no training, no model stored."""
    from engine.families.singan.apply import upscale

    bgra = np.ascontiguousarray(layers["naive"][6:66, 8:88])  # 80x60, Krita's order
    bgra[:10, :, 3] = 0  # a transparent band
    buffers: list = []
    desc = frames.attach(buffers, bgra, "BGRA")
    request = ApplyRequest(
        operation="upscale", family="singan", image=desc, background=desc, train_if_missing=True,
        train={"preset": "tiny"}, params={"factor": 2.0, "strength": 0.0},
    )  # fmt: skip
    with daemon.client() as client:
        before = [m.model_id for m in client.list_models()]
        events: list = []
        reply = client.run_job(request, buffers, on_progress=lambda e, p: events.append(e))
        result = reply.content
        assert result.job_id is None and events == [] and result.model is None and not result.reused_model
        out = np.array(reply.image(result.images[0]))
        assert out.shape == (120, 160, 4)
        rgb = frames.to_canonical(bgra, "BGRA")[0][..., :3].astype(np.float32) / 255
        want = upscale(None, None, rgb, 2.0, 0, strength=0.0)  # (the transparent band's colours differ)
        got = frames.to_canonical(out, "BGRA")[0]
        assert np.abs(got[30:, :, :3].astype(float) - want[30:] * 255).max() <= 2
        assert (got[:16, :, 3] == 0).all() and (got[26:, :, 3] == 255).all()
        # factor 1 at any strength: the picture itself (its transparent band's stored colours aside)
        same = request.model_copy(update={"params": {"factor": 1.0, "strength": 0.75}})
        reply = client.run_job(same, buffers, on_progress=lambda e, p: events.append(e))
        assert reply.content.job_id is None and events == [] and reply.content.model is None
        out = np.array(reply.image(reply.content.images[0]))
        assert out.shape == bgra.shape and (out[..., 3] == bgra[..., 3]).all()
        assert np.abs(out[10:].astype(int) - bgra[10:]).max() <= 1
        assert [m.model_id for m in client.list_models()] == before
