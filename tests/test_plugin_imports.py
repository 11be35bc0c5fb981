"""Both plugins import with torch (and the engine) made unimportable, against small stubs of Krita's and
GIMP's Python modules, and register exactly their actions and procedures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.import_blocker import EDITOR_BLOCKED, blocker_source

ROOT = Path(__file__).resolve().parents[1]

BLOCK = (
    blocker_source(*EDITOR_BLOCKED)
    + """
import types

class Anything:
    '''Stands for any editor object: every attribute and call gives another Anything.'''
    def __init__(self, *args, **kwargs):
        self.calls = []
    def __getattr__(self, name):
        return Anything()
    def __call__(self, *args, **kwargs):
        return Anything()
    def connect(self, *args):
        pass

def stub(name, **attrs):
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: Anything
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return module
"""
)

KRITA = BLOCK + textwrap.dedent(
    """
    created = []

    class Extension:
        def __init__(self, parent=None):
            pass

    class Window:
        def qwindow(self):
            return Anything()
        def createAction(self, name, text, menu):
            created.append((name, text, menu))
            return Anything()

    class Krita:
        extensions = []
        @staticmethod
        def instance():
            return Krita()
        def addExtension(self, extension):
            Krita.extensions.append(extension)

    class QObject:
        def __init__(self, *args):
            pass

    stub("krita", Extension=Extension, Krita=Krita)
    stub("PyQt5")
    stub("PyQt5.QtCore", QObject=QObject, pyqtSignal=lambda *types: Anything())
    stub("PyQt5.QtWidgets")
    stub("PyQt5.QtGui")
    sys.path.insert(0, "plugins/krita")
    import singan_studio

    (extension,) = Krita.extensions
    extension.createActions(Window())
    assert created == [
        ("singan_studio_menu", "SinGAN Studio", "tools/scripts"),  # the submenu holding the others
        ("singan_harmonize", "Harmonize selection", ""),
        ("singan_edit", "Edit selection", ""),
        ("singan_variation", "Generate variation", ""),
        ("singan_generate", "Generate from set", ""),
        ("singan_animate", "Animate layer", ""),
        ("singan_restyle", "Re-style layer", ""),
        ("singan_paint_to_image", "Paint to image", ""),
        ("singan_upscale_layer", "Upscale layer", ""),
        ("singan_retrain_harmonize", "Retrain and harmonize selection", ""),
        ("singan_retrain_edit", "Retrain and edit selection", ""),
    ], created
    # The .action file the installer writes gives each action its menu text: the same names and texts.
    import xml.etree.ElementTree as ET
    from editor_bridge.plugin_core import krita_action_file
    from editor_bridge.plugin_runner import Settings, load_menu
    entries = load_menu(Settings(), "plugins/krita/singan_studio")
    actions = ET.fromstring(krita_action_file(entries)).iter("Action")
    assert {a.get("name"): a.findtext("text") for a in actions} == {n: t for n, t, _ in created}
    bad = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "engine"})
    assert not bad, bad
    print("ok")
    """
)

GIMP = BLOCK + textwrap.dedent(
    """
    import importlib.util
    gi = stub("gi", require_version=lambda *a: None)
    class Gimp(Anything):
        class PlugIn:  # a real class: the plug-in subclasses it
            pass

    stub("gi.repository", Gimp=Gimp(), Gegl=Anything(), GLib=Anything(), GObject=Anything())
    spec = importlib.util.spec_from_file_location(
        "singan_gimp", "plugins/gimp/singan_studio/singan_studio.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: Gimp.main is not called
    assert sorted(module.procedures()) == [
        "python-fu-singan-animate",
        "python-fu-singan-edit",
        "python-fu-singan-generate",
        "python-fu-singan-harmonize",
        "python-fu-singan-paint-to-image",
        "python-fu-singan-restyle",
        "python-fu-singan-retrain-edit",
        "python-fu-singan-retrain-harmonize",
        "python-fu-singan-upscale-layer",
        "python-fu-singan-variation",
    ]
    assert module.SinganStudio.do_query_procedures(None) == list(module.procedures())
    bad = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "engine"})
    assert not bad, bad
    print("ok")
    """
)


def run(script: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENGINE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def home(tmp_path) -> Path:
    """An engine home with the capabilities `engine serve` writes there: the plugins' menus."""
    from editor_bridge.plugin_runner import CAPABILITIES_FILE
    from engine import families

    (tmp_path / CAPABILITIES_FILE).write_text(json.dumps(families.capabilities()))
    return tmp_path


def test_krita_plugin_imports_without_torch(home):
    proc = run(KRITA, home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_gimp_plugin_imports_without_torch(home):
    proc = run(GIMP, home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_without_capabilities_each_plugin_has_one_entry_that_says_what_to_do(tmp_path):
    krita = KRITA.split("extension.createActions(Window())")[0] + textwrap.dedent(
        """
        extension.createActions(Window())
        assert [name for name, _, _ in created] == ["singan_studio_menu", "singan_unavailable"], created
        print("ok")
        """
    )
    proc = run(krita, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "no capabilities.json" in proc.stderr  # logged for the editor's log
    gimp = GIMP.split("assert sorted(module.procedures())")[0] + textwrap.dedent(
        """
        assert module.SinganStudio.do_query_procedures(None) == ["python-fu-singan-unavailable"]
        assert "engine plugin install krita" in module._unavailable()
        print("ok")
        """
    )
    proc = run(gimp, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_gimp_plugin_is_executable():
    assert (ROOT / "plugins/gimp/singan_studio/singan_studio.py").stat().st_mode & 0o111
