"""The web front end in a real browser against real processes (``microforge up``).

One walk through what a user does: sign in, upload a real micrograph under a hostile file
name (shown as text, never run), train ``tiny`` for a few iterations while the page
updates, generate a small volume, move the slice viewer, read the report, download the
TIFF and check it, make a share link and open it in a browser context that never signed
in (the download starts); import generators (an exported file, a SliceGAN run's two
files); then sign in with a second key and see none of it.

Headless Chromium is Debian's ``chromium`` (``apt-get install -y chromium``; .ci/run
installs it), driven by Playwright with ``executable_path`` so nothing is downloaded. The
test skips when either is missing. On failure, a screenshot of the page and the stack's
log are saved under the test's tmp dir (the path is printed).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile

from tests.slicegan_reference import make_files
from tests.test_e2e_local_stack import Stack, create_key
from tests.worker_helpers import wait_for

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the browser fixture skips the test then
    PlaywrightError = Exception

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page, url: str, key: str) -> None:
    page.goto(f"{url}/")
    page.wait_for_selector("#key")
    page.fill("#key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("h1:text-is('Datasets')")


def wait_for_state(page, state: str, timeout_s: float) -> None:
    page.wait_for_selector(f"h1 .badge:text-is('{state}')", timeout=timeout_s * 1000)


def test_browser_walkthrough(browser, shared_data: Path, tmp_path: Path):
    micrograph = tmp_path / f"{HOSTILE}.png"
    shutil.copy(shared_data / "micrographs" / "micro001.png", micrograph)
    data_dir = tmp_path / "data"
    # The report solves tortuosity here although the worker has no GPU (the volume is tiny).
    stack = Stack(data_dir, tmp_path / "up.log", env={"MICROFORGE_REPORT_TORTUOSITY": "always"})
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda dialog: (problems.append(dialog.message), dialog.accept()))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    try:
        key = create_key(data_dir, "browser")
        other_key = create_key(data_dir, "someone else")
        assert "sign in" in stack.output()
        # The train page says what the worker runs on once it has announced itself (a busy
        # machine can take a while to start it).
        wait_for(
            lambda: httpx.get(f"{stack.url}/v1/health", timeout=5).json().get("worker_devices"),
            90,
            "the worker to announce its device",
        )
        page.goto(f"{stack.url}/")
        page.wait_for_selector("#key")  # signed out: the sign-in page, whatever the route
        assert "key" not in page.url.split("#")[0]
        sign_in(page, stack.url, key)
        assert key not in page.url

        # Upload under a hostile name: it must come back as text.
        page.set_input_files("#files", str(micrograph))
        page.click("form.upload button[type=submit]")
        page.wait_for_selector("h2:text-is('What was detected')", timeout=60_000)
        assert page.inner_text("h1.name") == HOSTILE
        assert page.locator("img[src='x']").count() == 0
        assert "nphase (detected)" in page.inner_text("main")
        assert "255" in page.inner_text("main") and "%" in page.inner_text("main")
        page.wait_for_selector("img.preview[src^='blob:']")

        # Train tiny for a few iterations and watch the page move without reloading.
        page.click("text=Train a generator")
        page.wait_for_selector("#cfg-arch")
        assert "CPU" in page.inner_text(".estimate")
        page.select_option("#cfg-arch", "paper")
        assert "very slow" in page.inner_text(".estimate")  # a large network on a CPU
        page.select_option("#cfg-arch", "tiny")
        page.click("details.advanced summary")
        settings = {
            "iterations": 8,
            "quality_every": 4,
            "critic_batch": 2,
            "critic_steps": 2,
            "progress_every": 1,
            "preview_every": 2,
            "checkpoint_every": 4,
        }
        for name, value in settings.items():
            page.fill(f"#cfg-{name}", str(value))
        page.click("form.train button[type=submit]")
        page.wait_for_selector("h1:has-text('Training job')")
        seen = set()
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            seen.add(page.inner_text(".progress-line"))
            if page.locator("h1 .badge:text-is('succeeded')").count():
                break
            assert page.locator("h1 .badge:text-is('failed')").count() == 0, page.inner_text("main")
            time.sleep(0.3)
        wait_for_state(page, "succeeded", 5)
        assert len(seen) >= 2, f"the page never updated: {seen}"
        assert "8 / 8" in page.inner_text(".progress-line")
        page.wait_for_selector("figure:has-text('Fidelity score') .mark")
        page.wait_for_selector("img.preview[src^='blob:']")

        # Generate a small volume from the final generator.
        page.click("text=Generate a volume")
        page.wait_for_selector("#shape-z")
        for axis, size in zip("zyx", (16, 24, 24)):
            page.fill(f"#shape-{axis}", str(size))
        assert "9,216 voxels" in page.inner_text(".estimate")
        page.fill("#seed", "3")
        page.click("form button[type=submit]:text-is('Generate')")
        page.wait_for_selector("h1:has-text('Generation job')")
        wait_for_state(page, "succeeded", 90)
        page.click("text=Open the volume")
        page.wait_for_selector("#slice-z")

        # The viewer: a slider moves its plane.
        page.wait_for_selector(".plane img.slice[src^='blob:']")
        before = page.get_attribute(".plane img.slice", "src")
        page.focus("#slice-z")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "(b) => document.querySelector('.plane img.slice').src !== b", arg=before
        )
        assert page.inner_text("output[for=slice-z]").startswith("9 /")
        page.wait_for_selector("text=Two-point correlation S2 of phase 0", timeout=60_000)
        assert page.locator(".verdict-line .badge").count() == 1
        page.wait_for_selector("h3:text-is('Tortuosity')")
        tortuosity = page.locator("table:has(caption:text-is('Tortuosity per phase'))")
        assert tortuosity.count() == 1
        assert "Carries no flow x / y / z" in tortuosity.locator("thead").inner_text()
        no_flow = [
            row.locator("td").last.inner_text() for row in tortuosity.locator("tbody tr").all()
        ]
        for cell in no_flow:  # a share per axis (100 % where the phase has no path)
            assert re.fullmatch(r"(\d+(\.\d)?\s?%|—)( / (\d+(\.\d)?\s?%|—)){2}", cell), cell
        assert any("%" in cell for cell in no_flow), no_flow
        assert page.locator(".phase-legend li").count() == 2  # phases 0 and 255, in colour

        # Download the TIFF and read it back.
        with page.expect_download() as download_info:
            page.click("button:text-is('Download TIFF')")
        saved = tmp_path / "download.tif"
        download_info.value.save_as(saved)
        volume = tifffile.imread(saved)
        assert volume.shape == (16, 24, 24) and set(np.unique(volume)) <= {0, 255}

        # A share link works without any key: opened in a browser context that never
        # signed in (no sessionStorage, no cookies), it starts the download of the TIFF.
        page.click("button:text-is('Create share link')")
        link = page.input_value("#share-url")
        assert link.startswith(stack.url) and key not in link
        stranger = browser.new_context(accept_downloads=True)
        try:
            answer = stranger.request.get(link)
            assert answer.status == 200, answer.status
            assert answer.headers["content-type"] == "image/tiff"
            assert answer.body() == saved.read_bytes()
            shared_page = stranger.new_page()
            with shared_page.expect_download() as shared_info:
                try:
                    shared_page.goto(link)
                except PlaywrightError as error:  # navigating to a download aborts the page
                    if "Download is starting" not in str(error):
                        raise
            shared = tmp_path / "shared.tif"
            shared_info.value.save_as(shared)
            assert shared.read_bytes() == saved.read_bytes()
            assert shared_info.value.suggested_filename.endswith(".tif")
        finally:
            stranger.close()
        volume_route = page.url.split("#", 1)[1]

        # Import in the browser: the generator exported above, then a public SliceGAN run's
        # two files, first refused with the API's own words (3 channels: which kind?).
        page.goto(f"{stack.url}/#/generators")
        page.wait_for_selector("#gen-file")
        with page.expect_download() as generator_info:
            page.locator("button:text-is('Download')").first.click()
        exported = tmp_path / "exported.safetensors"
        generator_info.value.save_as(exported)
        page.set_input_files("#gen-file", str(exported))
        page.click("form.import-form button[type=submit]")
        page.wait_for_selector("form.import-form .notice.ok")
        weights, params, _ = make_files(tmp_path, channels=3, imtype="nphase", rc=True)
        page.check("#gen-kind-slicegan")
        page.set_input_files("#gen-weights", str(weights))
        page.set_input_files("#gen-params", str(params))
        page.click("form.import-form button[type=submit]")
        refusal = page.wait_for_selector("form.import-form .notice.error")
        assert "3 channels: colour or three phases?" in refusal.inner_text()
        page.select_option("#gen-type", "nphase")
        page.fill("#gen-phases", "0,128,255")
        page.fill("#gen-pixel", "0.5")
        page.click("form.import-form button[type=submit]")
        page.wait_for_selector("form.import-form .notice.ok")
        imported = httpx.get(
            f"{stack.url}/v1/generators", headers={"Authorization": f"Bearer {key}"}
        ).json()["items"]
        assert [g["config"].get("source") for g in imported[:2]] == ["slicegan", None]
        assert imported[0]["phases"] == [0, 128, 255]
        assert (imported[0]["config"]["voxel_size"], imported[0]["config"]["unit"]) == (0.5, "um")
        assert imported[1]["config"]["imported_from"] == exported.name
        # the list is fetched again after the notice appears: wait for it, then look
        page.wait_for_function(
            "text => document.querySelector('main').innerText.includes(text)", arg="0, 128, 255"
        )
        assert "0, 128, 255" in page.inner_text("main")
        # grouped per training job (final and best together), imports apart
        trained = page.locator("section.gen-group").first.inner_text()
        assert "Training job" in trained and "final weights" in trained
        assert "best fidelity check" in trained or "also the best check" in trained
        imports = page.locator("section.gen-group:has(h2:text-is('Imported'))").inner_text()
        assert "SliceGAN import" in imports and exported.name in imports

        # Sign out, and a second key sees none of it.
        page.click("button:text-is('Sign out')")
        page.wait_for_selector("#key")
        assert page.evaluate("sessionStorage.length") == 0
        sign_in(page, stack.url, other_key)
        page.wait_for_selector("text=No datasets yet")
        page.goto(f"{stack.url}/#{volume_route}")
        page.wait_for_selector("text=This page could not be shown")
        assert "for this API key" in page.inner_text("main")
        page.goto(f"{stack.url}/#/volumes")
        page.wait_for_selector("text=No volumes yet")
        assert problems == [], problems
    except Exception:
        shots = tmp_path / "screenshots"
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / "failure.png"), full_page=True)
        (shots / "stack.log").write_text(stack.output())
        print(f"screenshot and log saved under {shots}")
        raise
    finally:
        context.close()
        stack.stop()
