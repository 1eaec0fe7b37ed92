"""The WGAN-GP trainer: resume equals an uninterrupted run, bit for bit on the CPU."""

import numpy as np
import pytest
import torch

from microforge.models.config import TrainConfig
from microforge.models.data import prepare_training_data
from microforge.models.export import load_generator
from microforge.models.generation import generate_array
from microforge.models.quality import quality_rank
from microforge.models.trainer import Trainer, TrainingError, slices_along

from engine_helpers import blobs


def tiny_config(**changes) -> TrainConfig:
    values = {
        "arch": "tiny",
        "iterations": 8,
        "seed": 7,
        "critic_batch": 2,
        "quality_every": 0,
        "progress_every": 2,
    }
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def isotropic():
    return prepare_training_data([blobs((72, 80)) * 255])


def weights(trainer: Trainer) -> list[torch.Tensor]:
    tensors = list(trainer.generator.state_dict().values())
    tensors += list(trainer.average.state_dict().values())
    for critic in trainer.critics:
        tensors += list(critic.state_dict().values())
    return tensors


def test_resume_gives_the_same_weights_as_never_stopping(isotropic, tmp_path):
    straight = Trainer(isotropic, tiny_config(), "cpu")
    straight.run()
    first = Trainer(isotropic, tiny_config(), "cpu")
    assert first.run(until=3) == 3
    checkpoint = first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = Trainer(isotropic, tiny_config(), "cpu")
    resumed.load_checkpoint(checkpoint)
    assert resumed.iteration == 3
    resumed.run()
    assert resumed.iteration == straight.iteration == 8
    for a, b in zip(weights(straight), weights(resumed), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(
        straight.generator_optimizer.state_dict()["state"].values(),
        resumed.generator_optimizer.state_dict()["state"].values(),
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_a_seed_makes_training_reproducible_and_another_seed_differs(isotropic):
    a = Trainer(isotropic, tiny_config(iterations=3), "cpu")
    a.run()
    b = Trainer(isotropic, tiny_config(iterations=3), "cpu")
    b.run()
    c = Trainer(isotropic, tiny_config(iterations=3, seed=8), "cpu")
    c.run()
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a), weights(c)))


def test_progress_reports_losses_timing_eta_and_a_preview(isotropic):
    seen = []
    Trainer(isotropic, tiny_config(iterations=6), "cpu").run(on_progress=seen.append)
    assert [p.iteration for p in seen] == [2, 4, 6]
    last = seen[-1]
    assert np.isfinite([last.critic_loss, last.wasserstein, last.gradient_penalty]).all()
    assert last.generator_loss is not None and last.seconds_per_iteration > 0
    assert seen[0].eta_seconds is not None and seen[0].eta_seconds > 0
    preview = last.preview()
    assert preview.dtype == np.uint8 and preview.shape[0] == 64 and preview.shape[1] > 3 * 64


def test_stop_request_and_deadline_end_the_loop_early(isotropic):
    trainer = Trainer(isotropic, tiny_config(iterations=50), "cpu")
    assert trainer.run(should_stop=lambda: trainer.iteration >= 2) == 2
    assert trainer.run(deadline=0.0) == 2


def test_anisotropic_data_trains_three_critics_and_volumes_too(tmp_path):
    images = [blobs((64, 64), seed=s) * 255 for s in range(3)]
    anisotropic = Trainer(prepare_training_data(images), tiny_config(iterations=2), "cpu")
    assert len(anisotropic.critics) == 3
    anisotropic.run()
    volume = prepare_training_data([(blobs((40, 40, 40)) * 3).astype(np.uint8)])
    trainer = Trainer(volume, tiny_config(iterations=2), "cpu")
    assert len(trainer.critics) == 3
    trainer.run()


def test_grey_data_trains_and_exports(tmp_path):
    grey = np.random.default_rng(0).integers(0, 65535, (64, 64)).astype(np.uint16)
    trainer = Trainer(prepare_training_data([grey]), tiny_config(iterations=2), "cpu")
    trainer.run()
    loaded = load_generator(trainer.export_generator(tmp_path / "g.safetensors"), "cpu")
    volume = generate_array(loaded, (8, 9, 10), seed=0)
    assert volume.dtype == np.uint16 and volume.shape == (8, 9, 10)


def test_exported_generator_is_self_describing(isotropic, tmp_path):
    trainer = Trainer(isotropic, tiny_config(iterations=2), "cpu")
    trainer.run()
    path = trainer.export_generator(tmp_path / "g.safetensors")
    loaded = load_generator(path, "cpu")
    assert loaded.image_type == "nphase" and loaded.phases == [0, 255]
    assert loaded.info.iteration == 2 and loaded.info.arch == "tiny"
    with torch.no_grad():
        noise = torch.randn(1, 8, 4, 4, 4)
        net = trainer.sampling_generator()  # the weights' moving average
        net.eval()
        torch.testing.assert_close(loaded.net(noise), net(noise))


