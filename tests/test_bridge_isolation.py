"""editor_bridge must load in an editor's Python, where torch and the engine do not exist."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.import_blocker import EDITOR_BLOCKED, blocker_source

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = blocker_source(*EDITOR_BLOCKED) + textwrap.dedent(
    """
    import sys, threading

    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not work")

    import editor_bridge
    from editor_bridge import client, connection, errors, frames, protocol, server, signing, wire  # noqa

    stop, ready, box = threading.Event(), threading.Event(), {}

    def run():
        with server.BridgeServer("k") as srv:
            box["endpoint"] = srv.endpoint
            ready.set()
            srv.serve(lambda r: srv.reply(r, protocol.PongReply(engine_version="iso")), stop, poll_s=0.01)

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(5)
    with editor_bridge.Client(box["endpoint"], "k", timeout=5) as c:
        assert c.ping().engine_version == "iso"
    stop.set()
    thread.join(5)
    bad = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "engine"})
    assert not bad, bad
    print("ok")
    """
)


def test_editor_bridge_works_with_torch_blocked():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
