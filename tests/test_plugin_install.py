"""engine plugin install/uninstall without the network: layouts, settings, kritarc, and an exact uninstall.

Wheel resolution is replaced by one tiny hand-made wheel; the real `pip download` runs in the editor tests.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile

import pytest

from engine import cli, plugin_install
from engine.plugin_install import PluginInstallError, default_platforms, install, uninstall


@pytest.fixture
def user(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    wheel = tmp_path / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fakepkg/__init__.py", "VALUE = 1\n")
    calls = []

    def fake_fetch(python, platforms, wheelhouse=None):
        calls.append((python, platforms))
        return [wheel]

    monkeypatch.setattr(plugin_install, "fetch_wheels", fake_fetch)
    return home, calls


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_krita_install_layout_settings_and_kritarc(user):
    home, calls = user
    (home / ".config").mkdir()
    kritarc = home / ".config/kritarc"
    kritarc.write_text("[General]\nx=1\n\n[python]\nenable_other=true\n")
    before = snapshot(home)
    result = install(
        "krita", home="/engine/home", preset="tiny", color_match=0.75, python="3.10", platforms=["win_amd64"]
    )
    pykrita = home / ".local/share/krita/pykrita"
    assert result["installed"] == str(pykrita / "singan_studio")
    assert calls == [("3.10", ["win_amd64"])]
    assert (pykrita / "singan_studio.desktop").is_file()
    action_file = (home / ".local/share/krita/actions/singan_studio.action").read_text()
    assert '<Action name="singan_harmonize">' in action_file
    assert "<text>Generate variation</text>" in action_file
    # The menus until an engine has run: what this engine can do.
    capabilities = json.loads((pykrita / "singan_studio/capabilities.json").read_text())
    names = [op["name"] for op in capabilities["operations"]]
    assert names == [
        "harmonize",
        "edit",
        "sample",
        "sample",
        "sample",
        "animate",
        "animate",
        "export",
        "export",
        "export",
        "export",
        "restyle",
        "interpolate",
        "paint2image",
        "upscale",
    ]
    for name in ("__init__.py", "extension.py", "document.py", "job.py", "settings.json"):
        assert (pykrita / "singan_studio" / name).is_file()
    vendor = pykrita / "singan_studio/vendor"
    assert (vendor / "editor_bridge/plugin_core.py").is_file() and (vendor / "fakepkg/__init__.py").is_file()
    settings = json.loads((pykrita / "singan_studio/settings.json").read_text())
    assert settings["home"] == "/engine/home" and settings["preset"] == "tiny"
    assert settings["color_match"] == 0.75
    assert settings["engine_command"][1:] == ["-m", "engine.cli"]
    text = kritarc.read_text()
    assert "enable_singan_studio=true" in text and "enable_other=true" in text and "x=1" in text

    (pykrita / "singan_studio/__pycache__").mkdir()  # what Krita's Python leaves behind
    (pykrita / "singan_studio/__pycache__/job.cpython-311.pyc").write_bytes(b"")
    uninstall("krita")
    assert snapshot(home) == before
    assert kritarc.read_text() == "[General]\nx=1\n\n[python]\nenable_other=true\n"


def test_krita_reinstall_keeps_a_previous_kritarc_value_and_artist_files(user):
    home, _ = user
    (home / ".config").mkdir()
    (home / ".config/kritarc").write_text("[python]\nenable_singan_studio=false\n")
    install("krita")
    install("krita")  # over itself: uninstalls the first one from its manifest
    mine = home / ".local/share/krita/pykrita/singan_studio/my-notes.txt"
    mine.write_text("the artist's own file")
    uninstall("krita")
    assert mine.read_text() == "the artist's own file"  # not ours, so it stays (and so does its folder)
    assert (home / ".config/kritarc").read_text() == "[python]\nenable_singan_studio=false\n"


def test_gimp_install_into_dest(user, tmp_path, monkeypatch):
    home, _ = user
    dest = tmp_path / "plug-ins"
    source = tmp_path / "src"
    shutil.copytree(plugin_install.PLUGINS_SRC / "gimp", source / "gimp")
    os.utime(source / "gimp/singan_studio/singan_studio.py", (1e9, 1e9))  # a file from 2001
    monkeypatch.setattr(plugin_install, "PLUGINS_SRC", source)
    started = time.time()
    install("gimp", dest=dest)
    script = dest / "singan_studio/singan_studio.py"
    assert script.stat().st_mode & 0o755 == 0o755
    # the install's time, not the source's: GIMP asks the plug-in for its procedures (this menu's) again
    assert script.stat().st_mtime >= started - 1
    assert (dest / "singan_studio/vendor/editor_bridge/client.py").is_file()
    assert not (home / ".config/kritarc").exists()
    uninstall("gimp", dest=dest)
    assert not dest.exists()  # install created it


def test_refuses_foreign_folder_and_missing_install(user, tmp_path):
    dest = tmp_path / "plug-ins"
    (dest / "singan_studio").mkdir(parents=True)
    with pytest.raises(PluginInstallError, match="remove it first"):
        install("gimp", dest=dest)
    with pytest.raises(PluginInstallError, match="no plugin installed"):
        uninstall("krita", dest=tmp_path / "nothing")


def test_cli_and_platform_tags(user, tmp_path, capsys):
    dest = tmp_path / "pk"
    argv = [
        "plugin",
        "install",
        "krita",
        "--dest",
        str(dest),
        "--platform",
        "a,b",
        "--python",
        "3.12",
        "--json",
    ]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["ok"]
    assert user[1] == [("3.12", ["a", "b"])]
    assert cli.main(["plugin", "uninstall", "krita", "--dest", str(dest)]) == 0
    assert cli.main(["plugin", "uninstall", "krita", "--dest", str(dest)]) == 2
    tags = default_platforms()
    assert tags and all(isinstance(t, str) for t in tags)
