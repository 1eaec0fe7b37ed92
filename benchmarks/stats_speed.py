"""Time the microstructure statistics on a synthetic three-phase volume; prints JSON.

    python benchmarks/stats_speed.py --size 512 --tortuosity-size 64

Without tortuosity: fractions, surface areas, S2 along x, y, z, characteristic lengths and
TPB density at --size. Tortuosity (taufactor, all phases and axes) is timed at
--tortuosity-size, since on CPU it takes minutes at 512^3; on CUDA both sizes can match.
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    from microforge.models.stats import microstructure_statistics

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tortuosity-size", type=int, default=64)
    args = parser.parse_args()
    report: dict = {"cpu_count": os.cpu_count(), "size": args.size}
    volume = synthetic_volume(args.size)
    seconds, _ = timed(microstructure_statistics, volume, tortuosity=False)
    report["cpu_without_tortuosity_s"] = round(seconds, 3)
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
