"""Sampling a set generator: a seed's latent vector, the runners (onnxruntime on the exported graph, the
default, or eager torch) and the generator's output as pictures at any size.

A seed names one image for good: its latent is numpy's standard normal from that seed, the same whatever
the backend or the device; sample i of a run with --seed S is seed S + i, so any one can be drawn again
alone. Interpolation walks the great circle between two seeds' latents (slerp), which keeps every frame's
latent as likely as its ends (a straight line passes near the origin, where the images wash out).

`--best-of M` draws M seeds for each image kept and keeps the one the model's critic scores highest
(ranking samples by the critic, after Azadi et al., "Discriminator Rejection Sampling", ICLR 2019, shown on
SAGAN). The critic only ever saw images through the run's DiffAugment policy, so a score is its mean over
SCORE_DRAWS augmented copies (docs/benchmarks.md, "Keeping the best of several samples").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.imageio import Picture
from engine.runtime import GraphRunner

CHUNK = 16  # latents per run
SCORE_DRAWS = 8  # augmented copies a critic's score is the mean of


def latent(seed: int, z_dim: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(z_dim).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = float(np.dot(a64, b64) / (np.linalg.norm(a64) * np.linalg.norm(b64)))
    omega = float(np.arccos(np.clip(cos, -1.0, 1.0)))
    if omega < 1e-6:
        return ((1 - t) * a64 + t * b64).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64) / np.sin(omega)).astype(np.float32)


def to_picture(image: np.ndarray, width: int | None = None, height: int | None = None) -> Picture:
    """One generator output (C x S x S in [-1, 1], colour premultiplied where C is 4) as a picture,
    resampled to width x height (Lanczos up, area down) where asked."""
    x: np.ndarray = np.clip((image.astype(np.float32) + 1) / 2, 0, 1).transpose(1, 2, 0)
    size = x.shape[0]
    w, h = width or size, height or size
    if (w, h) != (size, size):
        method = cv2.INTER_AREA if w * h < size * size else cv2.INTER_LANCZOS4
        x = np.clip(cv2.resize(x, (w, h), interpolation=method), 0, 1).reshape(h, w, -1).astype(np.float32)
    if x.shape[2] == 3:
        return Picture(np.ascontiguousarray(x))
    alpha = x[..., 3]
    premultiplied = np.minimum(x[..., :3], alpha[..., None])
    rgb = np.where(alpha[..., None] > 1 / 512, premultiplied / np.maximum(alpha[..., None], 1e-6), 0.0)
    return Picture(np.ascontiguousarray(rgb, np.float32), np.rint(alpha * 255).astype(np.uint8), 8)


def generate(runner: Any, latents: np.ndarray) -> np.ndarray:
    """N x z_dim latents -> N x C x S x S, CHUNK at a time."""
    return np.concatenate([runner(latents[i : i + CHUNK]) for i in range(0, len(latents), CHUNK)])


def critic_scores(critic: Any, images: np.ndarray, policy: tuple[str, ...]) -> np.ndarray:
    """N images (N x C x S x S in [-1, 1]) -> N scores: the critic's mean over SCORE_DRAWS copies through
    the training augmentations (one plain pass where the run had none), their randomness from a fixed seed:
    the same images, scored together in the same order, score the same (an image's augmentation depends on
    its companions). The critic runs in torch, on the model's device (it only ranks)."""
    import torch

    from engine.families.sagan.augment import diff_augment

    rng = torch.Generator().manual_seed(0)
    device = next(critic.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(device)
    with torch.no_grad():
        draws = [critic(diff_augment(x, policy, rng)) for _ in range(SCORE_DRAWS if policy else 1)]
    return torch.stack(draws).mean(dim=0).float().cpu().numpy()


class TorchRunner:
    name = "torch"

    def __init__(self, generator: Any, device: Any) -> None:
        self.generator, self.device = generator, device

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.generator(torch.from_numpy(np.ascontiguousarray(latents, np.float32)).to(self.device))
        return out.float().cpu().numpy()

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "provider": str(self.device)}


class OnnxRunner(GraphRunner):
    def __init__(self, path: Path, device: str, release_memory: bool = False) -> None:
        from engine.sampler_file import SET_GENERATOR_FORMAT

        super().__init__(path, device, SET_GENERATOR_FORMAT, release_memory)

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        (out,) = self.run({"latent": np.ascontiguousarray(latents, np.float32)})
        return out
