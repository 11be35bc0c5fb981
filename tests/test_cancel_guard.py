"""CancelGuard: a plug-in process killed mid-job (what GIMP's Cancel does) gets its engine job cancelled by
the watcher; a plug-in that finishes cancels nothing. Real processes against a fake engine on loopback."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugin_fakes import KEY, PluginFakeEngine

from editor_bridge.cancel_guard import watch
from editor_bridge.connection import ConnectionInfo, write_connection_file
from editor_bridge.plugin_runner import Runner, Settings
from editor_bridge.protocol import CancelRequest, JobState

TESTS = Path(__file__).resolve().parent
# A plug-in as GIMP runs it: its own process, one Runner, the guard told of each job; it prints the job id
# once the guard knows it, so that the test kills it mid-job and not before.
PLUGIN = f"""
import sys
sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]
from test_plugin_core import EDIT, make_canvas
from editor_bridge.cancel_guard import CancelGuard
from editor_bridge.plugin_runner import Runner, Settings

def on_job(job_id):
    guard.watch(job_id)
    print("job", job_id, flush=True)

settings = Settings(home=sys.argv[1], timeout_s=5)
with CancelGuard(settings.home, settings.timeout_s) as guard:
    Runner(settings, on_job=on_job).run(EDIT, make_canvas())
print("finished", flush=True)
"""


@pytest.fixture
def slow_engine(tmp_path):
    with PluginFakeEngine(steps=1200, step_s=0.05) as eng:  # 60 s unless cancelled
        write_connection_file(ConnectionInfo(endpoint=eng.endpoint, key=KEY, pid=os.getpid()), home=tmp_path)
        yield eng


def start_plugin(home: Path) -> tuple[subprocess.Popen[str], str]:
    # Its own process group, like a plug-in GIMP would kill as a group: the guard must outlive even that.
    plugin = subprocess.Popen(
        [sys.executable, "-c", PLUGIN, str(home)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert plugin.stdout is not None
    ready, _, _ = select.select([plugin.stdout], [], [], 60)  # a plug-in that hangs fails, not CI
    assert ready, "the plug-in printed nothing within 60 s"
    line = plugin.stdout.readline().split()
    assert line[:1] == ["job"], f"the plug-in did not start its job: {line}"
    return plugin, line[1]


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_watch_reads_the_last_job_unless_done():
    assert watch(io.StringIO("job j1\njob j2\n")) == "j2"
    assert watch(io.StringIO("job j1\ndone\n")) is None
    assert watch(io.StringIO("")) is None


def test_runner_reports_each_job_as_it_starts(slow_engine, tmp_path):
    from test_plugin_core import EDIT, make_canvas

    slow_engine.steps = 2
    seen: list[str] = []
    Runner(Settings(home=str(tmp_path), timeout_s=5), on_job=seen.append).run(EDIT, make_canvas())
    assert seen == list(slow_engine.jobs)


def test_killed_plugin_gets_its_job_cancelled(slow_engine, tmp_path):
    plugin, job_id = start_plugin(tmp_path)
    job = slow_engine.jobs[job_id]
    os.killpg(plugin.pid, signal.SIGKILL)  # GIMP's Cancel: no code of the plug-in runs after this
    plugin.wait(5)
    assert wait_for(lambda: job.state is JobState.CANCELLED, 30), f"job still {job.state}"
    assert CancelRequest(job_id=job_id) in slow_engine.requests


def test_finished_plugin_cancels_nothing(tmp_path):
    with PluginFakeEngine(steps=3, step_s=0.05) as eng:
        write_connection_file(ConnectionInfo(endpoint=eng.endpoint, key=KEY, pid=os.getpid()), home=tmp_path)
        plugin, job_id = start_plugin(tmp_path)
        out, _ = plugin.communicate(timeout=60)
        assert plugin.returncode == 0 and "finished" in out
        time.sleep(0.5)  # a wrong watcher would cancel right after the plug-in exits
        assert eng.jobs[job_id].state is JobState.DONE
        assert not any(isinstance(r, CancelRequest) for r in eng.requests)
