"""Client against a real in-process engine on loopback: calls, jobs with progress and cancel, reconnects,
concurrent clients, and deterministic close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from bridge_fakes import KEY, MODEL, FakeEngine, FakeJob
from bridge_samples import layer, samples

from editor_bridge import Client, frames
from editor_bridge import client as client_module
from editor_bridge.connection import ConnectionInfo, new_key, write_connection_file
from editor_bridge.errors import ClientClosed, JobCancelled, RemoteError, RequestTimeout, UnsupportedVersion
from editor_bridge.protocol import (
    PROTOCOL_VERSION,
    ApplyRequest,
    CancelRequest,
    ChannelOrder,
    DaemonStatus,
    ErrorCode,
    JobState,
    JobStatusRequest,
    OkReply,
    PingRequest,
    ProgressEvent,
    ResultReply,
    TrainRequest,
)

JOB_SAMPLES = [s for s in samples() if s[0].msg_type.value in {"train", "apply"}]


@pytest.fixture
def engine():
    with FakeEngine() as eng:
        yield eng


@pytest.fixture
def client(engine):
    with Client(engine.endpoint, KEY, timeout=5, heartbeat_s=1) as c:
        yield c


def _harmonize(seed: int = 0) -> tuple[ApplyRequest, list, np.ndarray]:
    image = (layer(32, 48, 4).astype(np.int64) + seed).astype(np.uint8)
    buffers: list = []
    request = ApplyRequest(
        operation="harmonize",
        image=frames.attach(buffers, image, ChannelOrder.BGRA),
        mask=frames.attach(buffers, np.full((32, 48), 255, np.uint8), ChannelOrder.GRAY),
        model_id="m1",
    )
    return request, buffers, image


def test_quick_requests(client):
    pong = client.ping()
    assert pong.engine_version == "fake" and pong.protocol_version == PROTOCOL_VERSION
    assert client.is_alive()
    assert isinstance(client.status(), DaemonStatus)
    assert client.list_models() == [MODEL]
    assert client.inspect_model("m1") == MODEL
    assert client.rename_model("m1", "Dusk").name == "Dusk"
    client.delete_model("m1")


def test_error_replies_become_remote_errors(client):
    with pytest.raises(RemoteError, match="no model 'nope'") as err:
        client.inspect_model("nope")
    assert err.value.code is ErrorCode.UNKNOWN_MODEL
    with pytest.raises(RemoteError) as err:
        client.job_status("nope")
    assert err.value.code is ErrorCode.UNKNOWN_JOB and err.value.job_id == "nope"
    assert client.ping()  # and the connection is fine afterwards


def test_run_job_streams_progress_with_previews_then_the_result(client):
    request, buffers, image = _harmonize()
    events = []
    result = client.run_job(request, buffers, on_progress=lambda e, p: events.append((e, p)), timeout=10)
    assert [e.iteration for e, _ in events] == [1, 2, 3]
    assert all(isinstance(e, ProgressEvent) and e.losses == {"d": 0.5, "g": 1.25} for e, _ in events)
    assert all(p.shape == (4, 4, 3) and (p == 7).all() for _, p in events)
    assert isinstance(result.content, ResultReply) and result.content.model == MODEL
    assert np.array_equal(result.image(result.content.images[0]), image)


@pytest.mark.parametrize("sample", JOB_SAMPLES, ids=lambda s: s[0].msg_type.value)
def test_every_job_type_runs(client, sample):
    content, buffers = sample
    assert isinstance(client.run_job(content, buffers, timeout=10).content, ResultReply)


def test_submit_then_wait_for_the_job(client, engine):
    job_id = client.submit(TrainRequest(task="generation", stored_image="img-1"))
    assert client.job_status(job_id).state in (JobState.QUEUED, JobState.RUNNING, JobState.DONE)
    result = client.wait_job(job_id, timeout=10)
    assert result.content.job_id == job_id
    # A finished job's result can still be fetched later.
    assert client.wait_job(job_id, timeout=10).content.job_id == job_id


def test_cancel_from_another_thread():
    with FakeEngine(steps=500, step_s=0.01) as engine, Client(engine.endpoint, KEY, timeout=5) as client:
        cancel = threading.Event()
        request, buffers, _ = _harmonize()
        with pytest.raises(JobCancelled, match="cancelled"):
            client.run_job(request, buffers, on_progress=lambda e, p: cancel.set(), cancel=cancel, timeout=10)
        assert client.ping()


class StubbornEngine(FakeEngine):
    """Takes a cancel but its jobs never stop (a step the engine cannot interrupt)."""

    def _handle(self, req) -> None:
        if isinstance(req.content, CancelRequest):
            self.server.reply(req, OkReply())
        else:
            super()._handle(req)


def test_a_cancelled_job_lets_its_caller_go_when_the_engine_does_not_stop_it(monkeypatch):
    monkeypatch.setattr(client_module, "CANCEL_GRACE_S", 0.5)
    with StubbornEngine(steps=500, step_s=0.02) as engine, Client(engine.endpoint, KEY, timeout=5) as client:
        cancel = threading.Event()
        request, buffers, _ = _harmonize()
        start = time.monotonic()
        with pytest.raises(JobCancelled, match="still stopping"):
            client.run_job(request, buffers, on_progress=lambda e, p: cancel.set(), cancel=cancel, timeout=30)
        assert time.monotonic() - start < 5


class SlowToAcknowledge(FakeEngine):
    """Takes `ack_s` to acknowledge a job (a large upload, a busy engine); None: never acknowledges."""

    def __init__(self, ack_s: float | None, **kw) -> None:
        super().__init__(**kw)
        self.ack_s = ack_s

    def _handle(self, req) -> None:
        if isinstance(req.content, PingRequest | CancelRequest | JobStatusRequest):
            super()._handle(req)
        elif self.ack_s is not None:
            time.sleep(self.ack_s)
            super()._handle(req)


def test_cancel_before_the_acknowledgement_cancels_the_job_it_then_gets():
    with (
        SlowToAcknowledge(0.5, steps=500, step_s=0.02) as engine,
        Client(engine.endpoint, KEY, timeout=30) as client,
    ):
        cancel = threading.Event()
        cancel.set()  # pressed while the request was on its way
        request, buffers, _ = _harmonize()
        start = time.monotonic()
        with pytest.raises(JobCancelled, match="job cancelled"):
            client.run_job(request, buffers, cancel=cancel, timeout=30)
        assert time.monotonic() - start < 5  # not the 500 steps of 0.02 s
        (job,) = engine.jobs.values()
        assert job.cancel.is_set() and job.state is JobState.CANCELLED


def test_cancel_lets_the_caller_go_when_the_engine_never_acknowledges(monkeypatch):
    monkeypatch.setattr(client_module, "CANCEL_GRACE_S", 0.5)
    with SlowToAcknowledge(None) as engine, Client(engine.endpoint, KEY, timeout=30) as client:
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        request, buffers, _ = _harmonize()
        start = time.monotonic()
        with pytest.raises(JobCancelled, match="before the engine acknowledged apply.*`engine cancel"):
            client.run_job(request, buffers, cancel=cancel, timeout=60)
        assert time.monotonic() - start < 5  # not the client's 30 s
        assert client.ping()  # the client still works


def test_cancel_by_job_id():
    with FakeEngine(steps=500, step_s=0.01) as engine, Client(engine.endpoint, KEY, timeout=5) as client:
        job_id = client.submit(TrainRequest(task="generation", stored_image="img-1"))
        client.cancel(job_id)
        with pytest.raises(JobCancelled):
            client.wait_job(job_id, timeout=10)


def test_two_clients_each_get_their_own_events_and_results(engine):
    outcomes: dict[int, tuple] = {}

    def work(seed: int) -> None:
        with Client(engine.endpoint, KEY, timeout=5) as c:
            request, buffers, image = _harmonize(seed)
            events: list[ProgressEvent] = []
            result = c.run_job(request, buffers, on_progress=lambda e, p: events.append(e), timeout=10)
            outcomes[seed] = (result.content.job_id, {e.job_id for e in events}, result, image)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    (job1, seen1, result1, image1), (job2, seen2, result2, image2) = outcomes[1], outcomes[2]
    assert job1 != job2 and seen1 == {job1} and seen2 == {job2}
    assert np.array_equal(result1.image(result1.content.images[0]), image1)
    assert np.array_equal(result2.image(result2.content.images[0]), image2)


def test_call_times_out_then_works_after_the_engine_restarts():
    with FakeEngine() as first:
        endpoint = first.endpoint
        client = Client(endpoint, KEY, timeout=5)
        assert client.ping()
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="is `engine serve` running"):
        client.call(PingRequest(), timeout=0.2, retries=1)
    assert time.monotonic() - started < 2
    assert not client.is_alive(timeout=0.2)
    with FakeEngine(endpoint):  # same port, same key
        assert client.ping(timeout=2)
    client.close()


def test_reconnect_finds_a_restarted_engine_through_the_connection_file(tmp_path):
    path = tmp_path / "engine.json"
    first = FakeEngine(key=new_key()).__enter__()
    write_connection_file(ConnectionInfo(endpoint=first.endpoint, key=first.key, pid=1), path)
    # pid 1 is alive everywhere, which is all the staleness check looks at.
    with Client.from_connection_file(path, timeout=5) as client:
        assert client.ping()
        first.stop()
        with FakeEngine(key=new_key()) as second:  # new port, new key
            write_connection_file(ConnectionInfo(endpoint=second.endpoint, key=second.key, pid=1), path)
            assert client.ping(timeout=2)  # first try times out, the retry reads the new file
            assert client.endpoint == second.endpoint


def _restart_mid_job(tmp_path, protocol_version: int = PROTOCOL_VERSION):
    """A client running a job while its engine dies after the second progress event and a new one (same
    journal, new port, the given protocol version) writes the connection file. Returns what run_job does."""
    path = tmp_path / "engine.json"
    first = FakeEngine(steps=40, step_s=0.02).__enter__()
    write_connection_file(ConnectionInfo(endpoint=first.endpoint, key=KEY, pid=1), path)
    box: dict = {}
    try:
        with Client.from_connection_file(path, timeout=5, heartbeat_s=0.2) as client:
            events: list[ProgressEvent] = []

            def restart_once(event, preview):
                events.append(event)
                if len(events) == 2 and "second" not in box:
                    first.stop()  # the daemon dies; its journal (the jobs dict) survives
                    box["second"] = second = FakeEngine(steps=3, step_s=0.01, jobs=first.jobs).__enter__()
                    info = ConnectionInfo(
                        endpoint=second.endpoint, key=KEY, pid=1, protocol_version=protocol_version
                    )
                    write_connection_file(info, path)

            request, buffers, image = _harmonize()
            result = client.run_job(request, buffers, on_progress=restart_once, timeout=20)
            assert client.endpoint == box["second"].endpoint
            return result, image
    finally:
        if "second" in box:
            box["second"].stop()


def test_run_job_survives_an_engine_restart_mid_job(tmp_path):
    result, image = _restart_mid_job(tmp_path)
    assert np.array_equal(result.image(result.content.images[0]), image)


def test_an_engine_restarted_from_another_release_mid_job_says_so(tmp_path):
    # Updated and restarted while a job runs: the artist must hear "different releases", not "lost".
    with pytest.raises(UnsupportedVersion, match="newer"):
        _restart_mid_job(tmp_path, protocol_version=PROTOCOL_VERSION + 1)


def test_close_is_idempotent_and_terminates_the_context(engine):
    client = Client(engine.endpoint, KEY, timeout=5)
    context = client._ctx
    client.ping()
    client.close()
    client.close()
    assert client.closed and context.closed
    with pytest.raises(ClientClosed):
        client.ping()
    with Client(engine.endpoint, KEY) as other:
        other.ping()
    assert other.closed and other._ctx.closed


def test_close_from_another_thread_stops_a_waiting_job():
    with FakeEngine(steps=1000, step_s=0.01) as engine:
        client = Client(engine.endpoint, KEY, timeout=5)
        request, buffers, _ = _harmonize()
        threading.Timer(0.2, client.close).start()
        started = time.monotonic()
        with pytest.raises(ClientClosed):
            client.run_job(request, buffers, timeout=10)
        assert time.monotonic() - started < 2


def test_a_shared_context_is_left_open(engine):
    import zmq

    context = zmq.Context()
    with Client(engine.endpoint, KEY, context=context) as client:
        client.ping()
    assert not context.closed
    context.term()


def test_open_clients_are_closed_at_exit(engine):
    from editor_bridge import client as client_module

    forgotten = Client(engine.endpoint, KEY)
    assert forgotten in client_module._open_clients
    client_module._close_open_clients()
    assert forgotten.closed and forgotten not in client_module._open_clients


def test_shutdown(engine, client):
    client.shutdown()
    assert not client.is_alive(timeout=0.3)


def test_waiting_on_a_failed_job_raises():
    jobs = {
        "dead": FakeJob("dead", TrainRequest(task="generation", stored_image="i"), [], state=JobState.FAILED)
    }
    with FakeEngine(jobs=jobs) as engine, Client(engine.endpoint, KEY, timeout=5) as client:
        with pytest.raises(RemoteError, match="job dead failed") as err:
            client.wait_job("dead", timeout=5)
        assert err.value.code is ErrorCode.JOB_FAILED


def test_a_bad_endpoint_fails_in_the_constructor():
    import zmq

    with pytest.raises(zmq.ZMQError):
        Client("nonsense://", KEY)
