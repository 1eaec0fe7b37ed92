"""Fidelity against a real 3D truth: train SliceGAN on slices of a volume, compare with it.

    python benchmarks/fidelity.py --truth ../shared/data/volumes/nmc_binary_128.tif --seconds 600
    python benchmarks/fidelity.py --synthetic blobs3 --synthetic-size 48 --iterations 20 \\
        --mark-iterations 10 --seeds 2
    python benchmarks/fidelity.py --truth ../shared/data/volumes/separator_rods_32x300x300.tif \\
        --train-on three-slices --seconds 900 --mark-seconds 300

Why: the project's own quality numbers (the trainer's fidelity score and diversity, the
report's verdict) compare a generated volume with the 2D images it was trained on. Whether
a "good" verdict means a faithful 3D structure can only be checked against a real volume
whose 3D statistics are known. So the model trains on the truth's middle slice (or its three
orthogonal middle slices, or the whole volume), and at marks during training volumes of the
truth's size are generated from several seeds, from the latest and the best generator (and
with --raw the training weights beside their moving average), and measured against the
truth: volume fraction, specific surface area, S2 per axis and its characteristic length,
tortuosity, TPB density, 3D connectivity, the tunnels of each phase's network, its necks
and the size of its regions in the critic's crops, and the diversity across seeds. The
start record says how typical the training slice is among the truth's sections (region
sizes): a generator follows its slice.

Each generator's report verdict is checked against the truth (``verdict_agreement``): a
"good" volume that misses a target the report can see, or a "poor" one that meets every
target, is a disagreement, marked "!" in the table.

Output: one JSON record per line on stdout (the start record with the machine block first,
one per mark, a final summary with the pass/fail of every target and the report's
agreement), the same lines in DIR/marks.jsonl, DIR/slices.png (middle slices of the truth
and of the last mark's volumes), the exported generators in DIR/generators/, and a human
table on stderr at the end.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_info, resolve, rounded  # noqa: E402
from stats_speed import synthetic_volume  # noqa: E402

from microforge.models.config import (  # noqa: E402
    MAX_ITERATIONS,
    PRESETS,
    ConfigError,
    TrainConfig,
)
from microforge.models.data import DataError, TrainingData, prepare_training_data  # noqa: E402
from microforge.models.export import load_generator  # noqa: E402
from microforge.models.generation import generate_array  # noqa: E402
from microforge.models.quality import diversity  # noqa: E402
from microforge.models.stats import (  # noqa: E402
    compare_with_references,
    microstructure_statistics,
)
from microforge.models.stats.axes import (  # noqa: E402
    AXES_3D,
    SLICE_PLANE_AXES,
    array_axis,
    slice_perpendicular,
)
from microforge.models.stats.euler import connectivity_densities  # noqa: E402
from microforge.models.stats.necks import neck_figures  # noqa: E402
from microforge.models.stats.network import network_topology  # noqa: E402
from microforge.models.stats.orientation import (  # noqa: E402
    orientation,
    orientation_difference,
)
from microforge.models.stats.phases import label_name  # noqa: E402
from microforge.models.stats.section_clusters import (  # noqa: E402
    region_size,
    section_spread,
    typical_section,
)
from microforge.models.trainer import Trainer, TrainingError  # noqa: E402

#: The issue's targets: what a faithful generator reaches against its 3D truth.
DEFAULT_TARGETS = {
    "fraction_points": 2.0,  # |f - f_truth| in percentage points ...
    "fraction_relative": 0.15,  # ... and relative to f_truth, both must hold
    "ssa_relative": 0.25,
    "s2_mae": 0.02,
    "tortuosity_relative": 0.25,
}
NOT_PERCOLATING = "does not percolate"
SYNTHETIC_SEED = 20240601
DIGITS = 4


class FidelityError(Exception):
    """A problem with the inputs that the user can fix; printed as one line."""


# --------------------------------------------------------------------------- truths
def read_truth(path: Path) -> np.ndarray:
    """A 3D label volume (z, y, x) from a TIFF stack; a 2D image cannot be a 3D truth."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            array, axes = series.asarray(), series.axes
    except (OSError, ValueError, IndexError) as error:
        raise FidelityError(f"--truth {path}: cannot read it as TIFF ({error})") from error
    if "S" in axes:
        raise FidelityError(
            f"--truth {path} has colour samples (axes {axes}): the truth must be a label "
            "volume with one value per voxel"
        )
    shape = "x".join(map(str, array.shape))
    array = np.squeeze(array) if array.ndim > 3 else array
    if array.ndim == 2 or (array.ndim == 3 and array.shape[0] == 1):
        raise FidelityError(
            f"--truth {path} is a 2D image ({shape}): a 3D truth needs a multi-page TIFF "
            "stack (z, y, x)"
        )
    if array.ndim != 3:
        raise FidelityError(f"--truth {path} has shape {shape}: expected a 3D stack (z, y, x)")
    if array.dtype.kind not in "uib":
        raise FidelityError(
            f"--truth {path} holds {array.dtype} values: the truth must be segmented integer "
            "labels (one value per phase)"
        )
    return np.ascontiguousarray(array)


def blobs3(size: int) -> tuple[np.ndarray, dict]:
    """Three phases of a third each, from thresholded smoothed noise (stats_speed's volume)."""
    return synthetic_volume(size, seed=SYNTHETIC_SEED), {"fractions": [1 / 3, 1 / 3, 1 / 3]}


