"""The daemon's stored models: HOME/models/<model_id>/, each a model directory plus `registry.json`.

A model enters the registry by one atomic rename of a finished model directory, so a listing never sees a
half-written model. `registry.json` holds what the store does not: the user's name for the model, its
training seed, and the training key (a hash of the training image's pixels and the family's resolved
settings, task included) through which the same background trained with the same settings is found
again instead of being trained twice. A model retrained on request (another seed) is stored under the key
of the settings that were asked for, and being the newest, it is the one found from then on.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import shutil
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from editor_bridge.protocol import ModelInfo
from engine import families
from engine.errors import EngineError, ModelNotFoundError
from engine.files import atomic_write_bytes
from engine.model_dir import CHECKPOINT_DIR, read_meta

log = logging.getLogger(__name__)

ENTRY_FILE = "registry.json"


def training_key(pixels: np.ndarray, settings: dict) -> str:
    """sha256 of the pixels the model learns from (any dtype) and every setting that shapes the result
    (`Family.resolved(...).settings`)."""
    pixels = np.ascontiguousarray(pixels)
    settings = {**settings, "shape": list(pixels.shape), "dtype": pixels.dtype.str}
    if pixels.ndim == 3 and pixels.shape[2] == 4 and not pixels[..., 3].all():
        # fully transparent pixels' stored colours are filled from the visible ones before training
        # (engine.imageio.visible_rgb); models stored before that learned them: not the same training
        settings["transparent"] = "filled from visible"
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(pixels.data.cast("B"))
    return h.hexdigest()


def new_model_id() -> str:
    return "m" + uuid.uuid4().hex[:12]


class Registry:
    """Thread-safe index over HOME/models; the directories are the truth, the index is rebuilt on start."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        """`create=False` only reads: a missing `root` is an empty registry (`engine status` uses that)."""
        self.root = root
        if create:
            root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self._skipped: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Index the model directories not indexed yet: all of them at the start, and later those that
        `engine models add` moved in while the daemon ran."""
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not path.is_dir() or path.name.startswith(".") or path.name in self._skipped:
                continue
            with self._lock:
                if path.name in self._entries:
                    continue
            try:
                entry = json.loads((path / ENTRY_FILE).read_text())
                read_meta(path)
            except (OSError, ValueError, EngineError) as exc:
                log.warning("skipping %s: not a registered model (%s)", path, exc)
                self._skipped.add(path.name)
                continue
            with self._lock:
                self._entries.setdefault(path.name, entry)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def has(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._entries

    def path(self, model_id: str) -> Path:
        if not self.has(model_id):
            self.refresh()  # added by `engine models add` since the last look
        with self._lock:
            if model_id not in self._entries:
                raise ModelNotFoundError(
                    f"no model {model_id!r} in this engine; list the stored models (list_models or "
                    "`engine status`) and use one of their ids"
                )
        return self.root / model_id

    def info(self, model_id: str) -> ModelInfo:
        path = self.path(model_id)
        with self._lock:
            entry = dict(self._entries[model_id])
        meta = read_meta(path)
        try:
            family = families.family_of(meta, path)
            described = family.describe(meta)
            stages = described.get("stages")
            return ModelInfo(
                model_id=model_id,
                name=entry["name"],
                family=family.name,
                task=described["task"],
                width=described.get("width"),
                height=described.get("height"),
                n_stages=len(stages) if stages else None,
                preset=entry.get("preset"),
                created=datetime.fromisoformat(entry["created"]),
                has_onnx=any(path.glob("*.onnx")),  # an export made on first use, or asked for
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:  # pydantic's errors are ValueErrors
            reason = str(exc).splitlines()[0] if str(exc) else ""  # pydantic's run over many lines
            raise ModelNotFoundError(
                f"model {model_id} is damaged ({type(exc).__name__}: {reason}); remove {path} and train again"
            ) from exc

    def list(self, family: str | None = None, task: str | None = None) -> builtins.list[ModelInfo]:
        self.refresh()
        with self._lock:
            ids = sorted(self._entries, key=lambda i: self._entries[i]["created"])
        infos = []
        for model_id in ids:
            try:
                info = self.info(model_id)
            except EngineError:
                continue  # deleted meanwhile
            if family in (None, info.family) and task in (None, info.task):
                infos.append(info)
        return infos

    def find(self, key: str) -> str | None:
        """The id of the newest model stored under this training key (a retrained one wins), if any."""
        found = self.find_all(key)
        return found[-1] if found else None

    def find_all(self, key: str) -> builtins.list[str]:
        """Every model stored under this training key, oldest first."""
        with self._lock:
            found = [(e["created"], i) for i, e in self._entries.items() if e.get("training_key") == key]
        return [model_id for _, model_id in sorted(found)]

    def seeds(self, key: str) -> set[int]:
        """The training seeds of the models stored under this training key."""
        seeds = set()
        for model_id in self.find_all(key):
            with self._lock:
                seed = self._entries.get(model_id, {}).get("seed")
            if seed is not None:
                seeds.add(int(seed))
                continue
            try:  # stored before registry.json held the seed: ConSinGAN's model.json has it
                seeds.add(int(read_meta(self.root / model_id)["training"]["seed"]))
            except (EngineError, KeyError, TypeError, ValueError):
                continue  # deleted meanwhile, or an older format without the seed
        return seeds

    def add(
        self,
        trained: Path,
        *,
        model_id: str,
        name: str,
        preset: str | None,
        training_key: str | None,
        parent: str | None = None,
        seed: int | None = None,
    ) -> ModelInfo:
        """Move a finished model directory into the registry (one rename) and index it."""
        read_meta(trained)
        entry = {
            "model_id": model_id,
            "name": name,
            "preset": preset,
            "training_key": training_key,
            "parent": parent,
            "seed": seed,
            "created": datetime.now(timezone.utc).isoformat(),
        }
        atomic_write_bytes(trained / ENTRY_FILE, json.dumps(entry, indent=2).encode())
        target = self.root / model_id
        trained.rename(target)
        with self._lock:
            self._entries[model_id] = entry
        return self.info(model_id)

    def add_copy(self, source: Path, name: str) -> ModelInfo:
        """Store a copy of a model directory trained elsewhere (`engine train --out`, another machine):
        checked as loading would check it, copied aside (without an unfinished run's checkpoint), then
        moved in by one rename, so a daemon using this registry lists it complete or not at all."""
        meta = read_meta(source)
        families.family_of(meta, source)
        model_id = new_model_id()
        staging = self.root / f".adding-{model_id}"
        try:
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns(CHECKPOINT_DIR))
            return self.add(staging, model_id=model_id, name=name, preset=None, training_key=None)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already unless the copy failed

    def rename(self, model_id: str, name: str) -> ModelInfo:
        path = self.path(model_id)
        with self._lock:
            entry = {**self._entries[model_id], "name": name}
            atomic_write_bytes(path / ENTRY_FILE, json.dumps(entry, indent=2).encode())
            self._entries[model_id] = entry
        return self.info(model_id)

    def delete(self, model_id: str) -> None:
        path = self.path(model_id)
        with self._lock:
            del self._entries[model_id]
        # Renamed aside first: a crash during rmtree leaves a dot-directory the scan ignores.
        trash = self.root / f".deleted-{model_id}-{uuid.uuid4().hex[:6]}"
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
