"""Helpers of the real-editor tests: the scene, a real `engine serve` on loopback, and installing the plugin.

The scene is the project's own harmonization example: scream.jpg as the painting and the object cut from
scream_naive.jpg with its mask, pasted as its own layer and selected.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HARMONIZATION = ROOT.parent / "shared" / "images" / "harmonization"
# Wheels for the editors' Python are downloaded once per machine, not once per test run.
WHEEL_CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
GIMP_ROOT = Path(os.environ.get("SINGAN_GIMP_ROOT", "/var/cache/singan-editors/gimp-root"))
GIMP_PLUGINS = "root/.config/GIMP/3.0/plug-ins"  # root's plug-in folder, inside GIMP_ROOT


@contextlib.contextmanager
def xvfb(size: str = "1280x900x24", log: Path | None = None) -> Iterator[str]:
    """A private X server on a free display, up before this yields and gone after it (Krita's and GIMP's
    tests run one after the other; the chroot reaches it through the abstract socket). What the server
    prints goes to `log` when given."""
    read_fd, write_fd = os.pipe()
    command = ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", size, "-nolisten", "tcp"]
    with open(log or os.devnull, "wb") as errors:
        server = subprocess.Popen(command, pass_fds=[write_fd], stderr=errors)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as displayfd:
            display = displayfd.readline().strip()
        if not display:
            raise RuntimeError(f"Xvfb did not start (exit code {server.wait(5)})")
        _wait_until_accepting(display)
        yield f":{display}"
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def gimp_root_mounted() -> Iterator[None]:
    """/proc, /dev and /sys mounted in the GIMP 3 root for a chroot into it (left as they were after)."""
    mounts = [
        ("proc", ["-t", "proc", "proc"]),
        ("dev", ["--bind", "/dev"]),
        ("sys", ["-t", "sysfs", "sysfs"]),
    ]
    done = []
    try:
        for name, how in mounts:
            if subprocess.run(["mountpoint", "-q", str(GIMP_ROOT / name)]).returncode != 0:
                subprocess.run(["mount", *how, str(GIMP_ROOT / name)], check=True)
                done.append(GIMP_ROOT / name)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["umount", str(path)], check=False)


def _wait_until_accepting(display: str, timeout_s: float = 10.0) -> None:
    """Connect to the X server's sockets as an X client would (abstract first, then the file), so that a
    server that reported its display but takes no connections fails here, saying so, and not in the
    editor. (Krita could not connect to a display Xvfb had just reported, once before this wait and once
    after it: tests/test_plugin_krita.py's run_krita starts it again then.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        for address in (f"\0/tmp/.X11-unix/X{display}", f"/tmp/.X11-unix/X{display}"):
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(address)
                    return
                except OSError:
                    pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Xvfb reported display :{display} but accepts no connection on it")
        time.sleep(0.1)


def editor_skip_reason(editor: str) -> str | None:
    """Why this machine cannot run the editor test (CI installs both with plugins/ci/setup-editors.sh)."""
    if os.geteuid() != 0 and editor == "gimp":
        return "the GIMP test runs GIMP in a chroot and needs root"
    if editor == "krita" and not (shutil.which("krita") and shutil.which("Xvfb")):
        return "Krita or Xvfb missing: run plugins/ci/setup-editors.sh"
    if editor == "gimp" and not (GIMP_ROOT / "usr/bin/gimp-3.0").exists():
        return f"no GIMP root at {GIMP_ROOT}: run plugins/ci/setup-editors.sh"
    if editor == "gimp" and not ((GIMP_ROOT / "usr/bin/xdotool").exists() and shutil.which("Xvfb")):
        return f"Xvfb, or xdotool in {GIMP_ROOT}, missing: run plugins/ci/setup-editors.sh"
    if not HARMONIZATION.is_dir():
        return f"test images not found at {HARMONIZATION}"
    return None


@dataclass(frozen=True)
class Scene:
    background: Path  # the painting, RGB PNG
    object: Path  # the pasted object: RGBA PNG, transparent around it
    mask: Path  # the selection, 1 byte a pixel (raw)
    width: int
    height: int
    selection: np.ndarray  # H x W bool


def make_scene(out: Path) -> Scene:
    import cv2

    bg = cv2.imread(str(HARMONIZATION / "scream.jpg"))
    naive = cv2.imread(str(HARMONIZATION / "scream_naive.jpg"))
    mask = cv2.imread(str(HARMONIZATION / "scream_naive_mask.jpg"), cv2.IMREAD_GRAYSCALE) > 127
    obj = np.zeros((*mask.shape, 4), np.uint8)
    obj[mask, :3] = naive[mask]
    obj[mask, 3] = 255
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "background.png"), bg)
    cv2.imwrite(str(out / "object.png"), obj)
    (out / "mask.raw").write_bytes((mask * 255).astype(np.uint8).tobytes())
    h, w = mask.shape
    return Scene(out / "background.png", out / "object.png", out / "mask.raw", w, h, mask)


