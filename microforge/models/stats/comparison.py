"""Side-by-side statistics of a generated volume and its training image(s).

Reference layouts: one 2D image (isotropic) is compared with the slices perpendicular to
every axis; three 2D images are perpendicular to x, y and z in that order (image i is the
training image of axis i); a 3D reference is compared in 3D (fractions, surface areas, S2
per axis, tortuosity) and through its slices. Slices follow ``axes``: a 2D reference's S2
along its columns (image x) is compared with the volume's S2 along the first in-plane axis
of the slice and along its rows (image y) with the second, e.g. for slices perpendicular to
x, columns = y and rows = z. Volume S2 along an axis averages over every line along it,
which is exactly the S2 of the stack of slices containing that axis, so no slice is cut.

How the verdict's errors are measured is ``agreement.py`` (shared with the trainer's
fidelity score): the volume's one fraction per phase against the images' pooled fraction
(``phases[p]["fraction"]``), S2 per axis through the normalised autocovariance
(``tpc[d]["s2_error"]``), and for phases the Euler number per area of the sections
(regions minus holes: particles against labyrinths, which S2 does not tell apart;
``euler.py``) per axis in units of the image's n* (``slices[a]["euler_density"]``),
thresholds widened by the sampling uncertainties. The per-axis slice fractions, raw S2
curves and perimeters are reported beside it, outside the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from microforge.models.stats.agreement import (
    combined,
    euler_error,
    euler_term,
    integral_range_along,
    one_image_per_axis,
    pooled_uncertainty,
    s2_error,
    s2_uncertainty,
    sampling_error,
)
from microforge.models.stats.axes import AXES_3D, SLICE_PLANE_AXES, array_axis, axis_names
from microforge.models.stats.correlation import lag_for
from microforge.models.stats.euler import IMAGE_KEY, dispersion_samples, measured_area
from microforge.models.stats.phases import label_counts
from microforge.models.stats.summary import microstructure_statistics
from microforge.models.stats.surface import slice_perimeters
from microforge.models.stats.verdict import THRESHOLDS, thresholds, verdict

AXIS_CONVENTION = (
    "arrays are (z, y, x); 'x' is the last axis. Three reference images are perpendicular "
    "to x, y, z in that order. A slice perpendicular to x has rows along z and columns "
    "along y; perpendicular to y: rows z, columns x; perpendicular to z: rows y, columns x."
)


def compare_with_references(
    volume: np.ndarray,
    references: Sequence[np.ndarray],
    *,
    volume_stats: dict | None = None,
    voxel_size: float | None = None,
    tortuosity: bool = False,
    max_lag: int | None = None,
) -> dict:
    """Compare a (z, y, x) volume with 1 or 3 2D training images or one 3D reference.

    ``volume_stats`` (from ``microstructure_statistics``) avoids recomputing the volume's
    statistics. Phases are matched by their original values; when the two sets of values
    differ but have the same size they are matched in sorted order (and the result says so).

    A phase of the reference that the volume lacks (usual for a young or collapsed
    generator) is compared as a phase of fraction 0, surface 0 and S2 = 0 at every lag,
    without characteristic length or tortuosity; a phase of the volume that the reference
    lacks is compared with such an empty phase of the reference. Both count in the errors
    and the verdict, and ``summary`` names them: ``missing_phases`` (in the reference, not
    in the volume) and ``extra_phases`` (in the volume, not in the reference of every axis).
    Sets of values that share none and differ in size cannot be matched: ``ValueError``.
    """
    if volume.ndim != 3:
        raise ValueError(f"the volume must be 3D (z, y, x), got shape {volume.shape}")
    layout = _layout(references)
    stats = volume_stats or microstructure_statistics(
        volume, voxel_size=voxel_size, tortuosity=tortuosity, max_lag=max_lag
    )
    kind = stats["kind"]
    reference_stats = [
        microstructure_statistics(
            r, kind=kind, voxel_size=voxel_size, tortuosity=tortuosity, max_lag=max_lag
        )
        for r in references
    ]
    per_axis = _per_axis(references, reference_stats)
    base = {"layout": layout, "axis_convention": AXIS_CONVENTION}
    if kind == "grayscale":
        return base | _compare_greyscale(stats, per_axis)
    return base | _compare_phases(volume, stats, per_axis, voxel_size, max_lag)


def _layout(references: Sequence[np.ndarray]) -> str:
    dims = [r.ndim for r in references]
    if dims == [2]:
        return "isotropic"
    if dims == [2, 2, 2]:
        return "anisotropic"
    if dims == [3]:
        return "volume"
    raise ValueError(
        f"give one 2D reference image (isotropic), three 2D images perpendicular to x, y "
        f"and z (anisotropic), or one 3D volume; got {len(dims)} of {dims} dimensions"
    )


def _per_axis(references: Sequence[np.ndarray], stats: list[dict]) -> dict:
    if len(references) == 3:
        return {axis: (references[i], stats[i]) for i, axis in enumerate(AXES_3D)}
    return dict.fromkeys(AXES_3D, (references[0], stats[0]))


def _match_phases(
    volume_names: list[str], reference_names: list[str]
) -> tuple[list[tuple[str | None, str | None]], str]:
    """(volume phase, reference phase) pairs, None where one side lacks the phase."""
    mine, theirs = set(volume_names), set(reference_names)
    if mine != theirs and len(mine) == len(theirs):
        ordered = sorted(volume_names, key=float), sorted(reference_names, key=float)
        return list(zip(*ordered)), "by order"
    if not mine & theirs:
        raise ValueError(
            f"the volume has phases {volume_names} but the reference has {reference_names}: "
            "segment them with the same labels"
        )
    names = sorted(mine | theirs, key=float)
    return [(n if n in mine else None, n if n in theirs else None) for n in names], "by value"


def _difference(a: float | None, b: float | None) -> dict:
    delta = None if a is None or b is None else a - b
    return {"volume": a, "reference": b, "difference": delta}


def _curve_comparison(volume_curve: list, reference_curve: list) -> dict:
    lags = min(len(volume_curve), len(reference_curve))
    gap = np.abs(np.subtract(volume_curve[:lags], reference_curve[:lags]))
    return {
        "volume": volume_curve,
        "reference": reference_curve,
        "mean_abs_difference": float(gap.mean()) if lags else None,
    }


def _compare_phases(
    volume: np.ndarray, stats: dict, per_axis: dict, voxel_size, max_lag: int | None
) -> dict:
    names = list(stats["phases"])
    values = dict(zip(names, sorted(label_counts(volume))))
    perimeters = slice_perimeters(volume, values, voxel_size)
    pairs, matchings = {}, set()
    for axis in AXES_3D:
        pairs[axis], matching = _match_phases(names, list(per_axis[axis][1]["phases"]))
        matchings.add(matching)
    # The key of a phase is its name in the volume, or in the reference when the volume
    # lacks it; every phase is compared on every axis, so each has all three slices.
    keys = sorted({mine or theirs for found in pairs.values() for mine, theirs in found}, key=float)
    missing = sorted(
        {theirs for found in pairs.values() for mine, theirs in found if mine is None}, key=float
    )
    extra = sorted(
        {mine for found in pairs.values() for mine, theirs in found if theirs is None}, key=float
    )
    phases: dict = {key: {"slices": {}} for key in keys}
    entries: dict = {key: {} for key in keys}  # axis -> (volume entry, reference entry)
    for axis in AXES_3D:
        reference, reference_stats = per_axis[axis]
        found = {mine or theirs: (mine, theirs) for mine, theirs in pairs[axis]}
        for key in keys:
            name, ref_name = found.get(key, (None, None))
            entries[key][axis] = (
                _phase_entry(stats, volume, name, max_lag),
                _phase_entry(reference_stats, reference, ref_name, max_lag),
                name,
                ref_name,
            )
    fraction_errors, uncertainties, s2_errors, s2_uncertainties = [], [], [], []
    euler_gaps: list[float | None] = []
    euler_uncertainties: list[float] = []
    per_axis_image = one_image_per_axis(reference for reference, _ in per_axis.values())
    for key in keys:
        pooled, image_errors = _pooled_fraction(volume, per_axis, entries[key])
        phases[key]["fraction"] = pooled
        fraction_errors.append(abs(pooled["difference"]))
        uncertainties.append(pooled["uncertainty"])
        for axis in AXES_3D:
            mine, theirs, name, ref_name = entries[key][axis]
            reference = per_axis[axis][0]
            fraction = _difference(mine["volume_fraction"], theirs["volume_fraction"])
            curves = {}
            for direction, ref_direction in _directions(axis, reference.ndim):
                curves[direction] = _curve_comparison(
                    mine["tpc"][direction], theirs["tpc"][ref_direction]
                )
                curves[direction]["s2_error"] = s2_error(
                    mine["tpc"][direction],
                    mine["volume_fraction"],
                    theirs["tpc"][ref_direction],
                    theirs["volume_fraction"],
                    pooled["variance"],
                )
                s2_errors.append(curves[direction]["s2_error"])
                s2_uncertainties.append(
                    s2_uncertainty(pooled["variance"], image_errors[axis], pooled["volume_error"])
                )
            if ref_name is None:
                reference_perimeter = 0.0
            elif reference.ndim == 2:
                reference_perimeter = theirs["specific_surface_area"]
            else:
                reference_perimeter = slice_perimeters(
                    reference, {ref_name: _value(reference, ref_name)}, voxel_size, axes=(axis,)
                )[axis][ref_name]
            volume_perimeter = 0.0 if name is None else perimeters[axis][name]
            euler = _euler_comparison(
                mine,
                theirs,
                axis,
                (volume.shape, reference.shape),
                reference_perimeter,
                voxel_size,
                per_axis_image=per_axis_image,
            )
            euler_gaps.append(euler["error"])
            if euler["error"] is not None:
                euler_uncertainties.append(euler["uncertainty"])
            phases[key]["slices"][axis] = {
                "area_fraction": fraction,
                "perimeter_per_area": _difference(volume_perimeter, reference_perimeter),
                "euler_density": euler,
                "tpc": curves,
            }
            if reference.ndim == 3 and axis == "x":
                phases[key].update(_compare_3d(mine, theirs))
    fraction_error = max(fraction_errors) if fraction_errors else 0.0
    uncertainty = max(uncertainties) if uncertainties else 0.0
    s2 = float(np.mean(s2_errors)) if s2_errors else 0.0
    s2_spread = float(np.mean(s2_uncertainties)) if s2_uncertainties else 0.0
    euler = euler_error(euler_gaps)
    euler_spread = float(np.mean(euler_uncertainties)) if euler_uncertainties else 0.0
    summary = {
        "fraction_error": fraction_error,
        "fraction_uncertainty": uncertainty,
        "s2_error": s2,
        "s2_uncertainty": s2_spread,
        "euler_error": euler,
        "euler_uncertainty": euler_spread,
        "verdict": verdict(fraction_error, s2, uncertainty, s2_spread, euler, euler_spread),
        "thresholds": thresholds(uncertainty, s2_spread, euler_spread),
        "base_thresholds": THRESHOLDS,
        "missing_phases": missing,
        "extra_phases": extra,
    }
    notes = _phase_notes(missing, extra)
    if notes:
        summary["note"] = notes
    return {
        "phase_matching": "by order" if "by order" in matchings else "by value",
        "phases": phases,
        "summary": summary,
    }


def _pooled_fraction(volume: np.ndarray, per_axis: dict, entries: dict) -> tuple[dict, dict]:
    """The volume's fraction of a phase against the mean of the training images' (each
    image once), with the uncertainty of that difference and the images' mean variance
    f(1 - f), the scale of the S2 errors (``agreement.py``); and each axis' image's own
    standard error."""
    images, errors = {}, {}
    for axis in AXES_3D:
        reference, entry = per_axis[axis][0], entries[axis][1]
        if id(reference) not in images:
            fraction = entry["volume_fraction"]
            images[id(reference)] = (
                fraction,
                sampling_error(entry["tpc"].values(), fraction, reference.size),
            )
        errors[axis] = images[id(reference)][1]
    fractions = [fraction for fraction, _ in images.values()]
    mine = entries["x"][0]
    volume_error = sampling_error(mine["tpc"].values(), mine["volume_fraction"], volume.size)
    reference = float(np.mean(fractions))
    uncertainty = pooled_uncertainty(fractions, [error for _, error in images.values()])
    pooled = {
        "volume": mine["volume_fraction"],
        "reference": reference,
        "difference": mine["volume_fraction"] - reference,
        "uncertainty": combined(uncertainty, volume_error),
        "volume_error": volume_error,
        "image_fractions": fractions,
        "variance": float(np.mean([f * (1.0 - f) for f in fractions])),
    }
    return pooled, errors


def _phase_notes(missing: list[str], extra: list[str]) -> str | None:
    """Why the errors are what they are when one side lacks phases, in words."""
    notes = []
    if missing:
        notes.append(
            f"the volume has no voxel of {_phases_text(missing)} of the training image(s): "
            "compared as fraction 0, surface 0 and S2 = 0"
        )
    if extra:
        notes.append(
            f"{_phases_text(extra)} of the volume {'is' if len(extra) == 1 else 'are'} not in "
            "the training image(s) compared with: compared with fraction 0, surface 0 and S2 = 0"
        )
    return "; ".join(notes) or None


def _phases_text(names: list[str]) -> str:
    return f"phase {names[0]}" if len(names) == 1 else f"phases {', '.join(names)}"


def _phase_entry(stats: dict, array: np.ndarray, name: str | None, max_lag: int | None) -> dict:
    """A phase's statistics with an S2 curve along every axis of the array.

    ``name`` None: a phase the array lacks (fraction 0, surface 0, S2 = 0, no lengths or
    tortuosity). A phase that fills the array has no curves in the statistics (they are
    computed for two phases or more); its S2 is 1 at every lag.
    """
    entry = stats["phases"][name] if name is not None else None
    fraction = 0.0 if entry is None else entry["volume_fraction"]
    curves = {} if entry is None else entry["tpc"]
    tpc = {}
    for axis in axis_names(array.ndim):
        if axis in curves:
            tpc[axis] = curves[axis]
            continue
        lags = next(
            (len(p["tpc"][axis]) for p in stats["phases"].values() if axis in p["tpc"]),
            lag_for(array.shape[array_axis(axis, array.ndim)], max_lag) + 1,
        )
        tpc[axis] = [float(fraction)] * lags
    if entry is None:
        return {"volume_fraction": 0.0, "specific_surface_area": 0.0, "tpc": tpc}
    return entry | {"tpc": tpc}


def _euler(entry: dict, key: str) -> float:
    """A phase's Euler number per area of its sections (0 for a phase the array lacks)."""
    return entry.get("euler_density", {}).get(key, 0.0)