def test_checkpoint_from_other_data_is_refused(isotropic, tmp_path):
    trainer = Trainer(isotropic, tiny_config(iterations=1), "cpu")
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    three_phase = prepare_training_data([(blobs((64, 64)) + blobs((64, 64), seed=3)) * 100])
    other = Trainer(three_phase, tiny_config(iterations=1), "cpu")
    with pytest.raises(TrainingError, match="other phases") as caught:
        other.load_checkpoint(path)
    assert caught.value.code == "checkpoint_mismatch"


def test_slices_along_each_axis_match_the_crop_orientation():
    volume = torch.arange(2 * 1 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 1, 3, 4, 5)
    x = slices_along(volume, 0)
    assert x.shape == (10, 1, 3, 4)
    assert torch.equal(x[1, 0], volume[0, 0, :, :, 1])
    assert torch.equal(slices_along(volume, 1)[2, 0], volume[0, 0, :, 2, :])
    assert torch.equal(slices_along(volume, 2)[4, 0], volume[1, 0, 1, :, :])


def test_fidelity_checks_record_history_keep_the_best_and_can_stop_early(isotropic, tmp_path):
    config = tiny_config(iterations=40, quality_every=2, early_stop_checks=2)
    trainer = Trainer(isotropic, config, "cpu")
    seen = []
    reached = trainer.run(on_progress=seen.append)
    history = trainer.quality_history
    assert history and all(np.isfinite(r["score"]) for r in history)
    assert [r["iteration"] for r in history] == list(range(2, reached + 1, 2))
    best = min(history, key=quality_rank)
    assert trainer.best["iteration"] == best["iteration"]
    after_best = [r for r in history if r["iteration"] > best["iteration"]]
    assert reached == 40 or len(after_best) == 2
    assert any(p.quality is not None for p in seen)
    assert all(0.0 <= r["diversity"] <= 2.0 for r in history)
    assert trainer.export_quality("best")["iteration"] == best["iteration"]
    latest = trainer.export_quality("latest")
    assert latest["iteration"] == history[-1]["iteration"]
    assert latest["collapsed"] == (history[-1]["diversity"] < 0.2)
    assert Trainer(isotropic, tiny_config(), "cpu").export_quality() is None
    loaded = load_generator(trainer.export_generator(tmp_path / "b.safetensors", "best"), "cpu")
    assert loaded.info.iteration == best["iteration"]


def test_a_collapsed_check_never_ranks_above_a_healthy_one():
    healthy = {"score": 0.30, "diversity": 0.9}
    collapsed = {"score": 0.05, "diversity": 0.1}
    unknown = {"score": 0.10}  # no diversity measured: judged by score alone
    ranked = sorted([collapsed, healthy, unknown], key=quality_rank)
    assert ranked == [unknown, healthy, collapsed]
    assert quality_rank({"score": 0.2, "diversity": 0.5}) < quality_rank(healthy)


def test_fidelity_history_and_best_survive_a_checkpoint(isotropic, tmp_path):
    trainer = Trainer(isotropic, tiny_config(iterations=4, quality_every=2), "cpu")
    trainer.run()
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    resumed = Trainer(isotropic, tiny_config(iterations=4, quality_every=2), "cpu")
    resumed.load_checkpoint(path)
    assert resumed.quality_history == trainer.quality_history
    assert resumed.best["iteration"] == trainer.best["iteration"]


def test_generator_file_reports_its_learnable_parameter_count(isotropic, tmp_path):
    from microforge.models.generator_file import inspect_generator_file

    trainer = Trainer(isotropic, tiny_config(iterations=1, transposed_kernels="free"), "cpu")
    info = inspect_generator_file(trainer.export_generator(tmp_path / "g.safetensors"))
    assert info.parameters == sum(p.numel() for p in trainer.generator.parameters())


def test_channels_last_layout_trains_the_same_network_and_exports_plain_weights(
    isotropic, tmp_path
):
    plain = Trainer(isotropic, tiny_config(iterations=1), "cpu")
    fast = Trainer(isotropic, tiny_config(iterations=1, channels_last=True), "cpu")
    weight = fast.generator.transposed[1].weight
    assert weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert fast.critics[0].convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    plain.run()
    fast.run()
    for name in ("critic_loss", "wasserstein", "gp", "generator_loss"):
        expected = plain._last[name].item()
        assert fast._last[name].item() == pytest.approx(expected, rel=1e-3, abs=1e-4), name
    exported = fast.export_generator(tmp_path / "g.safetensors")
    volume = generate_array(load_generator(exported, "cpu"), (16, 16, 16), seed=0, chunk=8)
    assert volume.shape == (16, 16, 16) and set(np.unique(volume)) <= {0, 255}


