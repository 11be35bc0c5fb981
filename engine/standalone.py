"""Run an exported sampler (`engine export`) with only onnxruntime and numpy: no torch, no engine code.

This file imports nothing from the engine, so it can be copied next to a .onnx file and used on its own:
`python standalone.py sampler.onnx --out sample.png [--width W --height H --seed S]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

FORMAT = "singan-studio-sampler"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# metadata_props values are strings: these are plain text, every other value is JSON.
TEXT_KEYS = frozenset(
    {"format", "mode", "precision", "engine_version", "source_digest", "weights_digest"}
    | {"family", "direction"}  # CycleGAN generators
)

log = logging.getLogger(__name__)
_cuda_libraries_loaded = False


def load_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries that pip installs (the nvidia-* wheels PyTorch depends on) for
    onnxruntime's CUDA provider. They are not on the loader's path: `import torch` loads them, and a process
    without torch would otherwise get no CUDA provider. Once per process; what onnxruntime prints about it
    goes to the log (stdout may carry a --json result)."""
    global _cuda_libraries_loaded
    if _cuda_libraries_loaded or not hasattr(ort, "preload_dlls"):
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ort.preload_dlls()
    if printed.getvalue().strip():
        log.warning("loading the CUDA libraries for onnxruntime: %s", printed.getvalue().strip())
    _cuda_libraries_loaded = True


def available_cores() -> int:
    """Cores this process may run on (a container's CPU affinity, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_counts(cores: int | None = None) -> tuple[int, int]:
    """(intra-op, inter-op) threads: one parallel op at a time, each over the cores.

    The sampler is a chain of convolutions, so there is nothing for inter-op parallelism to overlap and the
    sequential executor is cheapest. Past about 32 threads one image's convolutions stop scaling, and on a
    big server several requests in flight use the cores better than one that spreads over all of them.
    ENGINE_THREADS overrides the count.
    """
    cores = cores or int(os.environ.get("ENGINE_THREADS", "0")) or available_cores()
    return max(1, min(cores, 32)), 1


def session_options(cores: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # ENABLE_ALL includes the NCHWc layout transform, which is what makes x86 convolutions fast.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The memory pattern plans one block per input shape on top of the arena: with a new size per request
    # it added half to the peak (4000x3000 sample: 17.6 GB with it, 12.0 GB without) and saved no time.
    options.enable_mem_pattern = False
    intra, inter = thread_counts(cores)
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    if intra <= 4:
        # On a small machine shared with the user's editor, busy-waiting workers would steal the cores the
        # editor needs between requests; the latency cost of waking them is well under 1 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def read_metadata(session: ort.InferenceSession) -> dict:
    """The export's metadata_props, JSON values decoded; raises ValueError if it is not a sampler."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    if props.get("format") != FORMAT:
        raise ValueError("this .onnx file is not a sampler exported by `engine export`")
    return {k: (v if k in TEXT_KEYS else json.loads(v)) for k, v in props.items()}


def retarget_shapes(trained: list[list[int]], height: int, width: int, min_side: int = 8) -> list[tuple]:
    """Stage shapes for an output of another size: every stage scaled like the final one."""
    th, tw = trained[-1]
    sh, sw = height / th, width / tw
    shapes = [(max(min_side, round(h * sh)), max(min_side, round(w * sw))) for h, w in trained[:-1]]
    return [*shapes, (height, width)]


class Sampler:
    """One exported sampler: stage shapes, noise and one onnxruntime session."""

    def __init__(self, path: str | Path, providers: list | None = None) -> None:
        """`providers`: onnxruntime's list (names, or (name, options) pairs); the CPU's by default."""
        if any((p if isinstance(p, str) else p[0]) == CUDA for p in providers or []):
            load_cuda_libraries()
        self.session = ort.InferenceSession(str(path), session_options(), providers=providers or [CPU])
        self.meta = read_metadata(self.session)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def stage_shapes(self, height: int | None = None, width: int | None = None) -> list[tuple[int, int]]:
        trained = self.meta["stage_shapes"]
        if height is None and width is None:
            return [tuple(s) for s in trained]
        th, tw = trained[-1]
        height = height or round(th * width / tw)
        width = width or round(tw * height / th)
        return retarget_shapes(trained, height, width)

    def noise(self, shapes: list[tuple[int, int]], rng: np.random.Generator) -> list[np.ndarray]:
        """Standard normal inputs for every stage (stage 0 included) at the shapes the graph expects."""
        pad, channels = self.meta["noise_pad"], self.meta["noise_channels"]
        out = [rng.standard_normal((1, 3, *shapes[0]), dtype=np.float32)]
        for h, w in shapes[1:]:
            out.append(rng.standard_normal((1, channels, h + pad, w + pad), dtype=np.float32))
        return out

    def run(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Stage inputs (N x C x H x W float32) -> images N x 3 x H x W in [-1, 1]."""
        pairs = zip(self.input_names, inputs, strict=True)
        feed = {name: np.ascontiguousarray(x, dtype=np.float32) for name, x in pairs}
        return self.session.run(None, feed)[0]

    def sample(
        self,
        height: int | None = None,
        width: int | None = None,
        seed: int = 0,
        stage0: np.ndarray | None = None,
    ) -> np.ndarray:
        """One H x W x 3 uint8 image. Harmonization/editing models need `stage0`: the image (H0 x W0 x 3 in
        [0, 1]) at the coarsest stage's size, `self.stage_shapes(...)[0]`."""
        shapes = self.stage_shapes(height, width)
        inputs = self.noise(shapes, np.random.default_rng(seed))
        if stage0 is not None:
            if stage0.shape[:2] != shapes[0]:
                raise ValueError(f"stage0 must be {shapes[0][1]}x{shapes[0][0]} px, got {stage0.shape[:2]}")
            inputs[0] = (stage0.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32)
        elif self.meta["conditional"]:
            raise ValueError(f"this {self.meta['mode']} model needs stage0, the image to start from")
        image = self.run(inputs)[0].transpose(1, 2, 0)
        return np.round((np.clip(image, -1, 1) + 1) * 127.5).astype(np.uint8)


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """An 8-bit RGB PNG with zlib from the standard library (no image library needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
    Path(path).write_bytes(png + chunk(b"IEND", b""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Sample from an exported sampler with onnxruntime only.")
    parser.add_argument("onnx")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sampler = Sampler(args.onnx)
    write_png(args.out, sampler.sample(args.height, args.width, args.seed))
    print(args.out)


if __name__ == "__main__":
    main()
