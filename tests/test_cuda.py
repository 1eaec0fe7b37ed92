"""The CUDA code paths: skipped without a GPU, run on the lent one by benchmarks/device/.

CI has no GPU, so these guard what the CPU tests cannot reach: cuDNN's kernels in chunked
generation (chunked must still equal one-shot), the pinned host copies, TF32/bf16 training,
checkpoints and generator files moving between a GPU and the CPU, and taufactor on the GPU.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from microforge.models.config import TrainConfig
from microforge.models.data import prepare_training_data
from microforge.models.export import load_generator
from microforge.models.generation import generate_array, generate_probabilities, generate_volume
from microforge.models.trainer import Trainer

from engine_helpers import assert_chunked_equals_one_shot, blobs, random_generator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHAPE = (37, 45, 29)


def on_cuda(loaded):
    return replace(loaded, net=loaded.net.to("cuda"), device=torch.device("cuda"))


@pytest.mark.parametrize("arch", ["tiny", "paper", "reference"])
@pytest.mark.parametrize("chunk", [8, 13, 32])
def test_chunked_equals_one_shot_on_cuda(arch, chunk):
    assert_chunked_equals_one_shot(on_cuda(random_generator(arch)), SHAPE, chunk, seed=11)


@pytest.mark.parametrize("arch", ["tiny", "reference"])
def test_cuda_and_cpu_make_the_same_volume_up_to_rounding(arch):
    cpu = random_generator(arch)
    gpu = on_cuda(random_generator(arch))
    expected = generate_probabilities(cpu, SHAPE, seed=3, chunk=16)
    actual = generate_probabilities(gpu, SHAPE, seed=3, chunk=16)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
    labels_cpu = generate_array(cpu, SHAPE, seed=3, chunk=16)
    labels_gpu = generate_array(gpu, SHAPE, seed=3, chunk=16)
    # Labels may flip only where two phases are within rounding of a tie.
    assert np.mean(labels_cpu != labels_gpu) < 1e-3


def test_pinned_copies_deliver_every_slab_in_order():
    loaded = on_cuda(random_generator("tiny", phases=[0, 85, 170]))
    slabs: list[np.ndarray] = []
    result = generate_volume(
        loaded, (40, 33, 35), seed=4, chunk=(7, 16, 16), write_slab=slabs.append
    )
    volume = np.concatenate(slabs, axis=0)
    assert result.chunks == 6 * 3 * 3 and volume.shape == (40, 33, 35)
    assert np.array_equal(volume, generate_array(loaded, (40, 33, 35), seed=4, chunk=0))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_generation_stays_close(precision):
    loaded = on_cuda(random_generator("reference"))
    exact = generate_probabilities(loaded, SHAPE, seed=9, chunk=16)
    fast = generate_probabilities(loaded, SHAPE, seed=9, chunk=16, precision=precision)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert (fast - exact).abs().max() < 0.05


@pytest.fixture(scope="module")
def isotropic():
    return prepare_training_data([blobs((72, 80)) * 255])


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_training_runs_on_cuda_and_moves_to_the_cpu(isotropic, tmp_path, precision):
    config = TrainConfig(
        arch="tiny", iterations=6, seed=1, critic_batch=4, quality_every=3, precision=precision
    )
    trainer = Trainer(isotropic, config, "cuda")
    seen = []
    assert trainer.run(on_progress=seen.append) == 6
    assert all(np.isfinite(p.wasserstein) and np.isfinite(p.gradient_penalty) for p in seen)
    assert len(trainer.quality_history) == 2
    checkpoint = trainer.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = Trainer(isotropic, config.model_copy(update={"iterations": 8}), "cpu")
    resumed.load_checkpoint(checkpoint)
    assert resumed.run() == 8
    exported = trainer.export_generator(tmp_path / "g.safetensors")
    on_cpu = load_generator(exported, "cpu")
    volume = generate_array(on_cpu, (20, 20, 20), seed=0, chunk=8)
    assert set(np.unique(volume)) <= {0, 255}


def test_tortuosity_on_the_gpu_matches_the_cpu():
    from microforge.models.stats.tortuosity import phase_tortuosity

    labels = blobs((32, 32, 32), fraction=0.6, seed=2)
    gpu = phase_tortuosity(labels, 1, device="cuda")
    cpu = phase_tortuosity(labels, 1, device="cpu")
    assert any(result.percolates for result in cpu.values())
    for axis in ("x", "y", "z"):
        a, b = gpu[axis], cpu[axis]
        assert a.percolates == b.percolates
        if a.percolates:
            assert a.tortuosity == pytest.approx(b.tortuosity, rel=2e-2)
