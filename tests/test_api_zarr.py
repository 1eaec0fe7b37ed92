"""Generate jobs with format ome-zarr: the worker writes a store into the blob store, the
API serves it as a zip, file by file (Range) to its owner, and to share links without a
key (CORS); the voxels equal those of the TIFF job of the same generator and seed."""

from __future__ import annotations

import contextlib
import io
import zipfile

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from PIL import Image

from microforge.storage.blob_gc import find_garbage, remove_abandoned_temporary_files
from microforge.storage.tables import Volume
from tests.worker_helpers import run_generate_job_here

from engine_helpers import untrained_generator_file


def _generator_bytes(tmp_path) -> bytes:
    image = np.zeros((64, 64), np.uint8)
    image[::3] = 255
    image[:, ::5] = 128
    return untrained_generator_file(tmp_path / "g.safetensors", image).read_bytes()


def _generate(client, auth, api_app, generator_id: str, **fields) -> dict:  # noqa: ANN001
    body = {"kind": "generate", "generator_id": generator_id, "shape": [20, 24, 28], "seed": 5}
    job = client.post("/v1/jobs", headers=auth, json=body | {"chunk": 12, **fields})
    assert job.status_code == 202, job.text
    assert run_generate_job_here(api_app, job.json()["id"]) == "succeeded"
    volume_id = client.get(job.json()["links"]["self"], headers=auth).json()["result"]["volume_id"]
    return client.get(f"/v1/volumes/{volume_id}", headers=auth).json()


