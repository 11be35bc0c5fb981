"""CycleGAN training as the reference does it (models/cycle_gan_model.py): least-squares GAN losses, cycle
losses both ways, identity losses, a pool of generated images for the critics, Adam, the linear decay;
plus checkpoints (resume after Ctrl-C, a kill or a crash), progress and cancel, and bf16 where native.

G_a2b turns domain A into B and critic B judges its output against real B images; G_b2a and critic A the
other way.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine import families
from engine.device import autocast
from engine.errors import BadInputError, CancelledError
from engine.families.cyclegan import store
from engine.families.cyclegan.config import NAME, Config
from engine.families.cyclegan.data import Domain
from engine.families.cyclegan.networks import Critic, Generator, init_weights
from engine.files import reporting_full_disk
from engine.model_dir import CHECKPOINT_DIR, require_fresh_output
from engine.progress import Progress, ProgressFn

log = logging.getLogger(__name__)


class ImagePool:
    """The reference's image buffer: with a full pool, half the time the critic sees an older fake and the
    new one takes its place."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, image: torch.Tensor, rng: random.Random) -> torch.Tensor:
        image = image.detach()
        if len(self.images) < self.size:
            self.images.append(image)
            return image
        if rng.random() < 0.5:
            index = rng.randrange(self.size)
            old, self.images[index] = self.images[index], image
            return old
        return image


