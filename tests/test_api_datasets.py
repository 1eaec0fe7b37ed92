"""Dataset uploads: good layouts, every bad case, the size cap, previews, deletion."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile
from PIL import Image
from sqlalchemy import func, select

from microforge.storage.tables import Dataset, Job


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def two_phase(size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((size, size)) > 0.6) * 255).astype(np.uint8)


def tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def stored_files(api_app) -> list[Path]:
    root = api_app.state.service.blobs.root
    return [path for path in root.rglob("*") if path.is_file()]


def dataset_count(api_app) -> int:
    with api_app.state.service.session_factory() as session:
        return session.scalar(select(func.count()).select_from(Dataset))


def test_one_png_is_an_isotropic_nphase_dataset(client, auth, api_app) -> None:
    response = client.post(
        "/v1/datasets",
        headers=auth,
        files={"files": ("../../evil name.png", png_bytes(two_phase()), "image/png")},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["image_type"] == "nphase" and body["detected"] is True
    assert body["layout"] == "isotropic"
    assert [phase["value"] for phase in body["phases"]] == [0, 255]
    assert abs(sum(phase["fraction"] for phase in body["phases"]) - 1) < 1e-9
    assert body["shapes"] == [[48, 48]]
    assert body["name"] == "evil name"
    # Stored under server-made keys, never the client's name.
    names = [path.name for path in stored_files(api_app)]
    assert names and not any("evil" in name for name in names)

    preview = client.get(body["links"]["preview"], headers=auth)
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    greys = np.unique(np.asarray(Image.open(io.BytesIO(preview.content))))
    assert set(greys.tolist()) == {0, 255}


def test_three_images_are_anisotropic(client, auth) -> None:
    files = [
        ("files", (f"{axis}.png", png_bytes(two_phase(seed=i)), "image/png"))
        for i, axis in enumerate("xyz")
    ]
    response = client.post("/v1/datasets", headers=auth, files=files, data={"name": "sep"})
    assert response.status_code == 201, response.text
    assert response.json()["layout"] == "anisotropic"
    assert response.json()["name"] == "sep"


def test_a_3d_tiff_is_a_volume_dataset(client, auth) -> None:
    volume = (np.random.default_rng(1).random((20, 24, 28)) > 0.5).astype(np.uint8)
    response = client.post(
        "/v1/datasets", headers=auth, files={"files": ("v.tif", tiff_bytes(volume), "image/tiff")}
    )
    assert response.status_code == 201, response.text
    assert response.json()["layout"] == "volume"
    assert response.json()["shapes"] == [[20, 24, 28]]
    assert client.get(response.json()["links"]["preview"], headers=auth).status_code == 200


def test_given_image_type_is_used(client, auth) -> None:
    response = client.post(
        "/v1/datasets",
        headers=auth,
        files={"files": ("a.png", png_bytes(two_phase()), "image/png")},
        data={"image_type": "grayscale"},
    )
    assert response.status_code == 201
    assert response.json()["image_type"] == "grayscale" and response.json()["detected"] is False


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ([("files", ("a.png", b"", "image/png"))], {}, 422, "empty_file"),
        (
            [("files", ("a.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"))],
            {},
            422,
            "invalid_image",
        ),
        (
            [("files", ("a.txt", b"hello world, not an image", "text/plain"))],
            {},
            422,
            "invalid_image",
        ),
        (
            [("files", (f"{i}.png", png_bytes(two_phase()), "image/png")) for i in range(2)],
            {},
            422,
            "wrong_number_of_files",
        ),
        (
            [("other", ("a.png", png_bytes(two_phase()), "image/png"))],
            {},
            422,
            "unexpected_file_field",
        ),
        (
            [("files", ("a.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png"))],
            {},
            422,
            "invalid_training_data",
        ),
        (
            [("files", ("a.png", png_bytes(two_phase()), "image/png"))],
            {"image_type": "rgb"},
            422,
            "invalid_image_type",
        ),
        *(
            (
                [("files", ("a.png", png_bytes(two_phase()), "image/png"))],
                bad,
                422,
                "invalid_pixel_size",
            )
            for bad in (
                {"pixel_size": "-1"},
                {"pixel_size": "fine"},
                {"pixel_size": "nan"},
                {"unit": "um"},
                {"pixel_size": "0.1", "unit": "furlong"},
            )
        ),
    ],
)
def test_bad_uploads_leave_nothing_behind(client, auth, api_app, files, data, status, code):
    response = client.post("/v1/datasets", headers=auth, files=files, data=data)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert response.json()["detail"]
    if data.get("unit") == "furlong":
        detail = response.json()["detail"]
        assert detail == "unit 'furlong' is not offered: use one of nm, um, mm, cm, m"
    assert dataset_count(api_app) == 0
    assert stored_files(api_app) == []


def test_a_huge_header_is_refused_before_decoding(api_settings, auth, api_app) -> None:
    """A tiny file that claims 100k x 100k pixels must fail from its header alone."""
    from fastapi.testclient import TestClient

    from microforge.api.app import create_app

    small_limit = api_settings.model_copy(update={"max_image_pixels": 10_000})
    app = create_app(small_limit)
    with TestClient(app) as client:
        response = client.post(
            "/v1/datasets",
            headers=auth,
            files={"files": ("a.png", png_bytes(two_phase(size=200)), "image/png")},
        )
    assert response.status_code == 422
    assert response.json()["code"] in {"invalid_image", "image_too_large"}
    assert stored_files(app) == []


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int, rows: int = 64) -> bytes:
    """A PNG declaring width x height grey pixels: a valid IHDR, then an IDAT holding the
    start of a real zlib stream of zero rows (deflate squeezes them ~1000:1), then IEND.
    Decoders only find it is short after allocating the whole image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + one zero byte per pixel
    data = b"".join(compressor.compress(row) for _ in range(rows))
    data += compressor.flush(zlib.Z_SYNC_FLUSH)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


