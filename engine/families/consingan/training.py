"""Concurrent multi-stage training (ConSinGAN), fine-tuning, checkpoints and resume.

Faithful to the reference's algorithm, minus work it wastes: stages that are not being trained run once
without autograd instead of being back-propagated through, the reconstruction path's frozen stages are
computed once per stage, and the fake image that the reference recomputes for each of the 3 critic steps
(same noise, same generator) is computed once.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine import families
from engine.device import autocast
from engine.errors import (
    BadInputError,
    CancelledError,
    DiskFullError,
    IncompatibleModelError,
    TrainingDivergedError,
)
from engine.families.consingan import augment, store
from engine.families.consingan.config import ModelConfig, TrainConfig, check_iters
from engine.families.consingan.modes import Mode, StageInput, spec
from engine.families.consingan.networks import Discriminator, Generator
from engine.families.consingan.pyramid import Shape, build_pyramid, resize, stage_shapes
from engine.files import atomic_write_bytes
from engine.imageio import Picture, read_image, write_image
from engine.model_dir import CHECKPOINT_DIR
from engine.progress import Progress, ProgressFn

PREVIEW_EVERY_S = 10.0
PREVIEW_SIZE = 128
STEP_ATTEMPTS = 3  # tries of one optimizer step whose gradients came out non-finite


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """H x W x 3 float in [0, 1] -> 1 x 3 x H x W in [-1, 1], the networks' range."""
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(chw)[None].to(device) * 2 - 1


