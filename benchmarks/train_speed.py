"""Milliseconds per SliceGAN training iteration and peak memory, per preset, batch and precision.

    python benchmarks/train_speed.py                        # CPU: tiny, batch 8, fp32
    python benchmarks/train_speed.py --arch all --batch 8 16 --precision fp32 tf32 bf16

One iteration is what the public SliceGAN code counts (its 31 ms on an H100 for the reference
network, 29 ms for the paper's, batch 8): one critic update on all three axes, and on every
5th iteration (``critic_steps``) also a generator update. So the script reports the mean per
iteration, the (5 critic + 1 generator) cycle, and the two kinds of iteration separately.

Why each configuration runs in a fresh subprocess: a process's peak RSS only grows, and cuDNN
autotuning and the caching allocator remember earlier shapes; a fresh process measures one
configuration alone. Warm-up iterations (cuDNN autotuning, allocator growth, lazy init) are
excluded. CUDA steps are timed with events and the clock is read only after a synchronize.
Prints one JSON object: machine info and a list of results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ARCHES,
    machine_info,
    peak_device_bytes,
    peak_rss_bytes,
    reset_peak_memory,
    resolve,
    rounded,
    summary,
    synchronize,
)

PRECISIONS = ("fp32", "tf32", "bf16")


def synthetic_image(size: int, phases: int, seed: int = 0) -> np.ndarray:
    """A segmented stand-in micrograph: smoothed noise cut into equal-fraction phases."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0)
    cuts = np.quantile(field, [k / phases for k in range(1, phases)])
    return np.digitize(field, cuts).astype(np.uint8)


def measure(args: argparse.Namespace) -> dict:
    """Time one (arch, batch, precision) in this process."""
    from microforge.models.config import TrainConfig
    from microforge.models.data import prepare_training_data
    from microforge.models.trainer import Trainer

    device = resolve(args.device)
    data = prepare_training_data(
        [synthetic_image(args.image_size, args.phases)], image_type="nphase"
    )
    config = TrainConfig(
        arch=args.arch,
        critic_batch=args.batch,
        generator_batch=args.generator_batch,
        precision=args.precision,
        quality_every=0,
        seed=0,
        iterations=10_000_000,
        channels_last=args.channels_last,
    )
    trainer = Trainer(data, config, device=str(device))
    trainer.generator.train()
    trainer.critics.train()
    steps = config.critic_steps
    # Warm up whole cycles so the timed run starts on a generator iteration.
    warmup = max(steps, -(-args.warmup // steps) * steps)
    for _ in range(warmup):
        trainer.step()
    reset_peak_memory(device)
    timed = max(steps, -(-args.iterations // steps) * steps)
    kinds: list[bool] = []
    starts: list = []
    stops: list = []
    synchronize(device)
    began = time.perf_counter()
    for _ in range(timed):
        kinds.append(trainer.iteration % steps == 0)
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            trainer.step()
            stop.record()
        else:
            start = time.perf_counter()
            trainer.step()
            stop = time.perf_counter()
        starts.append(start)
        stops.append(stop)
    synchronize(device)
    wall = time.perf_counter() - began
    if device.type == "cuda":
        per_step = [a.elapsed_time(b) for a, b in zip(starts, stops)]
    else:
        per_step = [(b - a) * 1000 for a, b in zip(starts, stops)]
    cycles = [sum(per_step[i : i + steps]) for i in range(0, timed, steps)]
    with_generator = [t for t, g in zip(per_step, kinds) if g]
    critic_only = [t for t, g in zip(per_step, kinds) if not g]
    return {
        "arch": args.arch,
        "critic_batch": args.batch,
        "generator_batch": config.resolved_generator_batch,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "crop": trainer.crop,
        "critics": len(trainer.critics),
        "warmup_iterations": warmup,
        "timed_iterations": timed,
        "ms_per_iteration": 1000 * wall / timed,
        "ms_per_cycle": 1000 * wall / timed * steps,
        "cycle_ms": summary(cycles),
        "critic_iteration_ms": summary(critic_only),
        "generator_iteration_ms": summary(with_generator),
        "peak_device_bytes": peak_device_bytes(device),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def run_isolated(args: argparse.Namespace, arch: str, batch: int, precision: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--arch",
        arch,
        "--batch",
        str(batch),
        "--precision",
        precision,
        "--device",
        args.device,
        "--iterations",
        str(args.iterations),
        "--warmup",
        str(args.warmup),
        "--image-size",
        str(args.image_size),
        "--phases",
        str(args.phases),
    ]
    if args.generator_batch:
        command += ["--generator-batch", str(args.generator_batch)]
    if args.channels_last:
        command.append("--channels-last")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"arch": arch, "critic_batch": batch, "precision": precision, "error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch", nargs="+", default=None, choices=[*ARCHES, "all"], help="default: tiny on CPU"
    )
    parser.add_argument("--batch", nargs="+", type=int, default=[8], help="critic batch sizes")
    parser.add_argument("--generator-batch", type=int, default=None, help="default: 2 x batch")
    parser.add_argument("--precision", nargs="+", default=None, choices=PRECISIONS)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--channels-last", action="store_true", help="TrainConfig(channels_last=True)"
    )
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve(args.device)
    cuda = device.type == "cuda"
    if args.iterations is None:
        args.iterations = 100 if cuda else 20
    if args.warmup is None:
        args.warmup = 20 if cuda else 5
    if args.child:
        args.arch = args.arch[0]
        args.precision = args.precision[0]
        args.batch = args.batch[0]
        print(json.dumps(rounded(measure(args))))
        return
    arches = args.arch or (["all"] if cuda else ["tiny"])
    arches = list(ARCHES) if arches == ["all"] else arches
    precisions = args.precision or (["tf32"] if cuda else ["fp32"])
    results = [
        run_isolated(args, arch, batch, precision)
        for arch in arches
        for batch in args.batch
        for precision in precisions
    ]
    report = {
        "benchmark": "train_speed",
        "machine": machine_info(device),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "iteration": "one critic update on each of the 3 axes; every 5th also a generator update",
        "results": results,
    }
    if not cuda:
        report["note"] = "CPU: bf16/tf32 change nothing (autocast and TF32 are CUDA-only here)"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
