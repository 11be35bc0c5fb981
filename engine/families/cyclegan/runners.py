"""What runs a CycleGAN generator for restyle.py: onnxruntime on the exported graph (the default; exported
into the model directory on first use) or eager torch. Both run networks.Restyler, so they agree to
float rounding (tests/test_cyclegan.py checks it in both directions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.runtime import GraphRunner


class TorchRunner:
    name = "torch"

    def __init__(self, generator: Any, device: Any) -> None:
        from engine.families.cyclegan.networks import Restyler

        self.device = device
        self.restyler = Restyler(generator).eval()
        self.size = generator.statistics_size

    def __call__(self, image: np.ndarray, statistics: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        given = np.zeros((1, self.size), np.float32) if statistics is None else statistics[:1]
        use = torch.full((1,), 0.0 if statistics is None else 1.0, device=self.device)
        with torch.no_grad():
            x = torch.from_numpy(image).to(self.device)
            out, measured = self.restyler(x, torch.from_numpy(given).to(self.device), use)
        return out.float().cpu().numpy(), measured.float().cpu().numpy()

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "provider": str(self.device)}


class OnnxRunner(GraphRunner):
    failure = "onnxruntime could not run the generator on this picture"

    def __init__(self, path: Path, device: str, release_memory: bool = False) -> None:
        from engine.sampler_file import RESTYLER_FORMAT

        super().__init__(path, device, RESTYLER_FORMAT, release_memory)
        shape = {i.name: i.shape for i in self.session.get_inputs()}["statistics"]
        self.none = np.zeros(shape, np.float32)  # what is fed when the picture's own statistics are used

    def __call__(self, image: np.ndarray, statistics: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        feed = {
            "image": np.ascontiguousarray(image, np.float32),
            "statistics": self.none
            if statistics is None
            else np.ascontiguousarray(statistics[:1], np.float32),
            "use_given": np.full(1, 0.0 if statistics is None else 1.0, np.float32),
        }
        out, measured = self.run(feed)
        return out, measured