def test_an_ome_zarr_job_is_served_as_zip_files_and_share_link(
    client, auth, other_auth, api_app, tmp_path, monkeypatch
) -> None:
    import threading

    from microforge.storage.zarr_volume import VolumeZarrWriter

    writing_threads = set()
    write = VolumeZarrWriter.write

    def recorded(self, slab):  # noqa: ANN001, ANN202
        writing_threads.add(threading.current_thread().name)
        return write(self, slab)

    monkeypatch.setattr(VolumeZarrWriter, "write", recorded)
    upload = client.post(
        "/v1/generators",
        headers=auth,
        files={"file": ("g.safetensors", _generator_bytes(tmp_path))},
    )
    assert upload.status_code == 201, upload.text
    generator_id = upload.json()["id"]
    tiff_volume = _generate(client, auth, api_app, generator_id, voxel_size=0.5)
    volume = _generate(client, auth, api_app, generator_id, voxel_size=0.5, format="ome-zarr")
    assert tiff_volume["format"] == "tiff" and volume["format"] == "ome-zarr"
    # The job wrote each slab before generating the next (overlap_writes: flat memory).
    assert writing_threads == {threading.current_thread().name}
    assert volume["links"]["zarr"] == f"/v1/volumes/{volume['id']}/zarr/"
    assert "zarr" not in tiff_volume["links"]
    state = api_app.state.service
    with state.session_factory() as session:
        row = session.get(Volume, volume["id"])
        key, etag = row.blob_key, row.etag
    assert key.endswith(".ome.zarr") and state.blobs.is_tree(key)
    assert volume["size_bytes"] == state.blobs.size(key) > 0
    assert volume["report"] is not None and "error" not in volume["report"]

    # The zip: streamed, unzips to a store equal to the TIFF (zarr and ome_zarr agree).
    tiff = tifffile.imread(
        io.BytesIO(client.get(tiff_volume["links"]["file"], headers=auth).content)
    )
    download = client.get(volume["links"]["file"], headers=auth)
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/zip"
    assert int(download.headers["content-length"]) == len(download.content)
    assert f'filename="{volume["id"]}.ome.zarr.zip"' in download.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert all(n.startswith(f"{volume['id']}.ome.zarr/") for n in archive.namelist())
        archive.extractall(tmp_path / "unzipped")
    store = tmp_path / "unzipped" / f"{volume['id']}.ome.zarr"
    group = zarr.open_group(store, mode="r")
    assert np.array_equal(group["0"][:], tiff) and len(np.unique(tiff)) > 1
    # n-phase: a label image, each phase value with its colour (open_volume_writer's phases)
    colours = group.attrs["ome"]["image-label"]["colors"]
    assert [colour["label-value"] for colour in colours] == volume["phases"] == [0, 128, 255]
    image = list(Reader(parse_url(str(store)))())[0]
    assert np.array_equal(np.asarray(image.data[0]), tiff)
    scale = image.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [0.5, 0.5, 0.5]
    head = client.head(volume["links"]["file"], headers=auth)
    assert head.status_code == 200 and head.content == b""
    again = client.get(
        volume["links"]["file"], headers=auth | {"If-None-Match": head.headers["etag"]}
    )
    assert again.status_code == 304

    # The store's files, keyed: JSON metadata, and a chunk with Range.
    base = volume["links"]["zarr"]
    meta = client.get(base + "zarr.json", headers=auth)
    assert meta.status_code == 200 and meta.headers["content-type"] == "application/json"
    assert meta.json()["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
    assert "access-control-allow-origin" not in meta.headers  # keyed routes: same origin only
    chunk = (store / "0" / "c" / "0" / "0" / "0").read_bytes()
    whole = client.get(base + "0/c/0/0/0", headers=auth)
    assert whole.status_code == 200 and whole.content == chunk
    assert whole.headers["content-type"] == "application/octet-stream"
    part = client.get(base + "0/c/0/0/0", headers=auth | {"Range": "bytes=2-9"})
    assert part.status_code == 206 and part.content == chunk[2:10]
    assert part.headers["content-range"] == f"bytes 2-9/{len(chunk)}"

    # Another key, paths outside the store, a TIFF volume, a directory: 404.
    assert client.get(base + "zarr.json", headers=other_auth).status_code == 404
    assert client.get(volume["links"]["file"], headers=other_auth).status_code == 404
    for bad in ("..%2F..%2Fzarr.json", "0/../../x", "%2Fetc%2Fpasswd", "0", "", "0//zarr.json"):
        response = client.get(base + bad, headers=auth)
        assert response.status_code == 404, bad
    traversal = client.get(base + "0/%2E%2E/%2E%2E/%2E%2E/settings", headers=auth)
    assert traversal.status_code == 404
    assert traversal.headers["content-type"] == "application/problem+json"
    tiff_store = client.get(f"/v1/volumes/{tiff_volume['id']}/zarr/zarr.json", headers=auth)
    assert tiff_store.status_code == 404 and tiff_store.json()["code"] == "not_a_zarr_volume"

    # slice.png reads the store's chunks: the same PNG as the TIFF of the same seed.
    assert client.get(volume["links"]["slice"], headers=auth).status_code == 200
    for axis, index, colour in (("z", 0, "grey"), ("z", 19, "phases"), ("y", 7, "phases"),
                                ("x", 27, "grey"), ("x", 13, "phases")):  # fmt: skip
        params = {"axis": axis, "index": index, "colour": colour}
        pngs = [
            client.get(f"/v1/volumes/{v['id']}/slice.png", headers=auth, params=params)
            for v in (tiff_volume, volume)
        ]
        assert [png.status_code for png in pngs] == [200, 200], pngs[1].text
        assert pngs[1].headers["content-type"] == "image/png"
        assert pngs[1].content == pngs[0].content, params
        expected = np.take(tiff, index, axis="zyx".index(axis))
        drawn = np.asarray(Image.open(io.BytesIO(pngs[1].content)))
        assert drawn.shape[:2] == expected.shape
    outside = client.get(volume["links"]["slice"].replace("index=0", "index=20"), headers=auth)
    assert outside.status_code == 422 and outside.json()["code"] == "slice_out_of_range"

    # A share link: no key, CORS headers, preflight for Range; the zip too.
    link = client.post(f"/v1/volumes/{volume['id']}/share", headers=auth).json()["path"]
    shared = client.get(link + "/zarr/0/c/0/0/0", headers={"Range": "bytes=0-3"})
    assert shared.status_code == 206 and shared.content == chunk[:4]
    assert shared.headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in shared.headers["access-control-expose-headers"]
    preflight = client.options(
        link + "/zarr/zarr.json",
        headers={"Origin": "https://viewer.example", "Access-Control-Request-Headers": "range"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "Range" in preflight.headers["access-control-allow-headers"]
    missing = client.get(link + "/zarr/0/%2E%2E/%2E%2E/zarr.json")
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "*"
    assert client.get(link + "/zarr/nope.json").status_code == 404
    shared_zip = client.get(link)
    assert shared_zip.status_code == 200 and shared_zip.content == download.content
    assert (
        "access-control-allow-origin"
        not in client.get(tiff_volume["links"]["file"], headers=auth).headers
    )
    assert etag

    # Deleting the volume removes the whole tree; nothing is left for the collector.
    assert client.delete(f"/v1/volumes/{volume['id']}", headers=auth).status_code == 204
    assert not state.blobs.exists(key)
    assert client.get(link + "/zarr/zarr.json").status_code == 404
    remove_abandoned_temporary_files(state.blobs)
    assert list(state.blobs.temp_files()) == []
    with state.session_factory() as session:
        assert find_garbage(state.blobs, session, older_than_seconds=0) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_compression_is_refused_for_ome_zarr(client, auth) -> None:
    response = client.post(
        "/v1/jobs",
        headers=auth,
        json={
            "kind": "generate",
            "generator_id": "gen_x",
            "shape": [8, 8, 8],
            "format": "ome-zarr",
            "compression": "zlib",
        },
    )
    assert response.status_code == 422, response.text
    assert "TIFF only" in response.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    fields = schema["GenerateJobRequest"]["properties"]
    assert fields["format"]["default"] == "tiff"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_remote_generate_asks_for_ome_zarr(client, auth, monkeypatch, tmp_path) -> None:
    from click.testing import CliRunner

    from microforge.cli.main import cli
    from microforge.client import MicroForgeClient

    key = auth["Authorization"].removeprefix("Bearer ")

    def connect(_ctx):  # noqa: ANN001, ANN202 - the remote group's client, on the test app
        return MicroForgeClient("http://testserver", key, transport=client._transport)

    monkeypatch.setattr("microforge.cli.client_commands.client_for", connect)
    upload = client.post(
        "/v1/generators",
        headers=auth,
        files={"file": ("g.safetensors", _generator_bytes(tmp_path))},
    )
    generator_id = upload.json()["id"]
    args = ["remote", "--key", key, "generate", generator_id, "--shape", "8", "8", "8"]
    result = CliRunner().invoke(cli, [*args, "--format", "ome-zarr"])
    assert result.exit_code == 0, result.output
    job = client.get(f"/v1/jobs/{result.output.strip().splitlines()[-1]}", headers=auth).json()
    assert job["spec"]["format"] == "ome-zarr"
    refused = CliRunner().invoke(cli, [*args, "--format", "ome-zarr", "--compress", "zlib"])
    assert refused.exit_code != 0 and "TIFF only" in refused.output


def _add_store_volume(api_app, auth, fill) -> tuple[str, str]:  # noqa: ANN001
    """A volume row for a store that ``fill(folder)`` writes into a new tree blob: (id, key)."""
    from microforge.storage.api_keys import authenticate

    state = api_app.state.service
    key = state.blobs.new_key("volumes", ".ome.zarr")
    with state.blobs.writing_tree(key) as temp:
        shape = fill(temp)
    with state.session_factory() as session:
        owner = authenticate(session, auth["Authorization"].removeprefix("Bearer ")).id
        row = Volume(
            owner_id=owner,
            blob_key=key,
            format="ome-zarr",
            shape=list(shape),
            dtype="uint8",
            image_type="nphase",
            phases=[0, 100, 200],
            size_bytes=state.blobs.size(key),
            etag="zarr-etag",
        )
        session.add(row)
        session.commit()
        return row.id, key


@contextlib.contextmanager
def _serving(api_app):  # noqa: ANN001, ANN202
    """The app on a real HTTP server (uvicorn, a free local port), in a thread: its base URL.
    The TestClient has run the app's start-up already: the server only serves."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(api_app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_zarr_opens_the_store_over_http_with_a_key_and_through_a_share_link(
    client, auth, api_app
) -> None:
    """What a viewer does: zarr (fsspec's HTTP store: HEAD, GET, Range) reads the store
    from a running server, keyed and through a share link."""
    from microforge.storage.zarr_volume import VolumeZarrWriter

    labels = (np.random.default_rng(1).integers(0, 3, (40, 33, 70)) * 100).astype(np.uint8)

    def fill(temp):  # noqa: ANN001, ANN202
        with VolumeZarrWriter(temp, labels.shape, labels.dtype, voxel_size=2.0, chunk=16) as writer:
            writer.write(labels)
        return labels.shape

    volume_id, _ = _add_store_volume(api_app, auth, fill)
    link = client.post(f"/v1/volumes/{volume_id}/share", headers=auth).json()["path"]
    with _serving(api_app) as base:
        keyed = zarr.open_group(
            f"{base}/v1/volumes/{volume_id}/zarr/",
            mode="r",
            storage_options={"headers": dict(auth)},
        )
        assert np.array_equal(keyed["0"][:], labels)
        assert np.array_equal(keyed["1"][:], labels[::2, ::2, ::2])
        shared = zarr.open_group(f"{base}{link}/zarr/", mode="r")
        assert np.array_equal(shared["0"][5:30, 3:20, 60:], labels[5:30, 3:20, 60:])
        scale = shared.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        assert scale[0]["scale"] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_store_zip_has_its_length_in_advance_and_is_streamed(client, auth, api_app) -> None:
    """Content-Length (HEAD and GET) is the zip's size; the zip holds the store's files,
    stored; and the server streams it: serving 24 MB of files never holds them at once."""
    import tracemalloc

    import httpx

    rng = np.random.default_rng(5)
    files = {"zarr.json": b"{}", "0/zarr.json": b'{"shape": [1]}'}
    files |= {f"0/c/{i}/0/0": rng.bytes(3_000_000) for i in range(8)}  # incompressible

    def fill(temp):  # noqa: ANN001, ANN202
        for name, data in files.items():
            (temp / name).parent.mkdir(parents=True, exist_ok=True)
            (temp / name).write_bytes(data)
        return (1, 1, 1)

    volume_id, _ = _add_store_volume(api_app, auth, fill)
    url = f"/v1/volumes/{volume_id}/file"
    head = client.head(url, headers=auth)
    download = client.get(url, headers=auth)
    assert head.status_code == download.status_code == 200, download.text
    assert int(head.headers["content-length"]) == int(download.headers["content-length"])
    assert int(download.headers["content-length"]) == len(download.content)
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert archive.testzip() is None
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        unzipped = {name: archive.read(name) for name in archive.namelist()}
    assert unzipped == {f"{volume_id}.ome.zarr/{name}": data for name, data in files.items()}
    link = client.post(f"/v1/volumes/{volume_id}/share", headers=auth).json()["path"]
    assert client.get(link).headers["content-length"] == download.headers["content-length"]

    with _serving(api_app) as base, httpx.Client(headers=auth) as http:
        tracemalloc.start()
        try:
            received = 0
            with http.stream("GET", base + url) as response:
                length = int(response.headers["content-length"])
                for piece in response.iter_raw():
                    received += len(piece)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert received == length == len(download.content)
    assert peak < 8_000_000, peak  # a few 1 MiB pieces in flight, not the 24 MB zip