class PeakRss:
    """The highest RSS of this process (psutil, sampled every 2 ms) while the block runs,
    above what it was on entry."""

    def __enter__(self) -> PeakRss:
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_a_png_bomb_under_the_pixel_cap_is_refused_fast_and_small(client, auth, api_app):
    """40000 x 40000 (1.6e9 pixels, under MICROFORGE_MAX_IMAGE_PIXELS) in a 1.6 kB file.

    Before issue #9 it was decoded: 54-67 s and 14-16 GB in the API process."""
    payload = bomb_png(40_000, 40_000)
    assert len(payload) < 10_000
    with PeakRss() as rss:
        start = time.perf_counter()
        response = client.post(
            "/v1/datasets", headers=auth, files={"files": ("bomb.png", payload, "image/png")}
        )
        elapsed = time.perf_counter() - start
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "image_too_large"
    for part in (
        "bomb.png: decodes to 1.5 GiB",
        "40,000 x 40,000 pixels x 1 channel x 1 byte",
        "over the limit of 384.0 MiB",
        "MICROFORGE_MAX_DECODED_BYTES",
        "crop or downscale",
    ):
        assert part in body["detail"]
    assert elapsed < 3
    assert rss.growth < 200 * 1024**2, f"API memory grew by {rss.growth / 1024**2:.0f} MiB"
    assert stored_files(api_app) == [] and dataset_count(api_app) == 0


def test_a_10000_page_tiff_is_answered_in_well_under_a_second(client, auth, many_page_tiff):
    """2.2 MB of 10,000 1x1 pages: 22-29 s to a 422 before issue #9."""
    payload = many_page_tiff.read_bytes()
    start = time.perf_counter()
    response = client.post(
        "/v1/datasets", headers=auth, files={"files": ("pages.tif", payload, "image/tiff")}
    )
    assert time.perf_counter() - start < 0.5
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "image_too_large"
    assert "more than 4,096 TIFF pages" in response.json()["detail"]


def test_decoded_bytes_are_summed_over_the_files_and_right_under_the_limit_works(
    api_settings, auth
) -> None:
    from fastapi.testclient import TestClient

    from microforge.api.app import create_app

    app = create_app(api_settings.model_copy(update={"max_decoded_bytes": 48 * 48 * 3 - 1}))
    square = png_bytes(two_phase(48))  # 2,304 bytes decoded
    with TestClient(app) as client:
        accepted = client.post(
            "/v1/datasets", headers=auth, files={"files": ("a.png", square, "image/png")}
        )
        assert accepted.status_code == 201, accepted.text
        files = [("files", (f"{axis}.png", square, "image/png")) for axis in "xyz"]
        refused = client.post("/v1/datasets", headers=auth, files=files)
        tall = png_bytes(np.vstack([two_phase(48)] * 3))  # 6,912 bytes alone
        alone = client.post(
            "/v1/datasets", headers=auth, files={"files": ("tall.png", tall, "image/png")}
        )
    assert refused.status_code == 422
    assert refused.json()["code"] == "image_too_large"
    assert (
        "decode to 6,912 bytes together, over the limit of 6,911 bytes"
        in (refused.json()["detail"])
    )
    assert alone.status_code == 422 and alone.json()["code"] == "image_too_large"
    assert "tall.png: decodes to 6,912 bytes" in alone.json()["detail"]


