"""Running one plugin operation against the engine: settings, starting `engine serve`, progress text, and the
short messages an artist sees when something goes wrong. Editor-free, so both plugins share it.

Everything here may run on a worker thread (Krita) or the plug-in's only thread (GIMP); nothing touches a GUI.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from editor_bridge.cancel_guard import NO_WINDOW
from editor_bridge.client import Client
from editor_bridge.connection import connection_file_path, default_home, find_engine
from editor_bridge.errors import (
    AuthenticationError,
    BridgeError,
    EngineNotRunning,
    JobCancelled,
    RemoteError,
    RequestTimeout,
    UnsupportedVersion,
)
from editor_bridge.plugin_core import (
    Animation,
    Canvas,
    CanvasError,
    Job,
    LayerPatch,
    NewImage,
    Operation,
    animation_from_result,
    apply_job,
    menu,
    new_image_from_result,
    patch_from_result,
    picked_model_job,
    preview_patch,
)
from editor_bridge.protocol import ErrorCode, ModelInfo, ProgressEvent
from editor_bridge.wire import Message

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
# What the engine can do (`engine capabilities --json`), from which the plugins build their menus: written
# beside the plugin by `engine plugin install`, and into the engine's home by `engine serve` at each start
# (the newer of the two is read, so an operation an updated engine adds appears in the menus).
CAPABILITIES_FILE = "capabilities.json"
# The engine's default colour match for harmonization (consingan.modes; tests/test_plugin_runner.py keeps the
# two equal). The plugins' dialogs start from it when the settings file names none.
HARMONIZE_COLOR_MATCH = 1.0
REFINE_ITERS = 500  # fine-tuning when the artist asks to refine: the paper's advice
MAX_REFINE_ITERS = 100_000  # the protocol's bound on finetune_iters
# What both plugins' harmonize dialogs say.
COLOR_MATCH_HELP = (
    "How far the object first moves towards the colours around it, before the model repaints it in the "
    "painting's strokes. 0 keeps its own colours; 0.5 gives it their hue, saturation and contrast and keeps "
    "its own light and shade; 1 (the default) takes on their light too, within limits (a white object on "
    "dark ground is darkened, not made dark)."
)
REFINE_LABEL = "Refine the model on this object first (a closer fit; takes minutes)"
# A seed the dialogs can take back: Krita's QSpinBox and GIMP's int argument hold a C int. Random seeds are
# drawn below it, so the seed a layer is named with can always be typed in again.
MAX_EDITOR_SEED = 2**31 - 1
SEED_HELP = "The same model and seed, with Best of 1, draw the same image (the layer's name gives its seed)"
DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S = 30.0, 3600.0  # how long a request waits for the engine's reply
START_WAIT_S = 60.0  # importing torch and binding the socket takes a few seconds on a cold start


@dataclass(frozen=True)
class Settings:
    """What the installer recorded beside the plugin: which engine to talk to and how to start one."""

    home: str | None = None  # None: $ENGINE_HOME or the user's default, like the engine itself
    engine_command: tuple[str, ...] = ()  # e.g. (python, "-m", "engine.cli"); empty: cannot offer to start
    preset: str | None = None  # training preset for models the plugin asks for (None: the engine's default)
    color_match: float | None = None  # Harmonize selection's colour match, 0-1 (None: the engine's default)
    timeout_s: float = DEFAULT_TIMEOUT_S
    refine_iters: int = REFINE_ITERS  # fine-tuning iterations when the artist asks to refine

    @classmethod
    def load(cls, plugin_dir: str | os.PathLike[str]) -> Settings:
        path = Path(plugin_dir) / SETTINGS_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return cls()
        if not isinstance(data, dict):
            log.warning("ignoring %s: it must hold a JSON object", path)
            return cls()
        return cls(
            home=_text(data.get("home"), "home", path),
            engine_command=_command(data.get("engine_command"), path),
            preset=_text(data.get("preset"), "preset", path),
            color_match=_color_match(data.get("color_match"), path),
            timeout_s=_timeout(data.get("timeout_s", DEFAULT_TIMEOUT_S), path),
            refine_iters=_refine_iters(data.get("refine_iters", REFINE_ITERS), path),
        )

    @property
    def harmonize_color_match(self) -> float:
        """The colour match a Harmonize selection dialog starts from."""
        return HARMONIZE_COLOR_MATCH if self.color_match is None else self.color_match

    def to_json(self) -> str:
        return json.dumps(
            {
                "home": self.home,
                "engine_command": list(self.engine_command),
                "preset": self.preset,
                "color_match": self.color_match,
                "timeout_s": self.timeout_s,
                "refine_iters": self.refine_iters,
            },
            indent=2,
        )


# A hand-edited settings file may hold anything: each bad value is logged and its default used, so that a
# typo never stops the plugin from loading or every action from running.


def _text(value: object, key: str, path: Path) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    log.warning("ignoring %s %r in %s: it must be a non-empty string", key, value, path)
    return None


def _command(value: object, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and value and all(isinstance(part, str) and part for part in value):
        return tuple(value)
    log.warning(
        'ignoring engine_command %r in %s: it must be a list of strings, e.g. ["engine"]', value, path
    )
    return ()


def _timeout(value: object, path: Path) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_TIMEOUT_S:
        return float(value)
    rule = f"it must be a number of seconds, above 0 and at most {MAX_TIMEOUT_S:g}"
    log.warning("ignoring timeout_s %r in %s: %s", value, path, rule)
    return DEFAULT_TIMEOUT_S


def _color_match(value: object, path: Path) -> float | None:
    """The settings file's colour match, or None (the engine's default) when it is absent or not in 0-1: a
    hand-edited typo must not stop every harmonization, so it is logged and the default used."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    log.warning("ignoring color_match %r in %s: it must be a number from 0 to 1", value, path)
    return None