def _euler_comparison(
    mine: dict,
    theirs: dict,
    axis: str,
    shapes: tuple[Sequence[int], Sequence[int]],
    reference_perimeter: float,
    voxel_size: float | None,
    *,
    per_axis_image: bool,
) -> dict:
    """The Euler densities of a phase's sections perpendicular to ``axis`` against the
    reference's, with the reference's disk-equivalent count density n* (its perimeter per
    area and fraction, ``euler.disk_count_density``), the gap in units of it
    (``agreement.euler_gap``; None where the reference lacks the phase) and its
    uncertainty in the same units (``agreement.euler_uncertainty``: the reference's and the
    volume's own, each over the area of its independent sections, sections closer than the
    integral range of the S2 along the axis counted as one; records made before dispersions
    were kept count as 0). ``shapes``: the volume's and the reference's."""
    volume_shape, reference_shape = shapes
    key = IMAGE_KEY if len(reference_shape) == 2 else axis
    volume = (_euler(mine, axis), mine.get("euler_dispersion", {}).get(axis, 0.0))
    reference = (_euler(theirs, key), theirs.get("euler_dispersion", {}).get(key, 0.0))
    term = euler_term(
        volume,
        reference,
        reference_perimeter,
        theirs["volume_fraction"],
        measured_area(reference_shape, key, voxel_size, _integral_range(theirs, key)),
        measured_area(volume_shape, axis, voxel_size, _integral_range(mine, axis)),
        reference_samples=dispersion_samples(reference_shape, key),
        per_axis_image=per_axis_image,
    )
    return _difference(volume[0], reference[0]) | term


