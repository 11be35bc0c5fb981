"""Helpers for the daemon tests: a real `engine serve` subprocess and small layers from the shared images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from editor_bridge import Client, frames
from editor_bridge.connection import connection_file_path, read_connection_file
from editor_bridge.errors import BridgeError
from editor_bridge.protocol import ApplyRequest

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "ENGINE_THREADS": "2"}
SIZE = (96, 72)  # small layers: the tiny preset trains at 48 px anyway
# Few iterations: these tests check the daemon, not the training (tests/test_training.py does that).
QUICK_TRAIN = {"preset": "tiny", "iters": 4}
PARAMS = ("seed", "color_match")  # harmonize's parameters, which go in `params`


class Daemon:
    """`python -m engine.cli serve --home HOME` as a real process, on a random loopback port."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.log = home.parent / f"{home.name}-daemon-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--home", str(home), "--backend", "torch"]
        cmd += ["--precision", "fp32", *args]
        env = {**ENV, **(env or {})}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 90.0) -> Daemon:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine serve exited with {self.proc.returncode}: {self.output()}")
            try:
                if read_connection_file(home=self.home).pid == self.proc.pid:
                    return self
            except BridgeError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"engine serve did not start within {timeout} s: {self.output()}")

    def client(self, timeout: float = 60.0) -> Client:
        return Client.from_connection_file(home=self.home, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    @property
    def connection_file(self) -> Path:
        return connection_file_path(self.home)


def layer(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    return cv2.resize(cv2.imread(str(path), flags), SIZE, interpolation=cv2.INTER_AREA)


def krita_layers(images: Path) -> dict[str, np.ndarray]:
    """Background, composite (BGRA, as Krita gives them) and the selection mask of the scream case."""
    h = images / "harmonization"
    mask = layer(h / "scream_naive_mask.jpg", cv2.IMREAD_GRAYSCALE)
    return {
        "background": cv2.cvtColor(layer(h / "scream.jpg"), cv2.COLOR_BGR2BGRA),
        "naive": cv2.cvtColor(layer(h / "scream_naive.jpg"), cv2.COLOR_BGR2BGRA),
        "mask": np.where(mask > 127, 255, 0).astype(np.uint8)[:, :, None],
    }


def harmonize_request(
    layers: dict[str, np.ndarray],
    order: str = "BGRA",
    train: dict | None = None,
    operation: str = "harmonize",
    **fields,
) -> tuple[ApplyRequest, list]:
    """A plugin's one-call harmonization: composite + mask, and the background to train on if needed."""
    naive, background = layers["naive"], layers["background"]
    if order == "RGBA":  # what GIMP sends
        naive, background = frames.from_canonical(naive, "BGRA"), frames.from_canonical(background, "BGRA")
    buffers: list = []
    image = frames.attach(buffers, np.ascontiguousarray(naive), order)
    mask = frames.attach(buffers, layers["mask"], "GRAY")
    bg = frames.attach(buffers, np.ascontiguousarray(background), order)
    params = {name: fields.pop(name) for name in PARAMS if name in fields}
    request = ApplyRequest(
        operation=operation,
        image=image,
        mask=mask,
        background=bg,
        train_if_missing=True,
        train=QUICK_TRAIN if train is None else train,
        params=params,
        **fields,
    )
    return request, buffers