def _refine_iters(value: object, path: Path) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_REFINE_ITERS:
        return value
    rule = f"it must be a whole number from 1 to {MAX_REFINE_ITERS}"
    log.warning("ignoring refine_iters %r in %s: %s", value, path, rule)
    return REFINE_ITERS


# ---- progress ----


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_percent(event: ProgressEvent) -> int:
    """Overall percent across stages: each stage counts the same, which is what the training loop does."""
    done = event.stage + min(event.iteration, event.iters) / event.iters
    return max(0, min(100, int(100 * done / event.n_stages)))


def progress_text(event: ProgressEvent, phase: str = "Training") -> str:
    """One line for a progress dialog, e.g. 'Training: stage 2 of 4, 37%, about 1 min 05 s left'."""
    stage = min(event.stage + 1, event.n_stages)
    text = f"{phase}: stage {stage} of {event.n_stages}, {progress_percent(event)}%"
    if event.eta_s is not None:
        text += f", about {format_duration(event.eta_s)} left"
    return text


@dataclass
class Progress:
    """What a dialog shows; the plugins copy it into their own widgets."""

    percent: int = 0
    text: str = "Sending the image to the engine..."


ProgressSink = Callable[[Progress], None]


# ---- messages for the artist ----


@dataclass(frozen=True)
class ArtistMessage:
    title: str
    text: str
    offer_start: bool = False  # the plugin may offer to run `engine serve` and try again
    cancelled: bool = False  # not an error: the artist asked for it


def artist_message(exc: BaseException, op: Operation | None = None) -> ArtistMessage:
    """A short message that says what happened and what to do; never a traceback."""
    title = op.label if op is not None else "SinGAN Studio"
    if isinstance(exc, JobCancelled):
        return ArtistMessage(title, "Cancelled. The picture is unchanged.", cancelled=True)
    if isinstance(exc, EngineNotRunning):
        return ArtistMessage(
            title,
            "The engine is not running: start it with `engine serve` (in a terminal) and try again.",
            offer_start=True,
        )
    if isinstance(exc, RequestTimeout):
        return ArtistMessage(
            title,
            f"The engine does not answer ({exc}). Check it with `engine status`; restart it with "
            "`engine stop` and `engine serve` if it hangs.",
        )
    if isinstance(exc, UnsupportedVersion):
        return ArtistMessage(title, f"The plugin and the engine come from different releases: {exc}.")
    if isinstance(exc, AuthenticationError):
        return ArtistMessage(
            title, f"{exc}. Reinstall the plugin with `engine plugin install` from the same engine."
        )
    if isinstance(exc, RemoteError):
        return ArtistMessage(title, f"The engine could not finish the job: {exc}")
    if isinstance(exc, CanvasError | BridgeError):
        return ArtistMessage(title, str(exc)[:1].upper() + str(exc)[1:])
    return ArtistMessage(
        title, f"Unexpected error ({type(exc).__name__}: {exc}). The picture is unchanged; see the log."
    )


