"""The verdict's Euler error on volumes whose shapes are known: the calibration behind its
thresholds (``microforge/models/stats/verdict.py``, docs/benchmarks.md "Shapes S2 does not
see").

    taskset -c 0 python benchmarks/euler_calibration.py --data ../shared/data/volumes \\
        [--volume generated.npy ...]

Why: a threshold means something only against figures of volumes that must pass (the real
volumes against their own slices, other slices and sub-volumes of them, the same structure
at another pixel size) and of volumes that must not (a labyrinth where the truth has round
particles: today's NMC generators, a thresholded Gaussian field). One JSON line per case:
the comparison's fraction, S2 and Euler errors, the Euler uncertainty and the widened
Euler thresholds, the largest single Euler gap (phase and axis), the verdict, the shape
index chi / n* of every phase and axis of the volume and of the reference, and the
trainer's fidelity score of the volume's 64^3 corner. ``--volume`` adds generated volumes
(.npy or .tif, labels as the NMC truth's) compared with the NMC middle slice.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microforge.models.stats import compare_with_references, fidelity_score  # noqa: E402
from microforge.models.stats.verdict import thresholds  # noqa: E402


def middle_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Perpendicular to x, y and z, in that order (the anisotropic layout)."""
    z, y, x = (n // 2 for n in volume.shape)
    return [volume[:, :, x], volume[:, y, :], volume[z]]


def spheres(size: int, radius: float, fraction: float, seed: int = 0) -> np.ndarray:
    """Balls of one radius at random centres (overlaps allowed) until ``fraction`` is
    covered: round, mostly separate particles in a matrix (phase 1 in phase 0)."""
    rng = np.random.default_rng(seed)
    count = int(-np.log(1.0 - fraction) * size**3 / (4 / 3 * np.pi * radius**3))
    seeds = np.ones((size, size, size), dtype=bool)
    seeds[tuple(rng.integers(0, size, (3, count)))] = False
    return (ndimage.distance_transform_edt(seeds) <= radius).astype(np.uint8)


def labyrinth(size: int, sigma: float, fraction: float, seed: int = 0) -> np.ndarray:
    """A thresholded Gaussian field: both phases one connected, winding network."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((size,) * 3), sigma)
    return (field > np.quantile(field, 1.0 - fraction)).astype(np.uint8)


def upscaled(array: np.ndarray, factor: int = 2) -> np.ndarray:
    """The same structure at ``factor`` times the pixels per length."""
    for dim in range(array.ndim):
        array = np.repeat(array, factor, axis=dim)
    return array


def cases(data: Path, generated: list[Path]) -> Iterator[tuple[str, np.ndarray, list]]:
    """(name, volume, references) of every case."""
    truths = {
        name: tifffile.imread(data / file)
        for name, file in (
            ("nmc", "nmc_binary_128.tif"),
            ("sofc", "sofc_anode_3phase_62.tif"),
            ("separator", "separator_rods_32x300x300.tif"),
        )
    }
    for name, volume in truths.items():
        three = middle_slices(volume)
        if name != "separator":
            yield f"{name} truth vs its middle z slice", volume, [three[2]]
        yield f"{name} truth vs its three middle slices", volume, three
        yield f"{name} truth vs itself (3D)", volume, [volume]
    nmc, sofc, separator = truths["nmc"], truths["sofc"], truths["separator"]
    for z in (16, 32, 96, 112):
        yield f"nmc truth vs its z={z} slice", nmc, [nmc[z]]
    for z in (10, 20, 40, 50):
        yield f"sofc truth vs its z={z} slice", sofc, [sofc[z]]
    for corner in ((0, 0, 0), (64, 64, 64), (0, 64, 0)):
        crop = nmc[tuple(slice(c, c + 64) for c in corner)]
        yield f"nmc 64^3 corner {corner} vs the middle z slice", crop, [nmc[64]]
    yield "sofc 32^3 corner vs its middle z slice", sofc[:32, :32, :32], [sofc[31]]
    yield (
        "separator crop 32x150x150 vs its three middle slices",
        separator[:, :150, :150],
        middle_slices(separator),
    )
    balls = spheres(96, 4.0, 0.4)
    yield "spheres r=4 vs their middle slice", balls, [balls[48]]
    yield "spheres r=4 at 2x pixels vs 2x slice", upscaled(balls[:48]), [upscaled(balls[48])]
    other = spheres(96, 4.0, 0.4, seed=1)
    yield "spheres r=4, seed 1 vs seed 0's slice", other, [balls[48]]
    yield "spheres r=6 vs spheres r=4 slice", spheres(96, 6.0, 0.4), [balls[48]]
    maze = labyrinth(96, 2.5, 0.4)
    yield "labyrinth vs spheres r=4 slice", maze, [balls[48]]
    yield "labyrinth vs its middle slice", maze, [maze[48]]
    yield "labyrinth at 2x pixels vs 2x spheres slice", upscaled(maze[:48]), [upscaled(balls[48])]
    yield "nmc-fraction labyrinth vs the nmc middle slice", labyrinth(128, 2.0, 0.42), [nmc[64]]
    half = nmc.copy()
    half[:, 64:, :] = labyrinth(128, 2.0, float((nmc == 1).mean()))[:, 64:, :]
    yield "nmc, far half along y a labyrinth, vs the nmc middle slice", half, [nmc[64]]
    three = [nmc[64], nmc[64].copy(), nmc[64].copy()]
    yield "nmc, far half along y a labyrinth, vs the middle slice as 3", half, three
    for path in generated:
        volume = np.load(path) if path.suffix == ".npy" else tifffile.imread(path)
        yield f"generated {path.name} vs the nmc middle slice", volume, [nmc[64]]


def shape_indices(result: dict, side: str) -> dict:
    """chi / n* of every phase and axis, on one side (volume or reference)."""
    table = {}
    for phase, entry in result["phases"].items():
        row = {}
        for axis, sliced in entry["slices"].items():
            euler = sliced["euler_density"]
            scale = euler["disk_count_density"]
            row[axis] = round(euler[side] / scale, 2) if scale else None
        table[phase] = row
    return table


def measure(name: str, volume: np.ndarray, references: list) -> dict:
    result = compare_with_references(volume, references, tortuosity=False)
    summary = result["summary"]
    gaps = [
        (sliced["euler_density"]["error"], phase, axis)
        for phase, entry in result["phases"].items()
        for axis, sliced in entry["slices"].items()
        if sliced["euler_density"]["error"] is not None
    ]
    largest = max(gaps)
    return {
        "case": name,
        "verdict": summary["verdict"],
        "fraction_error": round(summary["fraction_error"], 4),
        "s2_error": round(summary["s2_error"], 4),
        "euler_error": round(summary["euler_error"], 3),
        "euler_uncertainty": round(summary["euler_uncertainty"], 3),
        "euler_good_below": round(summary["thresholds"]["good"]["euler_error"], 3),
        "euler_fair_below": round(summary["thresholds"]["fair"]["euler_error"], 3),
        "euler_gap_max": [round(largest[0], 3), f"phase {largest[1]}", largest[2]],
        "shape_index_volume": shape_indices(result, "volume"),
        "shape_index_reference": shape_indices(result, "reference"),
        "trainer_score_64": trainer_score(volume, references),
    }


def trainer_score(volume: np.ndarray, references: list) -> dict:
    """The trainer's fidelity score of the volume's 64^3 corner (what a training check
    generates) against the same references: verdict, Euler error, its uncertainty and the
    widened "good" limit."""
    values = np.unique(np.concatenate([np.unique(a) for a in [volume, *references]]))
    labels = np.searchsorted(values, volume[:64, :64, :64]).astype(np.uint8)
    images = [np.searchsorted(values, r).astype(np.uint8) for r in references]
    score = fidelity_score(labels, images, len(values))
    limit = thresholds(euler_uncertainty=score["euler_uncertainty"])["good"]["euler_error"]
    return {
        "verdict": score["verdict"],
        "euler_error": round(score["euler_error"], 3),
        "euler_uncertainty": round(score["euler_uncertainty"], 3),
        "euler_good_below": round(limit, 3),
        "score": round(score["score"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/volumes"))
    parser.add_argument("--volume", type=Path, action="append", default=[])
    args = parser.parse_args()
    for name, volume, references in cases(args.data, args.volume):
        print(json.dumps(measure(name, volume, references)), flush=True)


if __name__ == "__main__":
    main()
