"""POST /v1/generators with the two files of the public SliceGAN code: converted in the API
(without torch), stored like any generator, private to its key, and usable by a generate
job; the same through ``MicroForgeClient`` and ``microforge remote import``."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from slicegan_reference import make_files

from microforge.cli.main import cli
from microforge.client import MicroForgeClient
from microforge.models.slicegan_import import import_slicegan
from microforge.storage.tables import Generator, Volume
from microforge.storage.tiff import read_volume_info
from tests.worker_helpers import run_generate_job_here


def _upload(client, auth, weights, params, **fields):  # noqa: ANN001, ANN202
    files = {
        "weights": (weights.name, weights.read_bytes()),
        "params": (params.name, params.read_bytes()),
    }
    return client.post("/v1/generators", headers=auth, files=files, data=fields)


def test_upload_both_files_then_generate_a_periodic_volume(
    client, auth, other_auth, api_app, tmp_path
) -> None:
    weights, params, _ = make_files(tmp_path, channels=3, imtype="nphase", rc=True)
    fields = {"image_type": "nphase", "phases": "0,128,255", "pixel_size": "0.5", "unit": "nm"}
    response = _upload(client, auth, weights, params, **fields)
    assert response.status_code == 201, response.text
    generator = response.json()
    assert generator["image_type"] == "nphase" and generator["phases"] == [0, 128, 255]
    config = generator["config"]
    assert config["source"] == "slicegan" and config["network"]["last_layer"] == "resize_conv"
    assert (config["voxel_size"], config["unit"]) == (0.5, "nm")
    assert config["imported_from"] == "run_Gen.pt+run_params.data"

    # The service stores exactly what `microforge import-slicegan` writes.
    local = tmp_path / "local.safetensors"
    import_slicegan(
        weights,
        params,
        local,
        image_type="nphase",
        phases=[0, 128, 255],
        voxel_size=0.5,
        voxel_unit="nm",
    )
    download = client.get(generator["links"]["file"], headers=auth)
    assert download.status_code == 200 and download.content == local.read_bytes()
    assert len(download.content) == generator["size_bytes"]
    listed = client.get("/v1/generators", headers=auth).json()["items"]
    assert [item["id"] for item in listed] == [generator["id"]]

    # Another key sees nothing of it.
    assert client.get(generator["links"]["self"], headers=other_auth).status_code == 404
    assert client.get(generator["links"]["file"], headers=other_auth).status_code == 404
    assert client.get("/v1/generators", headers=other_auth).json()["items"] == []

    job = client.post(
        "/v1/jobs",
        headers=auth,
        json={
            "kind": "generate",
            "generator_id": generator["id"],
            "shape": [32, 20, 48],
            "seed": 4,
            "periodic": [True, False, True],
            "chunk": 16,
        },
    )
    assert job.status_code == 202, job.text
    assert run_generate_job_here(api_app, job.json()["id"]) == "succeeded"
    volume_id = client.get(job.json()["links"]["self"], headers=auth).json()["result"]["volume_id"]
    state = api_app.state.service
    with state.session_factory() as session:
        path = state.blobs.path(session.get(Volume, volume_id).blob_key)
    array = tifffile.imread(path)
    assert array.shape == (32, 20, 48) and set(np.unique(array)) <= {0, 128, 255}
    info = read_volume_info(path)
    assert tuple(info["voxel_size"]) == (0.5, 0.5, 0.5) and info["unit"] == "nm"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_slicegan_uploads_are_refused_and_leave_nothing(client, auth, api_app, tmp_path):
    weights, params, _ = make_files(tmp_path, channels=3, imtype="colour", rc=False)
    hostile = tmp_path / "hostile_params.data"
    hostile.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    cases = [
        ({"params": hostile}, {"image_type": "colour"}, "invalid_slicegan_params", "refused"),
        ({}, {}, "image_type_required", "colour or three phases"),
        ({}, {"image_type": "grayscale"}, "invalid_image_type", "1 channel"),
        ({}, {"image_type": "nphase", "phases": "0,x"}, "invalid_phases", "integer label"),
        ({}, {"image_type": "colour", "pixel_size": "-1"}, "invalid_pixel_size", "positive"),
        ({"weights": params}, {"image_type": "colour"}, "invalid_slicegan_weights", "zip"),
    ]
    for files, fields, code, words in cases:
        response = _upload(
            client, auth, files.get("weights", weights), files.get("params", params), **fields
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == code and words in body["detail"], body
        assert "\n" not in body["detail"]
    only_one = client.post(
        "/v1/generators", headers=auth, files={"weights": ("a_Gen.pt", weights.read_bytes())}
    )
    assert only_one.status_code == 422 and only_one.json()["code"] == "wrong_number_of_files"
    assert not (tmp_path / "pwned").exists()
    root = api_app.state.service.blobs.root
    assert [p for p in root.rglob("*") if p.is_file() and ".uploads" not in p.parts] == []
    with api_app.state.service.session_factory() as session:
        assert session.query(Generator).count() == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_client_and_remote_import_send_both_files(
    client, auth, api_app, tmp_path, monkeypatch
) -> None:
    weights, params, _ = make_files(tmp_path, channels=1, imtype="grayscale", rc=False)
    key = auth["Authorization"].removeprefix("Bearer ")

    def connect(_ctx):  # noqa: ANN001, ANN202 - the remote group's client, on the test app
        return MicroForgeClient("http://testserver", key, transport=client._transport)

    monkeypatch.setattr("microforge.cli.remote_group.client_for", connect)
    with connect(None) as api:
        generator = api.import_slicegan(weights, params, pixel_size=2.0, unit="um")
    assert generator["image_type"] == "grayscale" and generator["config"]["voxel_size"] == 2.0
    result = CliRunner().invoke(cli, ["remote", "--key", key, "import", str(weights), str(params)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("gen_")
    refused = CliRunner().invoke(cli, ["remote", "--key", key, "import", str(params), str(params)])
    assert refused.exit_code != 0 and "invalid_slicegan_weights" in refused.output
    mixed = CliRunner().invoke(
        cli, ["remote", "--key", key, "import", str(weights), "--type", "colour"]
    )
    assert mixed.exit_code != 0 and "SliceGAN files" in mixed.output