# ---- the engine process ----


class EngineStartFailed(BridgeError):
    pass


def start_engine(
    settings: Settings, *, wait_s: float = START_WAIT_S, cancel: threading.Event | None = None
) -> subprocess.Popen[bytes]:
    """Start `engine serve` detached from the editor (it outlives it) and wait until it answers a ping.
    Setting `cancel` stops the wait (JobCancelled); the engine goes on starting."""
    if not settings.engine_command:
        raise EngineStartFailed(
            "this plugin does not know how to start the engine; run `engine serve` yourself"
        )
    command = [*settings.engine_command, "serve"]
    if settings.home:
        command += ["--home", settings.home]
    log_dir = default_home(settings.home)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "engine-started-by-plugin.log", "ab") as log_file:
        # A new session: closing the editor (or its SIGINT) must not take the engine down mid-training.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=sys.platform != "win32",
            # On Windows: no console window popping up over the editor, and none whose closing kills it.
            creationflags=NO_WINDOW | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            raise JobCancelled(ErrorCode.CANCELLED, "cancelled while the engine was starting")
        if process.poll() is not None:
            raise EngineStartFailed(
                f"`{' '.join(command)}` exited with code {process.returncode}; see {log_file.name}"
            )
        try:
            find_engine(settings.home)
            with connect(settings, timeout=2.0) as client:
                if client.is_alive(timeout=2.0):
                    return process
        except BridgeError:
            pass
        time.sleep(0.2)
    raise EngineStartFailed(f"the engine did not come up within {wait_s:g} s; see {log_dir}")


def connect(settings: Settings, *, timeout: float | None = None) -> Client:
    return Client.from_connection_file(
        connection_file_path(settings.home), timeout=settings.timeout_s if timeout is None else timeout
    )


