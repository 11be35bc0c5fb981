"""Training a set generator: SAGAN's hinge loss with two time-scale Adam (the critic at 4x the generator's
rate, betas 0.0 and 0.9), one critic step per generator step, on mini-batches of the set; where the config
asks for them, spectral normalisation, a moving average of the generator (torch.optim.swa_utils) and
differentiable augmentation for the critic. Checkpoints (resume after Ctrl-C, a kill or a crash), progress
with a sheet of samples from fixed latents, cancel, bf16 where native.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.optim.swa_utils import AveragedModel, update_bn

from engine import families
from engine.device import autocast
from engine.errors import BadInputError, CancelledError
from engine.families.sagan import store
from engine.families.sagan.augment import diff_augment
from engine.families.sagan.config import NAME, Config
from engine.families.sagan.data import load_set
from engine.families.sagan.networks import Critic, Decoder, Generator, baked
from engine.files import reporting_full_disk
from engine.model_dir import CHECKPOINT_DIR, require_fresh_output
from engine.progress import Progress, ProgressFn

log = logging.getLogger(__name__)
PREVIEWS = 16  # fixed latents shown in the progress previews
PREVIEW_EVERY = 20  # previews per run
CALIBRATION_LR = 0.1  # the critic's learning rate while it is trained against the sampler, times d_lr
CALIBRATION_COST = 0.5  # a calibration step's time over a training iteration's (0.46 measured at `fast`)
LECAM_DECAY = 0.99  # of the moving means of the critic's scores that LeCam holds them to (as its reference)


def moving_average(decay: float, rampup: float = 0.0) -> Callable[..., None]:
    """AveragedModel's multi_avg_fn: an exponential moving average whose decay is `decay`, or with `rampup`
    the decay whose half-life is that fraction of the iterations so far where that is shorter (after
    StyleGAN2-ADA's ema_rampup: early weights, far from the finished generator, leave the average sooner,
    so a preview or a shortened run is not held back). Counting the iterations from AveragedModel's own
    count of updates, which its state_dict keeps, a resumed run goes on as it was."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        rate = decay
        if rampup:
            rate = min(decay, 0.5 ** (1.0 / (rampup * (int(updates) + 1))))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - rate)
        else:  # BatchNorm's count of batches
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * rate + c * (1.0 - rate))

    return update


def standing(
    generator: Generator, config: Config, device: torch.device, batches: int | None = None, scale: float = 1.0
) -> Generator:
    """A copy of the generator in eval mode with its BatchNorm statistics measured (update_bn) on `batches`
    mini-batches (the config's standing_batches by default) of fixed latents, from the run's seed + 2,
    times `scale` (bench/experiments/sagan_truncation.py measures them on scaled latents)."""
    copied = copy.deepcopy(generator)
    rng = torch.Generator().manual_seed(config.seed + 2)
    shape = (config.batch, config.z_dim)
    latents = [
        scale * torch.randn(shape, generator=rng).to(device)
        for _ in range(batches or config.standing_batches)
    ]
    with torch.no_grad():
        update_bn(latents, copied)
    return copied.eval()


