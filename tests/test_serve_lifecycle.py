"""The daemon's lifecycle as a user lives it: kill -9 and restart mid-training, SIGTERM, `engine stop`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from serve_helpers import ENV, Daemon, harmonize_request, krita_layers

from editor_bridge import Client
from editor_bridge.errors import EngineNotRunning
from editor_bridge.protocol import JobState, MsgType, TrainRequest


def _train_request(shared_images, iters: int, name: str) -> tuple[TrainRequest, list]:
    request, buffers = harmonize_request(krita_layers(shared_images))
    image = request.background.model_copy(update={"buffer_index": 0})
    options = {"preset": "tiny", "iters": iters}
    return TrainRequest(task="harmonization", image=image, options=options, name=name), [buffers[2]]


def _wait_for_log(daemon: Daemon, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.output():
        assert time.monotonic() < deadline, f"{text!r} not in the log: {daemon.output()}"
        time.sleep(0.1)


def _engine(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "engine.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)


def test_kill9_mid_training_then_restart_resumes_and_results_stay(tmp_path, shared_images):
    home = tmp_path / "home"
    first = Daemon(home).wait_ready()
    later: list[Daemon] = []
    try:
        train, buffers = _train_request(shared_images, iters=40, name="kept")
        with first.client() as client:
            job_id = client.submit(train, buffers)
        in_second_stage = threading.Event()
        outcome: dict = {}

        def follow() -> None:
            # One client across the crash: it notices the silence, re-reads the connection file and
            # re-subscribes to the job on the restarted daemon (lazy pirate).
            with Client.from_connection_file(home=home, timeout=30, heartbeat_s=1, max_reconnects=120) as c:

                def on_progress(event, preview):
                    if event.stage == 1 and not in_second_stage.is_set():
                        # At once, from here: stage 1 has just begun and must not end before the crash.
                        first.proc.kill()
                        in_second_stage.set()

                try:
                    outcome["reply"] = c.wait_job(job_id, on_progress=on_progress, timeout=300)
                except Exception as exc:  # reported by the assertions below
                    outcome["error"] = exc

        follower = threading.Thread(target=follow)
        follower.start()
        assert in_second_stage.wait(120), first.output()
        first.kill9()  # (already killed; this reaps it) stage 0 is checkpointed; stage 1 had begun
        assert first.connection_file.exists()  # left behind by the crash, and known to be stale:
        with pytest.raises(EngineNotRunning):
            Client.from_connection_file(home=home)

        second = Daemon(home).wait_ready()
        later.append(second)
        with second.client() as client:
            jobs = {j.job_id: j.state for j in client.status().jobs}
        assert jobs.get(job_id) in (JobState.INTERRUPTED, JobState.RUNNING, None)
        _wait_for_log(second, f"job {job_id} resumes training from its checkpoint")
        follower.join(300)
        assert "error" not in outcome, outcome.get("error")
        model = outcome["reply"].content.model
        assert model.name == "kept" and model.n_stages == 2

        second.kill9()  # a crash after the job finished: its result is still there
        third = Daemon(home).wait_ready()
        later.append(third)
        with third.client() as client:
            again = client.wait_job(job_id, timeout=60)
            assert again.content.model == model and again.content.job_id == job_id
            assert [m.model_id for m in client.list_models()] == [model.model_id]
            assert client.status().jobs == []

        stop = _engine("stop", "--home", str(home))
        assert stop.returncode == 0, stop.stderr
        assert third.proc.wait(30) == 0 and not third.connection_file.exists()
    finally:
        for d in (first, *later):
            d.stop()


def test_kill9_mid_finetuning_then_restart_resumes_it(tmp_path, shared_images):
    home = tmp_path / "home"
    first = Daemon(home).wait_ready()
    later: list[Daemon] = []
    try:
        train, buffers = _train_request(shared_images, iters=2, name="base")
        naive, naive_buffers = harmonize_request(krita_layers(shared_images))

        class Tuning(Exception):
            pass

        def on_progress(event, preview):
            raise Tuning  # it is under way: stop following

        with first.client() as client:
            base = client.run_job(train, buffers, timeout=240).content.model
            tune = TrainRequest(base_model=base.model_id, image=naive.image, options={"iters": 200})
            job_id = client.submit(tune, [naive_buffers[0]])
            with pytest.raises(Tuning):
                client.wait_job(job_id, on_progress=on_progress, timeout=120)
        first.kill9()
        assert (home / "jobs" / job_id / "model" / "checkpoint" / "state.pt").is_file()

        second = Daemon(home).wait_ready()
        later.append(second)
        _wait_for_log(second, f"job {job_id} resumes fine-tuning from its checkpoint")
        with second.client() as client:
            tuned = client.wait_job(job_id, timeout=300).content.model
            assert tuned.name == "base (fine-tuned)" and tuned.model_id != base.model_id
            assert {m.model_id for m in client.list_models()} == {base.model_id, tuned.model_id}
    finally:
        for d in (first, *later):
            d.stop()


def test_sigterm_checkpoints_running_training_and_the_next_start_resumes_it(tmp_path, shared_images):
    home = tmp_path / "home"
    daemon = Daemon(home).wait_ready()
    restarted = None
    try:
        train, buffers = _train_request(shared_images, iters=2000, name="long")

        class Training(Exception):
            pass

        def on_progress(event, preview):
            if event.iteration >= 2:
                raise Training  # it is well under way: stop following

        with daemon.client() as client:
            job_id = client.submit(train, buffers)
            with pytest.raises(Training):
                client.wait_job(job_id, on_progress=on_progress, timeout=120)

        assert daemon.terminate(60) == 0
        assert not daemon.connection_file.exists()
        assert "stopped cleanly" in daemon.output()
        with sqlite3.connect(home / "jobs.sqlite3") as db:
            (state,) = db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        assert state == JobState.INTERRUPTED.value
        assert (home / "jobs" / job_id / "model" / "checkpoint" / "state.pt").is_file()

        restarted = Daemon(home).wait_ready()
        _wait_for_log(restarted, f"job {job_id} resumes training from its checkpoint")
        status = _engine("status", "--home", str(home), "--json")
        assert job_id in status.stdout and "running" in status.stdout
        with restarted.client() as client:
            client.cancel(job_id)
            deadline = time.monotonic() + 60
            while client.job_status(job_id).state is not JobState.CANCELLED:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        daemon.stop()
        if restarted is not None:
            restarted.stop()


def test_status_and_stop_without_a_daemon(tmp_path):
    for command in (["status"], ["stop"], ["cancel", "j" + "1" * 16]):
        proc = _engine(*command, "--home", str(tmp_path))
        assert proc.returncode == 3 and "no engine is running" in proc.stderr


def test_a_deleted_connection_file_is_written_again_and_every_command_agrees(tmp_path):
    daemon = Daemon(tmp_path / "home").wait_ready()
    try:
        first = daemon.connection_file.read_text()
        daemon.connection_file.unlink()
        # `engine serve` finds the running engine by its lock, and names it.
        proc = _engine("serve", "--home", str(daemon.home))
        assert (
            proc.returncode == 3
            and f"already running for {daemon.home} (pid {daemon.proc.pid}" in proc.stderr
        )
        status = _engine(
            "status", "--home", str(daemon.home), "--json"
        )  # waits for the file, not "no engine"
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == daemon.proc.pid, status.stderr
        assert daemon.connection_file.read_text() == first  # the same endpoint and key: clients keep working
        assert "was removed or changed; writing it again" in daemon.output()
        daemon.connection_file.unlink()
        proc = _engine("stop", "--home", str(daemon.home), "--json")
        assert proc.returncode == 0 and json.loads(proc.stdout)["stopped"] == daemon.proc.pid, proc.stderr
        assert daemon.proc.wait(30) == 0
    finally:
        daemon.stop()


def test_stop_says_so_when_the_engine_neither_answers_nor_stops(tmp_path):
    import os

    from bridge_fakes import KEY, FakeEngine

    from editor_bridge.connection import ConnectionInfo, write_connection_file
    from editor_bridge.protocol import PingRequest, PongReply

    def handler(server, request):  # answers pings only: a stop request goes unanswered, and nothing stops
        if isinstance(request.content, PingRequest):
            server.reply(request, PongReply(engine_version="fake", pid=os.getpid()))

    with FakeEngine(handler=handler) as engine:
        info = ConnectionInfo(endpoint=engine.endpoint, key=KEY, pid=os.getpid())
        write_connection_file(info, home=tmp_path)
        proc = _engine("stop", "--home", str(tmp_path), "--timeout", "1")
    assert proc.returncode == 2
    assert f"the engine (pid {os.getpid()}) did not answer the stop request and still runs" in proc.stderr


def test_status_without_a_daemon_still_lists_models_and_the_jobs_it_will_resume(tmp_path, tiny_models):
    from engine.serve.journal import Journal
    from engine.serve.registry import Registry, new_model_id

    home = tmp_path / "home"
    model_id = new_model_id()
    shutil.copytree(tiny_models["harmonization"], tmp_path / "trained")
    (tmp_path / "trained" / "sampler.onnx").unlink(missing_ok=True)  # other tests may have exported one
    Registry(home / "models").add(
        tmp_path / "trained", model_id=model_id, name="kept", preset="tiny", training_key=None
    )
    journal = Journal(home / "jobs.sqlite3")  # as a daemon killed with -9 leaves it
    for job_id, kind, state in [
        ("j" + "1" * 16, MsgType.TRAIN, JobState.RUNNING),
        ("j" + "2" * 16, MsgType.APPLY, JobState.QUEUED),
        ("j" + "3" * 16, MsgType.TRAIN, JobState.DONE),
    ]:
        journal.add(job_id, kind, {}, 0)
        journal.update(job_id, state)
    journal.close()
    before = sorted(p.relative_to(home) for p in home.rglob("*"))

    proc = _engine("status", "--home", str(home), "--json")
    assert proc.returncode == 3, proc.stderr
    assert "no engine is running" in proc.stderr and f"`engine serve --home {home}`" in proc.stderr
    status = json.loads(proc.stdout)
    assert status["ok"] is False and status["running"] is False and status["home"] == str(home)
    assert status["models"] == [f"{model_id} 'kept' consingan harmonization 38x48"]
    # The one left running was interrupted by the crash; both resume on the next start.
    assert status["jobs"] == [f"j{'1' * 16} train interrupted", f"j{'2' * 16} apply queued"]

    text = _engine("status", "--home", str(home))
    assert text.returncode == 3 and "running: False" in text.stdout and model_id in text.stdout
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before  # it only read


def test_a_damaged_stored_model_is_left_out_of_the_list_not_fatal_to_it(tmp_path, tiny_models):
    from engine.errors import ModelNotFoundError
    from engine.serve.registry import Registry

    registry = Registry(tmp_path / "models")
    for model_id in ("mgood", "mbroken"):
        shutil.copytree(tiny_models["harmonization"], tmp_path / model_id)
        registry.add(tmp_path / model_id, model_id=model_id, name=model_id, preset="tiny", training_key=None)
    meta_path = tmp_path / "models" / "mbroken" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["stage_shapes"]
    meta_path.write_text(json.dumps(meta))
    assert [info.model_id for info in registry.list()] == ["mgood"]
    with pytest.raises(ModelNotFoundError, match="mbroken is damaged.*train again"):
        registry.info("mbroken")


def test_with_no_home_given_clients_find_the_engine_through_xdg_runtime_dir(tmp_path):
    # A desktop session: $XDG_RUNTIME_DIR is set and nobody passes --home. `engine serve` must put its
    # connection file where `engine status`, `engine stop`, batch and the plugins look for it.
    env = {k: v for k, v in ENV.items() if k not in ("ENGINE_HOME", "XDG_DATA_HOME")}
    env.update(HOME=str(tmp_path / "user"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    engine = [sys.executable, "-m", "engine.cli"]
    log = tmp_path / "serve.log"  # a file, not a pipe nobody drains while the engine runs
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [*engine, "serve", "--backend", "torch"], env=env, stdout=subprocess.DEVNULL, stderr=out
        )
    connection_file = tmp_path / "run" / "singan-studio" / "engine.json"
    try:
        deadline = time.monotonic() + 90
        while not connection_file.is_file():
            assert serve.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "no connection file under $XDG_RUNTIME_DIR"
            time.sleep(0.2)
        run = {"env": env, "capture_output": True, "text": True, "timeout": 120}
        status = subprocess.run([*engine, "status", "--json"], **run)
        assert status.returncode == 0, status.stderr
        reply = json.loads(status.stdout)
        assert reply["running"] is True and reply["pid"] == serve.pid
        assert reply["home"] == str(tmp_path / "user" / ".local" / "share" / "singan-studio")
        stop = subprocess.run([*engine, "stop"], **run)
        assert stop.returncode == 0, stop.stderr
        assert serve.wait(60) == 0 and not connection_file.exists()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)


@pytest.mark.parametrize("junk", ["corrupt journal", "models is a file"])
def test_a_home_the_engine_cannot_use_is_refused_in_one_line_with_what_to_do(tmp_path, junk):
    home = tmp_path / "home"
    home.mkdir()
    if junk == "corrupt journal":
        (home / "jobs.sqlite3").write_bytes(b"this is not a database" * 100)
        expected = "jobs.sqlite3 is unreadable"
    else:
        (home / "models").write_text("oops")
        expected = "models is a file"
    commands = [("serve", "--home", str(home))]
    if junk == "corrupt journal":
        commands.append(("status", "--home", str(home)))  # without a daemon, status reads the journal
    for args in commands:
        proc = _engine(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, proc.stderr)
        assert "move" in lines[0]
