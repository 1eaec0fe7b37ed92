"""Hostile and largest-accepted uploads against a real API server: status, seconds, peak RSS.

    python benchmarks/upload_memory.py                     # every case, prints JSON
    python benchmarks/upload_memory.py --cases png_bomb_40000 tiff_10000_pages
    python benchmarks/upload_memory.py --code /path/to/old/checkout   # measure older code

Why a real server: what issue #9 is about is the memory of the API *process*. The script
starts ``uvicorn --factory microforge.api.app:create_app`` on 127.0.0.1 (a free port, its
own data directory, SQLite; no broker is needed to upload), makes a key, then for each case
starts a fresh server, resets its peak-RSS mark (``/proc/PID/clear_refs``), uploads the
file and reads the server's ``VmHWM``: the exact peak resident memory during that upload. The
server runs under an address-space limit (``--server-memory-limit``, default 3 GiB) so that
measuring old code cannot take the machine down; it is stopped at the end, whatever happens.

Cases (files are written streaming, so this process stays small):
- ``png_bomb_40000``: a complete, valid 40000 x 40000 grey PNG of zeros (1.6 MB);
- ``tiff_10000_pages``: 10,000 1x1 pages written one by one (2.2 MB);
- ``tiff_1024_distinct_pages``: 1,024 pages of different widths;
- ``tiff_deflate_stack``: 1,900 deflated 1024 x 1024 pages of zeros (1.9 GiB decoded);
- ``accepted_nphase_png`` / ``accepted_rgb_png`` / ``accepted_grey_alpha_png``: a two-phase
  grey PNG, an RGB PNG and a grey + alpha PNG right under the decoded-byte limit (the worst
  uploads the API accepts and analyses: Pillow holds RGB and grey + alpha at 4 bytes a pixel).
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_info  # noqa: E402  (imports torch here, never in the server)

DEFAULT_LIMIT = 384 * 1024**2  # the default MICROFORGE_MAX_DECODED_BYTES


# --- files, written streaming ------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, colour_type: int, rows: Callable[[int], bytes]):
    """A complete 8-bit PNG (colour type 0 grey, 2 RGB) from ``rows(y)``, one row in memory."""
    compressor = zlib.compressobj(1)
    with path.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(
            _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
        )
        pending = bytearray()
        for y in range(height):
            pending += compressor.compress(b"\x00" + rows(y))
            if len(pending) > 1 << 20:
                handle.write(_png_chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += compressor.flush()
        handle.write(_png_chunk(b"IDAT", bytes(pending)))
        handle.write(_png_chunk(b"IEND", b""))


def png_bomb(path: Path) -> None:
    zero = bytes(40_000)
    write_png(path, 40_000, 40_000, 0, lambda _y: zero)


def accepted_nphase_png(path: Path, limit: int) -> None:
    """Two-phase grey (0/255) discs of varying size, just under ``limit`` decoded bytes."""
    side = int(limit**0.5)
    x = np.arange(side)

    def row(y: int) -> bytes:
        phase = np.sin(x * 0.031 + 0.7 * np.sin(y * 0.017)) * np.sin(y * 0.029) > 0.1
        return (phase * 255).astype(np.uint8).tobytes()

    write_png(path, side, side, 0, row)


def accepted_rgb_png(path: Path, limit: int) -> None:
    """Real colour (channels differ) just under ``limit`` decoded bytes; rows repeat a 3 kB
    pattern (shifted per row) so the file stays under the upload cap."""
    side = int((limit / 3) ** 0.5)
    pattern = np.random.default_rng(0).integers(0, 256, size=3 * 1024, dtype=np.uint8)
    line = np.resize(pattern, 3 * side + len(pattern))

    def row(y: int) -> bytes:
        shift = 3 * (y % 1024)
        return line[shift : shift + 3 * side].tobytes()

    write_png(path, side, side, 2, row)


def accepted_grey_alpha_png(path: Path, limit: int) -> None:
    """Grey + alpha (Pillow holds it as 4 bytes a pixel: the costliest PNG to decode per
    decoded byte), two-phase grey, just under ``limit`` decoded bytes."""
    side = int((limit / 2) ** 0.5)
    x = np.arange(side)

    def row(y: int) -> bytes:
        grey = (np.sin(x * 0.031 + 0.7 * np.sin(y * 0.017)) > 0.1).astype(np.uint8) * 255
        return np.stack([grey, np.full(side, 200, np.uint8)], axis=-1).tobytes()

    write_png(path, side, side, 4, row)


def tiff_pages(path: Path) -> None:
    import tifffile

    page = np.zeros((1, 1), np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for _ in range(10_000):
            tif.write(page, contiguous=False, photometric="minisblack", software=False)


def tiff_distinct(path: Path) -> None:
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for index in range(1024):
            tif.write(np.zeros((1, index + 1), np.uint8), contiguous=False, metadata=None)


def tiff_deflate_stack(path: Path) -> None:
    import tifffile

    page = np.zeros((1024, 1024), np.uint8)
    tifffile.imwrite(
        path,
        (page for _ in range(1900)),
        shape=(1900, 1024, 1024),
        dtype=np.uint8,
        compression="zlib",
        photometric="minisblack",
    )


def cases(limit: int) -> dict[str, tuple[str, Callable[[Path], None]]]:
    return {
        "png_bomb_40000": ("bomb.png", png_bomb),
        "tiff_10000_pages": ("pages.tif", tiff_pages),
        "tiff_1024_distinct_pages": ("distinct.tif", tiff_distinct),
        "tiff_deflate_stack": ("stack.tif", tiff_deflate_stack),
        "accepted_nphase_png": ("nphase.png", lambda p: accepted_nphase_png(p, limit)),
        "accepted_rgb_png": ("rgb.png", lambda p: accepted_rgb_png(p, limit)),
        "accepted_grey_alpha_png": ("grey_alpha.png", lambda p: accepted_grey_alpha_png(p, limit)),
    }


# --- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid: int, field: str) -> int:
    """A ``VmHWM``/``VmRSS`` line of /proc/PID/status, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # resets VmHWM to the current RSS


