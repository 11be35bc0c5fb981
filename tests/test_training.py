"""Training on the shared images: every mode end to end, resume after interruption, fine-tuning."""

import dataclasses
import threading

import numpy as np
import pytest
import torch

from bench.quality import swd
from engine.errors import BadInputError, CancelledError, IncompatibleModelError
from engine.families.consingan import apply, store, training
from engine.families.consingan.config import preset
from engine.imageio import read_image
from tests.conftest import TRAIN_IMAGES

CPU = torch.device("cpu")


def assert_same_model(straight, resumed) -> store.TrainedModel:
    """A resumed run's model equals the uninterrupted run's, and its checkpoint is gone."""
    a, b = store.load_model(straight), store.load_model(resumed)
    for (name, x), (_, y) in zip(
        a.generator.state_dict().items(), b.generator.state_dict().items(), strict=True
    ):
        # Equal up to float rounding (oneDNN may sum in another order after reloading tensors).
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0, msg=name)
    assert a.noise_amps == b.noise_amps
    assert not (resumed / store.CHECKPOINT_DIR).exists()
    return b


@pytest.mark.parametrize("mode", ["generation", "retarget", "harmonization", "editing"])
def test_tiny_run_per_mode_makes_images_like_the_training_image(mode, tiny_models):
    model = store.load_model(tiny_models[mode])
    image = store.load_training_image(tiny_models[mode])
    assert image.shape[:2] == model.shapes[-1] and max(image.shape[:2]) == 48
    samples = apply.sample(model, n=3, seed=1)
    assert all(s.shape == image.shape for s in samples)
    assert all(s.std() > 0.02 for s in samples), "samples are constant"
    noise = [np.random.default_rng(i).random(image.shape, dtype=np.float32) for i in range(3)]
    assert swd([image], samples) < swd([image], noise)
    preview = read_image(tiny_models[mode] / "preview.png").rgb
    assert preview.shape == image.shape


def test_model_directory_is_plain_data(tiny_models):
    meta = store.read_meta(tiny_models["harmonization"])
    assert meta["model"]["mode"] == "harmonization" and meta["model"]["norm"] is True
    assert len(meta["noise_amps"]) == len(meta["stage_shapes"]) == 2
    assert meta["noise_amps"][0] == 1.0 and 0 < meta["noise_amps"][1] < 1
    # sampler.onnx appears once the model has been used through onnxruntime.
    files = {p.name for p in tiny_models["harmonization"].iterdir()} - {"sampler.onnx"}
    assert files == {
        "model.json",
        "generator.safetensors",
        "noise.safetensors",
        "discriminator.safetensors",
        "training_image.png",
        "preview.png",
    }


def test_reload_gives_the_same_samples_for_the_same_seed(tiny_models):
    a = apply.sample(store.load_model(tiny_models["generation"]), n=2, seed=7)
    b = apply.sample(store.load_model(tiny_models["generation"]), n=2, seed=7)
    c = apply.sample(store.load_model(tiny_models["generation"]), n=2, seed=8)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))


def _tiny(mode, **train_overrides):
    model, train = preset("tiny", mode)
    return model, dataclasses.replace(train, **train_overrides)


def test_resume_after_cancel_matches_an_uninterrupted_run(tmp_path, shared_images):
    image = read_image(TRAIN_IMAGES["generation"]).rgb
    model, train = _tiny("generation", iters=6, checkpoint_every_s=0.0)
    straight = training.train(image, model, train, tmp_path / "straight", CPU)

    cancel = threading.Event()

    def stop_in_stage_two(p: training.Progress) -> None:
        if p.stage == 1 and p.iteration == 3:
            cancel.set()

    with pytest.raises(CancelledError, match="--resume"):
        training.train(image, model, train, tmp_path / "resumed", CPU, stop_in_stage_two, cancel)
    with pytest.raises(Exception, match="did not finish"):
        store.load_model(tmp_path / "resumed")
    resumed = training.resume(tmp_path / "resumed", CPU)
    assert_same_model(straight, resumed)


def test_train_refuses_to_overwrite_a_model(tiny_models):
    model, train = _tiny("generation")
    with pytest.raises(IncompatibleModelError, match="already exists"):
        training.train(np.zeros((40, 40, 3), np.float32), model, train, tiny_models["generation"], CPU)


