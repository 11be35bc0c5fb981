"""The extension entry point: registers the actions and hands each to a JobController. Nothing else."""

from __future__ import annotations

from pathlib import Path

from krita import Extension
from PyQt5.QtWidgets import QMenu

from editor_bridge.plugin_core import Operation
from editor_bridge.plugin_runner import Settings

from .job import JobController

MENU = "singan_studio_menu"  # Tools > Scripts > SinGAN Studio, holding the actions below
ACTIONS = {
    "singan_harmonize": Operation.HARMONIZE,
    "singan_edit": Operation.EDIT,
    "singan_variation": Operation.VARIATION,
    "singan_retrain_harmonize": Operation.RETRAIN_HARMONIZE,
    "singan_retrain_edit": Operation.RETRAIN_EDIT,
}


class SinganExtension(Extension):
    def __init__(self, parent) -> None:
        super().__init__(parent)
        self.controller: JobController | None = None

    def setup(self) -> None:
        self.controller = JobController(Settings.load(Path(__file__).resolve().parent))

    def createActions(self, window) -> None:  # noqa: N802 (Krita's name)
        # Krita places an action in an existing menu only; a submenu is an action that carries a QMenu.
        menu = QMenu("SinGAN Studio", window.qwindow())
        window.createAction(MENU, "SinGAN Studio", "tools/scripts").setMenu(menu)
        for name, op in ACTIONS.items():
            action = window.createAction(name, op.label, "")  # "": in no menu of Krita's, only in ours
            action.triggered.connect(lambda _checked=False, op=op: self._start(op))
            menu.addAction(action)

    def _start(self, op: Operation) -> None:
        if self.controller is None:  # setup() runs first in Krita; this is for scripts that skip it
            self.setup()
        assert self.controller is not None
        self.controller.start(op)