def harmonization_models(home: Path) -> list[Path]:
    """The harmonization models the engine under `home` trained (not fine-tuned ones), sorted by id."""
    import json

    found = []
    for meta in sorted((home / "models").glob("*/model.json")):
        data = json.loads(meta.read_text())
        if data["model"].get("mode") == "harmonization" and "parent" not in data.get("info", {}):
            found.append(meta.parent)
    return found


def harmonization_backgrounds(home: Path) -> list[np.ndarray]:
    """What the engine under `home` trained its harmonization models on (not fine-tuned ones): the picture
    without the artist's layer, as the plugin read it; RGB floats at model size."""
    from engine.families.consingan.store import load_training_image

    return [load_training_image(model) for model in harmonization_models(home)]


def check_trained_on_the_background(home: Path, scene: Scene) -> None:
    """Each harmonization model under `home` learnt the scene's painting alone (mean difference < 2 levels):
    the background the plugin sent left the pasted layer out, and nothing else."""
    import cv2

    backgrounds = harmonization_backgrounds(home)
    assert len(backgrounds) >= 2  # the first model and the retrained one
    bg = cv2.imread(str(scene.background))[..., ::-1].astype(np.float32) / 255
    for trained in backgrounds:
        small = cv2.resize(bg, (trained.shape[1], trained.shape[0]), interpolation=cv2.INTER_AREA)
        assert np.abs(small - trained).mean() * 255 < 2.0


def check_overlay_left_out(out: Path, scene: Scene, layers: list[str], expected: list[str]) -> None:
    """The "overlaid" run (a Multiply paper layer on top) holds `expected` layers, and its result is exactly
    the "after" run's (same model and settings, no paper): the engine never saw the paper, which stays over
    the result, so it applies once."""
    assert layers == expected
    overlaid, after = raw(out / "overlaid_new_layer.raw", scene), raw(out / "after_new_layer.raw", scene)
    assert (overlaid == after).all()


def raw(path: Path, scene: Scene, channels: int = 4, dtype=np.uint8) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype).reshape(scene.height, scene.width, channels)


def check_made_by_engine(
    home: Path, scene: Scene, picture: np.ndarray, result: np.ndarray, bgr: bool
) -> None:
    """A run's 16-bit `result` (H x W x 4, 0-65535) is, inside the selection, what the nearest of the
    engine's harmonization models under `home` makes of the 8-bit `picture` (H x W x 4) at colour match 0.5,
    as the daemon runs them (torch, seed 0), to within a tenth of a level on average and one at most.

    A run on the picture converted to 16 bits (or float) trains a model of its own: the editors' conversion
    moves some values by a few 65536ths, so the training key differs. Retraining on so slightly other pixels
    gives results 0.4 levels (AMD EPYC) to 1.6 levels (Intel Xeon with AMX) away on average, depending on
    the CPU, so comparing with the 8-bit run's result says little. Its own model run on the same picture is
    exact to a few hundredths of a level, and that tells a lossless 16-bit path from one rounded through
    8 bits (a quarter of a level on average)."""
    from engine.families.consingan.apply import apply_to_selection
    from engine.families.consingan.store import load_model
    from engine.imageio import Picture

    order = slice(2, None, -1) if bgr else slice(0, 3)
    rgb = picture[..., order].astype(np.float32) / 255
    sel = scene.selection
    gaps = []
    for directory in harmonization_models(home):
        model = load_model(directory)
        made = apply_to_selection(model, Picture(rgb), sel.astype(np.float32), seed=0, color_match=0.5)
        gaps.append(np.abs(made.rgb[..., order][sel] * 65535 - result[sel, :3]) / 257)  # in 8-bit levels
    assert gaps, f"no harmonization model under {home}"
    gap = min(gaps, key=lambda gap: gap.mean())
    assert gap.mean() < 0.1 and gap.max() < 1, (
        f"result {gap.mean():.3f} levels off the engine's on average, max {gap.max():.2f}"
    )