def test_finetune_makes_a_new_model_and_leaves_the_original(tiny_models, tmp_path, shared_images):
    original = tiny_models["harmonization"]
    before = (original / "generator.safetensors").read_bytes()
    naive = read_image(shared_images / "harmonization" / "scream_naive.jpg").rgb
    out = training.finetune(original, naive, tmp_path / "tuned", CPU, iters=4)
    assert (original / "generator.safetensors").read_bytes() == before
    tuned, base = store.load_model(out), store.load_model(original)
    assert tuned.info["parent"] == str(original.resolve()) and tuned.shapes == base.shapes
    changed = [
        not torch.equal(x, y)
        for x, y in zip(tuned.generator.parameters(), base.generator.parameters(), strict=True)
    ]
    assert any(changed)


def test_finetune_resumed_after_cancel_matches_an_uninterrupted_run(tiny_models, tmp_path, shared_images):
    original = tiny_models["harmonization"]
    naive = read_image(shared_images / "harmonization" / "scream_naive.jpg").rgb
    straight = training.finetune(original, naive, tmp_path / "straight", CPU, iters=6)

    cancel = threading.Event()

    def stop_halfway(p: training.Progress) -> None:
        if p.iteration == 3:
            cancel.set()

    with pytest.raises(CancelledError, match="engine finetune --resume"):
        training.finetune(original, naive, tmp_path / "resumed", CPU, 6, stop_halfway, cancel)
    with pytest.raises(Exception, match="did not finish"):
        store.load_model(tmp_path / "resumed")
    # The checkpoint holds the naive image and the parent: resuming needs neither.
    resumed = training.resume(tmp_path / "resumed", CPU)
    b = assert_same_model(straight, resumed)
    assert b.info["parent"] == str(original.resolve()) and b.info["finetuned_iters"] == 6


def test_finetune_refuses_generation_models(tiny_models, tmp_path):
    with pytest.raises(IncompatibleModelError, match="only harmonization and editing"):
        training.finetune(
            tiny_models["generation"], np.zeros((48, 48, 3), np.float32), tmp_path / "x", CPU, 2
        )


def test_bf16_training_runs_and_learns(tmp_path):
    image = read_image(TRAIN_IMAGES["harmonization"]).rgb
    model, train = _tiny("harmonization", precision=preset("tiny", "harmonization")[1].precision.BF16)
    out = training.train(image, model, train, tmp_path / "bf16", CPU)
    assert store.load_model(out).noise_amps[1] > 0


def test_diverged_training_writes_no_model_and_says_what_to_do(tmp_path, monkeypatch):
    from engine.errors import TrainingDivergedError

    real_train_stage = training.Trainer._train_stage

    def diverging(self, depth):  # what a blown-up step leaves behind: NaN weights
        real_train_stage(self, depth)
        with torch.no_grad():
            next(self.generator.parameters()).fill_(float("nan"))

    monkeypatch.setattr(training.Trainer, "_train_stage", diverging)
    model, train = preset("tiny", "generation")
    image = read_image(TRAIN_IMAGES["generation"]).rgb
    with pytest.raises(TrainingDivergedError, match="--precision fp32"):
        training.train(image, model, train, tmp_path / "m", CPU)
    assert not (tmp_path / "m" / "model.json").exists()


def _faulty_run(tmp_path, name, net, fail_calls):
    """Train the tiny generation model with NaN injected into one weight gradient on the given calls, as
    oneDNN's AMX bf16 convolution backward does now and then (bench/experiments/check_bf16_conv.py)."""
    model, train = _tiny("generation", iters=6)
    image = read_image(TRAIN_IMAGES["generation"]).rgb
    trainer = training.Trainer(model, train, image, tmp_path / name, CPU)
    calls = []

    def fault(grad):
        calls.append(1)
        return grad * float("nan") if len(calls) in fail_calls else grad

    weight = trainer.generator.tail[0].weight if net == "generator" else trainer.critic.tail.weight
    weight.register_hook(fault)
    trainer.start()
    return trainer.run()


def test_a_step_with_non_finite_gradients_is_recomputed_and_changes_nothing(tmp_path):
    model, train = _tiny("generation", iters=6)
    image = read_image(TRAIN_IMAGES["generation"]).rgb
    clean = training.train(image, model, train, tmp_path / "clean", CPU)
    faulty = _faulty_run(tmp_path, "faulty", "generator", fail_calls={4})
    assert_same_model(clean, faulty)
    assert store.read_meta(faulty)["info"]["recomputed_steps"] == 1
    assert store.read_meta(clean)["info"]["recomputed_steps"] == 0


def test_gradients_that_stay_non_finite_stop_training_without_a_model(tmp_path):
    from engine.errors import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="critic's gradients stayed non-finite.*--precision fp32"):
        _faulty_run(tmp_path, "m", "critic", fail_calls=set(range(5, 100)))
    assert not (tmp_path / "m" / "model.json").exists()