class Trainer:
    def __init__(
        self,
        config: Config,
        folder: Path,
        out_dir: Path,
        device: torch.device,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> None:
        self.config, self.out_dir, self.device = config, Path(out_dir), device
        self.progress, self.cancel = progress, cancel
        self.folder = Path(folder).resolve()
        images, self.files = load_set(self.folder, config.size)
        self.images = images.to(device)
        channels = images.shape[1]
        c = config
        with torch.random.fork_rng(devices=[]):  # the networks' initial weights come from the seed
            torch.manual_seed(c.seed)
            self.g = Generator(c.z_dim, c.g_dim, c.size, channels, c.spectral_norm, c.upsample, c.g_norm)
            self.g = self.g.to(device)
            self.d = Critic(c.d_dim, c.size, channels, c.spectral_norm).to(device)
            self.decoder = None
            if c.d_recon:  # training only: the stored critic has none
                self.decoder = Decoder(self.d.features_width, c.d_dim, c.size, channels, c.spectral_norm)
                self.decoder = self.decoder.to(device)
        self.ema = None
        if c.ema:
            average = moving_average(c.ema, c.ema_rampup)
            self.ema = AveragedModel(self.g, multi_avg_fn=average, use_buffers=True)
        betas = (c.beta1, c.beta2)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=c.g_lr, betas=betas)
        critic = [*self.d.parameters(), *(self.decoder.parameters() if self.decoder is not None else [])]
        self.opt_d = torch.optim.Adam(critic, lr=c.d_lr, betas=betas)
        self.rng = torch.Generator().manual_seed(c.seed)
        self.fixed = torch.randn(PREVIEWS, c.z_dim, generator=torch.Generator().manual_seed(c.seed + 1))
        self.iteration = 0
        self.elapsed = 0.0
        self.anchors: tuple[float, float] | None = None  # LeCam's moving mean critic scores: real, generated

    # ---- checkpoints ----

    def checkpoint(self) -> None:
        state = {
            "config": self.config.to_dict(),
            "folder": str(self.folder),
            "g": self.g.state_dict(),
            "d": self.d.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "decoder": None if self.decoder is None else self.decoder.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "iteration": self.iteration,
            "rng": self.rng.get_state(),
            "elapsed": self.elapsed,
            "lecam_anchors": self.anchors,
        }
        families.write_checkpoint_state(self.out_dir, state)

    def restore(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.decoder is not None:
            self.decoder.load_state_dict(state["decoder"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.iteration = state["iteration"]
        self.rng.set_state(state["rng"])
        self.elapsed = state["elapsed"]
        anchors = state.get("lecam_anchors")  # absent in checkpoints written before LeCam
        self.anchors = None if anchors is None else (float(anchors[0]), float(anchors[1]))

    # ---- the loop ----

    def sampler(self, batches: int | None = None) -> Generator:
        """What samples are drawn with: the moving average where there is one, with its BatchNorm
        statistics measured again (BigGAN's "standing statistics"). The average of the running statistics
        does not belong to the averaged weights: sampled with it, a run's images came out washed out and
        grey-green (bench: `sn_ema` before this). `batches` mini-batches of fixed latents, at the training
        batch size (the config's standing_batches by default), measure them (torch.optim.swa_utils.update_bn),
        on a copy: training goes on as it was."""
        if self.ema is None:
            return self.g
        return standing(self.ema.module, self.config, self.device, batches)  # type: ignore[arg-type]

    def run(self) -> Path:
        c = self.config
        start = time.monotonic() - self.elapsed
        last_checkpoint = time.monotonic()
        run_start, run_iter0 = time.monotonic(), self.iteration
        with reporting_full_disk(self.out_dir):
            self.checkpoint()
            families.mark_checkpoint(self.out_dir, NAME)  # `engine train --resume` finds the family
            while self.iteration < c.iters:
                if self.cancel is not None and self.cancel.is_set():
                    self.elapsed = time.monotonic() - start
                    self.checkpoint()
                    self._stop_if_cancelled()
                losses = self.step()
                self.iteration += 1
                if c.checkpoint_every_s and time.monotonic() - last_checkpoint > c.checkpoint_every_s:
                    self.elapsed = time.monotonic() - start
                    self.checkpoint()
                    last_checkpoint = time.monotonic()
                if self.progress is not None:
                    spi = (time.monotonic() - run_start) / (self.iteration - run_iter0)
                    self._report(losses, spi, time.monotonic() - start)
            self.elapsed = time.monotonic() - start
            if c.calibrate:
                self.checkpoint()  # the loop's end: stopped while calibrating, a resume calibrates from here
            sampler = baked(self.sampler())
            self.calibrate(sampler)
            self.elapsed = time.monotonic() - start
            info = {
                "images": str(self.folder),
                "image_count": len(self.files),
                "training_seconds": round(self.elapsed, 1),
            }
            store.save_model(self.out_dir, c, sampler, baked(self.d), info)
        shutil.rmtree(self.out_dir / CHECKPOINT_DIR, ignore_errors=True)
        return self.out_dir

    def _batch(self) -> torch.Tensor:
        c = self.config
        index = torch.randint(len(self.images), (c.batch,), generator=self.rng)
        real = self.images[index.to(self.images.device)]
        if c.flip:
            flip = (torch.rand(c.batch, generator=self.rng) < 0.5).to(real.device)
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        return real

    def _latents(self) -> torch.Tensor:
        return torch.randn(self.config.batch, self.config.z_dim, generator=self.rng).to(self.device)

    def _critic_step(self, draw: Callable[[], torch.Tensor], regularise: bool = True) -> torch.Tensor:
        """One hinge-loss step of the critic on an augmented real mini-batch and the images `draw` makes
        (drawn without gradients, after the real ones), with the config's LeCam term and its decoder's
        drawing back of the real images (half size, mean squared error) where `regularise`; its loss."""
        c = self.config
        real = self._batch()
        r1 = bool(c.r1) and regularise and self.iteration % c.r1_every == 0
        # R1 differentiates the critic twice: attention's fused CUDA kernels have no second derivative
        kernels = sdpa_kernel(SDPBackend.MATH) if r1 else contextlib.nullcontext()
        with autocast(self.device, c.precision), kernels:
            with torch.no_grad():
                fake = draw()
            real = diff_augment(real, c.policy, self.rng)
            if r1:
                real = real.detach().requires_grad_(True)
            recon = None
            if self.decoder is not None and regularise:
                real_score, features = self.d.scores_and_features(real)
                recon = self.decoder(features).float()
            else:
                real_score = self.d(real)
            real_score = real_score.float()
            fake_score = self.d(diff_augment(fake, c.policy, self.rng)).float()
            loss_d = F.relu(1.0 - real_score).mean() + F.relu(1.0 + fake_score).mean()
            if recon is not None:
                target = F.adaptive_avg_pool2d(real.detach().float(), recon.shape[-2:])
                loss_d = loss_d + c.d_recon * F.mse_loss(recon, target)
            if c.lecam and regularise:
                loss_d = loss_d + c.lecam * self._lecam(real_score, fake_score)
            if r1:
                loss_d = loss_d + c.r1 / 2 * c.r1_every * self._gradient_penalty(real_score, real)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return loss_d

    @staticmethod
    def _gradient_penalty(scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """R1 (Mescheder, Geiger and Nowozin, ICML 2018): the mean over the mini-batch of the squared norm of
        the critic's gradient with respect to the real images it scored, kept in the graph so the critic's
        step lowers it. Taken at the images as augmented, as the critic saw them (StyleGAN2-ADA takes it
        before its augmentation, through it). Applied every `r1_every` steps times that count (StyleGAN2's
        lazy regularisation)."""
        (gradient,) = torch.autograd.grad(scores.sum(), images, create_graph=True)
        return gradient.float().square().sum(dim=(1, 2, 3)).mean()

    def _lecam(self, real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
        """LeCam regularisation (Tseng, Jiang, Liu, Yang and Yang, CVPR 2021, made for GANs trained on
        little data, alongside DiffAugment): the squared excess of each real score over the moving mean of
        the generated images' scores, and of the moving mean of the real scores over each generated image's
        score, so the critic cannot push the two apart without bound. As in google/lecam-gan: the moving
        means (decay LECAM_DECAY) are updated with this step's scores first, and until the config's
        `lecam_start` iterations they only follow the scores (no term; 0 where it has not started)."""
        means = (float(real_score.detach().mean()), float(fake_score.detach().mean()))
        if self.anchors is None or self.iteration < self.config.lecam_start:
            self.anchors = means
            return real_score.new_zeros(())
        self.anchors = (
            LECAM_DECAY * self.anchors[0] + (1 - LECAM_DECAY) * means[0],
            LECAM_DECAY * self.anchors[1] + (1 - LECAM_DECAY) * means[1],
        )
        real_anchor, fake_anchor = self.anchors
        return F.relu(real_score - fake_anchor).pow(2).mean() + F.relu(real_anchor - fake_score).pow(2).mean()

    def calibrate(self, sampler: Generator) -> None:
        """The config's `calibrate` more critic steps against the sampler the model keeps, the generator
        fixed (the calibration step of Discriminator Rejection Sampling: Azadi et al., ICLR 2019), at a
        tenth of its learning rate. The critic of training judges the live generator, whose faults move from
        step to step: uncalibrated, its ranking of the sampler's images helped at some points of a run and
        made them worse at others, and at the full rate the calibration's ranking swung from one count of
        steps to the next (docs/benchmarks.md). The calibrated critic is the one stored, for `engine sample
        --best-of`."""
        if self.config.calibrate:
            log.info("training the critic %d steps against the sampler", self.config.calibrate)
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.d_lr * CALIBRATION_LR
        for _ in range(self.config.calibrate):
            self._stop_if_cancelled()
            self._critic_step(lambda: sampler(self._latents()), regularise=False)  # the ranking's own loss

    def _stop_if_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError(f"training cancelled; continue with `engine train --resume {self.out_dir}`")

    def step(self) -> dict[str, float]:
        c = self.config
        g, d, policy = self.g, self.d, c.policy
        loss_d = self._critic_step(lambda: g(self._latents()))
        # generator
        d.requires_grad_(False)
        with autocast(self.device, c.precision):
            loss_g = -d(diff_augment(g(self._latents()), policy, self.rng)).float().mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        d.requires_grad_(True)
        if self.ema is not None:
            self.ema.update_parameters(g)
        losses = {"d": float(loss_d.detach()), "g": float(loss_g.detach())}
        if not all(np.isfinite(v) for v in losses.values()):
            raise BadInputError(
                f"training diverged at iteration {self.iteration + 1} (a loss is NaN or infinite): train "
                "again with another --seed or --precision fp32"
            )
        return losses

    def preview(self) -> np.ndarray:
        """A sheet of the fixed latents' samples (H x W x 3 in [0, 1]; alpha shown over grey)."""
        from torchvision.utils import make_grid

        sampler = self.sampler(batches=max(1, self.config.standing_batches // 4))  # a preview: fewer do
        was_training = sampler.training
        sampler.eval()
        with torch.no_grad():
            images = (sampler(self.fixed.to(self.device)).float().cpu() + 1) / 2
        sampler.train(was_training)
        if images.shape[1] == 4:  # premultiplied colour over mid grey
            images = images[:, :3] + 0.5 * (1 - images[:, 3:])
        sheet = make_grid(images.clamp(0, 1), nrow=4, padding=2, pad_value=1.0)
        return np.ascontiguousarray(sheet.permute(1, 2, 0).numpy())

    def _report(self, losses: dict[str, float], spi: float, elapsed: float) -> None:
        assert self.progress is not None
        c = self.config
        every = max(1, c.iters // PREVIEW_EVERY)
        preview = self.preview() if self.iteration % every == 0 or self.iteration == c.iters else None
        self.progress(
            Progress(
                stage=0,
                n_stages=1,
                iteration=self.iteration,
                iters=c.iters,
                losses=losses,
                elapsed_s=elapsed,
                eta_s=(c.iters - self.iteration + c.calibrate * CALIBRATION_COST) * spi,
                preview=preview,
            )  # fmt: skip
        )


def train(
    config: Config,
    folder: Path,
    out_dir: Path,
    device: torch.device,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    require_fresh_output(Path(out_dir))
    return Trainer(config, folder, out_dir, device, progress, cancel).run()


def resume(
    out_dir: Path, device: torch.device, progress: ProgressFn | None, cancel: threading.Event | None
) -> Path:
    state = families.read_checkpoint_state(out_dir, device)
    config = Config.from_dict(state["config"])
    trainer = Trainer(config, Path(state["folder"]), out_dir, device, progress, cancel)
    trainer.restore(state)
    log.info("resuming set-generator training at iteration %d", trainer.iteration + 1)
    return trainer.run()