def spheres2(size: int) -> tuple[np.ndarray, dict]:
    """Spheres of one known radius in a matrix, at least two voxels apart, wrapped around
    the edges (periodic), so every sphere's whole surface and volume lie in the sample.

    Known: a sphere's surface is 3/r per sphere volume, so the sphere phase's specific
    surface area is 3 f / r (the surface measure reads it 4-6 % low at r = 4-5 and 1 % at
    r = 10: digital balls, and smoothing across the gaps); the spheres do not touch, so
    they do not percolate. The spacing caps the fraction at about 0.16-0.23.
    """
    radius = max(4, size // 12)
    rng = np.random.default_rng(SYNTHETIC_SEED)
    wanted = int(0.3 * size**3 / (4 / 3 * np.pi * radius**3))
    centres = _spaced_points(rng, wanted, 3, size, 2 * radius + 2)
    offsets = np.arange(-radius, radius + 1)
    grid = np.indices((offsets.size,) * 3) - radius
    ball = ((grid**2).sum(0) <= radius**2).astype(np.uint8)
    volume = np.zeros((size,) * 3, dtype=np.uint8)
    for centre in centres:
        volume[np.ix_(*[(offsets + c) % size for c in centre])] |= ball
    fraction = float(volume.mean())
    return volume, {
        "radius": radius,
        "sphere_fraction": fraction,
        "sphere_ssa": 3 * fraction / radius,
    }


def rods(size: int) -> tuple[np.ndarray, dict]:
    """Straight rods of one radius running the whole length of x, at least two voxels
    apart and wrapped around the y and z edges: strongly anisotropic.

    Known: rod surface is 2/r per rod volume (ssa 2 f / r, read a few per cent low at
    r = 4, as for the spheres), both phases run straight
    along x (tortuosity 1 along x), S2 along x stays at f (no characteristic length), and
    the rods do not percolate across x.
    """
    radius = max(4, size // 16)
    rng = np.random.default_rng(SYNTHETIC_SEED)
    wanted = int(0.3 * size**2 / (np.pi * radius**2))
    centres = _spaced_points(rng, wanted, 2, size, 2 * radius + 2)
    z, y = np.indices((size, size))
    section = np.zeros((size, size), dtype=np.uint8)
    for cz, cy in centres:
        section[_periodic(z - cz, size) ** 2 + _periodic(y - cy, size) ** 2 <= radius**2] = 1
    volume = np.ascontiguousarray(np.repeat(section[:, :, None], size, axis=2))
    fraction = float(volume.mean())
    return volume, {
        "radius": radius,
        "rod_axis": "x",
        "rod_fraction": fraction,
        "rod_ssa": 2 * fraction / radius,
        "tortuosity_along_x": 1.0,
    }


def electrode3(size: int) -> tuple[np.ndarray, dict]:
    """A battery-electrode-like three-phase volume: pore 0 (about 45 %), round active
    particles 1 (40 %, thresholded smooth noise, features of 10-30 voxels) and a binder
    rim 2 (15-17 %: distances are discrete) coating the particles on the pore side, all
    periodic; the exact fractions are in the returned facts.

    Why: it is the shape of the issue's held-out electrode, whose thin minority phase is
    what SliceGAN tends to lose, and its fractions are exact by construction.
    """
    from scipy import ndimage

    rng = np.random.default_rng(SYNTHETIC_SEED)
    noise = rng.standard_normal((size,) * 3).astype(np.float32)
    field = ndimage.gaussian_filter(noise, 4.0, mode="wrap")
    active = field > np.quantile(field, 0.60)
    tiled = np.tile(~active, (3, 3, 3))  # periodic distances: the middle copy of a 3^3 tiling
    distance = ndimage.distance_transform_edt(tiled)[
        size : 2 * size, size : 2 * size, size : 2 * size
    ]
    rim = np.quantile(distance[~active], 0.15 / 0.60)
    volume = np.zeros((size,) * 3, dtype=np.uint8)
    volume[active] = 1
    volume[~active & (distance <= rim)] = 2
    fractions = np.bincount(volume.ravel(), minlength=3) / volume.size
    return volume, {"fractions": [float(f) for f in fractions], "rim_voxels": float(rim)}


def _periodic(delta: np.ndarray, size: int) -> np.ndarray:
    """Distance along one axis on a ring of ``size`` (the minimum image)."""
    delta = np.abs(delta) % size
    return np.minimum(delta, size - delta)


def _spaced_points(
    rng: np.random.Generator, wanted: int, dims: int, size: int, spacing: float
) -> np.ndarray:
    """Up to ``wanted`` random voxel positions at least ``spacing`` apart on a periodic
    cube (rejection sampling, a bounded number of tries). Whole voxels, so that every
    sphere or rod is the same digital shape and the spacing holds exactly."""
    points = np.empty((wanted, dims), dtype=np.int64)
    count = 0
    for _ in range(50 * wanted):
        if count == wanted:
            break
        candidate = rng.integers(0, size, dims)
        gaps = _periodic(points[:count] - candidate, size)
        if not count or np.sqrt((gaps**2).sum(1)).min() >= spacing:
            points[count] = candidate
            count += 1
    return points[:count]


SYNTHETIC = {"blobs3": blobs3, "electrode3": electrode3, "spheres2": spheres2, "rods": rods}


# --------------------------------------------------------------------------- training set-up
def training_images(
    truth: np.ndarray, train_on: str, slice_axis: str, slice_index: int | None
) -> list[np.ndarray]:
    """What SliceGAN sees of the truth, oriented as prepare_training_data expects.

    The section ``slice_index`` perpendicular to ``slice_axis`` (isotropic), the three
    middle slices perpendicular to x, y, z in that order (anisotropic), or the volume itself.
    """
    if train_on == "volume":
        return [truth]
    if train_on == "three-slices":
        return [_middle_slice(truth, axis) for axis in AXES_3D]
    return [np.ascontiguousarray(slice_perpendicular(truth, slice_axis, slice_index))]


def check_truth_holds_crops(
    truth: np.ndarray, args: argparse.Namespace, crop: int, preset: str | None
) -> None:
    """The trainer's own message for a too-small image suggests a scale factor, which this
    benchmark cannot take (it compares voxel for voxel); say what can be done here instead."""
    skipped = array_axis(args.slice_axis, 3) if args.train_on == "slice" else None
    edges = [n for index, n in enumerate(truth.shape) if index != skipped]
    if min(edges) >= crop:
        return
    net = f"the {preset} preset" if preset else "this network"
    smallest = PRESETS["tiny"].crop_size
    smaller = f", or a smaller network (--arch tiny trains on {smallest}-pixel crops)"
    raise FidelityError(
        f"the truth is {'x'.join(map(str, truth.shape))} voxels, and {net} trains on "
        f"{crop}-pixel crops: use a truth at least {crop} voxels a side where it is sliced"
        + (smaller if crop > smallest else "")
    )


def resolve_slice_index(truth: np.ndarray, args: argparse.Namespace, crop: int) -> int | None:
    """The section a slice run trains on: ``--slice-index``'s number, "typical" (the section
    whose phases' region sizes rank nearest the median of the truth's sections along the
    axis: what a recipe does from a representative slice, not the one a small volume's
    lottery dealt), or the middle one; None when the run does not train on one slice."""
    if args.train_on != "slice":
        if args.slice_index is not None:
            raise FidelityError("--slice-index needs --train-on slice")
        return None
    if args.slice_index is None:
        return _middle_index(truth, args.slice_axis)
    count = truth.shape[array_axis(args.slice_axis, 3)]
    if args.slice_index == "typical":
        return typical_section(truth, args.slice_axis, np.unique(truth), crop)
    index = int(args.slice_index)
    if not 0 <= index < count:
        raise FidelityError(
            f"--slice-index {index} is outside the truth: it has {count} sections "
            f"perpendicular to {args.slice_axis} (0 to {count - 1})"
        )
    return index


def training_fractions(images: Sequence[np.ndarray]) -> dict[str, float]:
    """Phase fractions of what the model trains on, pooled over its images.

    Why: one slice is a sample of the truth, not the truth; a generator that reproduces
    its training slice exactly is still this far from the truth's fractions (the floor of
    the fraction error for that slice, large for coarse structures in small volumes).
    """
    values, counts = np.unique(
        np.concatenate([image.ravel() for image in images]), return_counts=True
    )
    return {
        label_name(value): round(float(n) / counts.sum(), DIGITS)
        for value, n in zip(values, counts)
    }


def training_region_sizes(
    truth: np.ndarray, images: Sequence[np.ndarray], train_on: str, slice_axis: str, crop: int
) -> dict[str, dict]:
    """Per phase, the size of its regions in the critic's crops of the training images and
    of the truth's sections; for one slice, also where that slice ranks among the truth's
    sections along its axis (``sections``: mean, p10, p90, rank).

    Why: a generator follows its slice, and one slice of a small volume can be far from
    typical: SOFC's middle z-slice has larger phase-1 regions than 57 of the 62
    z-sections (stats/section_clusters.py).
    """
    phases = np.unique(truth)
    pooled = region_size(list(images), phases, crop)
    truth_sizes = region_size(truth, phases, crop)
    spread_of_slice = (
        section_spread(truth, images[0], slice_axis, phases, crop) if train_on == "slice" else {}
    )
    result = {}
    for value in phases:
        entry = {"images": round(pooled[value], DIGITS), "truth": round(truth_sizes[value], DIGITS)}
        if value in spread_of_slice:
            figures = spread_of_slice[value]
            entry["sections"] = {
                key: round(figures[key], DIGITS) for key in ("mean", "p10", "p90", "rank")
            }
        result[label_name(value)] = entry
    return result


def _middle_slice(volume: np.ndarray, axis: str) -> np.ndarray:
    return np.ascontiguousarray(slice_perpendicular(volume, axis, _middle_index(volume, axis)))


def _middle_index(volume: np.ndarray, axis: str) -> int:
    return volume.shape[array_axis(axis, 3)] // 2


#: Named starting points for --recipe; --config and the explicit flags override them.
RECIPES: dict[str, dict] = {
    "microforge": {},  # today's defaults
    # MicroForge until 2026-12-01: free kernels, Adam 1e-4 (0.9, 0.99), DCGAN init, the
    # latest weights exported.
    "before": {
        "transposed_kernels": "free",
        "lr_generator": 1e-4,
        "lr_critic": 1e-4,
        "ema_decay": 0.0,
    },
    # The public SliceGAN code's settings (slicegan/model.py): Adam 1e-4 with betas (0, 0.9),
    # 8 fake volumes per critic step, 32 per generator step, PyTorch's initialisation, free
    # kernels. It also draws 32 real crops per critic step; the trainer draws as many real
    # crops as fake volumes (8).
    "public": {
        "transposed_kernels": "free",
        "init": "pytorch",
        "lr_generator": 1e-4,
        "lr_critic": 1e-4,
        "beta1": 0.0,
        "beta2": 0.9,
        "critic_batch": 8,
        "generator_batch": 32,
        "ema_decay": 0.0,
    },
}


def config_overrides(text: str | None) -> dict:
    """--config as a JSON object, or @file holding one."""
    if not text:
        return {}
    source = "--config"
    if text.startswith("@"):
        source = f"--config file {text[1:]}"
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise FidelityError(f"{source}: {error}") from error
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise FidelityError(f"{source} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise FidelityError(f"{source} must be a JSON object of TrainConfig fields")
    return values


def train_config(args: argparse.Namespace, overrides: dict) -> TrainConfig:
    """TrainConfig from the defaults, then --recipe, then --config, then the explicit flags.

    Fields are passed through generically, so fields the trainer gains later work too;
    TrainConfig forbids unknown fields, and its message is shown as one line.
    """
    merged: dict = {"arch": "tiny", "seed": 0}
    if args.mark_iterations:
        merged["quality_every"] = args.mark_iterations
    merged.update(RECIPES[args.recipe])
    merged.update(overrides)
    explicit = {"arch": args.arch, "seed": args.seed, "quality_every": args.quality_every}
    merged.update({key: value for key, value in explicit.items() if value is not None})
    if args.iterations is not None:
        merged["iterations"] = args.iterations
    elif args.seconds is not None and "iterations" not in overrides:
        merged["iterations"] = MAX_ITERATIONS  # the deadline ends the run
    elif "iterations" not in overrides:
        raise FidelityError("give a budget: --seconds S or --iterations N")
    try:
        config = TrainConfig(**merged)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise FidelityError(f"training config: {_one_line(error)}") from error
    if config.scale_factor != 1.0:
        raise FidelityError(
            "scale_factor must be 1: generated voxels are compared voxel for voxel with the truth"
        )
    if config.image_type not in (None, "nphase"):
        raise FidelityError("image_type must be nphase: the truth is a segmented label volume")
    return config


def _one_line(error: Exception) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        parts = [
            f"{'.'.join(str(p) for p in item['loc']) or 'config'}: {item['msg']}"
            for item in errors()
        ]
        return "; ".join(parts)
    return " ".join(str(error).split())


# --------------------------------------------------------------------------- training in marks
@dataclass
class Budget:
    """How long to train and where to stop and measure; seconds count training only."""

    seconds: float | None = None
    mark_iterations: int | None = None
    mark_seconds: float | None = None


@dataclass
class Mark:
    """Where training stopped to be measured; ``last`` when the budget is spent."""

    index: int
    iteration: int
    train_seconds: float
    seconds_per_iteration: float | None
    last: bool


def train_in_marks(trainer: Trainer, budget: Budget) -> Iterator[Mark]:
    """Train segment by segment; yield after each, when a mark (or the end) is reached.

    The time spent measuring at a mark is not training time: only the time inside
    ``Trainer.run`` is counted, so seconds marks mean seconds of training.
    """
    total = trainer.config.iterations
    trained = 0.0
    next_seconds_mark = budget.mark_seconds
    for index in itertools.count():
        until = total
        if budget.mark_iterations:
            step = budget.mark_iterations
            until = min(total, (trainer.iteration // step + 1) * step)
        limits = []
        if budget.seconds is not None:
            limits.append(budget.seconds - trained)
        if next_seconds_mark is not None:
            limits.append(next_seconds_mark - trained)
        before = trainer.iteration
        started = time.monotonic()
        deadline = started + min(limits) if limits else None
        trainer.run(until=until, deadline=deadline)
        ended = time.monotonic()
        trained += ended - started
        while next_seconds_mark is not None and next_seconds_mark <= trained:
            next_seconds_mark += budget.mark_seconds
        done = trainer.iteration - before
        stopped_early = trainer.iteration < until and (deadline is None or ended <= deadline)
        last = (
            trainer.iteration >= total
            or (budget.seconds is not None and trained >= budget.seconds)
            or stopped_early
        )
        yield Mark(
            index, trainer.iteration, trained, (ended - started) / done if done else None, last
        )
        if last:
            return


# --------------------------------------------------------------------------- measuring
@dataclass
class Context:
    """Everything that stays fixed over the run: truth, training images, options."""

    truth: np.ndarray
    images: list[np.ndarray]
    seeds: list[int]
    device: str
    workers: int | None
    out: Path
    targets: dict
    #: The critic's crop edge: region sizes are measured in crops of that size.
    crop: int
    _truth_stats: dict = field(default_factory=dict)
    #: (iteration, tortuosity) -> (block, volume): the best generator is the latest one of
    #: an earlier iteration, often measured already at an earlier mark.
    measured: dict = field(default_factory=dict)

    def truth_stats(self, tortuosity: bool) -> dict:
        """The truth's statistics, computed once (tortuosity only when first asked for)."""
        if tortuosity not in self._truth_stats:
            self._truth_stats[tortuosity] = self.measure(self.truth, tortuosity)
        return self._truth_stats[tortuosity]

    def measure(self, volume: np.ndarray, tortuosity: bool) -> dict:
        return volume_statistics(
            volume,
            np.unique(self.truth),
            tortuosity,
            workers=self.workers,
            device=self.device,
            crop=self.crop,
        )


#: The orientation of a phase the volume lacks: none to compare.
ROUND = {"anisotropy": None, "angle": None}

#: The figures of ``network_topology`` recorded per phase.
NETWORK_FIGURES = ("tunnels", "share", "other_regions")


def volume_statistics(
    volume: np.ndarray,
    phases: Sequence[int | float],
    tortuosity: bool,
    *,
    workers: int | None,
    device: str,
    crop: int,
) -> dict:
    """The report's statistics, plus each phase's 3D connectivity (stats/euler.py), the
    tunnels of its main network (stats/network.py), its necks (stats/necks.py), the
    size of its regions in ``crop``-pixel crops of the sections (stats/section_clusters.py)
    and the orientation of its features in the sections (stats/orientation.py).

    The report has no connectivity: it compares a volume with its 2D training images, and
    no image shows it. Against a 3D truth it is where to look for a tortuosity gap. ``phases``
    are the truth's labels: a phase the volume lacks gets no entry, as in the statistics.
    """
    stats = microstructure_statistics(
        volume, kind="nphase", tortuosity=tortuosity, workers=workers, device=device
    )
    densities = connectivity_densities(volume, phases)
    networks = network_topology(volume, phases)
    necks = neck_figures(volume, phases)
    sizes = region_size(volume, phases, crop)
    orientations = orientation(volume, phases)
    for value in phases:
        phase = stats["phases"].get(label_name(value))
        if phase is not None:
            phase["connectivity"] = densities[value]
            phase["network"] = networks[value]
            phase["necks"] = necks[value]
            phase["region_size"] = sizes[value]
            phase["orientation"] = orientations[value]
    return stats


def seed_figures(stats: dict, truth_stats: dict, tortuosity: bool) -> dict:
    """The comparison of one volume's statistics with the truth's, per phase.

    Written here rather than taken from compare_with_references because that function
    recomputes the truth's statistics (and tortuosity) every call and has no
    characteristic lengths, relative differences or TPB. A phase missing from the
    volume counts as fraction 0, surface 0 and S2 = 0; a phase that fills the volume has no
    S2 curves in the statistics and S2 = 1 at every lag, so both are S2(r) = f.
    """
    result: dict = {"phases": {}}
    for name, theirs in truth_stats["phases"].items():
        mine = stats["phases"].get(name, {})
        leaning = mine.get("orientation", {})
        fraction = mine.get("volume_fraction", 0.0)
        ssa = mine.get("specific_surface_area", 0.0)
        entry = {
            "fraction": fraction,
            "fraction_delta": fraction - theirs["volume_fraction"],
            "ssa": ssa,
            "ssa_relative": _relative(ssa, theirs["specific_surface_area"]),
            "s2_mae": {},
            "length": {},
            "euler": {a: mine.get("euler_density", {}).get(a, 0.0) for a in AXES_3D},
            "connectivity": mine.get("connectivity", 0.0),
            "network": mine.get("network", dict.fromkeys(NETWORK_FIGURES, 0.0)),
            "necks": mine.get("necks", {"kept": 0.0, "spanning": dict.fromkeys(AXES_3D, 0.0)}),
            "region_size": mine.get("region_size", 0.0),
            "orientation": {
                a: {
                    **leaning.get(a, ROUND),
                    "difference": orientation_difference(
                        leaning.get(a, ROUND), theirs["orientation"][a]
                    ),
                }
                for a in AXES_3D
            },
        }
        for axis in AXES_3D:
            reference = np.asarray(theirs["tpc"][axis])
            curve = mine.get("tpc", {}).get(axis)
            curve = np.full(reference.size, fraction) if curve is None else np.asarray(curve)
            lags = min(reference.size, curve.size)
            entry["s2_mae"][axis] = float(np.abs(curve[:lags] - reference[:lags]).mean())
            entry["length"][axis] = mine.get("characteristic_length", {}).get(axis)
        if tortuosity:
            entry["tau"] = {a: mine.get("tortuosity", {}).get(a) for a in AXES_3D}
            # An absent phase carries nothing: all of it (none) is stagnant.
            entry["stagnant"] = {a: mine.get("stagnant_share", {}).get(a, 1.0) for a in AXES_3D}
        result["phases"][name] = entry
    if "triple_phase_boundary_density" in truth_stats:
        result["tpb"] = stats.get("triple_phase_boundary_density", 0.0)
    return result


def _relative(value: float | None, truth: float | None) -> float | None:
    if value is None or truth is None or truth == 0:
        return None
    return (value - truth) / truth


def spread(values: Sequence[float | None]) -> dict | None:
    """Mean and sample standard deviation over seeds (0 for one seed); None if none has it.

    ``missing`` says how many seeds had no value (e.g. no characteristic length).
    """
    numbers = [float(v) for v in values if v is not None]
    if not numbers:
        return None
    result = {
        "mean": float(np.mean(numbers)),
        "std": float(np.std(numbers, ddof=1)) if len(numbers) > 1 else 0.0,
    }
    if len(numbers) < len(values):
        result["missing"] = len(values) - len(numbers)
    return result


def aggregate(per_seed: list[dict], truth_stats: dict, tortuosity: bool) -> dict:
    """Per-phase figures over the seeds: the value, the truth, and the differences."""
    phases = {}
    for name, theirs in truth_stats["phases"].items():
        seeds = [figures["phases"][name] for figures in per_seed]
        entry = {
            "volume_fraction": {
                "value": spread([s["fraction"] for s in seeds]),
                "truth": theirs["volume_fraction"],
                "abs_difference_points": spread([100 * abs(s["fraction_delta"]) for s in seeds]),
                "relative_difference": spread(
                    [_relative(s["fraction"], theirs["volume_fraction"]) for s in seeds]
                ),
            },
            "specific_surface_area": {
                "value": spread([s["ssa"] for s in seeds]),
                "truth": theirs["specific_surface_area"],
                "relative_difference": spread([s["ssa_relative"] for s in seeds]),
            },
            "s2_mae": {a: spread([s["s2_mae"][a] for s in seeds]) for a in AXES_3D},
            "characteristic_length": {
                a: {
                    "value": spread([s["length"][a] for s in seeds]),
                    "truth": theirs["characteristic_length"].get(a),
                }
                for a in AXES_3D
            },
            # Regions minus holes per area of the sections: particles against labyrinths,
            # which fraction, SSA and S2 do not tell apart (stats/euler.py).
            "euler_density": {
                a: {
                    "value": spread([s["euler"][a] for s in seeds]),
                    "truth": theirs["euler_density"][a],
                }
                for a in AXES_3D
            },
            # Euler characteristic per voxel in 3D: tunnels, which no section shows and
            # the tortuosity depends on (stats/euler.py, connectivity_densities).
            "connectivity": {
                "value": spread([s["connectivity"] for s in seeds]),
                "truth": theirs["connectivity"],
            },
            # The same count without the specks: tunnels through the phase's largest
            # region, which carries the current, and the regions apart from it.
            "network": {
                key: {
                    "value": spread([s["network"][key] for s in seeds]),
                    "truth": theirs["network"][key],
                }
                for key in NETWORK_FIGURES
            },
            # How wide its paths are at their narrowest: the share of the phase left by an
            # opening that removes one-voxel necks, and the share of it still crossing.
            "necks": {
                "kept": {
                    "value": spread([s["necks"]["kept"] for s in seeds]),
                    "truth": theirs["necks"]["kept"],
                },
                "spanning": {
                    a: {
                        "value": spread([s["necks"]["spanning"][a] for s in seeds]),
                        "truth": theirs["necks"]["spanning"][a],
                    }
                    for a in AXES_3D
                },
            },
            # How large its regions look in the crops the critic sees (stats/
            # section_clusters.py): a generator follows its training slice here.
            "region_size": {
                "value": spread([s["region_size"] for s in seeds]),
                "truth": theirs["region_size"],
            },
            # Whether its features lean one way in the sections, at any angle, where S2
            # along the axes sees round ones (stats/orientation.py): the anisotropy, each
            # seed's angle, and the distance of the two orientations.
            "orientation": {
                a: {
                    "anisotropy": spread([s["orientation"][a]["anisotropy"] for s in seeds]),
                    "angles": [s["orientation"][a]["angle"] for s in seeds],
                    "truth": theirs["orientation"][a],
                    "difference": spread([s["orientation"][a]["difference"] for s in seeds]),
                }
                for a in AXES_3D
            },
        }
        if tortuosity:
            entry["tortuosity"] = {
                a: _tortuosity_figure([s["tau"][a] for s in seeds], theirs["tortuosity"][a])
                for a in AXES_3D
            }
            # The share of the phase the flow leaves alone (dead ends, specks): counted in
            # tau's fraction, not in its flow, so fewer of them is an easier phase to cross
            # with paths as long as the truth's (stats/tortuosity.py).
            entry["stagnant_share"] = {
                a: {
                    "value": spread([s["stagnant"][a] for s in seeds]),
                    "truth": theirs["stagnant_share"][a],
                }
                for a in AXES_3D
            }
        phases[name] = entry
    result: dict = {"phases": phases}
    if "triple_phase_boundary_density" in truth_stats:
        truth_tpb = truth_stats["triple_phase_boundary_density"]
        result["tpb_density"] = {
            "value": spread([s["tpb"] for s in per_seed]),
            "truth": truth_tpb,
            "relative_difference": spread([_relative(s["tpb"], truth_tpb) for s in per_seed]),
        }
    return result


def _tortuosity_figure(values: list[float | None], truth: float | None) -> dict:
    """Tortuosity over the seeds whose phase percolates; non-percolation said in words."""
    flowing = [v for v in values if v is not None]
    return {
        "value": spread(flowing) if flowing else NOT_PERCOLATING,
        "truth": NOT_PERCOLATING if truth is None else truth,
        "percolating_seeds": f"{len(flowing)}/{len(values)}",
        "relative_difference": spread([_relative(v, truth) for v in flowing]) if truth else None,
    }


def check_targets(per_seed: list[dict], truth_stats: dict, limits: dict) -> dict:
    """Pass/fail of each target, on the mean over seeds of each volume's absolute error.

    Fraction: within ``fraction_points`` points AND ``fraction_relative`` of the truth's
    fraction; SSA within ``ssa_relative``; S2 MAE within ``s2_mae`` on every phase and axis;
    tortuosity within ``tortuosity_relative`` wherever the truth percolates (a generated
    phase that does not percolate there fails). ``worst`` says which phase (and axis) came
    closest to failing, or failed by most (for fractions: the larger of its two errors as
    a share of its limit).
    """
    phases = truth_stats["phases"]

    def seed_mean(name: str, get) -> float | None:
        values = [get(figures["phases"][name]) for figures in per_seed]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    fraction = {"pass": True, "worst": {"share_of_limit": -1.0}}
    ssa = {"pass": True, "worst": {"relative": -1.0}}
    s2 = {"pass": True, "worst": {"mae": -1.0}}
    for name, theirs in phases.items():
        points = seed_mean(name, lambda s: 100 * abs(s["fraction_delta"]))
        relative = points / 100 / theirs["volume_fraction"]
        share = max(points / limits["fraction_points"], relative / limits["fraction_relative"])
        fraction["pass"] &= share <= 1.0
        if share > fraction["worst"]["share_of_limit"]:
            fraction["worst"] = {
                "points": points,
                "relative": relative,
                "share_of_limit": share,
                "phase": name,
            }
        error = seed_mean(name, lambda s: _absolute(s["ssa_relative"]))
        if error is not None:
            ssa["pass"] &= error <= limits["ssa_relative"]
            if error > ssa["worst"]["relative"]:
                ssa["worst"] = {"relative": error, "phase": name}
        for axis in AXES_3D:
            mae = seed_mean(name, lambda s, axis=axis: s["s2_mae"][axis])
            s2["pass"] &= mae <= limits["s2_mae"]
            if mae > s2["worst"]["mae"]:
                s2["worst"] = {"mae": mae, "phase": name, "axis": axis}
    result = {
        "fraction": fraction,
        "ssa": ssa,
        "s2": s2,
        "tortuosity": _check_tortuosity(per_seed, phases, limits),
    }
    result["all"] = all(c["pass"] for c in result.values() if c["pass"] is not None)
    return result


def _absolute(value: float | None) -> float | None:
    return None if value is None else abs(value)


def _check_tortuosity(per_seed: list[dict], phases: dict, limits: dict) -> dict:
    if any("tortuosity" not in phase for phase in phases.values()):
        return {"pass": None, "note": "not measured at this mark (--tortuosity)"}
    worst = None
    not_percolating = []
    passed = True
    for name, theirs in phases.items():
        for axis in AXES_3D:
            truth = theirs["tortuosity"][axis]
            if truth is None:
                continue  # the truth does not percolate here: nothing to match
            values = [figures["phases"][name]["tau"][axis] for figures in per_seed]
            if any(v is None for v in values):
                not_percolating.append(f"{name}/{axis}")
                passed = False
                continue
            error = float(np.mean([abs(v - truth) / truth for v in values]))
            passed &= error <= limits["tortuosity_relative"]
            if worst is None or error > worst["relative"]:
                worst = {"relative": error, "phase": name, "axis": axis}
    return {"pass": passed, "worst": worst, "generated_not_percolating": not_percolating}


def seed_diversity(volumes: list[np.ndarray], phases: list[str]) -> dict | None:
    """Diversity across seeds, mean (and spread) over pairs of seeds: ``quality.diversity``
    (what the trainer records for its softmax output) on the one-hot volumes, about 1 for
    independent samples whatever the fractions and 0 for one volume repeated."""
    if len(volumes) < 2:
        return None
    values = [int(p) for p in phases]

    def one_hot(volume: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([(volume == v) for v in values]).astype(np.float32))

    pairs = itertools.combinations(volumes, 2)
    return spread([diversity(one_hot(first), one_hot(second)) for first, second in pairs])


def report_verdicts(volumes: list[np.ndarray], stats: list[dict], images: list[np.ndarray]) -> dict:
    """The report's verdict of each volume against the training images (what a user sees),
    with the three errors it is made of (the Euler error: none for greyscale)."""
    verdicts, fraction_errors, s2_errors, euler_errors, errors = [], [], [], [], []
    for volume, volume_stats in zip(volumes, stats):
        try:
            summary = compare_with_references(volume, images, volume_stats=volume_stats)["summary"]
        except ValueError as error:  # e.g. a phase of the training images is missing
            verdicts.append(None)
            errors.append(" ".join(str(error).split()))
            continue
        verdicts.append(summary["verdict"])
        fraction_errors.append(summary["fraction_error"])
        s2_errors.append(summary["s2_error"])
        euler_errors.append(summary.get("euler_error"))
    result = {
        "verdict": _most_common(verdicts),
        "verdicts": verdicts,
        "fraction_error": spread(fraction_errors),
        "s2_error": spread(s2_errors),
        "euler_error": spread(euler_errors),
    }
    if errors:
        result["errors"] = sorted(set(errors))
    return result


#: The targets whose figures the report's verdict can see in 2D images: fractions, and the
#: S2 curves whose slope at 0 is the interface density. Tortuosity is 3D connectivity,
#: which no slice shows.
SEEN_BY_THE_REPORT = ("fraction", "ssa", "s2")


def verdict_agreement(verdict: str | None, targets: dict) -> dict:
    """Whether the report's verdict says what the truth says (issue #12: "if a generator
    the report calls good is off by 10 points in a fraction, the report is wrong"). A
    "good" volume must meet the targets the report can see (``SEEN_BY_THE_REPORT``); a
    "poor" one must miss some target; "fair" agrees either way. A missed tortuosity under
    "good" is listed as unseen, not counted as a disagreement. ``agrees`` None: no verdict
    (the report could not compare), or "poor" where every target measured is met but one
    was not measured (tortuosity off)."""
    checks = {name: check["pass"] for name, check in targets.items() if name != "all"}
    failed = [name for name, passed in checks.items() if passed is False]
    seen = [name for name in failed if name in SEEN_BY_THE_REPORT]
    if verdict is None:
        agrees = None
    elif verdict == "good":
        agrees = not seen
    elif verdict == "poor":
        agrees = True if failed else (None if None in checks.values() else False)
    else:
        agrees = True
    return {
        "agrees": agrees,
        "failed_seen": seen,
        "failed_unseen": [name for name in failed if name not in SEEN_BY_THE_REPORT],
    }


def _most_common(verdicts: list[str | None]) -> str | None:
    """The most frequent verdict; a tie goes to the worse one."""
    order = {"poor": 0, "fair": 1, "good": 2}
    present = [v for v in verdicts if v is not None]
    if not present:
        return None
    counts = collections.Counter(present)
    return min(counts, key=lambda v: (-counts[v], order.get(v, -1)))


def trainer_check(trainer: Trainer, which: str) -> dict | None:
    """The trainer's own cheap fidelity check of that generator (its last one for latest;
    none for raw, which the trainer does not check)."""
    if which == "raw":
        return None
    if which == "best" and trainer.best is not None:
        record = trainer.best
    elif trainer.quality_history:
        record = trainer.quality_history[-1]
    else:
        return None
    return {k: record.get(k) for k in ("iteration", "score", "diversity")}


def evaluate_generator(
    context: Context, trainer: Trainer, which: str, tortuosity: bool
) -> tuple[dict, np.ndarray]:
    """Export one generator, generate truth-sized volumes from every seed, measure them.

    Returns the record block and the first seed's volume (for the slices picture). The
    same weights are measured once: a best kept from an iteration measured before reuses
    that measurement (and its file).
    """
    iteration = trainer.best["iteration"] if which == "best" else trainer.iteration
    key = (which == "raw", iteration, tortuosity)  # best and latest are both sampling weights
    if key in context.measured:
        block, volume = context.measured[key]
        return {**block, "trainer_check": trainer_check(trainer, which)}, volume
    path = context.out / "generators" / f"{which}-{iteration:08d}.safetensors"
    trainer.export_generator(path, which=which)
    loaded = load_generator(path, context.device)
    truth_stats = context.truth_stats(tortuosity)  # once, and not in measure_seconds
    started = time.perf_counter()
    volumes = [
        generate_array(loaded, context.truth.shape, seed=seed, chunk=None) for seed in context.seeds
    ]
    generated = time.perf_counter()
    stats = [context.measure(volume, tortuosity) for volume in volumes]
    per_seed = [seed_figures(s, truth_stats, tortuosity) for s in stats]
    block = {
        "iteration": iteration,
        "file": str(path),
        "trainer_check": trainer_check(trainer, which),
        "report": report_verdicts(volumes, stats, context.images),
        "diversity": seed_diversity(volumes, list(truth_stats["phases"])),
        **aggregate(per_seed, truth_stats, tortuosity),
        "targets": check_targets(per_seed, truth_stats, context.targets),
        "generate_seconds": generated - started,
        "measure_seconds": time.perf_counter() - generated,
    }
    block["report"]["agreement"] = verdict_agreement(block["report"]["verdict"], block["targets"])
    context.measured[key] = block, volumes[0]
    return block, volumes[0]


def generators_to_measure(trainer: Trainer, raw: bool = False) -> list[str]:
    """latest, best when the trainer kept a best that is not the latest state, and with
    ``raw`` the training weights themselves when latest is their moving average."""
    which = ["latest"]
    if trainer.best is not None and trainer.best["iteration"] != trainer.iteration:
        which.append("best")
    if raw and trainer.average is not None:
        which.append("raw")
    return which


# --------------------------------------------------------------------------- output
def truth_summary(stats: dict) -> dict:
    """The truth's headline statistics, without the S2 curves."""
    result = {
        name: {
            "volume_fraction": phase["volume_fraction"],
            "specific_surface_area": phase["specific_surface_area"],
            "characteristic_length": phase["characteristic_length"],
        }
        for name, phase in stats["phases"].items()
    }
    if "triple_phase_boundary_density" in stats:
        return {"phases": result, "tpb_density": stats["triple_phase_boundary_density"]}
    return {"phases": result}


def summary_table(marks: list[dict]) -> str:
    """Per mark and generator: the figures a person scans to see where training went."""
    header = (
        f"{'mark':>4} {'gen':<6} {'iter':>7} {'train s':>8}  {'fraction err (points)':<24}"
        f"{'SSA rel err':<24}{'S2 MAE max':>10} {'divers.':>7} {'verdict':<11} targets"
    )
    lines = [header]
    for record in marks:
        for which, block in record["generators"].items():
            phases = block["phases"]
            fractions = " ".join(
                f"{n}:{_mean(p['volume_fraction']['abs_difference_points']):.1f}"
                for n, p in phases.items()
            )
            ssa = " ".join(
                f"{n}:{_mean(p['specific_surface_area']['relative_difference']):+.2f}"
                for n, p in phases.items()
            )
            s2 = max(_mean(p["s2_mae"][a]) for p in phases.values() for a in AXES_3D)
            div = block["diversity"]["mean"] if block["diversity"] else float("nan")
            checks = block["targets"]
            passed = " ".join(
                f"{k}:{'ok' if c['pass'] else ('-' if c['pass'] is None else 'FAIL')}"
                for k, c in checks.items()
                if k != "all"
            )
            lines.append(
                f"{record['mark']:>4} {which:<6} {block['iteration']:>7} "
                f"{record['train_seconds']:>8.1f}  {fractions:<24}{ssa:<24}{s2:>10.4f} "
                f"{div:>7.3f} {_verdict_text(block['report']):<11} {passed}"
            )
    return "\n".join(lines)


def _verdict_text(report: dict) -> str:
    """The report's verdict, marked "!" where the truth contradicts it (``verdict_agreement``)."""
    if report["verdict"] is None:
        return "n/a"
    agreement = report.get("agreement") or {}
    return report["verdict"] + (" !" if agreement.get("agrees") is False else "")


def tortuosity_table(marks: list[dict]) -> str | None:
    """Where tortuosity was measured: each phase's error along x / y / z against the truth,
    and the share of it that carries no flow beside the truth's (the dead ends that made
    the difference in every run so far, docs/benchmarks.md "Dead ends"). None otherwise."""
    lines = [
        f"{'mark':>4} {'gen':<6} {'phase':<6} {'tortuosity rel err x / y / z':<30}"
        "no flow x / y / z (truth)"
    ]
    for record in marks:
        for which, block in record["generators"].items():
            for name, phase in block["phases"].items():
                if "tortuosity" not in phase:
                    continue
                errors = " / ".join(_tortuosity_error(phase["tortuosity"][a]) for a in AXES_3D)
                stagnant = phase["stagnant_share"]
                shares = " / ".join(f"{_mean(stagnant[a]['value']):.2f}" for a in AXES_3D)
                truths = " / ".join(f"{stagnant[a]['truth']:.2f}" for a in AXES_3D)
                lines.append(
                    f"{record['mark']:>4} {which:<6} {name:<6} {errors:<30}{shares} ({truths})"
                )
    return "\n".join(lines) if len(lines) > 1 else None


def _tortuosity_error(figure: dict) -> str:
    """'-34 %', or why there is no error: one side does not percolate."""
    if figure["value"] == NOT_PERCOLATING:
        return "none flows"
    if figure["relative_difference"] is None:
        return "truth none"
    return f"{100 * figure['relative_difference']['mean']:+.0f} %"


def _mean(figure: dict | None) -> float:
    return float("nan") if figure is None else figure["mean"]


def draw_slices(path: Path, truth: np.ndarray, volumes: dict[str, np.ndarray]) -> None:
    """Middle slices along x, y and z of the truth and of each generated volume."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    phases = np.unique(truth)
    colours = [f"C{i % 10}" for i in range(len(phases))]
    rows = [("truth", truth), *volumes.items()]
    figure = Figure(figsize=(9, 3 * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for row, (name, volume) in enumerate(rows):
        for column, axis in enumerate(AXES_3D):
            image = np.searchsorted(phases, _middle_slice(volume, axis))
            panel = figure.add_subplot(len(rows), 3, row * 3 + column + 1)
            panel.imshow(
                image,
                cmap=ListedColormap(colours),
                vmin=-0.5,
                vmax=len(phases) - 0.5,
                interpolation="nearest",
            )
            cols, rows_axis = SLICE_PLANE_AXES[axis]
            panel.set_title(f"{name}, ⊥ {axis} (rows {rows_axis}, cols {cols})", fontsize=8)
            panel.set_xticks([])
            panel.set_yticks([])
    handles = [Patch(color=c, label=f"phase {label_name(v)}") for c, v in zip(colours, phases)]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(phases), fontsize=8)
    figure.savefig(path, format="png")


class Output:
    """Each record as one JSON line on stdout and in DIR/marks.jsonl, as it happens."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")

    def write(self, record: dict) -> None:
        line = json.dumps(rounded(record, DIGITS))
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# --------------------------------------------------------------------------- main
def _slice_index(text: str) -> str:
    if text == "typical" or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a section number (0, 1, ...) nor 'typical'"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--truth", type=Path, help="3D label TIFF stack (z, y, x)")
    source.add_argument("--synthetic", choices=sorted(SYNTHETIC), help="a truth made here")
    parser.add_argument("--synthetic-size", type=int, default=64, help="edge of the cube")
    parser.add_argument("--train-on", choices=("slice", "three-slices", "volume"), default="slice")
    parser.add_argument("--slice-axis", choices=AXES_3D, default="z", help="for --train-on slice")
    parser.add_argument(
        "--slice-index",
        type=_slice_index,
        help="for --train-on slice: which section along --slice-axis (0-based; default the "
        "middle one), or 'typical': the one whose region sizes rank nearest the median of "
        "the truth's sections",
    )
    parser.add_argument("--arch", help="a TrainConfig preset (default tiny)")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="microforge",
        help="named settings to start from: microforge (today's defaults), before (until "
        "2026-12-01), public (the public SliceGAN code's)",
    )
    parser.add_argument("--config", help="TrainConfig fields as JSON, or @file.json")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="training wall-clock budget")
    budget.add_argument("--iterations", type=int, help="training iterations")
    marks = parser.add_mutually_exclusive_group()
    marks.add_argument("--mark-seconds", type=float, help="measure every S training seconds")
    marks.add_argument("--mark-iterations", type=int, help="measure every N iterations")
    parser.add_argument(
        "--quality-every",
        type=int,
        help="the trainer's own fidelity check interval (default: --mark-iterations, else "
        "TrainConfig's); it also decides which generator is the best",
    )
    parser.add_argument("--seeds", type=int, default=3, help="volumes per mark and generator")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="also measure the training weights themselves (generator 'raw') where the "
        "recipe samples from their moving average: what the average changes",
    )
    parser.add_argument("--tortuosity", choices=("none", "final", "all"), default="final")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads and stats workers")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary one)")
    parser.add_argument("--seed", type=int, help="training seed (default 0)")
    parser.add_argument("--label", default="", help="free text stored in every record")
    for name, default in DEFAULT_TARGETS.items():
        parser.add_argument(f"--target-{name.replace('_', '-')}", type=float, default=default)
    args = parser.parse_args(argv)
    for name in ("seconds", "mark_seconds", "iterations", "mark_iterations", "seeds", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.synthetic_size < 8:
        parser.error("--synthetic-size must be at least 8")
    return args


def default_marks(args: argparse.Namespace, config: TrainConfig) -> Budget:
    """Marks as asked, else at every quarter of the budget."""
    budget = Budget(args.seconds, args.mark_iterations, args.mark_seconds)
    if budget.mark_iterations is None and budget.mark_seconds is None:
        if args.seconds is not None:
            budget.mark_seconds = args.seconds / 4
        else:
            budget.mark_iterations = max(1, config.iterations // 4)
    return budget


def load_truth(args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    if args.truth is not None:
        return read_truth(args.truth), {"source": str(args.truth)}
    volume, known = SYNTHETIC[args.synthetic](args.synthetic_size)
    return volume, {"source": f"synthetic:{args.synthetic}", "seed": SYNTHETIC_SEED, "known": known}


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    config = train_config(args, config_overrides(args.config))
    truth, truth_info = load_truth(args)
    crop = config.network_config().crop_size
    check_truth_holds_crops(truth, args, crop, config.arch if config.network is None else None)
    slice_index = resolve_slice_index(truth, args, crop)
    images = training_images(truth, args.train_on, args.slice_axis, slice_index)
    try:
        data: TrainingData = prepare_training_data(images, "nphase")
        trainer = Trainer(data, config, str(device))
    except (DataError, ConfigError) as error:
        raise FidelityError(str(error)) from error
    out = args.out or Path(tempfile.mkdtemp(prefix="microforge-fidelity-"))
    out.mkdir(parents=True, exist_ok=True)
    targets = {name: getattr(args, f"target_{name}") for name in DEFAULT_TARGETS}
    context = Context(
        truth=truth,
        images=data.as_images(),
        seeds=list(range(args.seeds)),
        device=device.type,
        workers=args.threads,
        out=out,
        targets=targets,
        crop=crop,
    )
    budget = default_marks(args, config)
    output = Output(out / "marks.jsonl")
    label = args.label
    try:
        output.write(
            {
                "machine": machine_info(device),
                "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                "record": "start",
                "label": label,
                "out": str(out),
                "truth": {
                    **truth_info,
                    "shape": list(truth.shape),
                    "dtype": str(truth.dtype),
                    **truth_summary(context.truth_stats(False)),
                },
                "training": {
                    "train_on": args.train_on,
                    "slice_axis": args.slice_axis if args.train_on == "slice" else None,
                    "slice_index": slice_index,
                    "layout": data.layout,
                    "image_shapes": [list(image.shape) for image in images],
                    "image_fractions": training_fractions(images),
                    "region_size": training_region_sizes(
                        truth, images, args.train_on, args.slice_axis, context.crop
                    ),
                },
                "recipe": args.recipe,
                "config": config.model_dump(mode="json"),
                "budget": vars(budget),
                "seeds": context.seeds,
                "tortuosity": args.tortuosity,
                "targets": targets,
            }
        )
        marks, last_volumes = [], {}
        for mark in train_in_marks(trainer, budget):
            tortuosity = args.tortuosity == "all" or (args.tortuosity == "final" and mark.last)
            record = {
                "record": "mark",
                "label": label,
                "mark": mark.index,
                "iteration": mark.iteration,
                "train_seconds": mark.train_seconds,
                "seconds_per_iteration": mark.seconds_per_iteration,
                "generators": {},
            }
            last_volumes = {}
            for which in generators_to_measure(trainer, args.raw):
                block, volume = evaluate_generator(context, trainer, which, tortuosity)
                record["generators"][which] = block
                last_volumes[which] = volume
            output.write(record)
            marks.append(record)
        draw_slices(out / "slices.png", truth, last_volumes)
        final = marks[-1]
        output.write(
            {
                "record": "summary",
                "label": label,
                "marks": len(marks),
                "iterations": final["iteration"],
                "train_seconds": final["train_seconds"],
                "mean_seconds_per_iteration": final["train_seconds"] / max(final["iteration"], 1),
                "png": str(out / "slices.png"),
                "targets": {
                    "limits": targets,
                    **{which: block["targets"] for which, block in final["generators"].items()},
                },
                "report_agreement": {
                    which: block["report"]["agreement"]
                    for which, block in final["generators"].items()
                },
            }
        )
    finally:
        output.close()
    print(summary_table(marks), file=sys.stderr)
    tortuosity = tortuosity_table(marks)
    if tortuosity:
        print(tortuosity, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (FidelityError, TrainingError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
