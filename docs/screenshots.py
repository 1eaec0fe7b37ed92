"""Screenshots of the web front end for the README, from a real run.

    python docs/screenshots.py                          # starts `microforge up` in a temp dir
    python docs/screenshots.py --url URL --key KEY      # or uses a running server

It uploads a micrograph (../shared/data/micrographs/micro001.png unless --image), trains
the tiny network for --iterations on it, generates a 64^3 volume, then opens the pages in
headless Chromium (Debian's ``chromium``; Playwright never downloads a browser) and writes
docs/images/web-*.png, reduced to a palette so each stays small. Takes a few minutes on
a CPU worker.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from microforge.client import MicroForgeClient  # noqa: E402
from microforge.worker.local_stack import free_port  # noqa: E402

OUT = ROOT / "docs" / "images"
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "micrographs" / "micro001.png"
SHOTS = [
    # (file, route builder, what to wait for, viewport height)
    ("web-dataset.png", lambda i: f"/datasets/{i['dataset']}", "img.preview[src^='blob:']", 780),
    ("web-training.png", lambda i: f"/jobs/{i['job']}", "figure .mark", 1000),
    ("web-volume.png", lambda i: f"/volumes/{i['volume']}", "svg.chart polyline", 1900),
]


def start_stack(data_dir: Path) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    env = {**os.environ, "MICROFORGE_DEVICE": os.environ.get("MICROFORGE_DEVICE", "auto")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = data_dir.parent / "up.log"
    command = [sys.executable, "-c", "from microforge.cli.main import cli; cli()", "up"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 180
    while "Press Ctrl-C to stop." not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"microforge up did not start:\n{log.read_text()}")
        time.sleep(0.5)
    key = re.search(r"first API key \(shown only now\): (\S+)", log.read_text()).group(1)
    return process, f"http://127.0.0.1:{port}", key


def make_content(client: MicroForgeClient, image: Path, iterations: int) -> dict[str, str]:
    config = {
        "arch": "tiny",
        "iterations": iterations,
        "quality_every": max(iterations // 8, 1),
        "preview_every": max(iterations // 4, 1),
        "progress_every": max(iterations // 40, 1),
        "seed": 1,
    }
    job = client.train([image], config=config, name="micro001 (DoITPoMS via MicroLib)")
    job = client.wait(job["id"], poll_seconds=2, timeout=3600)
    gen = client.generate(job["result"]["generator_id"], shape=(64, 64, 64), seed=7)
    gen = client.wait(gen["id"], poll_seconds=1, timeout=600)
    volume = gen["result"]["volume_id"]
    for _ in range(120):  # the report follows the volume
        if client.get_volume(volume).get("report"):
            break
        time.sleep(1)
    return {"dataset": job["spec"]["dataset_id"], "job": job["id"], "volume": volume}


def shoot(url: str, key: str, ids: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("install Debian's chromium: apt-get install -y chromium")
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800}, device_scale_factor=1)
        page.goto(f"{url}/")
        page.fill("#key", key)
        page.click("form.signin button[type=submit]")
        page.wait_for_selector("h1:text-is('Datasets')")
        for name, route, ready, height in SHOTS:
            page.set_viewport_size({"width": 1200, "height": height})
            page.goto(f"{url}/#{route(ids)}")
            page.wait_for_selector(ready, timeout=60_000)
            page.wait_for_timeout(800)
            path = OUT / name
            page.screenshot(path=str(path))
            # A palette keeps a screenshot of flat colours small (well under 150 KB).
            Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
            print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--key", help="an API key of that server")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--iterations", type=int, default=160)
    args = parser.parse_args()
    process = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            url, key = args.url.rstrip("/"), args.key
        else:
            process, url, key = start_stack(Path(tmp) / "data")
        try:
            with MicroForgeClient(url, key) as client:
                ids = make_content(client, args.image, args.iterations)
            shoot(url, key, ids)
        finally:
            if process is not None:
                process.send_signal(signal.SIGINT)
                process.wait(90)


if __name__ == "__main__":
    main()
