"""A fake engine that answers the plugins' requests the way `engine serve` does, for the editor-free tests.

Harmonize/edit return the composite with its colours inverted, in the request's channel order; train returns a
model named as asked; sample returns a gradient of the requested size; animate 3 frames of 6x4,
frame k all (k, 10 + k, 20 + k).
`python tests/plugin_fakes.py serve --home DIR` runs it as a process with a connection file, as the plugins'
"start the engine" button would.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge_fakes import KEY, NOW, FakeEngine, FakeJob  # noqa: E402

from editor_bridge import frames  # noqa: E402
from editor_bridge.plugin_core import Operation, menu  # noqa: E402
from editor_bridge.protocol import (  # noqa: E402
    ApplyRequest,
    ChannelOrder,
    ListModelsRequest,
    ModelInfo,
    ModelListReply,
    ResultReply,
    TrainRequest,
)

# The plugins' menu entries, as built from this engine's capabilities.
ENTRIES: dict[str, Operation] = {}


def entry(action: str) -> Operation:
    """A menu entry by its action id ("harmonize", "retrain-edit", "variation")."""
    if not ENTRIES:
        from engine import families

        ENTRIES.update({op.action: op for op in menu(families.capabilities())})
    return ENTRIES[action]


class PluginFakeEngine(FakeEngine):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.models: list[ModelInfo] = []
        self.requests: list = []

    def _handle(self, req) -> None:
        self.requests.append(req.content)
        if isinstance(req.content, ListModelsRequest):
            models = [m for m in self.models if req.content.task in (None, m.task)]
            assert self.server is not None
            self.server.reply(req, ModelListReply(models=models))
            return
        super()._handle(req)

    def _send_result(self, job: FakeJob, parent=None) -> None:
        request, buffers = job.request, []
        if isinstance(request, ApplyRequest) and request.operation == "sample":
            h, w = request.params.get("height") or 8, request.params.get("width") or 8
            ramp = np.linspace(0, 255, int(w), dtype=np.uint8)
            image = np.stack([np.tile(ramp, (int(h), 1))] * 3, axis=2)
            seeds = [request.params["seed"]] if request.params.get("seed") is not None else []
            image_desc = frames.attach(buffers, image, ChannelOrder.RGB)
            reply = ResultReply(job_id=job.job_id, images=[image_desc], seeds=seeds)
        elif isinstance(request, ApplyRequest) and request.operation == "animate":
            clip = [np.full((4, 6, 3), (k, 10 + k, 20 + k), np.uint8) for k in range(3)]
            reply = ResultReply(
                job_id=job.job_id, images=[frames.attach(buffers, f, ChannelOrder.RGB) for f in clip]
            )
        elif isinstance(request, ApplyRequest):
            assert request.image is not None
            if request.preview:  # a preview first: the input with its colours halved
                halved = job.images[0].copy()
                halved[..., :3] //= 2
                preview_buffers: list = []
                desc = frames.attach(preview_buffers, halved, request.image.channel_order)
                self._broadcast(
                    job, ResultReply(job_id=job.job_id, images=[desc], preview=True), preview_buffers
                )
            image = job.images[0].copy()
            image[..., :3] = 255 - image[..., :3]
            reply = ResultReply(
                job_id=job.job_id, images=[frames.attach(buffers, image, request.image.channel_order)]
            )
        elif isinstance(request, TrainRequest):
            assert request.image is not None
            model = ModelInfo(
                model_id=f"gen{len(self.models)}",
                name=request.name or "model",
                family=request.family,
                task=request.task or "generation",
                width=request.image.width,
                height=request.image.height,
                n_stages=2,
                created=NOW,
            )
            self.models.append(model)
            reply = ResultReply(job_id=job.job_id, model=model)
        else:
            super()._send_result(job, parent)
            return
        self._broadcast(job, reply, buffers)


def serve_main(argv: list[str]) -> int:
    """`plugin_fakes.py serve --home DIR`: serve until SIGTERM with a connection file, like `engine serve`."""
    from editor_bridge.connection import ConnectionInfo, remove_connection_file, write_connection_file

    home = argv[argv.index("--home") + 1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with PluginFakeEngine(steps=2) as engine:
        info = ConnectionInfo(endpoint=engine.endpoint, key=KEY, pid=os.getpid())
        write_connection_file(info, home=home)
        stop.wait(120)
        remove_connection_file(home=home)
    return 0


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))


__all__ = ["KEY", "PluginFakeEngine", "entry"]
