"""The registry of model families: name -> Family.

A built-in family is one package here and one line in BUILTIN. Families from elsewhere (a studio's own,
or a test's) are named in $ENGINE_FAMILIES (module names, comma-separated); each such module defines
`FAMILY`. Every command and the daemon see the same set, so the CLI, `engine capabilities`, `engine batch`
and the plugins' menus offer a family's tasks and operations without any other change.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from engine.errors import BadInputError, IncompatibleModelError
from engine.family import Family, Loaded

BUILTIN = (
    "engine.families.consingan",
    "engine.families.cyclegan",
    "engine.families.sagan",
    "engine.families.singan",
)  # fmt: skip
ENV = "ENGINE_FAMILIES"
DEFAULT = "consingan"  # the family of a model.json without `family` (written before families existed)

_families: dict[str, Family] | None = None


def _load_all() -> dict[str, Family]:
    global _families
    if _families is None:
        found: dict[str, Family] = {}
        extra = [m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip()]
        for module_name in (*BUILTIN, *extra):
            try:
                family = importlib.import_module(module_name).FAMILY
            except (ImportError, AttributeError) as exc:
                raise BadInputError(
                    f"cannot load the model family {module_name} named in ${ENV}: {exc}"
                ) from None
            if family.name in found:
                raise BadInputError(f"two model families are called {family.name!r}; rename one")
            found[family.name] = family
        _families = found
    return _families


def all_families() -> list[Family]:
    return list(_load_all().values())


def get(name: str) -> Family:
    families = _load_all()
    if name not in families:
        raise BadInputError(f"no model family {name!r}: use one of {', '.join(sorted(families))}")
    return families[name]


def family_of(meta: dict, directory: Path) -> Family:
    """The family that wrote a model directory (its model.json read), refused when this engine lacks it
    or it is newer than this engine."""
    name = meta.get("family", DEFAULT)
    families = _load_all()
    if name not in families:
        raise IncompatibleModelError(
            f"{directory} is a {name} model, and this engine has no {name} family: update the engine"
        )
    family = families[name]
    version = meta.get("family_format_version", 1)
    if not isinstance(version, int) or version > family.format_version:
        raise IncompatibleModelError(f"{directory} was written by a newer engine: upgrade to load it")
    return family


def load(
    directory: str | Path, device: Any = "cpu", backend: str | None = "onnxruntime", resident: bool = False
) -> Loaded:
    """Any stored model, loaded by its own family, with its inference runner for `backend` (None: no
    runner yet; `loaded.family.prepare(loaded, backend)` gives it one later). `resident`: see Loaded."""
    from engine.model_dir import read_meta

    directory = Path(directory)
    meta = read_meta(directory)
    family = family_of(meta, directory)
    loaded = family.load(directory, meta, device)
    loaded.resident = resident
    if backend is not None:
        family.prepare(loaded, family.backend(backend))
    return loaded


CHECKPOINT_FAMILY = "family.json"  # in a run's checkpoint/: the family that resumes it (none: ConSinGAN)


def mark_checkpoint(directory: Path, family: str) -> None:
    """Record in a training run's checkpoint/ which family resumes it; a family other than ConSinGAN
    calls this when it writes its first checkpoint."""
    import json

    from engine.files import atomic_write_bytes
    from engine.model_dir import CHECKPOINT_DIR

    atomic_write_bytes(
        Path(directory) / CHECKPOINT_DIR / CHECKPOINT_FAMILY, json.dumps({"family": family}).encode()
    )


CHECKPOINT_STATE = "state.pt"  # a family's training state in checkpoint/ (CycleGAN's and the set generator's)


def write_checkpoint_state(directory: Path, state: dict[str, Any]) -> None:
    """A training run's state into its checkpoint/, serialised in memory first and written atomically, so
    that a full disk or a kill leaves the last checkpoint whole."""
    import io

    import torch

    from engine.files import atomic_write_bytes
    from engine.model_dir import CHECKPOINT_DIR

    data = io.BytesIO()
    torch.save(state, data)
    atomic_write_bytes(Path(directory) / CHECKPOINT_DIR / CHECKPOINT_STATE, data.getbuffer())


def read_checkpoint_state(directory: Path, device: Any) -> dict[str, Any]:
    """The state `write_checkpoint_state` left, refused in one line when it cannot be read."""
    import torch

    from engine.model_dir import CHECKPOINT_DIR

    path = Path(directory) / CHECKPOINT_DIR / CHECKPOINT_STATE
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise BadInputError(f"cannot resume from {path} ({exc}): train again") from None


def resumable(directory: Path) -> bool:
    """Whether a training run left a checkpoint to resume from: a family's mark (written with its first
    checkpoint), or ConSinGAN's state file."""
    from engine.model_dir import CHECKPOINT_DIR

    checkpoint = Path(directory) / CHECKPOINT_DIR
    return (checkpoint / CHECKPOINT_FAMILY).is_file() or (checkpoint / "state.pt").is_file()


def check_resume(directory: Path, command: str = "train") -> None:
    """The errors `resume` gives about the folder itself (a finished model, no checkpoint), said before a
    device is chosen (which loads torch); `command` is the one that starts a new run."""
    from engine.model_dir import MODEL_JSON

    if (Path(directory) / MODEL_JSON).is_file():
        raise IncompatibleModelError(f"{directory} has finished training; there is nothing to resume")
    if not resumable(directory):
        raise BadInputError(
            f"{directory} has no checkpoint to resume from: start a new run with `engine {command}`"
        )


def checkpoint_family(directory: Path) -> str:
    """The family whose training run left the checkpoint in `directory` (ConSinGAN's has no mark)."""
    import json

    from engine.model_dir import CHECKPOINT_DIR

    marker = Path(directory) / CHECKPOINT_DIR / CHECKPOINT_FAMILY
    return json.loads(marker.read_text())["family"] if marker.is_file() else DEFAULT


def resume(directory: Path, device: Any, progress: Any = None, cancel: Any = None) -> Path:
    """Continue an interrupted training run of any family (its checkpoint says which; a folder with none
    goes to ConSinGAN's, whose resume says what check_resume says)."""
    return get(checkpoint_family(directory)).resume(Path(directory), device, progress, cancel)


def capabilities() -> dict[str, Any]:
    """What this engine can do: its families (tasks, presets, training options as JSON schema) and every
    operation with its parameters, as `engine capabilities --json` prints it."""
    from engine import operations

    return {
        "families": [
            {
                "name": f.name,
                "label": f.label,
                "tasks": [{"name": t.name, "label": t.label, "data": t.data.value} for t in f.tasks],
                "presets": list(f.presets),
                "finetune_tasks": list(f.finetune_tasks),
                "options": f.options.model_json_schema(),
            }
            for f in all_families()
        ],
        "operations": [op.describe() for specs in operations.table().values() for op in specs],
    }
