"""A plain (non-editable) install carries the editor plugins and the demo's examples, and finds them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_plugins_and_examples_and_the_engine_finds_them(tmp_path):
    # Built from a copy: an in-tree build would leave build/ and egg-info behind in the checkout.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("engine", "editor_bridge", "plugins", "examples"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
         "-w", str(tmp_path / "wheel")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("singan_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in [*source.glob("plugins/**/*"), *source.glob("examples/*")]:
        if path.is_file():
            assert f"engine/_assets/{path.relative_to(source).as_posix()}" in names
    # every module of the engine and the bridge (a package missing from pyproject's list is not in the wheel)
    for path in [*source.glob("engine/**/*.py"), *source.glob("editor_bridge/**/*.py")]:
        assert path.relative_to(source).as_posix() in names, path
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # From the unpacked wheel (not the checkout), the engine's plugin installer and demo find the copies.
    code = "from engine.assets import asset_dir; print(asset_dir('plugins')); print(asset_dir('examples'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site)},
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert out == [str(site / "engine/_assets/plugins"), str(site / "engine/_assets/examples")]
    assert (site / "engine/_assets/plugins/krita/singan_studio.desktop").is_file()
    assert (site / "engine/_assets/examples/scream_naive_mask.jpg").is_file()
