"""`engine plugin install|uninstall krita|gimp`: put a plugin, editor_bridge and the wheels it needs where the
editor looks for plugins, and record a manifest so that uninstall removes exactly what install added.

Wheels are resolved for the editor's own Python (`pip download --only-binary=:all: --python-version ...
--platform ...`, then unpacked), never taken from the engine's environment: Krita embeds the system Python,
and GIMP 3 runs plug-ins with whatever `python3` its platform has.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import editor_bridge
from editor_bridge.plugin_core import krita_action_file, menu
from editor_bridge.plugin_runner import CAPABILITIES_FILE, SETTINGS_FILE, Settings
from engine import families
from engine.assets import asset_dir
from engine.errors import EngineError
from engine.files import user_cache

PLUGIN_NAME = "singan_studio"
MANIFEST = "install-manifest.json"
PLUGINS_SRC = asset_dir("plugins")
WHEEL_CACHE = user_cache("wheels")
# editor_bridge's own imports; pip adds pydantic-core, typing-extensions, annotated-types, typing-inspection.
# pydantic is pinned to the engine's version so both ends validate the protocol the same way.
REQUIREMENTS = ("pyzmq>=25", "msgpack>=1.0", "numpy>=1.24")


class PluginInstallError(EngineError):
    pass


@dataclass(frozen=True)
class Layout:
    """Where one editor's plugin lives under `dest` (Krita: its pykrita folder; GIMP: its plug-ins folder)."""

    editor: str
    dest: Path

    @property
    def plugin_dir(self) -> Path:
        return self.dest / PLUGIN_NAME

    @property
    def vendor_dir(self) -> Path:
        return self.plugin_dir / "vendor"

    @property
    def manifest(self) -> Path:
        return self.plugin_dir / MANIFEST

    @property
    def extra_files(self) -> dict[Path, Path]:
        """Files outside the plugin folder: source -> destination."""
        if self.editor != "krita":
            return {}
        src = PLUGINS_SRC / "krita"
        return {src / f"{PLUGIN_NAME}.desktop": self.dest / f"{PLUGIN_NAME}.desktop"}

    @property
    def action_file(self) -> Path | None:
        """Krita reads action texts from the actions folder beside pykrita; written from the engine's
        capabilities."""
        return self.dest.parent / "actions" / f"{PLUGIN_NAME}.action" if self.editor == "krita" else None

    @property
    def outside_files(self) -> list[Path]:
        return [*self.extra_files.values(), *([self.action_file] if self.action_file else [])]


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def default_dest(editor: str) -> Path:
    if sys.platform == "win32":
        appdata = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
        return appdata / ("krita/pykrita" if editor == "krita" else "GIMP/3.0/plug-ins")
    if sys.platform == "darwin":
        support = Path.home() / "Library" / "Application Support"
        return support / ("krita/pykrita" if editor == "krita" else "GIMP/3.0/plug-ins")
    if editor == "krita":
        data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return data / "krita" / "pykrita"
    return _config_home() / "GIMP" / "3.0" / "plug-ins"


def kritarc_path() -> Path:
    return _config_home() / "kritarc"


# ---- the editor's Python ----


def editor_python_version() -> str:
    """The Python the editors embed: on Linux the system python3 (not a virtualenv's or pyenv's)."""
    system = Path("/usr/bin/python3")
    if sys.platform.startswith("linux") and system.exists():
        out = subprocess.run(
            [str(system), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def default_platforms() -> list[str]:
    """Wheel platform tags this machine runs, newest first (what pip would accept for its own Python)."""
    machine = platform.machine().lower()
    if sys.platform == "win32":
        return ["win_amd64" if machine in ("amd64", "x86_64") else f"win_{machine}"]
    if sys.platform == "darwin":
        arch = "arm64" if machine == "arm64" else "x86_64"
        return [f"macosx_{v}_0_{arch}" for v in (14, 13, 12, 11)] + [
            f"macosx_10_9_{arch}",
            f"macosx_10_15_{arch}",
        ]
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    minor = int(libc.split(".")[-1]) if libc and libc.startswith("glibc") else 17
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{machine}", f"linux_{machine}"]


def _requirements() -> list[str]:
    return [f"pydantic=={importlib.metadata.version('pydantic')}", *REQUIREMENTS]


def fetch_wheels(python: str, platforms: list[str], wheelhouse: Path | None = None) -> list[Path]:
    """Binary wheels of editor_bridge's dependencies for that Python, reusing earlier downloads.

    Each run resolves into an empty folder (so the folder holds exactly this resolution) with the cache as a
    local index, then adds what was new to the cache.
    """
    abi = "cp" + python.replace(".", "")
    cache = WHEEL_CACHE / f"{abi}-{platforms[0]}"
    cache.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="wheels-", dir=cache.parent))
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--dest", str(run_dir), "--only-binary=:all:", "--python-version", python]
    command += ["--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in platforms:
        command += ["--platform", tag]
    command += ["--find-links", str(cache)]
    if wheelhouse is not None:
        command += ["--no-index", "--find-links", str(wheelhouse)]
    proc = subprocess.run([*command, *_requirements()], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise PluginInstallError(
            f"could not get wheels for Python {python} on {platforms[0]}:\n{tail}\n"
            "check the network, or pass --wheelhouse DIR with the wheels, --python and --platform"
        )
    wheels = []
    for wheel in sorted(run_dir.glob("*.whl")):
        cached = cache / wheel.name
        if not cached.exists():
            shutil.move(wheel, cached)
        wheels.append(cached)
    shutil.rmtree(run_dir, ignore_errors=True)
    return wheels


def unpack_wheels(wheels: list[Path], target: Path) -> None:
    """A wheel is a zip laid out for site-packages; unpacking is a complete install for these packages."""
    target.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)


# ---- install and uninstall ----


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)


