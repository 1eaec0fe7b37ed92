"""WGAN-GP training of SliceGAN: a 3D generator judged by 2D critics on its slices.

One iteration is one critic update on every axis (as in the public code, whose 31 ms per
iteration on an H100 is our yardstick); every ``critic_steps``-th iteration also updates
the generator. All randomness (noise, crops, penalty mixing) comes from one generator
object whose state is checkpointed, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from microforge.models.config import NetworkConfig, TrainConfig
from microforge.models.data import CropSampler, TrainingData
from microforge.models.devices import configure_precision, resolve_device
from microforge.models.networks import (
    Critic,
    Generator,
    init_weights,
    is_lattice_free,
    make_free,
    make_lattice_free,
    plain_state_dict,
)
from microforge.models.preview import render_preview

CHECKPOINT_FORMAT = "microforge-checkpoint"
CHECKPOINT_VERSION = 1
PREVIEW_SEED = 20210101
#: Latents that measure the moving average's batch-norm statistics: fixed, so that the
#: same weights always give the same statistics, and the training stream is untouched.
NORM_SEED = 20211231
NORM_BATCHES = 8


class TrainingError(RuntimeError):
    """Training stopped for a reason the user can act on; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Progress:
    """What a progress callback gets; ``preview()`` renders slices only when asked."""

    iteration: int
    total: int
    critic_loss: float
    generator_loss: float | None
    wasserstein: float
    gradient_penalty: float
    seconds_per_iteration: float
    eta_seconds: float | None
    quality: dict[str, Any] | None = None
    quality_history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    preview: Callable[[], np.ndarray] = field(repr=False, default=lambda: np.zeros((1, 1)))

    def metrics(self) -> dict[str, Any]:
        values = {
            "iteration": self.iteration,
            "critic_loss": self.critic_loss,
            "generator_loss": self.generator_loss,
            "wasserstein": self.wasserstein,
            "gradient_penalty": self.gradient_penalty,
            "seconds_per_iteration": self.seconds_per_iteration,
        }
        if self.quality is not None:
            values["quality"] = self.quality
        return values