def _integral_range(entry: dict, axis: str) -> float:
    """The integral range of a phase's S2 along an axis of its array (1 for an image's
    ``"image"`` key, whose blocks are independent by construction)."""
    curve = entry["tpc"].get(axis)
    return 1.0 if curve is None else integral_range_along(curve, entry["volume_fraction"])


def _compare_3d(mine: dict, theirs: dict) -> dict:
    result = {
        "volume_fraction": _difference(mine["volume_fraction"], theirs["volume_fraction"]),
        "specific_surface_area": _difference(
            mine["specific_surface_area"], theirs["specific_surface_area"]
        ),
        "tpc": {a: _curve_comparison(mine["tpc"][a], theirs["tpc"][a]) for a in AXES_3D},
    }
    if "tortuosity" in mine and "tortuosity" in theirs:
        result["tortuosity"] = {
            a: _difference(mine["tortuosity"][a], theirs["tortuosity"][a]) for a in AXES_3D
        }
    return result


def _directions(axis: str, reference_ndim: int) -> list[tuple[str, str]]:
    """(volume axis, reference curve key) pairs for the slices perpendicular to axis."""
    columns, rows = SLICE_PLANE_AXES[axis]
    if reference_ndim == 3:
        return [(columns, columns), (rows, rows)]
    return [(columns, "x"), (rows, "y")]