def _missing(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet: install creates them, so uninstall removes them."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _engine_command() -> list[str]:
    return [sys.executable, "-m", "engine.cli"]


def install(
    editor: str,
    *,
    dest: Path | None = None,
    python: str | None = None,
    platforms: list[str] | None = None,
    home: str | None = None,
    preset: str | None = None,
    color_match: float | None = None,
    wheelhouse: Path | None = None,
) -> dict:
    layout = Layout(editor, Path(dest).expanduser().resolve() if dest else default_dest(editor))
    if layout.plugin_dir.exists():
        if not layout.manifest.exists():
            raise PluginInstallError(
                f"{layout.plugin_dir} was not put there by `engine plugin install`; remove it first"
            )
        uninstall(editor, dest=layout.dest)
    python = python or editor_python_version()
    platforms = platforms or default_platforms()
    wheels = fetch_wheels(python, platforms, wheelhouse)

    created_dirs = sorted(
        {d for p in (layout.dest, *(f.parent for f in layout.outside_files)) for d in _missing(p)}
    )
    try:
        _copy_tree(PLUGINS_SRC / editor / PLUGIN_NAME, layout.plugin_dir)
        _copy_tree(Path(editor_bridge.__file__).resolve().parent, layout.vendor_dir / "editor_bridge")
        unpack_wheels(wheels, layout.vendor_dir)
        settings = Settings(
            home=home, engine_command=tuple(_engine_command()), preset=preset, color_match=color_match
        )
        (layout.plugin_dir / SETTINGS_FILE).write_text(settings.to_json())
        capabilities = json.dumps(families.capabilities(), indent=1)
        (layout.plugin_dir / CAPABILITIES_FILE).write_text(capabilities)  # the menus until an engine runs
        for src, dst in layout.extra_files.items():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        if layout.action_file is not None:
            layout.action_file.parent.mkdir(parents=True, exist_ok=True)
            layout.action_file.write_text(krita_action_file(menu(families.capabilities())))
        if editor == "gimp":
            main = layout.plugin_dir / f"{PLUGIN_NAME}.py"
            main.chmod(0o755)  # GIMP runs the file itself
            # GIMP asks a plug-in for its procedures again only when the file's time changes (it keeps
            # them in pluginrc), and this install's menu may differ from the last one's with the same file
            os.utime(main)
        kritarc = _enable_in_kritarc() if editor == "krita" else None
    except BaseException:
        shutil.rmtree(layout.plugin_dir, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(layout.dest)) for p in layout.plugin_dir.rglob("*") if p.is_file())
    files += [str(p) for p in layout.outside_files]
    dirs = [str(p.relative_to(layout.dest)) for p in layout.plugin_dir.rglob("*") if p.is_dir()]
    manifest = {
        "editor": editor,
        "dest": str(layout.dest),
        "plugin_dir": PLUGIN_NAME,
        "files": [*files, f"{PLUGIN_NAME}/{MANIFEST}"],
        "dirs": [*sorted(dirs), PLUGIN_NAME, *(str(p) for p in created_dirs)],
        "kritarc": kritarc,
        "python": python,
        "platforms": platforms,
        "wheels": [w.name for w in wheels],
        "home": home,
        "preset": preset,
        "color_match": color_match,
    }
    layout.manifest.write_text(json.dumps(manifest, indent=2))
    return {"installed": str(layout.plugin_dir), "python": python, "wheels": len(wheels), "home": home}


