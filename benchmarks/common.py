"""Pieces shared by the speed benchmarks: machine description, timing, random networks.

Why a module: both benchmark scripts must describe the machine the same way (a figure is
worthless without the device, torch build and date it was taken on) and time CUDA work
the same way (synchronise before reading the clock, or the clock measures kernel launches).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# Let `python benchmarks/x.py` import the package from a checkout without installing it.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from microforge.models.config import PRESETS  # noqa: E402
from microforge.models.export import LoadedGenerator  # noqa: E402
from microforge.models.generator_file import GeneratorFileInfo  # noqa: E402
from microforge.models.networks import Generator, init_weights  # noqa: E402

ARCHES = ("paper", "reference", "tiny")


def machine_info(device: torch.device) -> dict:
    """What a reader needs to compare a figure: device, build, cores, date."""
    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": cpu_model(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            device_memory_bytes=props.total_memory,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rounded(value: object, digits: int = 3) -> object:
    """Floats rounded for a readable report, recursively."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value


def resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels: CUDA calls return before the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_device_bytes(device: torch.device) -> int | None:
    """Peak bytes PyTorch allocated on the GPU since the last reset; None on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM; ru_maxrss is KiB on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_repeated(function: Callable[[], None], device: torch.device, repeats: int) -> list[float]:
    """Seconds per call, each call timed on its own; CUDA calls are timed with events.

    Events measure device time between the two records, which excludes the host's clock
    jitter; the host clock (after a synchronize) is used on the CPU.
    """
    times: list[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1000)
        else:
            began = time.perf_counter()
            function()
            times.append(time.perf_counter() - began)
    return times


def summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "best": float(array.min()),
        "median": float(np.median(array)),
        "mean": float(array.mean()),
        "count": int(array.size),
    }


def random_generator(
    arch: str,
    device: torch.device,
    phases: tuple[int, ...] = (0, 128, 255),
    seed: int = 0,
) -> LoadedGenerator:
    """A full-width preset generator with random weights and batch-norm statistics.

    Speed and memory depend only on the layer shapes, not on trained weights; random
    running statistics make the batch norm do real arithmetic rather than an identity.
    """
    network = PRESETS[arch]
    torch.manual_seed(seed)
    net = Generator(network, len(phases), "softmax")
    net.apply(init_weights)
    for norm in net.norms:
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    info = GeneratorFileInfo(
        image_type="nphase",
        phases=list(phases),
        channels=len(phases),
        network=network,
        output_dtype="uint8",
        value_range=(0.0, 255.0),
        arch=arch,
    )
    return LoadedGenerator(net=net.to(device).eval(), info=info, device=device)
