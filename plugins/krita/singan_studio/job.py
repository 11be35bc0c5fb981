"""One operation at a time, off the GUI thread: a QThread worker, a progress dialog with Cancel, and the
artist's messages. The work itself (request, engine, result bytes) is editor_bridge's Runner."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from krita import Krita
from PyQt5.QtCore import QObject, Qt, QThread, QTimer, pyqtSignal
from PyQt5.QtWidgets import QApplication, QMessageBox, QProgressDialog

from editor_bridge.plugin_core import Animation, Canvas, LayerPatch, NewImage, Operation
from editor_bridge.plugin_runner import (
    ArtistMessage,
    Progress,
    Runner,
    Settings,
    artist_message,
    models_for,
    start_engine,
)

from .dialog import Picked, ask_harmonize_options, ask_model, ask_values
from .document import (
    ClipFile,
    Target,
    add_animated_layer,
    add_result_layer,
    clip_step,
    fill_result_layer,
    open_new_image,
    read_canvas,
    write_clip,
)

log = logging.getLogger(__name__)
# How long quitting Krita waits for a cancelled job to let go of its socket: more than the client waits for
# the engine to confirm a cancel (editor_bridge.client.CANCEL_GRACE_S, 10 s), so even a hung engine lets go.
QUIT_WAIT_MS = 15_000


class Worker(QObject):
    """Runs `task` on the worker thread; every outcome goes back to the GUI thread as a queued signal."""

    progressed = pyqtSignal(int, str)
    previewed = pyqtSignal(object)
    succeeded = pyqtSignal(object)
    failed = pyqtSignal(object)

    def __init__(self, task: Callable[[Worker], LayerPatch | ClipFile | NewImage]) -> None:
        super().__init__()
        self._task = task

    def run(self) -> None:
        try:
            patch = self._task(self)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the artist, never kill Krita
            self.failed.emit(exc)
        else:
            self.succeeded.emit(patch)


class JobController(QObject):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self._thread: QThread | None = None
        self._worker: Worker | None = None
        self._dialog: QProgressDialog | None = None
        self._cancel = threading.Event()
        self._op: Operation | None = None
        self._target: Target | None = None
        # The running job again, after starting the engine (when the engine was not running): the same
        # picture and the same answers to the entry's dialogs.
        self._again: Callable[[], None] | None = None
        self._preview_layer = None  # the result layer while it holds a preview (engine/preview.py)
        # True while the preview is written: Krita waits for a busy image inside addChildNode delivering
        # queued signals, so the final result could otherwise be handled inside the preview's write.
        self._writing = False
        app = QApplication.instance()
        if app is not None:
            # A QThread destroyed while running aborts the process: stop the job before Krita tears down.
            app.aboutToQuit.connect(self.shutdown)

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, op: Operation) -> None:
        if self.busy:
            self._show(ArtistMessage(op.label, "Another job is still running; wait for it or cancel it."))
            return
        color_match, refine = None, False
        if op.ask_color_match:
            options = ask_harmonize_options(
                self._window(), op.label, self.settings.harmonize_color_match, op.can_refine
            )
            if options is None:
                return  # cancelled in the dialog: nothing was read or sent
            color_match, refine = options
        picked = None
        if op.pick_model:
            QApplication.setOverrideCursor(Qt.WaitCursor)
            try:
                models = models_for(self.settings, op)
            except Exception as exc:  # noqa: BLE001 - no engine, no model: the artist reads what to do
                QApplication.restoreOverrideCursor()
                self._show(artist_message(exc, op))
                return
            QApplication.restoreOverrideCursor()
            picked = ask_model(self._window(), op, models)
            if picked is None:
                return  # cancelled in the dialog
        values = picked[3] if picked is not None else None  # asked with the model
        if op.asks and not op.pick_model:
            values = ask_values(self._window(), op)
            if values is None:
                return  # cancelled in the dialog
        # Read after the dialog: reading the background refreshes the whole image twice (and a float
        # image is converted for the engine: seconds for a large one, so the cursor says it is busy).
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            canvas, target = read_canvas(op=op)
        except Exception as exc:  # noqa: BLE001
            QApplication.restoreOverrideCursor()
            self._show(artist_message(exc, op))
            return
        QApplication.restoreOverrideCursor()
        self._launch(op, canvas, target, color_match, refine, picked, values, start_first=False)

    def _launch(
        self,
        op: Operation,
        canvas: Canvas,
        target: Target,
        color_match: float | None,
        refine: bool,
        picked: Picked | None,
        values: dict[str, float] | None,
        *,
        start_first: bool,
    ) -> None:
        self._op, self._target = op, target
        self._again = functools.partial(
            self._launch, op, canvas, target, color_match, refine, picked, values, start_first=True
        )
        model_id, choices, seed = picked[:3] if picked is not None else (None, None, None)
        self._cancel = threading.Event()
        settings, cancel = self.settings, self._cancel
        step = clip_step(target.document, op.fps) if op.frames else 1  # here: the GUI thread reads Krita

        def task(worker: Worker) -> LayerPatch | ClipFile | NewImage:
            def report(progress: Progress) -> None:
                worker.progressed.emit(progress.percent, progress.text)

            if start_first:
                report(Progress(0, "Starting the engine..."))
                start_engine(settings, cancel=cancel)
            runner = Runner(settings, report, cancel, seed=seed, on_preview=worker.previewed.emit)
            result = runner.run(
                op, canvas, color_match=color_match, refine=refine, model_id=model_id, choices=choices,
                values=values,
            )  # fmt: skip
            if not isinstance(result, Animation):
                return result
            n = len(result.frames)
            return write_clip(
                target, result, step,
                lambda i: report(Progress(100 * i // n, f"Writing frame {i + 1} of {n}...")),
            )  # fmt: skip

        self._dialog = dialog = QProgressDialog(f"{op.label}...", "Cancel", 0, 100, self._window())
        dialog.setWindowTitle(op.label)
        dialog.setWindowModality(Qt.NonModal)  # the artist may keep painting while the engine trains
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.setMinimumDuration(0)
        dialog.canceled.connect(self._on_cancel)
        dialog.show()

        self._thread, self._worker = QThread(), Worker(task)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.progressed.connect(self._on_progress)
        self._worker.previewed.connect(self._on_preview)
        self._worker.succeeded.connect(self._on_success)
        self._worker.failed.connect(self._on_failure)
        self._thread.start()

    def _on_progress(self, percent: int, text: str) -> None:
        if self._dialog is not None and not self._cancel.is_set():
            self._dialog.setValue(percent)
            self._dialog.setLabelText(text)

    def _on_preview(self, patch: LayerPatch) -> None:
        """The training-free preview: written as the result layer now (one undo step), its pixels and name
        replaced by the final result's when that comes. Cancelling the training keeps it."""
        target = self._target
        if target is None or target.document not in Krita.instance().documents() or self._cancel.is_set():
            return
        self._writing = True
        try:
            self._preview_layer = add_result_layer(target, patch)
        except Exception:  # noqa: BLE001 - the final result still comes; a slot must not raise
            log.exception("could not add the preview layer")
            return
        finally:
            self._writing = False
        if self._dialog is not None:
            self._dialog.setLabelText(f"{patch.name} shown. Training for the final result...")

    def _on_cancel(self) -> None:
        """QProgressDialog hides itself on Cancel; it stays up, without its button, until the engine has
        stopped the job, so the artist sees that the cancel is under way and can start the next run after."""
        self._cancel.set()
        if self._dialog is not None:
            self._dialog.setCancelButton(None)
            self._dialog.setLabelText("Cancelling: waiting for the engine to stop...")
            self._dialog.show()

    def _on_success(self, patch: LayerPatch | ClipFile | NewImage) -> None:
        if self._writing:  # handled once the preview's write has returned (and it is the layer to fill)
            QTimer.singleShot(50, lambda: self._on_success(patch))
            return
        target, op, preview = self._target, self._op, self._preview_layer
        self._finish()
        assert target is not None
        if isinstance(patch, NewImage):  # a picture of its own: whether its source is still open or not
            try:
                open_new_image(target, patch)
            except Exception as exc:  # noqa: BLE001 - a slot's exception would be lost, or abort Krita
                log.exception("could not open the new image")
                self._show(artist_message(exc, op))
            return
        if target.document not in Krita.instance().documents():
            log.warning("the document was closed before the result arrived; dropping it")
            if isinstance(patch, ClipFile):
                patch.discard()
            text = (
                "The image was closed before the result arrived, so nothing was added. The painting's "
                "model is kept: open it again and run this once more (it takes seconds)."
            )
            self._show(ArtistMessage(op.label if op is not None else "SinGAN Studio", text))
            return
        try:
            if isinstance(patch, ClipFile):
                add_animated_layer(target, patch)
            elif preview is not None and preview.parentNode() is not None:  # still there: the artist kept it
                fill_result_layer(target, preview, patch)
            else:
                add_result_layer(target, patch)
        except Exception as exc:  # noqa: BLE001 - a slot's exception would be lost, or abort Krita
            log.exception("could not add the result layer")
            self._show(artist_message(exc, op))

    def _on_failure(self, exc: BaseException) -> None:
        if self._writing:
            QTimer.singleShot(50, lambda: self._on_failure(exc))
            return
        op, again = self._op, self._again
        self._finish()
        log.info("job failed: %r", exc)
        message = artist_message(exc, op)
        if message.cancelled:
            return
        if message.offer_start and self.settings.engine_command:
            answer = QMessageBox.question(
                self._window(), message.title, "The engine is not running. Start it now?"
            )
            if answer == QMessageBox.Yes and again is not None:
                again()
            return
        self._show(message)

    def _finish(self) -> None:
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
        if self._dialog is not None:
            self._dialog.close()
            self._dialog.deleteLater()
        self._thread = self._worker = self._dialog = None
        self._op = self._target = self._again = None
        self._preview_layer = None

    def shutdown(self) -> None:
        """Cancel a running job and wait for its thread, which closes the engine client on its way out."""
        if self._thread is not None:
            self._cancel.set()
            if not self._thread.wait(QUIT_WAIT_MS):
                log.warning("the job did not stop within %d ms", QUIT_WAIT_MS)

    def show(self, message: ArtistMessage) -> None:
        self._show(message)

    def _show(self, message: ArtistMessage) -> None:
        QMessageBox.warning(self._window(), message.title, message.text)

    @staticmethod
    def _window():
        window = Krita.instance().activeWindow()
        return window.qwindow() if window is not None else None