class Trainer:
    def __init__(
        self,
        config: Config,
        folders: tuple[Path, Path],
        out_dir: Path,
        device: torch.device,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> None:
        self.config, self.out_dir, self.device = config, Path(out_dir), device
        self.progress, self.cancel = progress, cancel
        self.folders = tuple(Path(f).resolve() for f in folders)
        self.domains = (Domain(self.folders[0], "--domain-a"), Domain(self.folders[1], "--domain-b"))
        self.rng = torch.Generator().manual_seed(config.seed)
        self.pool_rng = random.Random(config.seed)
        fmt = torch.channels_last
        self.g = {k: Generator(config.ngf, config.blocks, config.upsample) for k in ("a2b", "b2a")}
        self.d = {
            "a": Critic(config.ndf, config.critic_layers),
            "b": Critic(config.ndf, config.critic_layers),
        }
        for net in (*self.g.values(), *self.d.values()):
            init_weights(net, self.rng)
            net.to(device).to(memory_format=fmt).train()  # type: ignore[call-overload]
        g_params = [p for g in self.g.values() for p in g.parameters()]
        d_params = [p for d in self.d.values() for p in d.parameters()]
        betas = (config.beta1, 0.999)
        self.opt_g = torch.optim.Adam(g_params, lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(d_params, lr=config.lr, betas=betas)
        self.pools = {"a": ImagePool(config.pool), "b": ImagePool(config.pool)}
        self.epoch, self.iteration = 0, 0
        self.elapsed = 0.0

    @property
    def epoch_size(self) -> int:
        return self.config.epoch_size or max(len(d) for d in self.domains)

    # ---- checkpoints ----

    def checkpoint(self) -> None:
        state = {
            "config": self.config.to_dict(),
            "folders": [str(f) for f in self.folders],
            "g": {k: g.state_dict() for k, g in self.g.items()},
            "d": {k: d.state_dict() for k, d in self.d.items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "pools": {k: p.images for k, p in self.pools.items()},
            "epoch": self.epoch,
            "iteration": self.iteration,
            "rng": self.rng.get_state(),
            "pool_rng": self.pool_rng.getstate(),
            "elapsed": self.elapsed,
        }
        families.write_checkpoint_state(self.out_dir, state)

    def restore(self, state: dict[str, Any]) -> None:
        for k, g in self.g.items():
            g.load_state_dict(state["g"][k])
        for k, d in self.d.items():
            d.load_state_dict(state["d"][k])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for k, pool in self.pools.items():
            pool.images = [t.to(self.device) for t in state["pools"][k]]
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.rng.set_state(state["rng"])
        self.pool_rng.setstate(state["pool_rng"])
        self.elapsed = state["elapsed"]

    # ---- the loop ----

    def run(self) -> Path:
        c = self.config
        start = time.monotonic() - self.elapsed
        last_checkpoint = time.monotonic()
        with reporting_full_disk(self.out_dir):
            self.checkpoint()
            families.mark_checkpoint(self.out_dir, NAME)  # `engine train --resume` finds the family
            while self.epoch < c.total_epochs:
                for opt in (self.opt_g, self.opt_d):
                    for group in opt.param_groups:
                        group["lr"] = c.lr * c.lr_factor(self.epoch)
                epoch_start, epoch_iter0 = time.monotonic(), self.iteration
                while self.iteration < self.epoch_size:
                    if self.cancel is not None and self.cancel.is_set():
                        self.elapsed = time.monotonic() - start
                        self.checkpoint()
                        raise CancelledError(
                            f"training cancelled; continue with `engine train --resume {self.out_dir}`"
                        )
                    losses, fake_b = self.step()
                    self.iteration += 1
                    if c.checkpoint_every_s and time.monotonic() - last_checkpoint > c.checkpoint_every_s:
                        self.elapsed = time.monotonic() - start
                        self.checkpoint()
                        last_checkpoint = time.monotonic()
                    if self.progress is not None:
                        spi = (time.monotonic() - epoch_start) / (self.iteration - epoch_iter0)
                        self._report(losses, spi, fake_b, time.monotonic() - start)
                self.epoch, self.iteration = self.epoch + 1, 0
                self.elapsed = time.monotonic() - start
                self.checkpoint()
            info = {
                "domain_a": str(self.folders[0]),
                "domain_b": str(self.folders[1]),
                "images": [len(d) for d in self.domains],
                "training_seconds": round(time.monotonic() - start, 1),
            }
            store.save_model(self.out_dir, c, self.g, self.d, info)
        shutil.rmtree(self.out_dir / CHECKPOINT_DIR, ignore_errors=True)
        return self.out_dir

    def step(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        c = self.config
        fmt = torch.channels_last
        real_a = self.domains[0].sample(c, self.rng).to(self.device, memory_format=fmt)
        real_b = self.domains[1].sample(c, self.rng).to(self.device, memory_format=fmt)
        g, d = self.g, self.d
        with autocast(self.device, c.precision):
            fake_b, fake_a = g["a2b"](real_a), g["b2a"](real_b)
            rec_a, rec_b = g["b2a"](fake_b), g["a2b"](fake_a)
            for critic in d.values():
                critic.requires_grad_(False)
            score_b, score_a = d["b"](fake_b), d["a"](fake_a)
            gan = F.mse_loss(score_b.float(), torch.ones_like(score_b, dtype=torch.float32)) + F.mse_loss(
                score_a.float(), torch.ones_like(score_a, dtype=torch.float32)
            )
            cycle = (F.l1_loss(rec_a.float(), real_a) + F.l1_loss(rec_b.float(), real_b)) * c.cycle_weight
            loss_g = gan + cycle
            identity = torch.zeros((), device=self.device)
            if c.identity_weight > 0:
                idt_b, idt_a = g["a2b"](real_b), g["b2a"](real_a)
                identity = (F.l1_loss(idt_b.float(), real_b) + F.l1_loss(idt_a.float(), real_a)) * (
                    c.cycle_weight * c.identity_weight
                )
                loss_g = loss_g + identity
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        for critic in d.values():
            critic.requires_grad_(True)
        with autocast(self.device, c.precision):
            loss_d = self._critic_loss(d["b"], real_b, self.pools["b"].query(fake_b, self.pool_rng))
            loss_d = loss_d + self._critic_loss(d["a"], real_a, self.pools["a"].query(fake_a, self.pool_rng))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        losses = {
            "g_gan": gan.detach(),
            "cycle": cycle.detach(),
            "identity": identity.detach(),
            "d": loss_d.detach(),
        }
        if not all(torch.isfinite(v) for v in losses.values()):
            raise BadInputError(
                f"training diverged at epoch {self.epoch + 1} (a loss is NaN or infinite): train again with "
                "another --seed or --precision fp32"
            )
        return losses, fake_b.detach()

    @staticmethod
    def _critic_loss(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real_score, fake_score = critic(real).float(), critic(fake.detach()).float()
        return 0.5 * (
            F.mse_loss(real_score, torch.ones_like(real_score))
            + F.mse_loss(fake_score, torch.zeros_like(fake_score))
        )

    def _report(
        self, losses: dict[str, torch.Tensor], spi: float, fake: torch.Tensor, elapsed: float
    ) -> None:
        assert self.progress is not None
        c = self.config
        left = (self.epoch_size - self.iteration) + (c.total_epochs - self.epoch - 1) * self.epoch_size
        preview = None
        if self.iteration == self.epoch_size:  # at each epoch's end: what A looks like in B now
            preview = ((fake[0].float().permute(1, 2, 0).cpu().numpy() + 1) / 2).clip(0, 1)
            step = max(1, max(preview.shape[:2]) // 128)
            preview = np.ascontiguousarray(preview[::step, ::step])
        self.progress(
            Progress(
                stage=self.epoch,
                n_stages=c.total_epochs,
                iteration=self.iteration,
                iters=self.epoch_size,
                losses={k: float(v) for k, v in losses.items()},
                elapsed_s=elapsed,
                eta_s=left * spi,
                preview=preview,
            )  # fmt: skip
        )


def train(
    config: Config,
    folders: tuple[Path, Path],
    out_dir: Path,
    device: torch.device,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    require_fresh_output(Path(out_dir))
    if len(folders) != 2:
        raise BadInputError("CycleGAN learns from two folders: give --domain-a DIR and --domain-b DIR")
    return Trainer(config, folders, out_dir, device, progress, cancel).run()


def resume(
    out_dir: Path, device: torch.device, progress: ProgressFn | None, cancel: threading.Event | None
) -> Path:
    state = families.read_checkpoint_state(out_dir, device)
    config = Config.from_dict(state["config"])
    folders = (Path(state["folders"][0]), Path(state["folders"][1]))
    trainer = Trainer(config, folders, out_dir, device, progress, cancel)
    trainer.restore(state)
    log.info("resuming CycleGAN training at epoch %d, sample %d", trainer.epoch + 1, trainer.iteration)
    return trainer.run()