def test_upload_over_the_cap_is_413_and_leaves_no_file(api_settings, auth) -> None:
    from fastapi.testclient import TestClient

    from microforge.api.app import create_app

    app = create_app(api_settings.model_copy(update={"max_upload_bytes": 1000}))
    payload = png_bytes((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8))
    assert len(payload) > 1000
    with TestClient(app) as client:
        response = client.post(
            "/v1/datasets", headers=auth, files={"files": ("a.png", payload, "image/png")}
        )
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    assert stored_files(app) == []


def test_not_multipart_is_415(client, auth) -> None:
    response = client.post("/v1/datasets", headers=auth, json={"files": []})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_list_pagination_and_delete(client, auth, api_app) -> None:
    ids = []
    for seed in range(5):
        response = client.post(
            "/v1/datasets",
            headers=auth,
            files={"files": ("a.png", png_bytes(two_phase(seed=seed)), "image/png")},
        )
        ids.append(response.json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/datasets", headers=auth, params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = client.get("/v1/datasets", headers=auth, params={"cursor": "garbage!"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
    assert client.get("/v1/datasets", headers=auth, params={"limit": 101}).status_code == 422

    before = len(stored_files(api_app))
    assert client.delete(f"/v1/datasets/{ids[0]}", headers=auth).status_code == 204
    assert client.get(f"/v1/datasets/{ids[0]}", headers=auth).status_code == 404
    assert len(stored_files(api_app)) == before - 2  # the image and its preview


def test_delete_is_refused_while_a_job_uses_the_dataset(client, auth, api_app) -> None:
    dataset = client.post(
        "/v1/datasets",
        headers=auth,
        files={"files": ("a.png", png_bytes(two_phase()), "image/png")},
    ).json()
    job = client.post(
        "/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset["id"]}
    ).json()
    response = client.delete(f"/v1/datasets/{dataset['id']}", headers=auth)
    assert response.status_code == 409 and response.json()["code"] == "dataset_in_use"
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 204
    with api_app.state.service.session_factory() as session:
        assert session.get(Job, job["id"]).dataset_id is None
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["spec"]["dataset_id"]


SHARED_CASES = [
    ("micrographs/micro001.png", "nphase", "isotropic"),
    ("micrographs/micro060.png", "nphase", "isotropic"),
    ("micrographs/micro007.png", "grayscale", "isotropic"),
    ("micrographs/sofc_anode_3phase.tif", "nphase", "isotropic"),
    ("volumes/sofc_anode_3phase_62.tif", "nphase", "volume"),
]


@pytest.mark.parametrize(("name", "image_type", "layout"), SHARED_CASES)
def test_real_micrographs(client, auth, shared_data, name, image_type, layout) -> None:
    path = shared_data / name
    response = client.post(
        "/v1/datasets", headers=auth, files={"files": (path.name, path.read_bytes())}
    )
    assert response.status_code == 201, response.text
    assert response.json()["image_type"] == image_type
    assert response.json()["layout"] == layout


def test_a_pixel_size_makes_the_statistics_physical(client, auth) -> None:
    files = {"files": ("a.png", png_bytes(two_phase()), "image/png")}
    plain = client.post("/v1/datasets", headers=auth, files=files).json()
    sized = client.post(
        "/v1/datasets", headers=auth, files=files, data={"pixel_size": "0.5", "unit": "nm"}
    ).json()
    assert (plain["pixel_size"], plain["unit"]) == (None, None)
    assert (sized["pixel_size"], sized["unit"]) == (0.5, "nm")
    voxels, physical = plain["statistics"][0], sized["statistics"][0]
    assert (voxels["length_unit"], physical["length_unit"]) == ("voxel", "nm")
    area = voxels["phases"]["255"]["specific_surface_area"]
    assert physical["phases"]["255"]["specific_surface_area"] == pytest.approx(area / 0.5)