def test_diversity_tells_one_repeated_pattern_from_independent_samples():
    from microforge.models.quality import diversity

    rng = torch.Generator().manual_seed(0)
    first = torch.rand((2, 16, 16, 16), generator=rng)
    second = torch.rand((2, 16, 16, 16), generator=rng)
    assert diversity(first, second) == pytest.approx(1.0, abs=0.05)
    assert diversity(first, first.clone()) == pytest.approx(0.0, abs=1e-9)
    assert diversity(torch.ones(8), torch.ones(8)) == 0.0


def test_a_generator_that_ignores_its_noise_is_reported_as_collapsed(isotropic):
    from microforge.models.quality import COLLAPSE_DIVERSITY

    trainer = Trainer(isotropic, tiny_config(quality_every=1), "cpu")
    healthy = trainer._maybe_check_quality()
    assert healthy["diversity"] > COLLAPSE_DIVERSITY  # random weights still use the noise
    with torch.no_grad():
        for weight in trainer.sampling_generator().transposed[0].parameters():
            weight.zero_()  # the latent no longer reaches the output
    collapsed = trainer._maybe_check_quality()
    assert collapsed["diversity"] < 1e-6


def test_a_checkpoint_from_another_device_type_resumes_reproducibly(isotropic, tmp_path):
    """A GPU worker's checkpoint continued on a CPU worker (or back): CUDA and CPU random
    generators keep different states, so the run goes on with a stream seeded by
    (seed, iteration) instead of failing."""
    trainer = Trainer(isotropic, tiny_config(iterations=6), "cpu")
    trainer.run(until=3)
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    state["rng"] = {"sampler": torch.zeros(16, dtype=torch.uint8), "device": "cuda"}
    torch.save(state, tmp_path / "from-gpu.pt")
    runs = []
    for _ in range(2):
        moved = Trainer(isotropic, tiny_config(iterations=6), "cpu")
        moved.load_checkpoint(tmp_path / "from-gpu.pt")
        assert moved.iteration == 3
        assert moved.run() == 6
        runs.append(weights(moved))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_the_preview_volume_is_the_first_of_the_quality_pair(isotropic):
    trainer = Trainer(isotropic, tiny_config(), "cpu")
    trainer.run(until=2)  # running batch-norm statistics away from their initial values
    pair = trainer.sample_volumes()
    assert pair.shape[0] == 2 and not torch.equal(pair[0], pair[1])
    torch.testing.assert_close(trainer.sample_volume(), pair[0], rtol=0, atol=1e-6)


def test_slow_iterations_still_report_progress_after_progress_seconds(isotropic):
    """A big network on a CPU takes ~20 s an iteration: the job must not sit at iteration 0."""
    config = tiny_config(iterations=3, progress_every=100, progress_seconds=0)
    quiet = Trainer(isotropic, config, "cpu")
    heard: list[int] = []
    quiet.run(on_progress=lambda p: heard.append(p.iteration))
    assert heard == [3]  # only the end
    chatty = tiny_config(iterations=3, progress_every=100, progress_seconds=1e-9)
    heard.clear()
    Trainer(isotropic, chatty, "cpu").run(on_progress=lambda p: heard.append(p.iteration))
    assert heard == [1, 2, 3]


def test_an_early_stopped_run_extended_to_more_iterations_trains_on(isotropic, tmp_path):
    """Stopped early, then asked for more: fresh patience, not an instant second stop."""
    config = tiny_config(iterations=40, quality_every=2, early_stop_checks=1)
    trainer = Trainer(isotropic, config, "cpu")
    stopped = trainer.run()
    assert stopped < 40, "patience 1 over 20 checks: this seed stops early"
    path = trainer.save_checkpoint(tmp_path / "stopped.pt")

    resumed = Trainer(isotropic, config, "cpu")  # same target: it stops again at once
    resumed.load_checkpoint(path)
    assert resumed.run() == stopped + 1

    extended = Trainer(isotropic, tiny_config(**{**config.model_dump(), "iterations": 60}), "cpu")
    extended.load_checkpoint(path)
    assert extended.early_stop_since == stopped
    reached = extended.run()
    assert reached >= stopped + 2  # at least up to its own next fidelity check
    again = extended.save_checkpoint(tmp_path / "extended.pt")
    reloaded = Trainer(isotropic, tiny_config(**{**config.model_dump(), "iterations": 60}), "cpu")
    reloaded.load_checkpoint(again)
    assert reloaded.early_stop_since == stopped  # kept across segments of the longer run
