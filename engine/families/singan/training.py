"""Training SinGAN as the reference does (tamarott/SinGAN, training.py): one stage at a time, coarsest
first, the stages below frozen (eval mode); each stage's networks start from the stage below's weights
when they have the same width. Per iteration, 3 critic steps (WGAN-GP; the image entering the stage is a
fresh random sample of the stages below each time) and 3 generator steps (adversarial loss + alpha x the
reconstruction error from the fixed noise). The stage's noise amplitude is 0.1 x the RMSE between the image
at that stage and its reconstruction from below.

Differences: the reference's 3 generator steps back-propagate the same generated image (made before the
first step) three times, through weights the first step has already changed (newer PyTorch refuses that);
here each step generates it again with the current weights, so the BatchNorm statistics that sampling uses
see the random path in 6 of 9 forward passes instead of 3 of 6 (super-resolution's finest stage, which
also reconstructs 3 steps below it, Config.sr_pairs: 6 of 15). The rate falls at 80% of a stage's
iterations (the reference: at iteration 1600 whatever their number, so never in shorter runs). Stage
images are shrunk from the image with torch's antialiased bicubic (a = -0.5, as the reference's
MATLAB-style imresize) and enlarged with its plain bicubic (a = -0.75; the ONNX graphs' Resize).
fp32 unless --precision bf16 is asked for.

Checkpoints (resume after Ctrl-C, a kill or a crash), progress with previews, cancel, bf16 where native.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import families
from engine.device import autocast
from engine.errors import BadInputError, CancelledError
from engine.families.singan import store
from engine.families.singan.apply import (
    Pyramid,
    downscale,
    draw_noise,
    to_image,
    to_tensor,
    upsample,
    walk,
)
from engine.families.singan.config import NAME, PAD, Config, Task, stage_shapes
from engine.families.singan.networks import StageCritic, StageGenerator, networks
from engine.files import reporting_full_disk
from engine.model_dir import CHECKPOINT_DIR, require_fresh_output
from engine.progress import Progress, ProgressFn

log = logging.getLogger(__name__)
PREVIEW_EVERY_S = 10.0


def gradient_penalty(critic: StageCritic, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator):
    """The reference's calc_gradient_penalty: one mixing weight, gradient norm over channels per pixel."""
    a = torch.rand(1, generator=rng).to(real.device)
    mixed = (a * real + (1 - a) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


Pair = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (noise, image from below, target)


class Trainer:
    def __init__(
        self,
        config: Config,
        image: np.ndarray,
        out_dir: Path,
        device: torch.device,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> None:
        self.config, self.out_dir, self.device = config, Path(out_dir), device
        self.progress, self.cancel = progress, cancel
        self.image = np.ascontiguousarray(image[..., :3], dtype=np.float32)
        height, width = self.image.shape[:2]
        self.shapes = stage_shapes(height, width, config)
        full = to_tensor(self.image)
        self.reals = [stage_image(full, s).to(device) for s in self.shapes]
        self.rng = torch.Generator().manual_seed(config.seed)
        self.fixed_noise = draw_noise(self.rng, self.shapes[0], 0, config.task).contiguous()
        self.generators: list[StageGenerator] = []
        self.amps: list[float] = []
        self.last_critic: dict[str, Any] | None = None  # the stage below's, which the next one starts from
        self.stage_state: dict[str, Any] | None = None  # the stage in progress, from a checkpoint
        self.elapsed = 0.0

    # ---- the stages below, frozen ----

    def _run(self, stage: int, noise: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.generators[stage](noise.to(self.device), previous)

    def _from_below(self, stage: int, noises: list[torch.Tensor]) -> torch.Tensor:
        """The image entering `stage`: the stages below walked with these noises, upsampled."""
        if stage == 0:
            return torch.zeros_like(self.reals[0])
        with torch.no_grad():
            below = walk(self._run, self.shapes[:stage], self.amps, torch.zeros_like(self.reals[0]), noises)
        return upsample(below, self.shapes[stage])

    def _random_below(self, stage: int) -> torch.Tensor:
        return self._from_below(
            stage, [draw_noise(self.rng, self.shapes[s], s, self.config.task) for s in range(stage)]
        )

    def _reconstruction_below(self, stage: int) -> torch.Tensor:
        zeros = [torch.zeros(1, 3, h + 2 * PAD, w + 2 * PAD) for h, w in self.shapes[1:stage]]
        return self._from_below(stage, [self.fixed_noise, *zeros][:stage])

    # ---- one stage ----

    def _train_stage(self, stage: int) -> None:
        c, real = self.config, self.reals[stage]
        g, d = networks(c, stage, torch.Generator().manual_seed(c.seed * 1000 + stage))
        if self.last_critic is not None and c.stage_nfc(stage - 1) == c.stage_nfc(stage):
            g.load_state_dict(self.generators[-1].state_dict())
            d.load_state_dict(self.last_critic)
        g, d = g.to(self.device).train(), d.to(self.device).train()
        opt_g = torch.optim.Adam(g.parameters(), lr=c.lr, betas=(c.beta1, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=c.lr, betas=(c.beta1, 0.999))
        drop = max(1, round(c.lr_drop * c.iters))
        sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, [drop], gamma=0.1)
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, [drop], gamma=0.1)
        rec_in = self._reconstruction_below(stage)
        if stage == 0:
            amp = 1.0
        else:
            amp = c.noise_amp * float(torch.sqrt(torch.mean((real - rec_in) ** 2)))
        rec_noise = (
            self.fixed_noise if stage == 0 else torch.zeros(1, 3, *(s + 2 * PAD for s in real.shape[2:]))
        )
        rec_noise = rec_noise.to(self.device)
        pairs = self._reconstruction_pairs(stage, rec_noise, rec_in, real)
        iteration = 0
        if self.stage_state is not None:
            st = self.stage_state
            g.load_state_dict(st["g"])
            d.load_state_dict(st["d"])
            for obj, key in ((opt_g, "opt_g"), (opt_d, "opt_d"), (sched_g, "sched_g"), (sched_d, "sched_d")):
                obj.load_state_dict(st[key])
            iteration = st["iteration"]
            self.stage_state = None
        start = time.monotonic() - self.elapsed
        last_checkpoint = last_preview = time.monotonic()
        run_start, run_iter0 = time.monotonic(), iteration
        while iteration < c.iters:
            if self.cancel is not None and self.cancel.is_set():
                self.elapsed = time.monotonic() - start
                self.checkpoint(stage, g, d, opt_g, opt_d, sched_g, sched_d, iteration)
                raise CancelledError(
                    f"training cancelled; continue with `engine train --resume {self.out_dir}`"
                )
            if stage == 0:
                # The reference draws the coarsest stage's reconstruction noise anew every iteration and
                # keeps the last: the stage learns the image from any noise near it.
                self.fixed_noise = draw_noise(self.rng, self.shapes[0], 0, c.task).contiguous()
                rec_noise = self.fixed_noise.to(self.device)
                pairs = [(rec_noise, rec_in, real)]
            losses, fake = self._iteration(stage, g, d, opt_g, opt_d, real, pairs, amp)
            sched_g.step()
            sched_d.step()
            iteration += 1
            now = time.monotonic()
            if c.checkpoint_every_s and now - last_checkpoint > c.checkpoint_every_s:
                self.elapsed = now - start
                self.checkpoint(stage, g, d, opt_g, opt_d, sched_g, sched_d, iteration)
                last_checkpoint = now
            if self.progress is not None:
                preview = None
                if now - last_preview > PREVIEW_EVERY_S or iteration == c.iters:
                    preview, last_preview = _preview(fake), now
                spi = (now - run_start) / (iteration - run_iter0)
                self._report(stage, iteration, losses, spi, now - start, preview)
        self.elapsed = time.monotonic() - start
        self.generators.append(g.eval().requires_grad_(False))
        self.last_critic = d.state_dict()
        self.amps.append(amp)

    def _reconstruction_pairs(
        self, stage: int, rec_noise: torch.Tensor, rec_in: torch.Tensor, real: torch.Tensor
    ) -> list[Pair]:
        """What alpha's term reconstructs, as (noise, image from below, target): the stage's image from the
        fixed noise, and for super-resolution's finest stage (the one its passes run) also the real image
        of each of the Config.sr_pairs stages below it from the real image one stage further down,
        enlarged: steps of the same size at other scales of the image."""
        pairs = [(rec_noise, rec_in, real)]
        if self._upscaling(stage):
            for j in range(max(1, stage - self.config.sr_pairs), stage):
                h, w = self.shapes[j]
                below = upsample(self.reals[j - 1], self.shapes[j]).clamp(-1, 1)
                pairs.append(
                    (torch.zeros(1, 3, h + 2 * PAD, w + 2 * PAD, device=self.device), below, self.reals[j])
                )
        return pairs

    def _upscaling(self, stage: int) -> bool:
        """Whether this is the stage that super-resolution's passes run (its finest)."""
        return self.config.task is Task.SUPER_RESOLUTION and stage == len(self.shapes) - 1

    def _symmetry(self, pair: Pair) -> Pair:
        """The pair flipped up-down, left-right and transposed, each at random (one of 8 symmetries)."""
        flips = torch.rand(3, generator=self.rng).tolist()
        dims = [dim for dim, u in ((2, flips[0]), (3, flips[1])) if u < 0.5]
        out = tuple(t.flip(dims) if dims else t for t in pair)
        return tuple(t.transpose(2, 3) for t in out) if flips[2] < 0.5 else out  # type: ignore[return-value]

    def _iteration(
        self, stage, g, d, opt_g, opt_d, real, pairs: list[Pair], amp
    ) -> tuple[dict, torch.Tensor]:
        c = self.config
        noise = draw_noise(self.rng, self.shapes[stage], stage, c.task).to(self.device)
        for _ in range(c.d_steps):
            previous = self._random_below(stage)
            with autocast(self.device, c.precision):
                with torch.no_grad():
                    fake = g(amp * noise, previous)
                loss_real = -d(real).float().mean()
                loss_fake = d(fake).float().mean()
            penalty = gradient_penalty(d, real, fake.float(), self.rng)
            loss_d = loss_real + loss_fake + c.gp_weight * penalty
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        d.requires_grad_(False)
        for _ in range(c.g_steps):
            with autocast(self.device, c.precision):
                fake = g(amp * noise, previous)
                loss_adv = -d(fake).float().mean()
                seen = pairs
                if c.sr_symmetries and self._upscaling(stage):
                    seen = [self._symmetry(pair) for pair in pairs]
                loss_rec = torch.stack(
                    [torch.mean((g(amp * z, x).float() - y) ** 2) for z, x, y in seen]
                ).mean()
            loss_g = loss_adv + c.rec_weight * loss_rec
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        d.requires_grad_(True)
        losses = {"d": float(loss_d.detach()), "g": float(loss_adv.detach()), "rec": float(loss_rec.detach())}
        if not all(math.isfinite(v) for v in losses.values()):
            raise BadInputError(
                f"training diverged at stage {stage + 1} (a loss is NaN or infinite): train again with "
                "another --seed or --precision fp32"
            )
        return losses, fake.detach()

    def _report(self, stage, iteration, losses, spi, elapsed, preview) -> None:
        assert self.progress is not None
        c, n = self.config, len(self.shapes)
        # Later stages cost more (larger images, more stages below to sample): scale by pixels.
        pixels = [h * w for h, w in self.shapes]
        left = (c.iters - iteration) * spi + sum(pixels[stage + 1 :]) / pixels[stage] * c.iters * spi
        self.progress(Progress(stage, n, iteration, c.iters, losses, elapsed, left, preview))

    # ---- checkpoints and the model ----

    def checkpoint(
        self, stage=None, g=None, d=None, opt_g=None, opt_d=None, sched_g=None, sched_d=None, it=0
    ):
        current = None
        if g is not None:
            current = {
                "stage": stage, "iteration": it, "g": g.state_dict(), "d": d.state_dict(),  # type: ignore[union-attr]
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),  # type: ignore[union-attr]
                "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),  # type: ignore[union-attr]
            }  # fmt: skip
        state = {
            "config": self.config.to_dict(),
            "image": self.image,
            "generators": [gen.state_dict() for gen in self.generators],
            "critic": self.last_critic,
            "amps": self.amps,
            "fixed_noise": self.fixed_noise,
            "rng": self.rng.get_state(),
            "elapsed": self.elapsed,
            "current": current,
        }
        families.write_checkpoint_state(self.out_dir, state)

    def restore(self, state: dict[str, Any]) -> None:
        for i, weights in enumerate(state["generators"]):
            g = StageGenerator(self.config.stage_nfc(i))
            g.load_state_dict(weights)
            self.generators.append(g.to(self.device).eval().requires_grad_(False))
        self.last_critic = state["critic"]
        self.amps = list(state["amps"])
        self.fixed_noise = state["fixed_noise"].cpu()
        self.rng.set_state(state["rng"])
        self.elapsed = state["elapsed"]
        self.stage_state = state["current"]

    def run(self) -> Path:
        with reporting_full_disk(self.out_dir):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            families.mark_checkpoint(self.out_dir, NAME)  # `engine train --resume` finds the family
            if self.stage_state is None:  # a resumed run keeps its checkpoint until it writes the next
                self.checkpoint()
            while len(self.generators) < len(self.shapes):
                self._train_stage(len(self.generators))
                self.checkpoint()
            model = Pyramid(
                self.config, self.shapes, self.amps, self.fixed_noise, self.generators, self.out_dir
            )
            info = {"training_seconds": round(self.elapsed, 1), "device": self.device.type}
            store.save_model(self.out_dir, model, to_image(self.reals[-1]), info)
        shutil.rmtree(self.out_dir / CHECKPOINT_DIR, ignore_errors=True)
        return self.out_dir


def _preview(image: torch.Tensor) -> np.ndarray:
    """A progress preview: the image with its long side at most 128 px (Progress.preview)."""
    h, w = image.shape[-2:]
    scale = min(1.0, 128 / max(h, w))
    if scale < 1:
        image = torch.nn.functional.interpolate(
            image.float(), size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area"
        )
    return to_image(image)


def stage_image(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The image at a stage's shape: shrunk antialiased (apply.downscale), enlarged bicubic."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image.clone()
    if shape[0] <= image.shape[2] and shape[1] <= image.shape[3]:
        return downscale(image, shape).clamp(-1, 1)
    return upsample(image, shape).clamp(-1, 1)


def detail_crop(image: np.ndarray, size: int, grid: int = 5) -> np.ndarray:
    """The window of at most size x size px with the most detail (the mean square of its grey Laplacian), of
    grid x grid evenly spaced candidates. Super-resolution learns its image at its own scale, so a larger
    one trains on such a piece of itself: the upscaling stage is a local operator and sharpens the rest as
    well (docs/benchmarks.md, "Super-resolution")."""
    h, w = image.shape[:2]
    ch, cw = min(h, size), min(w, size)
    if (ch, cw) == (h, w):
        return image
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image[..., :3], dtype=np.float32), cv2.COLOR_RGB2GRAY)
    energy = cv2.Laplacian(grey, cv2.CV_32F) ** 2
    best, where = -1.0, (0, 0)
    for top in np.linspace(0, h - ch, grid).round().astype(int):
        for left in np.linspace(0, w - cw, grid).round().astype(int):
            score = float(energy[top : top + ch, left : left + cw].mean())
            if score > best:
                best, where = score, (int(top), int(left))
    top, left = where
    return np.ascontiguousarray(image[top : top + ch, left : left + cw])


def train(
    config: Config,
    image: np.ndarray,
    out_dir: Path,
    device: torch.device,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    require_fresh_output(Path(out_dir))
    if config.task is Task.SUPER_RESOLUTION and max(image.shape[:2]) > config.max_size:
        h, w = image.shape[:2]
        image = detail_crop(image, config.max_size)
        log.info(
            "super-resolution of a %dx%d image learns its %dx%d piece with the most detail",
            w, h, image.shape[1], image.shape[0],
        )  # fmt: skip
    return Trainer(config, image, out_dir, device, progress, cancel).run()


def resume(
    out_dir: Path, device: torch.device, progress: ProgressFn | None, cancel: threading.Event | None
) -> Path:
    state = families.read_checkpoint_state(out_dir, "cpu")
    trainer = Trainer(Config.from_dict(state["config"]), state["image"], out_dir, device, progress, cancel)
    trainer.restore(state)
    log.info("resuming SinGAN training at stage %d", len(trainer.generators) + 1)
    return trainer.run()
