"""A plain (non-editable) install carries the editor plugins and the demo's examples, and finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_plugins_and_examples_and_the_engine_finds_them(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
         "-w", str(tmp_path / "wheel")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("singan_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in [*ROOT.glob("plugins/**/*"), *ROOT.glob("examples/*")]:
        if source.is_file() and "__pycache__" not in source.parts:
            assert f"engine/_assets/{source.relative_to(ROOT).as_posix()}" in names
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