def load_menu(settings: Settings, plugin_dir: str | os.PathLike[str]) -> list[Operation]:
    """The menu entries of the engine's capabilities: the newer of the engine home's file and the one
    installed beside the plugin. A CanvasError says what to do when neither can be read."""
    found = [Path(plugin_dir) / CAPABILITIES_FILE, default_home(settings.home) / CAPABILITIES_FILE]
    readable = []
    for path in found:
        try:
            readable.append((path.stat().st_mtime, path, json.loads(path.read_text())))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
    for _, path, data in sorted(readable, key=lambda item: item[0], reverse=True):
        try:
            return menu(data)
        except (KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s, which is not an engine's capabilities: %r", path, exc)
    raise CanvasError(
        "the plugin does not know what the engine can do (no capabilities.json): reinstall it with "
        "`engine plugin install krita` (or gimp), or start the engine once with `engine serve`"
    )


# ---- stored models ----


LIST_TIMEOUT_S = 5.0  # the engine answers a listing at once, even while it trains


def models_for(settings: Settings, op: Operation) -> list[ModelInfo]:
    """The engine's stored models that `op` can run (its family, one of its tasks), newest first. A quick
    request (Krita asks on its GUI thread). A CanvasError says what to do when there is none."""
    with connect(settings, timeout=min(LIST_TIMEOUT_S, settings.timeout_s)) as client:
        models = client.list_models(family=op.family)
    found = [m for m in models if m.task in op.tasks]
    if not found:
        raise CanvasError(
            f"the engine has no {op.family} model yet: train one (`engine train --family {op.family} ...`) "
            "and store it for the editors with `engine models add MODEL_DIR --name NAME`"
        )
    return sorted(found, key=lambda m: m.created, reverse=True)


def pick_model(models: list[ModelInfo], wanted: str | None) -> ModelInfo | None:
    """The model a script names by id or by name (the newest of that name); None or "": the newest."""
    if not wanted:
        return models[0] if models else None
    by_id = [m for m in models if m.model_id == wanted]
    by_name = sorted((m for m in models if m.name == wanted), key=lambda m: m.created, reverse=True)
    found = by_id or by_name
    return found[0] if found else None


def model_label(model: ModelInfo) -> str:
    """How a model picker lists a model: its name, and its id where names repeat."""
    return f"{model.name} ({model.created.astimezone().strftime('%Y-%m-%d %H:%M')}, {model.model_id})"


# ---- one operation ----


@dataclass
class Runner:
    """Runs one operation to a LayerPatch (an Animation for a clip). `cancel` may be set from any thread
    (the dialog's Cancel); `on_job(job_id)` hears of each engine job as it starts (GIMP's CancelGuard);
    `on_preview(patch)` gets the training-free preview's layer when the engine sends one before the final
    result (on the runner's thread)."""

    settings: Settings
    on_progress: ProgressSink = lambda progress: None
    cancel: threading.Event = field(default_factory=threading.Event)
    seed: int | None = None
    on_job: Callable[[str], None] = lambda job_id: None
    on_preview: Callable[[LayerPatch], None] = lambda patch: None

    def run(
        self,
        op: Operation,
        canvas: Canvas,
        *,
        color_match: float | None = None,
        refine: bool = False,
        model_id: str | None = None,
        choices: dict[str, str] | None = None,
        values: dict[str, float] | None = None,
    ) -> LayerPatch | Animation | NewImage:
        """The new layer's pixels (an Animation for an entry that makes a clip, a NewImage for one that
        makes a picture of its own size).
        color_match: this run's (the editor's dialog); None: the settings file's, else the engine's.
        refine: fine-tune the model on this composite first (settings' refine_iters; a new model).
        model_id, choices: the stored model and choices the artist picked (entries with `pick_model`).
        values: the numbers the artist gave (entries that ask some, `Operation.asks`)."""
        client = connect(self.settings)
        try:
            # Fail before sending megabytes when the file points at an engine that is gone or hung.
            client.ping(cancel=self.cancel)
            # The setting is for the entries that ask for it (Harmonize selection); others keep the
            # engine's default (an edit: its own colours).
            if not op.ask_color_match:
                color_match = None
            elif color_match is None:
                color_match = self.settings.color_match
            # Each variation is a new one: a fresh seed unless the runner was given one.
            seed = self.seed
            if seed is None and op.new_layer:
                seed = secrets.randbelow(MAX_EDITOR_SEED + 1)
            if op.pick_model:
                if model_id is None:
                    raise CanvasError(f"{op.label} needs a stored model: pick one")
                job = picked_model_job(op, canvas, model_id, choices or {}, seed, values)
            else:
                job = apply_job(
                    op,
                    canvas,
                    preset=self.settings.preset,
                    seed=seed,
                    color_match=color_match,
                    finetune_iters=self.settings.refine_iters if refine else None,
                    values=values,
                )
            self.on_progress(Progress(0, f"{op.label}: sending the picture to the engine..."))
            message = client.run_job(
                job.request,
                job.buffers,
                on_progress=self._progress("Training and refining" if refine else "Training"),
                cancel=self.cancel,
                on_job=self.on_job,
                on_preview=lambda preview: self._preview(op, canvas, job, preview),
            )
            if op.frames:
                return animation_from_result(op, canvas, message)
            if op.new_image:
                return new_image_from_result(op, canvas, job, message)
            return patch_from_result(op, canvas, job, message)
        finally:
            # Closing here, on the thread that used it, is what keeps Krita from crashing at exit.
            client.close()

    def _preview(self, op: Operation, canvas: Canvas, job: Job, message: Message) -> None:
        try:
            patch = preview_patch(op, canvas, job, message)
        except BridgeError as exc:  # a bad preview must not stop the job's own result
            log.warning("ignoring the engine's preview: %s", exc)
            return
        try:
            self.on_preview(patch)
        except Exception:  # an editor that cannot show it: the job's own result still comes
            log.exception("could not show the preview")

    def _progress(self, phase: str) -> Callable[[ProgressEvent, np.ndarray | None], None]:
        def report(event: ProgressEvent, preview: np.ndarray | None) -> None:
            self.on_progress(Progress(progress_percent(event), progress_text(event, phase)))

        return report
