"""Seconds and peak memory to produce a finished TIFF volume with a random-weight generator.

    python benchmarks/generate_speed.py                         # CPU: tiny, 464^3 and 1000^3
    python benchmarks/generate_speed.py --arch paper --sizes 464 1000 2155   # GPU: 1e8-1e10
    python benchmarks/generate_speed.py --cpu-check             # tiny, (256, 1024, 1024), < 2 GB

What is timed is what a user waits for: from opening the ``VolumeTiffWriter`` to the TIFF being
published (every slice written, fsynced, renamed); with ``--format ome-zarr``, the same for
a ``VolumeZarrWriter`` and its store (writes overlap the next slab only where the writer's
``overlap_writes`` allows, as in the CLI and the worker). ``generate_seconds`` is the part inside
``generate_volume``; the rest is closing the file. Trained weights are not needed: speed and
memory depend on the layer shapes only, so the generator has random weights.

Why a fresh subprocess per size: peak RSS (VmHWM) only grows within a process, so each size
is measured alone; the parent also reads the child's ru_maxrss. Device peak is PyTorch's
``max_memory_allocated`` (reserved memory is reported too). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
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
    random_generator,
    reset_peak_memory,
    resolve,
    rounded,
    synchronize,
)

CPU_CHECK_SHAPE = (256, 1024, 1024)
CPU_CHECK_LIMIT_BYTES = 2 * 10**9
GPU_TARGETS = {
    "1e9 voxels (1000^3)": "peak GPU memory < 16 GB",
    "1e10 voxels (2155^3)": "finishes without running out of memory",
    "reference code": "73 GiB one-shot at 640^3; 448^3 in 0.12 s + 0.66 s host copy",
}


def measure(args: argparse.Namespace) -> dict:
    """Generate one volume to a TIFF (or an OME-Zarr store) in this process and measure it."""
    from microforge.models.generation import auto_chunk, generate_volume
    from microforge.storage.tiff import VolumeTiffWriter
    from microforge.storage.zarr_volume import VolumeZarrWriter

    device = resolve(args.device)
    shape = tuple(args.shape)
    loaded = random_generator(args.arch, device)
    chunk = None if args.chunk == "auto" else int(args.chunk)
    edge = auto_chunk(loaded) if chunk is None else chunk
    zarr_out = args.format == "ome-zarr"
    suffix = ".ome.zarr" if zarr_out else ".tif"
    path = Path(args.out_dir) / f"bench-{args.arch}-{'x'.join(map(str, shape))}{suffix}"
    writer = (
        VolumeZarrWriter(path, shape, loaded.output_dtype)
        if zarr_out
        else VolumeTiffWriter(path, shape, loaded.output_dtype, compression=args.compression)
    )
    reset_peak_memory(device)
    rss_before = peak_rss_bytes()
    began = time.perf_counter()
    with writer as out:
        result = generate_volume(
            loaded,
            shape,
            seed=1,
            chunk=edge,
            write_slab=out.write,
            precision=args.precision,
            background_writes=out.overlap_writes and not args.no_background_writes,
        )
    synchronize(device)
    seconds = time.perf_counter() - began
    voxels = int(np.prod(shape))
    record = {
        "arch": args.arch,
        "shape": list(shape),
        "voxels": voxels,
        "chunk": edge,
        "chunks": result.chunks,
        "precision": args.precision,
        "format": args.format,
        "compression": args.compression,
        "background_writes": writer.overlap_writes and not args.no_background_writes,
        "thp": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
        "seconds": seconds,
        "generate_seconds": result.seconds,
        "voxels_per_second": voxels / seconds,
        "file_bytes": _size_on_disk(path),
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_generation_bytes": rss_before,
        "peak_device_bytes": peak_device_bytes(device),
    }
    if device.type == "cuda":
        record["peak_device_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
    if not args.keep:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return record


def _size_on_disk(path: Path) -> int:
    """A TIFF's size, or the sum of an OME-Zarr store's files."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def run_isolated(args: argparse.Namespace, shape: tuple[int, int, int]) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--arch",
        args.arch,
        "--shape",
        *map(str, shape),
        "--chunk",
        str(args.chunk),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--out-dir",
        str(args.out_dir),
    ]
    command += ["--compression", args.compression] if args.compression else []
    command += ["--format", args.format]
    command += ["--keep"] if args.keep else []
    command += ["--no-background-writes"] if args.no_background_writes else []
    environment = dict(os.environ)
    if args.thp:
        # PyTorch reads this once, at its first CPU allocation: it must be in the environment.
        environment["THP_MEM_ALLOC_ENABLE"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"arch": args.arch, "shape": list(shape), "error": tail}
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["children_max_rss_bytes"] = children  # the largest child so far (getrusage)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="tiny", choices=ARCHES)
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="cube edges")
    parser.add_argument("--shape", nargs=3, type=int, default=None, help="one (z, y, x) shape")
    parser.add_argument("--chunk", default="auto", help="edge in voxels, 0 = one shot, auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16", "fp16"))
    parser.add_argument("--compression", default=None, choices=("zlib",))
    parser.add_argument(
        "--format",
        default="tiff",
        choices=("tiff", "ome-zarr"),
        help="what is written: a TIFF stack, or an OME-Zarr store with its pyramid",
    )
    parser.add_argument("--out-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the TIFFs")
    parser.add_argument(
        "--no-background-writes", action="store_true", help="write each slab before the next"
    )
    parser.add_argument(
        "--thp",
        action="store_true",
        help="THP_MEM_ALLOC_ENABLE=1: huge pages for PyTorch's large CPU tensors",
    )
    parser.add_argument(
        "--cpu-check", action="store_true", help=f"tiny, {CPU_CHECK_SHAPE} on CPU: RSS < 2 GB"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(rounded(measure(args))))
        return
    temporary = None
    if args.out_dir is None:
        temporary = tempfile.mkdtemp(prefix="microforge-bench-")
        args.out_dir = temporary
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    try:
        if args.cpu_check:
            args.arch, args.device, args.chunk = "tiny", "cpu", "auto"
            record = run_isolated(args, CPU_CHECK_SHAPE)
            peak = record.get("peak_rss_bytes")
            record["limit_bytes"] = CPU_CHECK_LIMIT_BYTES
            record["ok"] = peak is not None and peak < CPU_CHECK_LIMIT_BYTES
            print(json.dumps(record, indent=2))
            sys.exit(0 if record["ok"] else 1)
        device = resolve(args.device)
        cuda = device.type == "cuda"
        if args.shape:
            shapes = [tuple(args.shape)]
        else:
            sizes = args.sizes or ([464, 1000, 2155] if cuda else [464, 1000])
            shapes = [(n, n, n) for n in sizes]
        report = {
            "benchmark": "generate_speed",
            "machine": machine_info(device),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "measures": "open the volume writer -> finished TIFF or OME-Zarr store published",
            "results": [run_isolated(args, shape) for shape in shapes],
        }
        if cuda:
            report["targets"] = GPU_TARGETS
        print(json.dumps(report, indent=2))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