class Server:
    """uvicorn with the API only, on 127.0.0.1, under an address-space limit; a context."""

    def __init__(self, data_dir: Path, code: Path, memory_limit: int, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(code),
            "OMP_NUM_THREADS": "1",
            "MICROFORGE_DATA_DIR": str(data_dir),
            "MICROFORGE_REDIS_URL": "redis://127.0.0.1:9/0",  # never contacted by uploads
            **env,
        }
        self.memory_limit = memory_limit
        self.code = code
        self.process: subprocess.Popen | None = None
        self.idle_rss = 0

    def __enter__(self) -> Server:
        import resource

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (self.memory_limit, self.memory_limit))

        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "microforge.api.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=self.env,
            cwd=self.code,  # `python -m` puts the cwd before PYTHONPATH
            preexec_fn=limit,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited: {self.process.stderr.read().decode()[-2000:]}"
                )
            try:
                if httpx.get(self.url + "/openapi.json", timeout=2).status_code == 200:
                    self.idle_rss = proc_status(self.process.pid, "VmRSS")
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start within 60 s")

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def make_key(data_dir: Path, code: Path) -> str:
    script = (
        "from microforge.settings import Settings\n"
        "from microforge.storage.db import create_db_engine, make_session_factory\n"
        "from microforge.storage.api_keys import create_api_key\n"
        "settings = Settings()\n"
        "factory = make_session_factory(create_db_engine(settings.resolved_database_url))\n"
        "with factory() as session:\n"
        "    print(create_api_key(session, 'bench')[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(code), "MICROFORGE_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def upload(server: Server, key: str, path: Path, timeout: float) -> dict:
    pid = server.process.pid
    rss_before = proc_status(pid, "VmRSS")
    reset_peak(pid)
    start = time.perf_counter()
    try:
        with path.open("rb") as handle:
            response = httpx.post(
                server.url + "/v1/datasets",
                headers={"Authorization": f"Bearer {key}"},
                files={"files": (path.name, handle, "application/octet-stream")},
                timeout=timeout,
            )
        status, body = response.status_code, response.json()
        outcome = {"status": status, "code": body.get("code"), "detail": body.get("detail")}
        if status == 201:
            outcome["detail"] = body.get("description") or body.get("image_type")
    except (httpx.HTTPError, ValueError) as exc:
        outcome = {"status": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
    seconds = time.perf_counter() - start
    result = {**outcome, "seconds": round(seconds, 3), "file_bytes": path.stat().st_size}
    if server.alive:
        result["api_rss_before_bytes"] = rss_before
        result["api_peak_rss_bytes"] = proc_status(pid, "VmHWM")
    else:
        result["server_died"] = True
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--code", type=Path, default=_ROOT, help="checkout the server runs")
    parser.add_argument(
        "--decoded-limit",
        type=int,
        default=DEFAULT_LIMIT,
        help="size of the accepted cases (the server uses its own setting)",
    )
    parser.add_argument("--server-memory-limit", type=int, default=3 * 1024**3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per upload")
    parser.add_argument("--workdir", type=Path, help="where files are written (kept) ")
    args = parser.parse_args()

    table = cases(args.decoded_limit)
    names = args.cases or list(table)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mf-upload-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="mf-upload-data-"))
    report: dict = {
        "machine": machine_info(torch.device("cpu")),
        "code": str(args.code),
        "server_memory_limit_bytes": args.server_memory_limit,
        "cases": {},
    }
    try:
        for name in names:
            file_name, make = table[name]
            path = workdir / file_name
            if not path.exists():
                make(path)
        key = None
        for name in names:
            # A fresh server per case: a case's leftovers (or a crash) never skew the next.
            with Server(data_dir, args.code, args.server_memory_limit, {}) as server:
                key = key or make_key(data_dir, args.code)
                case = upload(server, key, workdir / table[name][0], args.timeout)
                case["api_idle_rss_bytes"] = server.idle_rss
                report["cases"][name] = case
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