def uninstall(editor: str, *, dest: Path | None = None) -> dict:
    layout = Layout(editor, Path(dest).expanduser().resolve() if dest else default_dest(editor))
    if not layout.manifest.exists():
        raise PluginInstallError(f"no plugin installed by `engine plugin install` in {layout.dest}")
    manifest = json.loads(layout.manifest.read_text())
    removed = 0
    for name in manifest["files"]:
        path = layout.dest / name  # an absolute entry (outside dest) stays absolute
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
    # Python leaves bytecode beside the files it imported; it belongs to them, so it goes too.
    dirs = sorted((layout.dest / name for name in manifest["dirs"]), key=lambda p: -len(p.parts))
    for path in dirs:  # deepest first, so a folder is empty by the time its parent's turn comes
        shutil.rmtree(path / "__pycache__", ignore_errors=True)
        try:
            path.rmdir()
        except OSError:
            pass  # not empty: it holds something the artist put there
    if manifest.get("kritarc"):
        _restore_kritarc(manifest["kritarc"])
    return {"uninstalled": str(layout.plugin_dir), "files_removed": removed}


# ---- kritarc ----

_KRITARC_KEY = f"enable_{PLUGIN_NAME}"


def _enable_in_kritarc() -> dict:
    """Set `[python] enable_singan_studio=true` line by line, so the rest of Krita's file stays as it was."""
    path = kritarc_path()
    created = not path.exists()
    lines = [] if created else path.read_text().splitlines()
    previous, section, index, insert_at = None, None, None, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            if section == "python":
                insert_at = i + 1
        elif section == "python" and stripped.split("=", 1)[0].strip() == _KRITARC_KEY:
            previous, index = stripped.split("=", 1)[1].strip(), i
    entry = f"{_KRITARC_KEY}=true"
    if index is not None:
        lines[index] = entry
    elif insert_at is not None:
        lines.insert(insert_at, entry)
    else:
        lines += (["", "[python]"] if lines else ["[python]"]) + [entry]
    new_dirs = [str(d) for d in _missing(path.parent)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {"path": str(path), "previous": previous, "created": created, "dirs": new_dirs}


def _restore_kritarc(record: dict) -> None:
    path = Path(record["path"])
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    out, section = [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif section == "python" and stripped.split("=", 1)[0].strip() == _KRITARC_KEY:
            if record.get("previous") is not None:
                out.append(f"{_KRITARC_KEY}={record['previous']}")
            continue
        out.append(line)
    if record.get("created") and [line.strip() for line in out if line.strip()] == ["[python]"]:
        path.unlink()  # install made this file and Krita added nothing since
        for folder in record.get("dirs", []):
            try:
                Path(folder).rmdir()
            except OSError:
                break  # something else lives there now
        return
    path.write_text("\n".join(out) + "\n")


# ---- command line ----


def cmd_plugin(args: argparse.Namespace) -> dict:
    if args.action == "install":
        platforms = [t for tag in args.platform or [] for t in tag.split(",") if t] or None
        return install(
            args.editor,
            dest=args.dest,
            python=args.python,
            platforms=platforms,
            home=str(Path(args.home).expanduser().resolve()) if args.home else None,
            preset=args.preset,
            color_match=args.color_match,
            wheelhouse=args.wheelhouse,
        )
    return uninstall(args.editor, dest=args.dest)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """`engine plugin install|uninstall krita|gimp ...`, registered by engine.cli."""
    from engine.cli import add_param  # here: engine.cli imports this module
    from engine.families.consingan import color_match_param
    from engine.families.consingan.modes import Mode, spec

    default = spec(Mode.HARMONIZATION).color_match
    color_match = color_match_param(
        f"the engine's, {default:g}; used by Harmonize selection, not by Edit selection"
    )

    plugin = sub.add_parser("plugin", help="install or remove the Krita or GIMP plugin")
    actions = plugin.add_subparsers(dest="action", required=True)
    for action, text in (("install", "install the plugin for an editor"), ("uninstall", "remove it again")):
        p = actions.add_parser(action, help=text, description=text)
        p.add_argument("editor", choices=["krita", "gimp"])
        p.add_argument("--dest", type=Path, help="plugin folder (default: the editor's own for this user)")
        p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
        if action == "install":
            p.add_argument(
                "--python", help="the editor's Python version, e.g. 3.10 (default: system python3)"
            )
            p.add_argument(
                "--platform", action="append", help="wheel platform tag, e.g. win_amd64 (repeatable)"
            )
            p.add_argument(
                "--home", help="the engine home the plugin talks to (default: ENGINE_HOME or the user's)"
            )
            p.add_argument(
                "--preset", choices=["paper", "fast", "tiny"], help="training preset for new models"
            )
            add_param(p, color_match)
            p.add_argument("--wheelhouse", type=Path, help="install wheels from this folder only (offline)")
        p.set_defaults(run=cmd_plugin)