def test_the_coarsest_stage_can_train_longer(tmp_path):
    from engine.families.consingan.config import with_overrides

    model, train = _tiny("generation", iters=3, coarse_iters=5)
    seen: dict[int, set] = {}
    image = read_image(TRAIN_IMAGES["generation"]).rgb
    training.train(
        image,
        model,
        train,
        tmp_path / "m",
        CPU,
        lambda p: seen.setdefault(p.stage, set()).add((p.iteration, p.iters)),
    )
    assert max(seen[0]) == (5, 5) and max(seen[1]) == (3, 3) and max(seen[2]) == (3, 3)
    # `fast` generation keeps the paper's iterations at the coarsest stage; --iters sets every stage.
    fast = preset("fast", "generation")[1]
    assert (fast.stage_iters(0), fast.stage_iters(1)) == (2000, 500)
    assert preset("fast", "harmonization")[1].coarse_iters is None
    _, overridden = with_overrides(*preset("fast", "generation"), iters=40)
    assert (overridden.stage_iters(0), overridden.stage_iters(3)) == (40, 40)


def test_fast_harmonization_takes_two_critic_steps_and_the_rest_keep_the_references_three():
    # docs/benchmarks.md, "Training speed": measured for harmonization only
    assert preset("fast", "harmonization")[1].d_steps == 2
    assert preset("paper", "harmonization")[1].d_steps == 3
    for mode in ("generation", "retarget", "editing", "animation"):
        assert preset("fast", mode)[1].d_steps == 3 == preset("paper", mode)[1].d_steps


def test_a_lazy_gradient_penalty_runs_on_every_kth_critic_step_weighted_k(tmp_path, monkeypatch):
    penalties, critic_losses = [], []
    real_penalty, real_backward = training.gradient_penalty, training.Trainer._finite_backward

    def counted(*args):
        penalties.append(real_penalty(*args))
        return penalties[-1]

    def recorded(self, net, losses, what):
        values = real_backward(self, net, losses, what)
        if what == "critic":
            critic_losses.append(values)
        return values

    monkeypatch.setattr(training, "gradient_penalty", counted)
    monkeypatch.setattr(training.Trainer, "_finite_backward", recorded)
    model, train = _tiny("harmonization", iters=5, d_steps=3, gp_every=2)
    image = read_image(TRAIN_IMAGES["harmonization"]).rgb
    seen = []
    training.train(image, model, train, tmp_path / "m", CPU, lambda p: seen.append(p.losses["gp"]))
    # 15 critic steps a stage; the penalty on steps 0, 2, ..., 14 of each stage, weighted 2
    assert len(critic_losses) == 15 * model.n_stages
    with_penalty = [i % 15 for i, values in enumerate(critic_losses) if len(values) == 3]
    assert with_penalty == list(range(0, 15, 2)) * model.n_stages
    step2 = critic_losses[2][2].item()
    assert step2 == pytest.approx(penalties[1].item() * train.lambda_grad * 2, rel=1e-6)
    # progress reports the unweighted penalty (lambda_grad x penalty), as with a penalty every step:
    # after iteration 0, that of its step 2
    assert seen[0] == pytest.approx(penalties[1].item() * train.lambda_grad, rel=1e-6)
    # a resumed run reports the penalty of the step before the checkpoint until its next one
    trainer = training.Trainer(model, train, image, tmp_path / "c", CPU)
    trainer.last_gp = torch.tensor(3.5)
    trainer.checkpoint()
    again = training.Trainer(model, train, image, tmp_path / "c", CPU)
    state = torch.load(tmp_path / "c" / store.CHECKPOINT_DIR / "state.pt", weights_only=True)
    again.restore(state)
    assert again.last_gp.item() == 3.5
    del state["last_gp"]  # a checkpoint written before it was kept
    again.restore(state)
    assert again.last_gp.item() == 0.0
    with pytest.raises(ValueError, match="gp_every is 0, outside 1-100"):
        dataclasses.replace(train, gp_every=0)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda state: state["model"].update(num_layers=10**6), "num_layers is 1000000, outside 1-16"),
        (lambda state: state.pop("train"), "'train'"),
    ],
)
def test_a_damaged_checkpoint_is_refused_in_one_line(tmp_path, damage, message):
    image = read_image(TRAIN_IMAGES["generation"]).rgb
    model, train = _tiny("generation", iters=6)
    cancel = threading.Event()
    cancel.set()  # stop at once: only the first checkpoint is written
    with pytest.raises(CancelledError):
        training.train(image, model, train, tmp_path / "m", CPU, cancel=cancel)
    path = tmp_path / "m" / "checkpoint" / "state.pt"
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)
    with pytest.raises(BadInputError, match=f"checkpoint in .* is damaged .*{message}.*start a new run"):
        training.resume(tmp_path / "m", CPU)