def _value(array: np.ndarray, name: str) -> int | float:
    return next(v for v in label_counts(array) if _name(v) == name)


def _name(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _compare_greyscale(stats: dict, per_axis: dict) -> dict:
    """Histograms against the images' pooled histogram, S2 per axis as for phases (the
    normalised autocovariance of the grey values, ``agreement.py``)."""
    mine = stats["grayscale"]
    images = list({id(r): (r, s["grayscale"]) for r, s in per_axis.values()}.values())
    pooled = np.mean([_normalised(theirs["histogram"]["counts"]) for _, theirs in images], axis=0)
    fraction_error = _wasserstein(mine["histogram"]["counts"], pooled)
    means = [theirs["scaled_mean"] for _, theirs in images]
    errors = [sampling_error(t["tpc"].values(), t["scaled_mean"], r.size) for r, t in images]
    volume_size = int(np.prod(stats["shape"]))
    uncertainty = combined(
        pooled_uncertainty(means, errors),
        sampling_error(mine["tpc"].values(), mine["scaled_mean"], volume_size),
    )
    variance = float(np.mean([_grey_variance(theirs) for _, theirs in images]))
    volume_error = sampling_error(mine["tpc"].values(), mine["scaled_mean"], volume_size)
    image_error = {id(r): e for (r, _), e in zip(images, errors)}
    s2_errors, s2_uncertainties, axes = [], [], {}
    for axis in AXES_3D:
        reference, reference_stats = per_axis[axis]
        theirs = reference_stats["grayscale"]
        distance = _wasserstein(mine["histogram"]["counts"], theirs["histogram"]["counts"])
        curves = {}
        for direction, ref_direction in _directions(axis, reference.ndim):
            curves[direction] = _curve_comparison(
                mine["tpc"][direction], theirs["tpc"][ref_direction]
            )
            curves[direction]["s2_error"] = s2_error(
                mine["tpc"][direction],
                mine["scaled_mean"],
                theirs["tpc"][ref_direction],
                theirs["scaled_mean"],
                variance,
            )
            s2_errors.append(curves[direction]["s2_error"])
            s2_uncertainties.append(
                s2_uncertainty(variance, image_error[id(reference)], volume_error)
            )
        axes[axis] = {
            "mean": _difference(mine["mean"], theirs["mean"]),
            "std": _difference(mine["std"], theirs["std"]),
            "histogram_distance": distance,
            "tpc": curves,
        }
    s2 = float(np.mean(s2_errors))
    s2_spread = float(np.mean(s2_uncertainties))
    return {
        "grayscale": {"slices": axes},
        "summary": {
            "fraction_error": fraction_error,
            "fraction_uncertainty": uncertainty,
            "s2_error": s2,
            "s2_uncertainty": s2_spread,
            "verdict": verdict(fraction_error, s2, uncertainty, s2_spread),
            "thresholds": thresholds(uncertainty, s2_spread),
            "base_thresholds": THRESHOLDS,
        },
    }


def _grey_variance(grey: dict) -> float:
    return max(float(grey["tpc"]["x"][0]) - grey["scaled_mean"] ** 2, 0.0)


def _normalised(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum()


def _wasserstein(counts_a: list, counts_b: list) -> float:
    a = np.asarray(counts_a, dtype=np.float64)
    b = np.asarray(counts_b, dtype=np.float64)
    gap = np.abs(np.cumsum(a / a.sum()) - np.cumsum(b / b.sum()))
    return float(gap.sum() / len(a))