def check_sixteen_bit_result(out: Path, scene: Scene, tag: str, home: Path, bgr: bool) -> None:
    """Run `tag` ran on the picture converted to 16 bits: its layer covers the selection, is what the
    engine's model makes of that picture (check_made_by_engine), and holds values between 8-bit levels (it
    was not rounded through 8 bits on the way)."""
    new = raw(out / f"{tag}_new_layer.raw", scene, dtype=np.uint16).astype(np.int64)
    sel = scene.selection
    assert (new[sel, 3] == 65535).all() and (new[~sel, 3] == 0).all()
    check_made_by_engine(home, scene, raw(out / "before_composite.raw", scene), new, bgr)
    between = (new[sel, :3] % 257 != 0).mean()
    assert between > 0.5, f"only {between:.0%} of the values lie between 8-bit levels"


def change_in_selection(out: Path, scene: Scene, tag: str) -> float:
    """Mean RGB distance, inside the selection, between run `tag`'s new layer and the picture before."""
    before = raw(out / "before_composite.raw", scene)[scene.selection, :3].astype(float)
    layer = raw(out / f"{tag}_new_layer.raw", scene)[scene.selection, :3].astype(float)
    return float(np.abs(layer - before).mean())


@contextlib.contextmanager
def engine_serve(home: Path, log: Path) -> Iterator[subprocess.Popen]:
    """A real daemon on a free loopback port, its connection file under `home`."""
    from editor_bridge.plugin_runner import Settings, connect

    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "engine.cli", "serve", "--home", str(home), "--device", "cpu"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [*command, "--backend", "torch", "--precision", "fp32"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"engine serve exited with {process.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                with connect(Settings(home=str(home)), timeout=2) as client:
                    client.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def editor_env(**extra: str) -> dict[str, str]:
    """The environment an editor would get from the desktop: no pyenv or virtualenv on PATH, because
    Krita's embedded Python finds its prefix through the python3 on PATH and would miss PyQt5 there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYENV", "VIRTUAL_ENV", "PYTHON"))}
    parts = os.environ.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in parts if ".pyenv" not in p and "/venv" not in p)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "QT_QPA_PLATFORM"):
        env.pop(var, None)
    return {**env, **extra}


def install_plugin(editor: str, user_home: Path, *extra: str) -> dict:
    """`engine plugin install EDITOR` as the artist runs it, for a user whose home is `user_home`."""
    import json

    env = {**os.environ, "HOME": str(user_home), "XDG_CACHE_HOME": str(WHEEL_CACHE_HOME)}
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("XDG_DATA_HOME", None)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "plugin", "install", editor, "--json", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def store_cyclegan_model(home: Path, work: Path, name: str) -> Path:
    """A tiny CycleGAN model (photos and paintings, small crops) stored in the engine's home as
    `engine models add` stores one trained elsewhere; returns the model directory trained."""
    import cv2
    import torch

    from engine import families
    from engine.families.cyclegan import Options
    from engine.family import TrainData, TrainRun
    from engine.serve.registry import Registry

    folders = (work / "photos", work / "paintings")
    sources = (("generation/stonehenge.jpg", "generation/zebra.png"), ("harmonization/oil_tree.jpg",))
    for folder, names in zip(folders, sources, strict=True):
        folder.mkdir(parents=True)
        for image_name in names:
            image = cv2.imread(str(HARMONIZATION.parent / image_name))
            cv2.imwrite(str(folder / (Path(image_name).stem + ".png")), cv2.resize(image, (96, 72)))
    run = TrainRun(
        "restyle", TrainData(folders=folders), Options(preset="tiny"), work / "model", torch.device("cpu")
    )
    model = families.get("cyclegan").train(run)
    Registry(home / "models").add_copy(model, name)
    return model


def restyled_layer(model: Path, scene: Scene, direction: str) -> np.ndarray:
    """What Re-style layer should give inside the selection: the model's re-style of the pasted layer's
    pixels in the selection's box with 64 px around it (editor_bridge.plugin_core.CONTEXT), as 8-bit RGB on
    the whole canvas (zeros outside that box)."""
    import cv2

    from editor_bridge.plugin_core import CONTEXT
    from engine import families
    from engine.families.cyclegan.restyle import restyle

    layer = cv2.cvtColor(cv2.imread(str(scene.object), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    selection = scene.selection

    rows, cols = np.flatnonzero(selection.any(axis=1)), np.flatnonzero(selection.any(axis=0))
    h, w = selection.shape
    y0, y1 = max(0, rows[0] - CONTEXT), min(h, rows[-1] + 1 + CONTEXT)
    x0, x1 = max(0, cols[0] - CONTEXT), min(w, cols[-1] + 1 + CONTEXT)
    run = families.load(model, "cpu", "torch").runner[direction]
    rgb = restyle(run, layer[y0:y1, x0:x1, :3].astype(np.float32) / 255)
    out = np.zeros((h, w, 3), np.int64)
    out[y0:y1, x0:x1] = np.rint(rgb * 255).astype(np.int64)
    return out


def store_sagan_model(home: Path, work: Path, name: str) -> Path:
    """A tiny set-generator model of ten face emoji, stored in the engine's home as `engine models add`
    stores one trained elsewhere; returns the model directory trained."""
    import torch

    from bench.emoji import face_emoji
    from engine import families
    from engine.families.sagan import Options
    from engine.family import TrainData, TrainRun
    from engine.serve.registry import Registry

    icons = work / "icons"
    face_emoji(icons, tuple(range(0x1F600, 0x1F60A)))
    run = TrainRun(
        "set", TrainData(folders=(icons,)), Options(preset="tiny"), work / "model", torch.device("cpu")
    )
    model = families.get("sagan").train(run)
    Registry(home / "models").add_copy(model, name)
    return model


def store_singan_model(home: Path, image: Path, work: Path, name: str) -> Path:
    """A tiny SinGAN generation model of `image` (the scene's painting: the sketch layer has its
    proportions), stored in the engine's home as `engine models add` stores one; returns its directory."""
    import torch

    from engine import families
    from engine.families.singan import Options
    from engine.family import TrainData, TrainRun
    from engine.imageio import read_image
    from engine.serve.registry import Registry

    data = TrainData(image=read_image(image).rgb)
    run = TrainRun("generation", data, Options(preset="tiny"), work / "model", torch.device("cpu"))
    model = families.get("singan").train(run)
    Registry(home / "models").add_copy(model, name)
    return model


def painted_layer(model: Path, rgba: np.ndarray) -> np.ndarray:
    """What Paint to image should give for a layer's 8-bit RGBA pixels (as the editor holds them): the
    model's paint-to-image of the whole layer (its default start stage and seed), as 8-bit RGB."""
    from engine import families
    from engine.imageio import from_array
    from engine.operations import OperationInput

    loaded = families.load(model, "cpu", "torch")
    op = next(op for op in loaded.family.operations if op.name == "paint2image")
    picture = from_array(np.ascontiguousarray(rgba), "RGBA")
    out = op.run(loaded, OperationInput(picture=picture, params=op.check_params({}))).pictures[0]
    return np.rint(out.rgb * 255).astype(np.int64)


def generated_square(
    model: Path, scene: Scene, seed: int, best_of: int = 1
) -> tuple[tuple[int, int, int], np.ndarray, int]:
    """What Generate from set should give: ((x, y, side) of the largest square centred in the selection's
    bounds, the model's sample of `seed`, the best of `best_of` seeds from it, at side x side as 8-bit
    RGBA, and the seed kept, which the layer is named with). With best_of > 1 the kept seed must not be
    `seed` itself, so that a plugin that left the number out would draw another image."""
    from engine import families
    from engine.operations import OperationInput

    rows, cols = np.flatnonzero(scene.selection.any(axis=1)), np.flatnonzero(scene.selection.any(axis=0))
    h, w = rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]
    side = int(min(h, w))
    x, y = int(cols[0] + (w - side) // 2), int(rows[0] + (h - side) // 2)
    loaded = families.load(model, "cpu", "torch")
    sample = next(op for op in loaded.family.operations if op.name == "sample")
    params = sample.check_params({"n": 1, "seed": seed, "width": side, "height": side, "best_of": best_of})
    output = sample.run(loaded, OperationInput(params=params))
    assert best_of == 1 or output.info["seeds"] != [seed], output.info  # choose another seed for the test
    picture = output.pictures[0]
    assert picture.alpha is not None
    rgba = np.dstack([np.rint(picture.rgb * 255), picture.alpha]).astype(np.int64)
    return (x, y, side), rgba, output.info["seeds"][0]
