"""Time the microstructure statistics on a synthetic three-phase volume; prints JSON.

    python benchmarks/stats_speed.py --size 512 --tortuosity-size 64 --repeats 5

Without tortuosity: fractions, surface areas, S2 along x, y, z, characteristic lengths and
TPB density at --size, timed --repeats times (best and median wall time, and the CPU time
of the best run: on a shared machine the wall time depends on the neighbours, the CPU time
much less), plus each measure on its own. Tortuosity (taufactor, all phases and axes) is
timed at --tortuosity-size, since on CPU it takes minutes at 512^3; on CUDA both sizes can
match.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
from scipy import ndimage


def synthetic_volume(size: int, seed: int = 0) -> np.ndarray:
    """Three phases of about equal fraction from smoothed noise, features of ~6 voxels."""
    field = np.random.default_rng(seed).standard_normal((size, size, size), dtype=np.float32)
    field = ndimage.gaussian_filter(field, 2.0, output=np.float32)
    cuts = np.quantile(field[:: max(size // 64, 1)], [1 / 3, 2 / 3])
    return np.digitize(field, cuts).astype(np.uint8)


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def repeated(repeats: int, function, *args, **kwargs) -> dict:
    """Best and median wall time of several runs, and the process CPU time of the best."""
    runs = []
    for _ in range(repeats):
        cpu = time.process_time()
        seconds, _ = timed(function, *args, **kwargs)
        runs.append((seconds, time.process_time() - cpu))
    best = min(runs)
    return {
        "best_s": round(best[0], 3),
        "median_s": round(statistics.median(r[0] for r in runs), 3),
        "cpu_of_best_s": round(best[1], 3),
    }


def measures(volume: np.ndarray, repeats: int) -> dict:
    """Each measure alone, to see where the time goes."""
    from microforge.models.stats.boundaries import triple_phase_boundary_count
    from microforge.models.stats.correlation import phase_correlations
    from microforge.models.stats.phases import label_counts
    from microforge.models.stats.surface import specific_surface_areas

    phases = sorted(label_counts(volume))
    return {
        "fractions": repeated(repeats, label_counts, volume),
        "surface_areas": repeated(repeats, specific_surface_areas, volume, phases),
        "two_point_correlations": repeated(repeats, phase_correlations, volume, phases),
        "triple_phase_boundaries": repeated(repeats, triple_phase_boundary_count, volume, phases),
    }


def main() -> None:
    from microforge.models.stats import microstructure_statistics
    from microforge.models.stats.parallel import default_workers

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tortuosity-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report: dict = {
        "cpu_count": os.cpu_count(),
        "threads": default_workers(),
        "size": args.size,
        "repeats": args.repeats,
    }
    volume = synthetic_volume(args.size)
    runs = repeated(args.repeats, microstructure_statistics, volume, tortuosity=False)
    report["cpu_without_tortuosity_s"] = runs["best_s"]
    report["cpu_without_tortuosity_median_s"] = runs["median_s"]
    report["cpu_without_tortuosity_process_cpu_s"] = runs["cpu_of_best_s"]
    report["measures"] = measures(volume, args.repeats)
    small = synthetic_volume(args.tortuosity_size)
    report["tortuosity_size"] = args.tortuosity_size
    seconds, _ = timed(microstructure_statistics, small, tortuosity=True, device="cpu")
    report["cpu_with_tortuosity_s"] = round(seconds, 3)
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        for size, key in (
            (args.tortuosity_size, "cuda_with_tortuosity_s"),
            (args.size, "cuda_with_tortuosity_full_size_s"),
        ):
            sample = small if size == args.tortuosity_size else volume
            seconds, _ = timed(microstructure_statistics, sample, tortuosity=True, device="cuda")
            report[key] = round(seconds, 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
