"""Network and training configuration: presets of one configurable SliceGAN network.

Torch-free on purpose: the API validates training configs and imported generator files
with these models without importing torch. The rules checked here are the paper's rules
for transposed convolutions (uniform information density: s < k, k mod s = 0, p >= k - s)
and the size bookkeeping that makes the generator's output match the critic's crop.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from microforge.bounds import SEED_MAX, int_range

Arch = Literal["paper", "reference", "tiny"]
LastLayer = Literal["transpose", "resize_conv"]
Precision = Literal["fp32", "tf32", "bf16"]
TransposedKernels = Literal["lattice_free", "free"]


#: The most iterations a training run may ask for (a sanity bound, weeks on a GPU).
MAX_ITERATIONS = 10_000_000
#: Sanity bounds of a custom network (the presets use at most 1024 filters, kernels of 4,
#: 5 layers): past them a network cannot be trained, and its sizes would overflow.
MAX_FILTERS = 8192
MAX_KERNEL = 64
MAX_LAYERS = 16


class ConfigError(ValueError):
    """A configuration that cannot train; the message says what to change."""


class NetworkConfig(BaseModel):
    """Layer-by-layer description of generator and critic.

    ``generator_filters`` are the output channels of the hidden generator layers; the last
    layer outputs the image channels (phases, 1 grey or 3 colour), known only from the data.
    With ``last_layer="resize_conv"`` the last entry of kernels/strides/paddings is unused:
    the last block is a trilinear upsample to 2(n-1) voxels per axis and a 3x3x3 convolution,
    which has a bias when ``resize_conv_bias`` is set (MicroForge trains it without one; the
    public SliceGAN code's ``rcconv`` has one, so imported generators set it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latent_channels: int_range(1, 1024)
    latent_size: int_range(1, 64) = Field(description="Latent edge during training.")
    generator_filters: list[int_range(1, MAX_FILTERS)] = Field(max_length=MAX_LAYERS)
    generator_kernels: list[int_range(1, MAX_KERNEL)] = Field(min_length=1, max_length=MAX_LAYERS)
    generator_strides: list[int_range(1, MAX_KERNEL)] = Field(max_length=MAX_LAYERS)
    generator_paddings: list[int_range(0, MAX_KERNEL)] = Field(max_length=MAX_LAYERS)
    last_layer: LastLayer = "transpose"
    resize_conv_bias: bool = Field(
        default=False, description="The resize-convolution's 3x3x3 convolution has a bias."
    )
    critic_filters: list[int_range(1, MAX_FILTERS)] = Field(max_length=MAX_LAYERS)
    critic_kernels: list[int_range(1, MAX_KERNEL)] = Field(min_length=1, max_length=MAX_LAYERS)
    critic_strides: list[int_range(1, MAX_KERNEL)] = Field(max_length=MAX_LAYERS)
    critic_paddings: list[int_range(0, MAX_KERNEL)] = Field(max_length=MAX_LAYERS)

    @model_validator(mode="after")
    def _check_rules(self) -> NetworkConfig:
        layers = len(self.generator_kernels)
        if not (len(self.generator_strides) == len(self.generator_paddings) == layers):
            raise ValueError("generator kernels, strides and paddings must have the same length")
        if self.resize_conv_bias and self.last_layer != "resize_conv":
            raise ValueError("resize_conv_bias needs last_layer='resize_conv'")
        if len(self.generator_filters) != layers - 1:
            raise ValueError(
                f"generator_filters must list {layers - 1} hidden layers for {layers} layers"
            )
        transposed = layers - 1 if self.last_layer == "resize_conv" else layers
        for index in range(transposed):
            k = self.generator_kernels[index]
            s = self.generator_strides[index]
            p = self.generator_paddings[index]
            problems = []
            if not s < k:
                problems.append(f"stride {s} must be smaller than kernel {k}")
            if k % s:
                problems.append(f"kernel {k} must be a multiple of stride {s}")
            if p < k - s:
                problems.append(f"padding {p} must be at least kernel - stride = {k - s}")
            if problems:
                raise ValueError(
                    f"generator layer {index + 1} (k={k}, s={s}, p={p}) breaks the uniform "
                    f"information density rules: {'; '.join(problems)}"
                )
        critic_layers = len(self.critic_kernels)
        if not (len(self.critic_strides) == len(self.critic_paddings) == critic_layers):
            raise ValueError("critic kernels, strides and paddings must have the same length")
        if len(self.critic_filters) != critic_layers - 1:
            raise ValueError(
                f"critic_filters must list {critic_layers - 1} hidden layers for "
                f"{critic_layers} layers"
            )
        crop = self.crop_size
        if crop < 1:
            raise ValueError(f"the generator's output would be {crop} voxels: change its layers")
        out = self.critic_output_size(crop)
        if out != 1:
            raise ValueError(
                f"the generator makes {crop}-voxel volumes, so the critics see {crop}-pixel "
                f"crops, which the critic layers reduce to {out}x{out} instead of 1x1: change "
                "the critic layers (or the generator's) so that their sizes match"
            )
        return self

    def generator_output_size(self, latent: int) -> int:
        """Voxels along one axis for a latent edge, the bookkeeping the critic must match."""
        n = latent
        layers = len(self.generator_kernels)
        for index in range(layers):
            if index == layers - 1 and self.last_layer == "resize_conv":
                n = 2 * (n - 1) - 2
            else:
                k = self.generator_kernels[index]
                n = (n - 1) * self.generator_strides[index] - 2 * self.generator_paddings[index] + k
        return n

    def critic_output_size(self, size: int) -> int:
        n = size
        for k, s, p in zip(self.critic_kernels, self.critic_strides, self.critic_paddings):
            n = (n + 2 * p - k) // s + 1
        return n

    @property
    def crop_size(self) -> int:
        """The 2D crop edge the critics see: the generator's output edge in training."""
        return self.generator_output_size(self.latent_size)

    @property
    def period(self) -> int:
        """Output voxels per latent voxel on a periodic axis (the product of the strides)."""
        factor = 1
        layers = len(self.generator_kernels)
        for index in range(layers):
            if index == layers - 1 and self.last_layer == "resize_conv":
                factor *= 2
            else:
                factor *= self.generator_strides[index]
        return factor


def periodic_size_problem(network: NetworkConfig, size: int, axis: str) -> str | None:
    """Why ``size`` cannot be a periodic axis of this network, or None when it can.

    A periodic volume tiles only if it is a whole number of latent voxels, each of which
    becomes ``network.period`` output voxels. Torch-free, so the API can check a request.
    """
    period = network.period
    if size % period == 0:
        return None
    below = max(period, size - size % period)
    return (
        f"a periodic {axis} axis must be a multiple of {period} voxels for this network; "
        f"{size} is not: use {below} or {below + period}"
    )


PRESETS: dict[str, NetworkConfig] = {
    # Table 1 of Kench & Cooper (2021).
    "paper": NetworkConfig(
        latent_channels=64,
        latent_size=4,
        generator_filters=[512, 256, 128, 64],
        generator_kernels=[4, 4, 4, 4, 4],
        generator_strides=[2, 2, 2, 2, 2],
        generator_paddings=[2, 2, 2, 2, 3],
        critic_filters=[64, 128, 256, 512],
        critic_kernels=[4, 4, 4, 4, 4],
        critic_strides=[2, 2, 2, 2, 2],
        critic_paddings=[1, 1, 1, 1, 0],
    ),
    # The public SliceGAN code's defaults: resize-convolution last layer.
    "reference": NetworkConfig(
        latent_channels=32,
        latent_size=4,
        generator_filters=[1024, 512, 128, 32],
        generator_kernels=[4, 4, 4, 4, 4],
        generator_strides=[2, 2, 2, 2, 2],
        generator_paddings=[2, 2, 2, 2, 3],
        last_layer="resize_conv",
        critic_filters=[64, 128, 256, 512],
        critic_kernels=[4, 4, 4, 4, 4],
        critic_strides=[2, 2, 2, 2, 2],
        critic_paddings=[1, 1, 1, 1, 0],
    ),
    # Small and fast: 32-voxel crops, the preset for a CPU. Its critic is twice as wide as
    # it first was (8-16-32): at 1.4x the cost per iteration it met every target on the NMC
    # volume in 30 minutes, which the narrow one did not on twice the cores
    # (docs/benchmarks.md, "A wider critic at the budget").
    "tiny": NetworkConfig(
        latent_channels=8,
        latent_size=4,
        generator_filters=[32, 16, 8],
        generator_kernels=[4, 4, 4, 4],
        generator_strides=[2, 2, 2, 2],
        generator_paddings=[2, 2, 2, 3],
        critic_filters=[16, 32, 64],
        critic_kernels=[4, 4, 4, 4],
        critic_strides=[2, 2, 2, 2],
        critic_paddings=[1, 1, 1, 0],
    ),
}


#: Adam learning rate of the generator when a config sets none. tiny: 5e-4, measured on
#: real and synthetic volumes (docs/benchmarks.md, "Why SliceGAN tiles one lattice"): at the
#: public code's 1e-4 a short CPU run stays soft and can drop a 40 % phase altogether.
#: paper and reference keep 1e-4 until the GPU check measures them.
PRESET_LEARNING_RATES: dict[str, float] = {"paper": 1e-4, "reference": 1e-4, "tiny": 5e-4}
#: The critics' when a config sets none. tiny's learn twice as fast as its generator: they
#: then see more of the joins between particles that tiny's generators otherwise draw: the
#: volumes come nearer the truth's tortuosity on both real test volumes (and its dead ends
#: on NMC) at no cost (docs/benchmarks.md, "A critic that learns twice as fast").
PRESET_CRITIC_LEARNING_RATES: dict[str, float] = {"paper": 1e-4, "reference": 1e-4, "tiny": 1e-3}


class TrainConfig(BaseModel):
    """Everything a training run needs besides the images. All fields have defaults.

    The names are those of the ``microforge train`` options, so that the CLI, the API and
    the checkpoint speak the same language. Defaults follow the paper and the public code.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    arch: Arch = "paper"
    network: NetworkConfig | None = Field(
        default=None, description="A custom network; overrides the arch preset."
    )
    iterations: int_range(1, MAX_ITERATIONS) = 10_000
    seed: int_range(0, SEED_MAX) | None = None
    critic_batch: int_range(1, 512) = 8
    generator_batch: int_range(1, 1024) | None = Field(
        default=None, description="Default: 2 x critic_batch."
    )
    lr_generator: float | None = Field(
        default=None, gt=0, le=1.0, description="Adam learning rate; default: the preset's."
    )
    lr_critic: float | None = Field(
        default=None, gt=0, le=1.0, description="Adam learning rate; default: the preset's."
    )
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    gp_lambda: float = Field(default=10.0, ge=0)
    critic_steps: int_range(1, 100) = 5
    scale_factor: float = Field(default=1.0, gt=0.01, le=16)
    image_type: Literal["nphase", "grayscale", "colour"] | None = None
    checkpoint_every: int_range(1, MAX_ITERATIONS) = 500
    progress_every: int_range(1, MAX_ITERATIONS) = 25
    progress_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Also report progress when this long has passed since the last report "
        "(slow iterations, e.g. a large network on a CPU, would otherwise leave a job at "
        "iteration 0 for minutes); 0 = only every progress_every iterations.",
    )
    preview_every: int_range(1, MAX_ITERATIONS) = 250
    quality_every: int_range(0, MAX_ITERATIONS) = Field(
        default=500, description="Fidelity check interval in iterations; 0 = off."
    )
    early_stop_checks: int_range(0, MAX_ITERATIONS) = Field(
        default=0, description="Stop after this many fidelity checks without improvement."
    )
    precision: Precision = Field(
        default="tf32", description="fp32, tf32 (CUDA matmuls in TF32) or bf16 autocast."
    )
    ema_decay: float = Field(
        default=0.99,
        ge=0,
        lt=1,
        description="Previews, fidelity checks and exported generators use a moving average "
        "of the generator's weights, updated by this factor at every generator step (0.99: "
        "about the last 100 steps), with batch-norm statistics measured for it; 0 = the "
        "latest weights, as the public code.",
    )
    init: Literal["dcgan", "pytorch"] = Field(
        default="dcgan",
        description="Weight initialisation: dcgan = N(0, 0.02) convolutions, N(1, 0.02) batch "
        "norms; pytorch = PyTorch's defaults, as the public SliceGAN code.",
    )
    transposed_kernels: TransposedKernels = Field(
        default="lattice_free",
        description="lattice_free: every transposed-convolution kernel of the generator is "
        "trained as nearest-neighbour upsampling followed by a convolution, so that it cannot "
        "turn the noise-free part of its input into a lattice of the stride period (the "
        "pattern SliceGAN generators otherwise repeat whatever the seed); free: any kernel, "
        "as the paper and the public code. The exported network is the same either way.",
    )
    channels_last: bool = Field(
        default=False,
        description="Channels-last memory layout for the networks and their inputs "
        "(NDHWC/NHWC). Same results up to rounding. On an H200 (cuDNN 9.19) it made training "
        "over twice as slow: leave it off there.",
    )

    def network_config(self) -> NetworkConfig:
        return self.network or PRESETS[self.arch]

    @property
    def resolved_lr_generator(self) -> float:
        return self.lr_generator or PRESET_LEARNING_RATES[self.arch]

    @property
    def resolved_lr_critic(self) -> float:
        return self.lr_critic or PRESET_CRITIC_LEARNING_RATES[self.arch]

    @property
    def resolved_generator_batch(self) -> int:
        return self.generator_batch or 2 * self.critic_batch