def to_image(tensor: torch.Tensor) -> np.ndarray:
    return ((tensor[0].detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def gradient_penalty(critic: Discriminator, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator):
    # One mixing weight for the whole image and the gradient norm taken over channels per pixel, as the
    # reference computes it.
    a = torch.rand(1, generator=rng).to(real.device)
    mixed = (a * real + (1 - a) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


class Trainer:
    """Holds the networks and state of one training run; `run` trains the remaining stages."""

    def __init__(
        self,
        model: ModelConfig,
        train: TrainConfig,
        image: np.ndarray,
        out_dir: Path,
        device: torch.device,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.model, self.train, self.device = model, train, device
        self.spec = spec(model.mode)
        self.out_dir = out_dir
        self.progress, self.cancel = progress, cancel
        image = np.asarray(image, dtype=np.float32)
        self.shapes: list[Shape] = stage_shapes(image.shape[0], image.shape[1], model)
        self.image = build_pyramid(image, self.shapes[-1:])[0]  # the training image at its final size
        self.reals = [to_tensor(r, device) for r in build_pyramid(self.image, self.shapes)]
        self.coarse_u8 = np.rint(build_pyramid(self.image, self.shapes[:1])[0] * 255).astype(np.uint8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train.seed)  # weight initialisation is part of the run's seed too
            self.generator = Generator(model).to(device)
            self.critic = Discriminator(model).to(device)
        self.fixed_noise: list[torch.Tensor] = []
        self.amps: list[float] = []
        self.stage, self.iteration = 0, 0
        self.opt_states: tuple[dict, dict] | None = None
        self.torch_rng = torch.Generator().manual_seed(train.seed)
        self.np_rng = np.random.default_rng(train.seed)
        self.stage0_override: torch.Tensor | None = None  # fine-tuning: the user's naive image
        self.info: dict = {}  # provenance written into the model (fine-tuning: the parent model)
        self.elapsed = 0.0
        self.recomputed_steps = 0  # steps recomputed after non-finite gradients (see _finite_backward)
        self.last_gp = torch.zeros(())  # the last critic step's gradient penalty, for progress reports
        self._last_preview = -math.inf
        if train.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.critic.to(memory_format=torch.channels_last)

    # ----- random inputs -------------------------------------------------------------------------

    def _randn(self, *shape: int) -> torch.Tensor:
        # Drawn on the CPU from the run's own generator, so runs and resumes are reproducible on any device.
        return torch.randn(1, *shape, generator=self.torch_rng).to(self.device)

    def _stage0_input(self) -> torch.Tensor:
        h, w = self.shapes[0]
        noise_std = self.spec.injected_noise
        if self.stage0_override is not None:
            base = self.stage0_override
        elif self.spec.stage_input is StageInput.NOISE:
            return self._randn(self.model.channels, h, w)
        elif self.spec.stage_input is StageInput.AUGMENTED:
            base = to_tensor(
                augment.augment_for_harmonization(
                    self.coarse_u8,
                    self.np_rng,
                    self.train.smooth_probability,
                    self.train.recolour_probability,
                )
                / 255.0,
                self.device,
            )
        else:
            base = to_tensor(augment.shuffle_tiles(self.coarse_u8, self.np_rng) / 255.0, self.device)
        return base + noise_std * self._randn(self.model.channels, h, w) if noise_std else base

    def _random_inputs(self, depth: int) -> list[torch.Tensor]:
        inputs = [self._stage0_input()]
        for k in range(1, depth + 1):
            inputs.append(self._randn(*self.generator.noise_shape(k, *self.shapes[k])))
        fmt = torch.channels_last if self.train.channels_last else torch.contiguous_format
        return [x.float().contiguous(memory_format=fmt) for x in inputs]

    def _new_fixed_noise(self, depth: int) -> torch.Tensor:
        if depth > 0:
            return self._randn(*self.generator.noise_shape(depth, *self.shapes[depth]))
        if self.model.mode is Mode.EDITING:
            return self.reals[0] + self.spec.injected_noise * self._randn(
                self.model.channels, *self.shapes[0]
            )
        if self.model.mode is Mode.ANIMATION:  # reconstructs from fixed noise: walks in noise move the scene
            return self._randn(self.model.channels, *self.shapes[0])
        # Generation, retargeting and harmonization reconstruct the image from the coarsest real image.
        return self.reals[0].clone()

    # ----- one stage -----------------------------------------------------------------------------

    def _optimizers(self, depth: int) -> tuple[torch.optim.Adam, torch.optim.Adam]:
        t, g = self.train, self.generator
        trained = list(g.body[-t.train_depth :])
        g.requires_grad_(False)
        groups = []
        for idx, block in enumerate(trained):
            block.requires_grad_(True)
            groups.append(
                {"params": block.parameters(), "lr": t.lr_g * t.lr_scale ** (len(trained) - 1 - idx)}
            )
        if depth < t.train_depth:
            g.head.requires_grad_(True)
            groups.append({"params": g.head.parameters(), "lr": t.lr_g * t.lr_scale**depth})
        g.tail.requires_grad_(True)
        groups.append({"params": g.tail.parameters(), "lr": t.lr_g})
        for group in groups:
            group["initial_lr"] = group["lr"]
        # The fused kernel: on the CPU PyTorch's default Adam loops over the parameters with 6 elementwise
        # ops each, which cost more than the fused step by 1-2 orders of magnitude (docs/benchmarks.md).
        opt_g = torch.optim.Adam(groups, lr=t.lr_g, betas=(t.beta1, 0.999), fused=True)
        opt_d = torch.optim.Adam(self.critic.parameters(), lr=t.lr_d, betas=(t.beta1, 0.999), fused=True)
        for group in opt_d.param_groups:
            group["initial_lr"] = group["lr"]
        if self.opt_states is not None:
            opt_g.load_state_dict(self.opt_states[0])
            opt_d.load_state_dict(self.opt_states[1])
            self.opt_states = None
        return opt_g, opt_d

    def _set_lr(self, optimizers, depth: int, iteration: int) -> None:
        iters = self.train.stage_iters(depth)
        factor = self.train.lr_decay if iteration >= int(self.train.decay_at * iters) else 1.0
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _prepare_stage(self, depth: int) -> None:
        if len(self.fixed_noise) > depth:
            return  # resumed inside this stage, or fine-tuning: noise and amplitudes already known
        if depth > 0:
            self.generator.grow()
            if self.train.channels_last:
                self.generator.to(memory_format=torch.channels_last)
        fmt = torch.channels_last if self.train.channels_last else torch.contiguous_format
        self.fixed_noise.append(self._new_fixed_noise(depth).contiguous(memory_format=fmt))
        if depth == 0:
            self.amps.append(1.0)
            return
        # Noise amplitude of a new stage: proportional to how far the stages below are from the image.
        self.amps.append(0.0)
        with torch.no_grad():
            rec = self.generator(self.fixed_noise, self.amps)
        self.amps[-1] = self.train.noise_amp * math.sqrt(F.mse_loss(rec.float(), self.reals[depth]).item())
        self._check_finite(depth)

    def _check_finite(self, depth: int) -> None:
        """Refuse to go on (or save) once training has diverged: a NaN model would only sample NaNs."""
        finite = all(math.isfinite(a) for a in self.amps) and all(
            torch.isfinite(p).all() for p in self.generator.parameters()
        )
        if not finite:
            raise TrainingDivergedError(
                f"training diverged by stage {depth + 1} (non-finite weights or noise amplitude); no model "
                "was written: train again with --precision fp32 or another --seed"
            )

    def _finite_backward(self, net: torch.nn.Module, losses: Callable[[int], tuple], what: str) -> tuple:
        """Back-propagate the sum of `losses()` into `net`, recomputing the step if a gradient is not finite.

        oneDNN 3.12's AMX bf16 convolution backward (the CPU path of bf16 autocast) intermittently writes NaN
        into weight gradients when it runs on several threads: 0.25-1% of calls at some map sizes
        (bench/experiments/check_bf16_conv.py; docs/benchmarks.md). One such step used to turn the whole
        model into NaN. A recomputed step is correct; a step that stays non-finite is real divergence and
        stops training.
        """
        params = [p for p in net.parameters() if p.requires_grad]
        for attempt in range(STEP_ATTEMPTS):
            net.zero_grad(set_to_none=True)
            values = losses(attempt)
            sum(values).backward()
            grads = [p.grad for p in params if p.grad is not None]
            # One fused pass over all gradients: a norm is finite only if every element is.
            if torch.stack(torch._foreach_norm(grads)).isfinite().all():
                return values
            self.recomputed_steps += 1
        raise TrainingDivergedError(
            f"training diverged at stage {self.stage + 1}, iteration {self.iteration + 1}: the {what}'s "
            f"gradients stayed non-finite over {STEP_ATTEMPTS} attempts; no model was written: train again "
            "with --precision fp32 or another --seed"
        )

    def _train_stage(self, depth: int) -> None:
        t, g = self.train, self.generator
        opt_g, opt_d = self._optimizers(depth)
        first = max(0, depth + 1 - t.train_depth)  # lowest stage being trained
        amp_ctx = autocast(self.device, t.precision)
        with torch.no_grad(), amp_ctx:
            rec_frozen = g.run_stages(None, self.fixed_noise, self.amps, 0, first - 1) if first else None
        last_checkpoint = time.monotonic()
        stage_start, stage_iter0 = time.monotonic(), self.iteration
        iters = t.stage_iters(depth)
        while self.iteration < iters:
            if self.cancel is not None and self.cancel.is_set():
                self.checkpoint(opt_g, opt_d)
                what, command = ("fine-tuning", "finetune") if self.finetuning else ("training", "train")
                raise CancelledError(
                    f"{what} cancelled; continue with `engine {command} --resume {self.out_dir}`"
                )
            self._set_lr((opt_g, opt_d), depth, self.iteration)
            losses, fake = self._iteration(depth, first, rec_frozen, opt_g, opt_d, amp_ctx)
            self.iteration += 1
            if self.progress is not None:
                spi = (time.monotonic() - stage_start) / (self.iteration - stage_iter0)
                losses = {name: value.item() for name, value in losses.items()}
                self._report(depth, losses, spi, stage_start, fake)
            if time.monotonic() - last_checkpoint > t.checkpoint_every_s and self.iteration < iters:
                self.checkpoint(opt_g, opt_d)
                last_checkpoint = time.monotonic()
        self.elapsed += time.monotonic() - stage_start

    def _iteration(
        self, depth: int, first: int, rec_frozen, opt_g, opt_d, amp_ctx
    ) -> tuple[dict, torch.Tensor]:
        """One training iteration: d_steps critic steps, then g_steps generator steps on one gradient."""
        t, g, d = self.train, self.generator, self.critic
        real = self.reals[depth]
        inputs = self._random_inputs(depth)
        with amp_ctx, torch.no_grad():
            frozen = g.run_stages(None, inputs, self.amps, 0, first - 1) if first else None

        def make_fake() -> torch.Tensor:
            with amp_ctx:
                return g.to_image(g.run_stages(frozen, inputs, self.amps, first, depth)).float()

        fake = make_fake()
        # Critic: the reference regenerates `fake` for each step from the same noise and weights.
        d.requires_grad_(True)

        def critic_losses(with_gp: bool, attempt: int) -> tuple[torch.Tensor, ...]:
            with amp_ctx:
                scores = d(torch.cat([real, fake.detach()])).float()
                if not with_gp:
                    return -scores[0].mean(), scores[1].mean()
                gp = gradient_penalty(d, real, fake.detach(), self.torch_rng)
            return -scores[0].mean(), scores[1].mean(), gp * (t.lambda_grad * t.gp_every)

        for step in range(t.d_steps):
            with_gp = (self.iteration * t.d_steps + step) % t.gp_every == 0
            step_losses = functools.partial(critic_losses, with_gp)
            loss_real, loss_fake, *penalty = self._finite_backward(d, step_losses, "critic")
            if penalty:  # reported unweighted by gp_every; an iteration without one reports the last
                self.last_gp = penalty[0].detach() / t.gp_every
            opt_d.step()
        # Generator: adversarial plus reconstruction loss; the critic's weights need no gradients here.
        d.requires_grad_(False)

        def generator_losses(attempt: int) -> tuple[torch.Tensor, ...]:
            # A recomputed step makes the fake again: the first one's graph was freed by its backward.
            fake_g = fake if attempt == 0 else make_fake()
            with amp_ctx:
                loss_adv = -d(fake_g).float().mean()
                rec = g.to_image(g.run_stages(rec_frozen, self.fixed_noise, self.amps, first, depth))
            if t.channels_last:
                # The loss's backward hands back a contiguous gradient; the generator's backward ops run
                # about 10x slower on a mix of layouts (bench/bench_training.py, docs/benchmarks.md).
                rec.register_hook(lambda grad: grad.contiguous(memory_format=torch.channels_last))
            return loss_adv, t.alpha * F.mse_loss(rec.float(), real)

        loss_adv, loss_rec = self._finite_backward(g, generator_losses, "generator")
        for _ in range(t.g_steps):  # the reference steps Adam g_steps times on the same gradients
            opt_g.step()
        losses = {
            "d_real": -loss_real,
            "d_fake": loss_fake,
            "gp": self.last_gp,
            "g_adv": loss_adv,
            "rec": loss_rec,
        }
        return losses, fake.detach()

    def _preview(self, depth: int, fake: torch.Tensor) -> np.ndarray | None:
        now = time.monotonic()
        if now - self._last_preview < PREVIEW_EVERY_S and self.iteration < self.train.stage_iters(depth):
            return None
        self._last_preview = now
        image = to_image(fake)
        h, w = image.shape[:2]
        scale = min(1.0, PREVIEW_SIZE / max(h, w))
        return resize(image, (max(1, round(h * scale)), max(1, round(w * scale)))).clip(0, 1)

    def _report(
        self, depth: int, losses: dict[str, float], spi: float, stage_start: float, fake: torch.Tensor
    ) -> None:
        # Later stages cost roughly in proportion to the pixels of the stages being trained.
        def cost(k: int) -> float:
            return sum(h * w for h, w in self.shapes[max(0, k + 1 - self.train.train_depth) : k + 1])

        iters = self.train.stage_iters
        remaining = (iters(depth) - self.iteration) * spi
        remaining += sum(iters(k) * spi * cost(k) / cost(depth) for k in range(depth + 1, len(self.shapes)))
        elapsed = self.elapsed + time.monotonic() - stage_start
        assert self.progress is not None  # reported only when someone listens
        self.progress(
            Progress(
                depth,
                len(self.shapes),
                self.iteration,
                iters(depth),
                losses,
                elapsed,
                remaining,
                self._preview(depth, fake),
            )
        )

    # ----- checkpoints ---------------------------------------------------------------------------

    @property
    def finetuning(self) -> bool:
        return self.stage0_override is not None

    def start(self) -> None:
        """Write the training image and a first checkpoint, so that --resume needs nothing else. When
        that fails (a full disk), nothing of the run is left."""
        created = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_image(self.out_dir / store.CHECKPOINT_DIR / "image.png", Picture(self.image, None, 16))
            self.checkpoint()
        except BaseException as exc:
            shutil.rmtree(self.out_dir if created else self.out_dir / CHECKPOINT_DIR, ignore_errors=True)
            if isinstance(exc, DiskFullError):
                raise exc.then(f"{'fine-tune' if self.finetuning else 'train'} again") from exc
            raise

    def checkpoint(self, opt_g=None, opt_d=None) -> None:
        """Everything needed to continue exactly where training stands (tensors and plain data only)."""
        state = {
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "stage": self.stage,
            "iteration": self.iteration,
            "n_built": self.generator.n_stages,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "fixed_noise": [z.cpu() for z in self.fixed_noise],
            "amps": list(self.amps),
            "optimizers": (opt_g.state_dict(), opt_d.state_dict()) if opt_g is not None else None,
            "torch_rng": self.torch_rng.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
            "elapsed": self.elapsed,
            "recomputed_steps": self.recomputed_steps,
            "last_gp": self.last_gp.cpu(),  # reported by iterations without a penalty (gp_every > d_steps)
            "info": self.info,
            "stage0_override": None if self.stage0_override is None else self.stage0_override.cpu(),
        }
        # Serialised in memory first: written through atomic_write_bytes, a full disk leaves the last
        # checkpoint whole and is one clear error (torch.save to a file fails with its own messages).
        data = io.BytesIO()
        torch.save(state, data)
        atomic_write_bytes(self.out_dir / store.CHECKPOINT_DIR / "state.pt", data.getbuffer())

    def restore(self, state: dict) -> None:
        for _ in range(state["n_built"] - 1):
            self.generator.grow()
        self.generator.to(self.device)
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        if self.train.channels_last:
            self.generator.to(memory_format=torch.channels_last)
        fmt = torch.channels_last if self.train.channels_last else torch.contiguous_format
        self.fixed_noise = [z.to(self.device).contiguous(memory_format=fmt) for z in state["fixed_noise"]]
        self.amps = list(state["amps"])
        self.stage, self.iteration = state["stage"], state["iteration"]
        self.opt_states = state["optimizers"]
        self.torch_rng.set_state(state["torch_rng"])
        self.np_rng.bit_generator.state = state["np_rng"]
        self.elapsed = state["elapsed"]
        self.recomputed_steps = state.get("recomputed_steps", 0)
        self.last_gp = state.get("last_gp", torch.zeros(()))  # absent before gp_every
        self.info = dict(state.get("info") or {})
        override = state.get("stage0_override")  # absent in checkpoints of older versions: training
        self.stage0_override = None if override is None else override.to(self.device)

    # ----- the whole run -------------------------------------------------------------------------

    def run(self) -> Path:
        n = len(self.shapes)
        try:
            while self.stage < n:
                self._prepare_stage(self.stage)
                self._train_stage(self.stage)
                self.stage, self.iteration = self.stage + 1, 0
                # After the last stage too: a model that cannot be written (a full disk) is then
                # finished by --resume without training again.
                self.checkpoint()
            return self._save()
        except KeyboardInterrupt:
            # A hard interrupt can land inside an iteration; the CLI and the daemon therefore stop training
            # through the cancel event, at an iteration boundary, and this is only the fallback.
            self.checkpoint()
            raise
        except DiskFullError as exc:
            command = "finetune" if self.finetuning else "train"
            raise exc.then(f"continue with `engine {command} --resume {self.out_dir}`") from exc

    def _save(self) -> Path:
        self._check_finite(len(self.amps) - 1)
        self.generator.eval().requires_grad_(False)
        trained = store.TrainedModel(
            path=self.out_dir,
            model=self.model,
            train=self.train,
            generator=self.generator.to(memory_format=torch.contiguous_format),
            fixed_noise=self.fixed_noise,
            noise_amps=self.amps,
            shapes=self.shapes,
            info={
                **self.info,
                "training_seconds": round(self.elapsed, 1),
                "device": self.device.type,
                "recomputed_steps": self.recomputed_steps,
            },
        )
        with torch.no_grad():
            if self.spec.conditional:
                preview = self.generator(self.fixed_noise, self.amps)
            else:
                preview = self.generator(self._random_inputs(len(self.shapes) - 1), self.amps)
        return store.save_model(self.out_dir, trained, self.critic, self.image, to_image(preview))


def train(
    image: np.ndarray,
    model: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: Path,
    device: torch.device,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Train a new model on an H x W x 3 float image and write it to out_dir."""
    store.require_fresh_output(out_dir)
    trainer = Trainer(model, train_cfg, image, out_dir, device, progress, cancel)
    trainer.start()
    return trainer.run()


def resume(
    out_dir: Path,
    device: torch.device,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Continue an interrupted `train` or `finetune` from its last checkpoint (the checkpoint says which)."""
    families.check_resume(out_dir)  # a finished model, no checkpoint (ConSinGAN's run writes no family mark)
    state_path = out_dir / store.CHECKPOINT_DIR / "state.pt"
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model, train_cfg = ModelConfig.from_dict(state["model"]), TrainConfig.from_dict(state["train"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise BadInputError(
            f"the checkpoint in {out_dir} is damaged ({reason}): start a new run with `engine train`"
        ) from e
    image = read_image(out_dir / store.CHECKPOINT_DIR / "image.png").rgb
    trainer = Trainer(model, train_cfg, image, out_dir, device, progress, cancel)
    trainer.restore(state)
    return trainer.run()


def finetune(
    model_dir: Path,
    naive: np.ndarray,
    out_dir: Path,
    device: torch.device,
    iters: int = 500,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Fine-tune a harmonization/editing model on the user's naive composite into a new model directory.

    As in the reference, every stage keeps training (the top train_depth stages concurrently) with the
    naive image as the coarsest stage's input and the background as the target; the original is untouched.
    """
    check_iters(iters)
    base = store.load_model(model_dir, device)
    if not spec(base.model.mode).conditional:
        raise IncompatibleModelError(
            f"{model_dir} is a model for {base.model.mode.value}; "
            "only harmonization and editing models can be fine-tuned on a naive image"
        )
    store.require_fresh_output(out_dir)
    train_cfg = TrainConfig.from_dict({**base.train.to_dict(), "iters": iters, "coarse_iters": None})
    background = store.load_training_image(model_dir)
    trainer = Trainer(base.model, train_cfg, background, out_dir, device, progress, cancel)
    trainer.generator = base.generator.train()
    trainer.critic = store.load_discriminator(model_dir, base.model, device)
    fmt = torch.contiguous_format
    if train_cfg.channels_last:
        fmt = torch.channels_last
        trainer.generator.to(memory_format=fmt)
        trainer.critic.to(memory_format=fmt)
    # In the memory format that `restore` gives them, so that a resumed run computes the same.
    trainer.fixed_noise = [z.contiguous(memory_format=fmt) for z in base.fixed_noise]
    trainer.amps = list(base.noise_amps)
    trainer.stage0_override = to_tensor(resize(naive, base.shapes[0]).clip(0, 1), device)
    # Only the last stage trains (its top train_depth blocks concurrently); the checkpoint holds the naive
    # image and the parent, so a resumed run needs neither the parent model nor the naive file.
    trainer.stage = len(base.shapes) - 1
    trainer.info = {"parent": str(Path(model_dir).resolve()), "finetuned_iters": iters}
    trainer.start()
    return trainer.run()
