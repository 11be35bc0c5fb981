"""A real Ray cluster on loopback, for the tests (tests/test_cluster.py) and the scale-out benchmark: a head
node and worker nodes (1 CPU each unless told), every process of a node in its own session so that a node
can be killed whole (as a machine that dies) and the whole cluster stopped after."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Ray's command line through this interpreter: its `ray` script need not sit beside it (a venv made with
# --system-site-packages has none)
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
# The GCS checks each node every 500 ms and declares it dead after 3 missed checks (the default takes
# 30 s), so that a killed node's work moves on within a test's time.
ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "ENGINE_THREADS": "1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(sid: int) -> list[int]:
    """The live processes of session `sid` (its leader included; zombies, which hold nothing, left out)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError, FileNotFoundError):
                if os.getsid(int(entry.name)) == sid and ") Z " not in (entry / "stat").read_text():
                    pids.append(int(entry.name))
    return pids


class LocalCluster:
    def __init__(self, logs: Path) -> None:
        # Ray's socket paths live under the temp dir and must stay short (a Unix socket path is at most
        # 107 bytes): a short folder of its own in /tmp.
        self.temp_dir = Path(f"/tmp/ray-{os.getpid()}-{_free_port()}")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self.logs = logs
        self.last_status = ""  # what `ray status` said last (for a failure's message)

    def _start(self, *args: str, cpus: int = 1) -> subprocess.Popen:
        log = open(self.logs / f"node{len(self.nodes)}.log", "w")  # noqa: SIM115 (kept for the node's life)
        node = subprocess.Popen(
            [*RAY, "start", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--block", *args],
            start_new_session=True,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.nodes.append(node)
        return node

    def start(self, workers: int = 1, head_cpus: int = 1) -> LocalCluster:
        self._start(
            "--head",
            "--port",
            str(self.port),
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(self.temp_dir),
            cpus=head_cpus,
        )
        self.wait_for(1)
        for _ in range(workers):
            self.add_node()
        return self

    def add_node(self) -> subprocess.Popen:
        # Counted as exactly the running nodes before and after: a node killed just before may still count
        # as active for a while (until the GCS's health checks fail), so "one more than now" could be met
        # by the dead node, or never met once it dropped out.
        self.wait_for_running_nodes()
        node = self._start("--address", self.address)
        self.wait_for_running_nodes()
        return node

    def alive(self) -> int:
        """Nodes the cluster counts as active (`ray status` reads the GCS; `ray list` would need the
        dashboard, which these clusters leave out)."""
        done = subprocess.run(
            [*RAY, "status", "--address", self.address], capture_output=True, text=True, env=ENV, timeout=60
        )
        self.last_status = f"`ray status` exit {done.returncode}: {(done.stdout + done.stderr)[-1500:]}"
        if done.returncode != 0 or "Active:" not in done.stdout:
            return 0
        active = done.stdout.split("Active:", 1)[1].split("Pending:", 1)[0]
        return sum(line.strip().startswith("1 node_") for line in active.splitlines())

    def wait_for(self, n: int, timeout: float = 90, exact: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.alive()
            if alive == n or (alive > n and not exact):
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"the Ray cluster did not reach {n} nodes: see {self.logs}; last {self.last_status}"
        )

    def kill(self, node: subprocess.Popen) -> None:
        """SIGKILL every process of the node, as a machine that dies loses them all. Ray gives each worker
        a process group of its own inside the node's session, so the session is what is killed: killing
        the group alone left a worker finishing its task after its raylet died (a training meant to be cut
        off came back complete, not resumed, in a CI run)."""
        for _ in range(10):  # again while any is left: one may have been forked during the last sweep
            pids = _session(node.pid)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        node.wait()

    def wait_for_running_nodes(self) -> None:
        """Until the cluster counts exactly the nodes whose processes run: started ones joined, killed ones
        dropped (its health checks take seconds to notice those)."""
        self.wait_for(sum(n.poll() is None for n in self.nodes), exact=True)

    def stop(self) -> None:
        """Every node killed at once (the processes hold nothing that needs a clean exit)."""
        for node in self.nodes:  # (a node whose leader exited may still have workers in its session)
            self.kill(node)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
