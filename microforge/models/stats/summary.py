"""All statistics of one image or volume, as plain JSON-ready dictionaries."""

from __future__ import annotations

import numpy as np

from microforge.models.stats.boundaries import triple_phase_boundary_density
from microforge.models.stats.correlation import characteristic_length, phase_correlations
from microforge.models.stats.euler import euler_densities
from microforge.models.stats.greyscale import greyscale_statistics
from microforge.models.stats.phases import label_counts, label_name
from microforge.models.stats.surface import specific_surface_areas

#: Up to this many distinct integer values an array is taken for segmented phases
#: (the same rule as the training-data detection).
MAX_AUTO_PHASES = 8


def detect_kind(array: np.ndarray, counts: dict[int | float, int] | None = None) -> str:
    """'nphase' for integer arrays with few distinct values, else 'grayscale'.

    ``counts`` (from ``label_counts``) saves counting the labels a second time.
    """
    if array.dtype.kind not in "uib":
        return "grayscale"
    if counts is None:
        counts = label_counts(array)
    return "nphase" if len(counts) <= MAX_AUTO_PHASES else "grayscale"


def microstructure_statistics(
    array: np.ndarray,
    *,
    kind: str | None = None,
    voxel_size: float | None = None,
    tortuosity: bool = True,
    max_lag: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    unit: str | None = None,
) -> dict:
    """Statistics of a (y, x) image or (z, y, x) volume; see docs of each measure.

    Lengths (characteristic lengths) are in voxels, surface densities in 1/voxel, unless
    ``voxel_size`` is given, then in its unit (``unit`` names it). S2 curves are listed per
    lag 0, 1, 2, ... voxels. Tortuosity is computed for 3D volumes only, and only when
    ``tortuosity``; it needs taufactor (PyTorch), imported only then, so that a process
    without torch (the API) can compute everything else. ``workers`` caps the threads
    (default: all CPUs).
    """
    if array.ndim not in (2, 3):
        raise ValueError(
            f"expected a 2D image or a 3D volume, got shape {array.shape}; "
            "colour images must be segmented or converted to greyscale first"
        )
    if voxel_size is not None and not voxel_size > 0:
        raise ValueError(f"voxel size must be positive, got {voxel_size}")
    labelled = kind == "nphase" or (kind is None and array.dtype.kind in "uib")
    counts = label_counts(array) if labelled else None
    kind = kind or detect_kind(array, counts)
    base = {
        "kind": kind,
        "shape": list(array.shape),
        "voxel_size": voxel_size,
        "length_unit": "voxel" if voxel_size is None else (unit or "voxel_size unit"),
    }
    if kind == "grayscale":
        stats = greyscale_statistics(array, max_lag=max_lag, workers=workers)
        if voxel_size is not None:
            stats["characteristic_length"] = _scaled(stats["characteristic_length"], voxel_size)
        return base | {"grayscale": stats}
    if kind != "nphase":
        raise ValueError(f"unknown kind {kind!r}: use 'nphase' or 'grayscale'")
    return base | _phase_statistics(
        array, counts or label_counts(array), voxel_size, tortuosity, max_lag, device, workers
    )


def _phase_statistics(
    labels: np.ndarray,
    counts: dict[int | float, int],
    voxel_size: float | None,
    tortuosity: bool,
    max_lag: int | None,
    device: str | None,
    workers: int | None,
) -> dict:
    phases = sorted(counts)
    if len(phases) > 2 * MAX_AUTO_PHASES:
        raise ValueError(
            f"the array has {len(phases)} distinct values, too many for phases: "
            "segment it first or treat it as greyscale"
        )
    fractions = {v: counts[v] / labels.size for v in phases}
    surfaces = (
        specific_surface_areas(labels, phases, voxel_size=voxel_size, workers=workers)
        if len(phases) > 1
        else {phases[0]: 0.0}
    )
    curves = (
        phase_correlations(labels, phases, max_lag=max_lag, workers=workers)
        if len(phases) > 1
        else {}
    )
    eulers, dispersions = euler_densities(labels, phases, voxel_size=voxel_size)
    result: dict = {"phases": {}}
    for index, value in enumerate(phases):
        entry = {
            "volume_fraction": fractions[value],
            "specific_surface_area": surfaces[value],
            "tpc": {axis: curve[index].tolist() for axis, curve in curves.items()},
            "characteristic_length": _scaled(
                {a: characteristic_length(c[index], fractions[value]) for a, c in curves.items()},
                voxel_size,
            ),
            "euler_density": eulers[value],
            "euler_dispersion": dispersions[value],
        }
        if tortuosity and labels.ndim == 3:
            from microforge.models.stats.tortuosity import phase_tortuosity

            solved = phase_tortuosity(labels, value, device=device)
            entry["tortuosity"] = {a: r.tortuosity for a, r in solved.items()}
            entry["effective_diffusivity"] = {a: r.effective_diffusivity for a, r in solved.items()}
            entry["percolates"] = {a: r.percolates for a, r in solved.items()}
            entry["stagnant_share"] = {a: r.stagnant_share for a, r in solved.items()}
            entry["tortuosity_converged"] = all(r.converged for r in solved.values())
        result["phases"][label_name(value)] = entry
    if len(phases) == 3:
        result["triple_phase_boundary_density"] = triple_phase_boundary_density(
            labels, phases, voxel_size=voxel_size, workers=workers
        )
    return result


def _scaled(lengths: dict, voxel_size: float | None) -> dict:
    if voxel_size is None:
        return lengths
    return {axis: None if v is None else v * voxel_size for axis, v in lengths.items()}
