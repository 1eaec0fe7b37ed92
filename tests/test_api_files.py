"""Volumes and generators: downloads with Range/ETag, slices, importing generator files."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from PIL import Image

from microforge.api.app import create_app
from microforge.models.config import TrainConfig
from microforge.models.generator_file import FORMAT, METADATA_KEY, VERSION, expected_tensor_shapes
from microforge.storage.api_keys import authenticate
from microforge.storage.tables import Generator, Volume


def owner_id(api_app, headers: dict[str, str]) -> str:
    with api_app.state.service.session_factory() as session:
        return authenticate(session, headers["Authorization"].removeprefix("Bearer ")).id


def add_volume(
    api_app, owner: str, array: np.ndarray, *, compress: bool = False, ome: bool = False
) -> str:
    """A volume as the worker would leave it: a TIFF blob plus its row."""
    state = api_app.state.service
    key = state.blobs.new_key("volumes", ".tif")
    with state.blobs.writing(key) as temp:
        tifffile.imwrite(temp, array, compression="zlib" if compress else None, ome=ome)
    with state.session_factory() as session:
        row = Volume(
            owner_id=owner,
            blob_key=key,
            shape=list(array.shape),
            dtype=str(array.dtype),
            image_type="nphase",
            phases=[0, 1, 2],
            size_bytes=state.blobs.size(key),
            etag="v1-etag",
            seed=3,
        )
        session.add(row)
        session.commit()
        return row.id


def generator_file_bytes(channels: int = 2) -> bytes:
    """A valid generator file written without torch: safetensors header + zero weights."""
    network = TrainConfig(arch="tiny").network_config()
    header: dict = {}
    offset = 0
    for name, shape in expected_tensor_shapes(network, channels).items():
        dtype, size = ("I64", 8) if name.endswith("num_batches_tracked") else ("F32", 4)
        length = size * int(np.prod(shape)) if shape else size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "image_type": "nphase",
        "phases": [0, 255][:channels],
        "channels": channels,
        "network": network.model_dump(),
        "output_dtype": "uint8",
        "value_range": [0.0, 1.0],
        "arch": "tiny",
        "iteration": 10,
    }
    header["__metadata__"] = {METADATA_KEY: json.dumps(meta)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


@pytest.fixture
def volume(api_app, auth) -> tuple[str, np.ndarray]:
    array = np.random.default_rng(0).integers(0, 3, size=(6, 10, 12), dtype=np.uint8)
    return add_volume(api_app, owner_id(api_app, auth), array), array


def test_volume_metadata_and_full_download(client, auth, volume) -> None:
    volume_id, array = volume
    body = client.get(f"/v1/volumes/{volume_id}", headers=auth).json()
    assert body["shape"] == [6, 10, 12] and body["dtype"] == "uint8"
    response = client.get(body["links"]["file"], headers=auth)
    assert response.status_code == 200
    assert response.headers["etag"] == '"v1-etag"'
    assert response.headers["accept-ranges"] == "bytes"
    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(response.content)), array)
    listed = client.get("/v1/volumes", headers=auth).json()["items"]
    assert [item["id"] for item in listed] == [volume_id]


def test_volume_range_requests(client, auth, volume) -> None:
    volume_id, _ = volume
    url = f"/v1/volumes/{volume_id}/file"
    whole = client.get(url, headers=auth).content
    size = len(whole)
    part = client.get(url, headers=auth | {"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    tail = client.get(url, headers=auth | {"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole[-5:]
    open_ended = client.get(url, headers=auth | {"Range": f"bytes={size - 3}-"})
    assert open_ended.content == whole[-3:]
    outside = client.get(url, headers=auth | {"Range": f"bytes={size}-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == f"bytes */{size}"
    stale = client.get(url, headers=auth | {"Range": "bytes=0-1", "If-Range": '"old"'})
    assert stale.status_code == 200


def test_volume_etag_not_modified(client, auth, volume) -> None:
    volume_id, _ = volume
    url = f"/v1/volumes/{volume_id}/file"
    assert client.get(url, headers=auth | {"If-None-Match": '"v1-etag"'}).status_code == 304
    assert client.get(url, headers=auth | {"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(("axis", "index"), [("z", 5), ("y", 0), ("x", 11)])
def test_volume_slices(client, auth, api_app, axis, index, compress) -> None:
    array = np.random.default_rng(1).integers(0, 3, size=(6, 10, 12), dtype=np.uint8)
    volume_id = add_volume(api_app, owner_id(api_app, auth), array, compress=compress)
    response = client.get(
        f"/v1/volumes/{volume_id}/slice.png", headers=auth, params={"axis": axis, "index": index}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = np.take(array, index, axis="zyx".index(axis))
    np.testing.assert_array_equal(image, np.array([0, 128, 255], dtype=np.uint8)[expected])


def test_volume_slices_in_phase_colours(client, auth, api_app) -> None:
    """?colour=phases: phase i of [0, 1, 2] in the i-th colour of the report's palette."""
    from microforge.phase_colours import PHASE_COLOURS

    array = np.random.default_rng(2).integers(0, 3, size=(6, 10, 12), dtype=np.uint8)
    array[0, 0, 0] = 7  # a value that is no phase: black
    volume_id = add_volume(api_app, owner_id(api_app, auth), array)
    url = f"/v1/volumes/{volume_id}/slice.png"
    response = client.get(url, headers=auth, params={"axis": "z", "index": 0, "colour": "phases"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    assert image.shape == (10, 12, 3)
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PHASE_COLOURS[:3]])
    expected = palette[np.minimum(array[0], 2)].astype(np.uint8)
    expected[0, 0] = 0
    np.testing.assert_array_equal(image, expected)
    grey = client.get(url, headers=auth, params={"axis": "z", "index": 0, "colour": "grey"})
    assert grey.content == client.get(url, headers=auth, params={"axis": "z"}).content
    bad = client.get(url, headers=auth, params={"colour": "rainbow"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.colour"


def test_bad_slice_requests_say_the_valid_range(client, auth, volume) -> None:
    volume_id, _ = volume
    url = f"/v1/volumes/{volume_id}/slice.png"
    response = client.get(url, headers=auth, params={"axis": "y", "index": 10})
    assert response.status_code == 422 and response.json()["code"] == "slice_out_of_range"
    assert "0..9" in response.json()["detail"]
    response = client.get(url, headers=auth, params={"axis": "w", "index": 0})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "query.axis"


def test_import_generator_and_download_it(client, auth, broker) -> None:
    payload = generator_file_bytes()
    response = client.post(
        "/v1/generators", headers=auth, files={"file": ("mine.safetensors", payload)}
    )
    assert response.status_code == 201, response.text
    generator = response.json()
    assert generator["image_type"] == "nphase" and generator["phases"] == [0, 255]
    download = client.get(generator["links"]["file"], headers=auth)
    assert download.content == payload
    part = client.get(generator["links"]["file"], headers=auth | {"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == payload[:8]
    listed = client.get("/v1/generators", headers=auth).json()["items"]
    assert [item["id"] for item in listed] == [generator["id"]]

    job = client.post(
        "/v1/jobs",
        headers=auth,
        json={"kind": "generate", "generator_id": generator["id"], "shape": [8, 16, 16]},
    )
    assert job.status_code == 202, job.text
    assert isinstance(job.json()["spec"]["seed"], int)
    assert broker.llen("generate") == 1 and broker.llen("train") == 0
    huge = client.post(
        "/v1/jobs",
        headers=auth,
        json={"kind": "generate", "generator_id": generator["id"], "shape": [10**5] * 3},
    )
    assert huge.status_code == 422 and huge.json()["code"] == "volume_too_large"
    bad_shape = client.post(
        "/v1/jobs",
        headers=auth,
        json={"kind": "generate", "generator_id": generator["id"], "shape": [0, 4, 4]},
    )
    assert bad_shape.status_code == 422
    periodic = client.post(
        "/v1/jobs",
        headers=auth,
        json={
            "kind": "generate",
            "generator_id": generator["id"],
            "shape": [40, 16, 16],
            "periodic": [True, False, False],
        },
    )
    assert periodic.status_code == 422, periodic.text
    assert periodic.json()["code"] == "invalid_periodic_shape"
    assert "use 32 or 48" in periodic.json()["detail"]
    assert broker.llen("generate") == 1
    for bad in ({"voxel_size": 0}, {"voxel_size": 0.5, "unit": "inch"}):
        body = {"kind": "generate", "generator_id": generator["id"], "shape": [8, 8, 8], **bad}
        refused = client.post("/v1/jobs", headers=auth, json=body)
        assert refused.status_code == 422, bad
        if "unit" in bad:  # one line naming the field and every valid unit
            assert refused.json()["code"] == "validation_error"
            detail = refused.json()["detail"]
            assert "unit" in detail and "'nm', 'um', 'mm', 'cm' or 'm'" in detail, detail
            assert "\n" not in detail
    body = {"kind": "generate", "generator_id": generator["id"], "shape": [8, 8, 8]}
    sized = client.post("/v1/jobs", headers=auth, json={**body, "voxel_size": 0.5, "unit": "nm"})
    assert sized.status_code == 202
    assert (sized.json()["spec"]["voxel_size"], sized.json()["spec"]["unit"]) == (0.5, "nm")


@pytest.mark.parametrize(
    "payload", [b"", b"not a safetensors file at all", generator_file_bytes()[:-10]]
)
def test_bad_generator_files_are_refused(client, auth, api_app, payload) -> None:
    response = client.post("/v1/generators", headers=auth, files={"file": ("g.bin", payload)})
    assert response.status_code == 422
    assert response.json()["code"] in {"empty_file", "invalid_generator_file"}
    root: Path = api_app.state.service.blobs.root
    assert [path for path in root.rglob("*") if path.is_file()] == []
    with api_app.state.service.session_factory() as session:
        assert session.query(Generator).count() == 0


def test_delete_a_volume_frees_its_files(client, auth, api_app, volume) -> None:
    volume_id, _ = volume
    state = api_app.state.service
    with state.session_factory() as session:
        row = session.get(Volume, volume_id)
        report_key = state.blobs.new_key("reports", ".png")
        with state.blobs.writing(report_key) as temp:
            Path(temp).write_bytes(b"\x89PNG")
        row.report_blob = report_key
        session.commit()
        tiff_key = row.blob_key
    other = {"Authorization": "Bearer mf_not_a_key"}
    assert client.delete(f"/v1/volumes/{volume_id}", headers=other).status_code == 401
    assert client.delete(f"/v1/volumes/{volume_id}", headers=auth).status_code == 204
    assert not state.blobs.exists(tiff_key) and not state.blobs.exists(report_key)
    gone = client.get(f"/v1/volumes/{volume_id}", headers=auth)
    assert gone.status_code == 404 and gone.json()["code"] == "volume_not_found"
    again = client.delete(f"/v1/volumes/{volume_id}", headers=auth)
    assert again.status_code == 404


def test_delete_a_generator_is_refused_while_a_job_will_load_it(client, auth, api_app) -> None:
    response = client.post(
        "/v1/generators", headers=auth, files={"file": ("g.safetensors", generator_file_bytes())}
    )
    generator = response.json()
    job = client.post(
        "/v1/jobs",
        headers=auth,
        json={"kind": "generate", "generator_id": generator["id"], "shape": [8, 8, 8]},
    ).json()
    refused = client.delete(generator["links"]["self"], headers=auth)
    assert refused.status_code == 409 and refused.json()["code"] == "generator_in_use"
    assert "cancel" in refused.json()["detail"]
    cancelled = client.post(job["links"]["cancel"], headers=auth)
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    with api_app.state.service.session_factory() as session:
        key = session.get(Generator, generator["id"]).blob_key
    assert client.delete(generator["links"]["self"], headers=auth).status_code == 204
    assert not api_app.state.service.blobs.exists(key)
    assert client.get(generator["links"]["self"], headers=auth).status_code == 404


def test_a_volume_larger_than_the_free_disk_is_refused_at_once(api_settings, auth, broker):
    roomy = api_settings.model_copy(update={"max_generate_voxels": 10**16})
    with TestClient(create_app(roomy)) as client:
        generator = client.post(
            "/v1/generators",
            headers=auth,
            files={"file": ("g.safetensors", generator_file_bytes())},
        ).json()
        free = create_app(roomy).state.service.blobs.free_bytes()
        shape = [free // 10**6 + 1, 1000, 1000]  # one byte per voxel: more than is free
        response = client.post(
            "/v1/jobs",
            headers=auth,
            json={"kind": "generate", "generator_id": generator["id"], "shape": shape},
        )
        assert response.status_code == 507, response.text
        assert response.json()["code"] == "disk_full" and "/v1/usage" in response.json()["detail"]
        assert broker.llen("generate") == 0
        # Compressed, the size is unknown until written: accepted (the worker reports a
        # full disk with the same code should it happen).
        compressed = client.post(
            "/v1/jobs",
            headers=auth,
            json={
                "kind": "generate",
                "generator_id": generator["id"],
                "shape": shape,
                "compression": "zlib",
            },
        )
        assert compressed.status_code == 202 and compressed.json()["spec"]["compression"] == "zlib"
        bad = client.post(
            "/v1/jobs",
            headers=auth,
            json={
                "kind": "generate",
                "generator_id": generator["id"],
                "shape": [4, 4, 4],
                "compression": "jpeg",
            },
        )
        assert bad.status_code == 422


def test_downloads_answer_head_with_the_get_headers(client, auth, volume) -> None:
    volume_id, _ = volume
    url = f"/v1/volumes/{volume_id}/file"
    whole = client.get(url, headers=auth)
    head = client.head(url, headers=auth)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-length", "content-type", "accept-ranges", "last-modified"):
        assert head.headers[name] == whole.headers[name], name
    part = client.head(url, headers=auth | {"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.headers["content-range"].startswith("bytes 0-9/")
    assert part.headers["content-length"] == "10" and part.content == b""
    assert client.head(url).status_code == 401
    assert "head" in client.get("/openapi.json").json()["paths"]["/v1/volumes/{volume_id}/file"]


def test_range_edge_cases_follow_rfc_9110(client, auth, volume) -> None:
    volume_id, _ = volume
    url = f"/v1/volumes/{volume_id}/file"
    whole = client.get(url, headers=auth).content
    size = len(whole)
    # Several ranges: multipart/byteranges with each part.
    multi = client.get(url, headers=auth | {"Range": "bytes=0-1,5-6"})
    assert multi.status_code == 206
    assert multi.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert whole[0:2] in multi.content and whole[5:7] in multi.content
    # An unknown unit, bad syntax or last < first: the header is ignored, the file sent.
    for ignored in ("items=0-5", "bytes=abc", "bytes=9-3", "bytes="):
        response = client.get(url, headers=auth | {"Range": ignored})
        assert response.status_code == 200 and response.content == whole, ignored
    # Some ranges outside the file: only the satisfiable ones are served.
    partly = client.get(url, headers=auth | {"Range": f"bytes=0-3,{size + 10}-"})
    assert partly.status_code == 206 and partly.content == whole[:4]
    # None inside: our problem, with the size.
    outside = client.get(url, headers=auth | {"Range": f"bytes={size}-,{size + 5}-"})
    assert outside.status_code == 416 and outside.json()["code"] == "range_not_satisfiable"
    assert outside.headers["content-range"] == f"bytes */{size}"


def test_an_ome_tiff_downloads_as_ome_tif(client, auth, api_app) -> None:
    array = np.zeros((4, 5, 6), np.uint8)
    plain = add_volume(api_app, owner_id(api_app, auth), array)
    ome = add_volume(api_app, owner_id(api_app, auth), array, compress=True, ome=True)
    named = {
        volume_id: client.head(f"/v1/volumes/{volume_id}/file", headers=auth).headers[
            "content-disposition"
        ]
        for volume_id in (plain, ome)
    }
    assert named[plain] == f'attachment; filename="{plain}.tif"'
    assert named[ome] == f'attachment; filename="{ome}.ome.tif"'