def slices_along(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, C, D, H, W) -> every 2D slice perpendicular to axis (0=x, 1=y, 2=z) as images.

    Slices perpendicular to x are (z, y) images, to y (z, x), to z (y, x): the same
    orientation the crop sampler uses for the training images.
    """
    n, c, d, h, w = volume.shape
    if axis == 0:
        return volume.permute(0, 4, 1, 2, 3).reshape(n * w, c, d, h)
    if axis == 1:
        return volume.permute(0, 3, 1, 2, 4).reshape(n * h, c, d, w)
    return volume.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)


class Trainer:
    """Owns networks, optimisers and the random state of one training run."""

    def __init__(self, data: TrainingData, config: TrainConfig, device: str = "auto") -> None:
        self.data = data
        self.config = config
        self.device = resolve_device(device)
        configure_precision(self.device, config.precision)
        self.network = config.network_config()
        self.crop = self.network.crop_size
        self.sampler = CropSampler(data, self.crop, self.device)
        self.seed = (
            config.seed if config.seed is not None else random.SystemRandom().getrandbits(62)
        )
        activation = "softmax" if data.image_type == "nphase" else "sigmoid"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.generator = Generator(self.network, data.channels, activation)
            critic_count = 1 if data.layout == "isotropic" else 3
            critics = self._new_critics(self.network, critic_count)
            if config.init == "dcgan":
                self.generator.apply(init_weights)
                critics.apply(init_weights)
        if config.transposed_kernels == "lattice_free":
            make_lattice_free(self.generator)
        self.generator.to(self.device)
        if config.channels_last:
            self.generator.to(memory_format=torch.channels_last_3d)
        self.average = self._new_average()
        self._average_measured_at: int | None = None
        self.generator_optimizer = self._adam(self.generator, config.resolved_lr_generator)
        self._adopt_critics(critics)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(self.seed)
        self.iteration = 0
        self.quality_history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        #: Early stopping counts only the checks after this iteration (and after the best):
        #: a run extended to more iterations gets a fresh patience from where it was.
        self.early_stop_since = 0
        self._last: dict[str, torch.Tensor] = {}
        self._preview_noise: torch.Tensor | None = None

    def _adam(self, module: nn.Module, lr: float) -> torch.optim.Adam:
        # One fused kernel per Adam step on CUDA instead of a handful per parameter group;
        # the CPU keeps the reference implementation, which resume-exactness is tested on.
        betas = (self.config.beta1, self.config.beta2)
        return torch.optim.Adam(
            module.parameters(), lr=lr, betas=betas, fused=self.device.type == "cuda"
        )

    def _new_critics(self, network: NetworkConfig, count: int) -> nn.ModuleList:
        return nn.ModuleList(Critic(network, self.data.channels) for _ in range(count))

    def _adopt_critics(self, critics: nn.ModuleList) -> None:
        """Train these critics: on the device, in the configured layout, with new optimisers."""
        self.critics = critics.to(self.device)
        if self.config.channels_last:
            self.critics.to(memory_format=torch.channels_last)
        self.critic_optimizers = [
            self._adam(critic, self.config.resolved_lr_critic) for critic in self.critics
        ]

    def _new_average(self) -> Generator | None:
        """A copy of the generator whose weights follow theirs as a moving average."""
        if not self.config.ema_decay:
            return None
        average = copy.deepcopy(self.generator)
        average.requires_grad_(False)
        return average

    # ------------------------------------------------------------------ training steps
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.network.latent_size
        shape = (batch, self.network.latent_channels, size, size, size)
        noise = torch.randn(shape, generator=generator or self.rng, device=self.device)
        if self.config.channels_last:
            return noise.contiguous(memory_format=torch.channels_last_3d)
        return noise

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        """Critic input in the configured layout (slices of a volume arrive strided)."""
        if self.config.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _critic_for(self, axis: int) -> tuple[Critic, torch.optim.Optimizer]:
        index = axis if len(self.critics) == 3 else 0
        return self.critics[index], self.critic_optimizers[index]  # type: ignore[return-value]

    def _gradient_penalty(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        """Penalise critic gradients away from norm 1 on real/fake mixtures (WGAN-GP)."""
        mix = torch.rand((real.shape[0], 1, 1, 1), generator=self.rng, device=self.device)
        points = (mix * real + (1 - mix) * fake).requires_grad_(True)
        with self._autocast():
            scores = critic(points)
        (gradients,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
        norms = gradients.float().flatten(1).norm(2, dim=1)
        return self.config.gp_lambda * ((norms - 1) ** 2).mean()

    def _critic_step(self) -> None:
        batch = self.config.critic_batch
        with torch.no_grad(), self._autocast():
            fake_volumes = self.generator(self._noise(batch)).float()
        critic_loss = torch.zeros((), device=self.device)
        wasserstein = torch.zeros((), device=self.device)
        penalty = torch.zeros((), device=self.device)
        for axis in range(3):
            critic, optimizer = self._critic_for(axis)
            real = self._images(self.sampler.sample(axis, batch, self.rng))
            fake = self._images(slices_along(fake_volumes, axis))
            picks = torch.randint(
                0, fake.shape[0], (batch,), generator=self.rng, device=self.device
            )
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                # One pass over real and fake images: the critic has no batch statistics,
                # so this is the same arithmetic with half the kernel launches.
                scores = critic(torch.cat((real, fake))).float()
            score_real = scores[: real.shape[0]].mean()
            score_fake = scores[real.shape[0] :].mean()
            gp = self._gradient_penalty(critic, real, fake[picks])
            loss = score_fake - score_real + gp
            loss.backward()
            optimizer.step()
            critic_loss += loss.detach()
            wasserstein += (score_real - score_fake).detach()
            penalty += gp.detach()
        self._last.update(critic_loss=critic_loss / 3, wasserstein=wasserstein / 3, gp=penalty / 3)

    def _generator_step(self) -> None:
        for critic in self.critics:
            critic.requires_grad_(False)
        try:
            self.generator_optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                volumes = self.generator(self._noise(self.config.resolved_generator_batch))
                loss = torch.zeros((), device=self.device)
                for axis in range(3):
                    critic, _ = self._critic_for(axis)
                    slices = self._images(slices_along(volumes, axis))
                    loss = loss - critic(slices).float().mean()
            loss.backward()
            self.generator_optimizer.step()
            if self.average is not None:
                # Early on the average follows closely (TensorFlow's num_updates rule), so
                # that it does not keep the random initial weights for hundreds of steps.
                steps = self.iteration // self.config.critic_steps
                decay = min(self.config.ema_decay, (1 + steps) / (10 + steps))
                with torch.no_grad():
                    for mean, value in zip(
                        self.average.parameters(), self.generator.parameters(), strict=True
                    ):
                        mean.lerp_(value, 1.0 - decay)
        finally:
            for critic in self.critics:
                critic.requires_grad_(True)
        self._last["generator_loss"] = loss.detach()

    def step(self) -> None:
        """One iteration: a critic update per axis, and a generator update every n-th."""
        self._critic_step()
        if self.iteration % self.config.critic_steps == 0:
            self._generator_step()
        self.iteration += 1

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        until: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        deadline: float | None = None,
    ) -> int:
        """Train until ``until``/the configured total, a stop request or the deadline.

        The deadline is ``time.monotonic()`` based, so the worker can bound a segment.
        """
        target = min(until or self.config.iterations, self.config.iterations)
        self.generator.train()
        self.critics.train()
        rate = _RateMeter()
        reported = time.monotonic()
        with _translate_errors(self):
            while self.iteration < target:
                if should_stop is not None and should_stop():
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
                self.step()
                rate.tick()
                quality = self._maybe_check_quality()
                done = self.iteration >= target
                if on_progress and (done or self._progress_due(reported)):
                    on_progress(self._progress(target, rate, quality))
                    reported = time.monotonic()
                if self._early_stop_due():
                    break
        return self.iteration

    def _progress_due(self, reported: float) -> bool:
        """Every ``progress_every`` iterations, or once ``progress_seconds`` have passed."""
        if self.iteration % self.config.progress_every == 0:
            return True
        silence = self.config.progress_seconds
        return silence > 0 and time.monotonic() - reported >= silence

    def _progress(self, target: int, rate: _RateMeter, quality: dict[str, Any] | None) -> Progress:
        values = {name: float(t.item()) for name, t in self._last.items()}
        seconds = rate.seconds_per_tick()
        remaining = self.config.iterations - self.iteration
        return Progress(
            iteration=self.iteration,
            total=self.config.iterations,
            critic_loss=values.get("critic_loss", math.nan),
            generator_loss=values.get("generator_loss"),
            wasserstein=values.get("wasserstein", math.nan),
            gradient_penalty=values.get("gp", math.nan),
            seconds_per_iteration=seconds,
            eta_seconds=remaining * seconds if seconds > 0 else None,
            quality=quality,
            quality_history=list(self.quality_history),
            preview=self.preview,
        )

    # ------------------------------------------------------------------ quality and preview
    def sampling_generator(self) -> Generator:
        """The network that previews, fidelity checks and exported generators use.

        With ``ema_decay``, the moving average of the generator's weights, whose batch-norm
        statistics are measured anew for those weights (a few batches of fixed latents, once
        per iteration it is asked for): the training network's running statistics belong to
        other weights, and averaged weights with them gave worse volumes than no average.
        Why an average: at a fixed learning rate GAN weights circle around a good state, and
        a phase fraction swings by 3-5 points between checks; the average sits nearer the
        middle (docs/benchmarks.md, "Why SliceGAN tiles one lattice").
        """
        if self.average is None:
            return self.generator
        if self._average_measured_at != self.iteration:
            norms = [m for m in self.average.modules() if isinstance(m, nn.BatchNorm3d)]
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # a plain mean over the batches below
            fixed = torch.Generator(device=self.device).manual_seed(NORM_SEED)
            self.average.train()
            with torch.no_grad(), self._autocast():
                for _ in range(NORM_BATCHES):
                    self.average(self._noise(self.config.resolved_generator_batch, fixed))
            self.average.eval()
            self._average_measured_at = self.iteration
        return self.average

    @contextlib.contextmanager
    def _evaluating(self, net: Generator) -> Iterator[None]:
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            net.train(was_training)

    def sample_volumes(self, latent_size: int | None = None, count: int = 2) -> torch.Tensor:
        """Up to two small volumes from fixed latents, (count, C, D, H, W) on the CPU.

        Fixed noise makes previews comparable over training; the training RNG is untouched.
        In eval mode batch norm uses its running statistics, so the first volume is the same
        whether one or two are made.
        """
        size = latent_size or self.network.latent_size + 2
        if self._preview_noise is None or self._preview_noise.shape[-1] != size:
            fixed = torch.Generator().manual_seed(PREVIEW_SEED)
            shape = (2, self.network.latent_channels, size, size, size)
            self._preview_noise = torch.randn(shape, generator=fixed).to(self.device)
        net = self.sampling_generator()
        with self._evaluating(net):
            return net(self._preview_noise[:count]).float().cpu()

    def sample_volume(self, latent_size: int | None = None) -> torch.Tensor:
        """A small volume from fixed noise, (C, D, H, W) on the CPU; the RNG is untouched."""
        return self.sample_volumes(latent_size, count=1)[0]

    def preview(self) -> np.ndarray:
        """Slices perpendicular to x, y and z of a small generated volume, side by side."""
        return render_preview(self.sample_volume(), self.data.image_type)

    def _maybe_check_quality(self) -> dict[str, Any] | None:
        every = self.config.quality_every
        if not every or self.iteration % every:
            return None
        from microforge.models.quality import measure_quality, quality_rank

        first, second = self.sample_volumes()
        record = measure_quality(first, self.data, second)
        record["iteration"] = self.iteration
        self.quality_history.append(record)
        if self.best is None or quality_rank(record) < quality_rank(self.best):
            self.best = {
                "iteration": self.iteration,
                "score": record["score"],
                "diversity": record.get("diversity"),
                "state": {
                    k: v.cpu() for k, v in plain_state_dict(self.sampling_generator()).items()
                },
            }
        return record

    def _early_stop_due(self) -> bool:
        patience = self.config.early_stop_checks
        if not patience or self.best is None or not self.quality_history:
            return False
        since = max(self.best["iteration"], self.early_stop_since)
        return sum(r["iteration"] > since for r in self.quality_history) >= patience

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        rng_state: dict[str, Any] = {"sampler": self.rng.get_state(), "device": self.device.type}
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "iteration": self.iteration,
            "seed": self.seed,
            "config": self.config.model_dump(mode="json"),
            "data": {
                "image_type": self.data.image_type,
                "layout": self.data.layout,
                "phases": self.data.phases,
                "channels": self.data.channels,
            },
            "generator": self.generator.state_dict(),
            "generator_average": None if self.average is None else self.average.state_dict(),
            "critics": [critic.state_dict() for critic in self.critics],
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "critic_optimizers": [opt.state_dict() for opt in self.critic_optimizers],
            "rng": rng_state,
            "quality_history": self.quality_history,
            "best": self.best,
            "early_stop_since": self.early_stop_since,
        }

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            # Through a Python file, not a path: torch's own writer turns a full disk into
            # "iostream error", while Python's write keeps the OSError (ENOSPC) in the chain.
            with open(temporary, "wb") as handle:
                torch.save(self.state(), handle)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        state = torch.load(Path(path), map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError("invalid_checkpoint", f"{path} is not a MicroForge checkpoint")
        if state["data"]["phases"] != self.data.phases or state["data"]["channels"] != (
            self.data.channels
        ):
            raise TrainingError(
                "checkpoint_mismatch",
                "the checkpoint was trained on data with other phases/channels than these "
                "images: resume with the same images",
            )
        if state["config"]["arch"] != self.config.arch or (
            state["config"].get("network") != self.config.model_dump(mode="json").get("network")
        ):
            raise TrainingError(
                "checkpoint_mismatch",
                "the checkpoint's network differs from this configuration: resume with the "
                f"arch it was trained with ({state['config']['arch']})",
            )
        self._match_kernel_form(state)
        self._match_critic_widths(state)
        self.generator.load_state_dict(state["generator"])
        self.average = self._new_average()  # the generator's kernel form may have changed
        self._average_measured_at = None
        if self.average is not None and state.get("generator_average") is not None:
            self.average.load_state_dict(state["generator_average"])
        for critic, critic_state in zip(self.critics, state["critics"], strict=True):
            critic.load_state_dict(critic_state)
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        for optimizer, opt_state in zip(
            self.critic_optimizers, state["critic_optimizers"], strict=True
        ):
            optimizer.load_state_dict(opt_state)
        self.iteration = int(state["iteration"])
        self.seed = int(state["seed"])
        self._restore_rng(state["rng"])
        self.quality_history = list(state.get("quality_history") or [])
        self.best = state.get("best")
        self.early_stop_since = int(state.get("early_stop_since", 0))
        if self.config.iterations > int(state["config"]["iterations"]):
            # Extended (asked for more than the run was set to): a run that stopped early
            # must not stop again at once on the checks that stopped it.
            self.early_stop_since = self.iteration

    def _match_kernel_form(self, state: dict[str, Any]) -> None:
        """Resume with the kernel form the checkpoint was trained with (runs from before
        lattice-free kernels have free ones), whatever the configuration now says."""
        saved_lattice_free = any(".parametrizations." in key for key in state["generator"])
        if saved_lattice_free == is_lattice_free(self.generator):
            return
        if saved_lattice_free:
            make_lattice_free(self.generator)
        else:
            make_free(self.generator)
        self.generator_optimizer = self._adam(self.generator, self.config.resolved_lr_generator)
        form = "lattice_free" if saved_lattice_free else "free"
        self.config = self.config.model_copy(update={"transposed_kernels": form})

    def _match_critic_widths(self, state: dict[str, Any]) -> None:
        """Resume with the critic widths the checkpoint was trained with: tiny's critic grew
        from 8-16-32 filters to 16-32-64 (docs/benchmarks.md, "A wider critic at the
        issue's budget"), and a run begun before must go on with the critic it trained."""
        saved = state["critics"][0]
        layers = len(self.network.critic_filters)
        widths = [int(saved[f"convs.{i}.weight"].shape[0]) for i in range(layers)]
        if widths == list(self.network.critic_filters):
            return
        network = self.network.model_copy(update={"critic_filters": widths})
        self._adopt_critics(self._new_critics(network, len(self.critics)))

    def _restore_rng(self, saved: dict[str, Any]) -> None:
        """Continue the saved random stream, or a new one when the device type changed.

        CPU and CUDA generators keep different states (Mersenne twister vs Philox), so a
        run moved between them (a GPU worker's checkpoint resumed on a CPU, say) cannot
        continue the same stream; it gets one seeded by (seed, iteration) instead, which
        keeps a moved run reproducible. Same device type: exactly where it stopped.
        """
        state = saved["sampler"].cpu()
        if "device" in saved:
            same_kind = saved["device"] == self.device.type
        else:  # checkpoints before the device was recorded: the state's size tells
            same_kind = state.numel() == self.rng.get_state().numel()
        if same_kind:
            self.rng.set_state(state)
        else:
            self.rng.manual_seed((self.seed * 1_000_003 + self.iteration) % 2**63)

    def export_quality(self, which: str = "latest") -> dict[str, Any] | None:
        """The last fidelity check of the weights ``export_generator(which)`` writes, in
        short: iteration, score, diversity and whether the generator looked collapsed."""
        from microforge.models.quality import COLLAPSE_DIVERSITY

        records = self.quality_history
        if which == "best" and self.best is not None:
            records = [r for r in records if r["iteration"] == self.best["iteration"]]
        if not records:
            return None
        record = records[-1]
        diversity = record.get("diversity")
        return {
            "iteration": record["iteration"],
            "score": record["score"],
            "diversity": diversity,
            "collapsed": diversity is not None and diversity < COLLAPSE_DIVERSITY,
        }

    def export_generator(self, path: str | Path, which: str = "latest") -> Path:
        """One self-describing file (weights + config + phases) that loads on any device.

        ``which``: "latest" (what sampling uses: the moving average when there is one),
        "best", or "raw": the training network's own weights and batch-norm statistics,
        which is what a run without the moving average would export (to measure what the
        average changes, docs/benchmarks.md).
        """
        from microforge.models.export import save_generator

        if which == "best" and self.best is not None:
            weights = self.best["state"]
            iteration = self.best["iteration"]
        else:
            network = self.generator if which == "raw" else self.sampling_generator()
            weights = plain_state_dict(network)
            iteration = self.iteration
        return save_generator(
            path,
            weights,
            data=self.data,
            network=self.network,
            arch=None if self.config.network else self.config.arch,
            iteration=iteration,
        )


class _RateMeter:
    """Seconds per iteration over recent iterations: an honest ETA follows the recent pace."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ticks = 0
        self.rate: float | None = None

    def tick(self) -> None:
        self.ticks += 1

    def seconds_per_tick(self) -> float:
        now = time.perf_counter()
        if self.ticks:
            current = (now - self.start) / self.ticks
            self.rate = current if self.rate is None else 0.5 * self.rate + 0.5 * current
        self.start, self.ticks = now, 0
        return self.rate or 0.0


@contextlib.contextmanager
def _translate_errors(trainer: Trainer) -> Iterator[None]:
    """Turn device failures into errors that say which setting to change."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        raise TrainingError(
            "cuda_out_of_memory",
            f"the GPU ran out of memory (critic_batch {trainer.config.critic_batch}, "
            f"generator_batch {trainer.config.resolved_generator_batch}, arch "
            f"{trainer.config.arch}): lower critic_batch or generator_batch, use precision "
            "bf16, or a smaller arch",
        ) from error
