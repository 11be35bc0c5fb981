"""The extension entry point: registers the actions and hands each to a JobController. Nothing else.

The actions are the engine's operations for editors, read from its capabilities when Krita starts
(editor_bridge.plugin_runner.load_menu): an operation added to the engine appears after a restart of Krita,
with no new plugin."""

from __future__ import annotations

import logging
from pathlib import Path

from krita import Extension
from PyQt5.QtWidgets import QMenu

from editor_bridge.plugin_core import KRITA_MENU, CanvasError, Operation
from editor_bridge.plugin_runner import ArtistMessage, Settings, load_menu

from .job import JobController

log = logging.getLogger(__name__)
PLUGIN_DIR = Path(__file__).resolve().parent


class SinganExtension(Extension):
    def __init__(self, parent) -> None:
        super().__init__(parent)
        self.controller: JobController | None = None

    def setup(self) -> None:
        self.controller = JobController(Settings.load(PLUGIN_DIR))

    def createActions(self, window) -> None:  # noqa: N802 (Krita's name)
        # Krita places an action in an existing menu only; a submenu is an action that carries a QMenu.
        menu = QMenu("SinGAN Studio", window.qwindow())
        window.createAction(*KRITA_MENU, "tools/scripts").setMenu(menu)
        try:
            entries = load_menu(Settings.load(PLUGIN_DIR), PLUGIN_DIR)
        except CanvasError as exc:
            log.error("%s", exc)
            problem = str(exc)
            action = window.createAction("singan_unavailable", "Why is this menu empty?", "")
            action.triggered.connect(lambda _checked=False: self._explain(problem))
            menu.addAction(action)
            return
        for op in entries:
            # "": in no menu of Krita's, only in ours
            action = window.createAction(op.krita_action, op.label, "")
            action.triggered.connect(lambda _checked=False, op=op: self._start(op))
            menu.addAction(action)

    def _controller(self) -> JobController:
        if self.controller is None:  # setup() runs first in Krita; this is for scripts that skip it
            self.setup()
        assert self.controller is not None
        return self.controller

    def _start(self, op: Operation) -> None:
        self._controller().start(op)

    def _explain(self, problem: str) -> None:
        self._controller().show(ArtistMessage("SinGAN Studio", problem[:1].upper() + problem[1:]))
