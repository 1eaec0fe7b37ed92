"""Quality reports of volumes and statistics of datasets through the REST API."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from microforge.report.volume_report import build_volume_report, report_error
from microforge.storage.api_keys import authenticate
from microforge.storage.tables import Volume
from tests.test_api_access import run_api_code_without_torch
from tests.test_api_files import add_volume


def _phases(shape, seed=0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2)
    return np.digitize(field, np.quantile(field, [0.3, 0.65])).astype(np.uint8)


def _owner(api_app, headers) -> str:
    with api_app.state.service.session_factory() as session:
        return authenticate(session, headers["Authorization"].removeprefix("Bearer ")).id


def _store_report(api_app, volume_id: str, references: list[np.ndarray]) -> dict:
    """What the worker does after publishing the volume."""
    state = api_app.state.service
    with state.session_factory() as session:
        row = session.get(Volume, volume_id)
        report, png = build_volume_report(state.blobs.path(row.blob_key), references)
        row.report_blob = state.blobs.new_key("reports", ".png")
        state.blobs.put_bytes(row.report_blob, png)
        row.report = report
        session.commit()
    return report


def test_volume_report_json_and_png(client, auth, other_auth, api_app) -> None:
    volume = _phases((32, 36, 40))
    volume_id = add_volume(api_app, _owner(api_app, auth), volume)
    for path in ("report", "report.png"):
        response = client.get(f"/v1/volumes/{volume_id}/{path}", headers=auth)
        assert response.status_code == 404
        assert response.json()["code"] == "report_not_ready"
    report = _store_report(api_app, volume_id, [volume[16]])

    response = client.get(f"/v1/volumes/{volume_id}/report", headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["volume_id"] == volume_id and body["verdict"] == report["verdict"]
    assert body["summary"]["fraction_error"] == pytest.approx(
        report["comparison"]["summary"]["fraction_error"]
    )
    fraction = body["statistics"]["phases"]["1"]["volume_fraction"]
    assert fraction == pytest.approx((volume == 1).mean())
    assert body["comparison"]["layout"] == "isotropic"
    assert body["links"]["png"] == f"/v1/volumes/{volume_id}/report.png"

    png = client.get(f"/v1/volumes/{volume_id}/report.png", headers=auth)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.size == (1400, 1100)

    listed = client.get(f"/v1/volumes/{volume_id}", headers=auth).json()
    assert listed["links"]["report"] == f"/v1/volumes/{volume_id}/report"
    assert listed["report"]["verdict"] == report["verdict"]
    assert "statistics" not in listed["report"]  # the curves stay in the full report

    for path in ("report", "report.png"):
        response = client.get(f"/v1/volumes/{volume_id}/{path}", headers=other_auth)
        assert response.status_code == 404
        assert response.json()["code"] == "volume_not_found"


def test_report_of_a_one_phase_volume_against_three_phase_training_images(
    client, auth, api_app
) -> None:
    """What an early or collapsed generator makes: a verdict that says poor, and which
    phases are missing, instead of report_failed."""
    volume_id = add_volume(api_app, _owner(api_app, auth), np.zeros((20, 20, 20), np.uint8))
    training = _phases((40, 40), seed=1)
    report = _store_report(api_app, volume_id, [training])
    assert "error" not in report

    body = client.get(f"/v1/volumes/{volume_id}/report", headers=auth).json()
    assert body["error"] is None and body["verdict"] == "poor"
    assert body["summary"]["missing_phases"] == ["1", "2"]
    # Phase 0 fills the volume: 1 against its fraction in the image, the largest error.
    assert body["summary"]["fraction_error"] == pytest.approx(1 - (training == 0).mean())
    missing = body["comparison"]["phases"]["2"]["slices"]["z"]["area_fraction"]
    assert missing["volume"] == 0.0 and missing["reference"] == pytest.approx(
        (training == 2).mean()
    )
    listed = client.get(f"/v1/volumes/{volume_id}", headers=auth).json()
    assert listed["report"]["verdict"] == "poor"
    assert listed["report"]["summary"]["missing_phases"] == ["1", "2"]

    png = client.get(f"/v1/volumes/{volume_id}/report.png", headers=auth)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.size == (1400, 1100)


def test_a_failed_report_explains_itself(client, auth, api_app) -> None:
    volume_id = add_volume(api_app, _owner(api_app, auth), _phases((8, 8, 8)))
    with api_app.state.service.session_factory() as session:
        session.get(Volume, volume_id).report = report_error(ValueError("no phases"))
        session.commit()
    body = client.get(f"/v1/volumes/{volume_id}/report", headers=auth).json()
    assert body["error"]["code"] == "report_failed" and body["verdict"] is None
    response = client.get(f"/v1/volumes/{volume_id}/report.png", headers=auth)
    assert response.status_code == 404 and response.json()["code"] == "report_unavailable"


def test_openapi_documents_the_report_routes(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/volumes/{volume_id}/report", "/v1/volumes/{volume_id}/report.png"):
        assert "404" in paths[path]["get"]["responses"]
    report = paths["/v1/volumes/{volume_id}/report"]["get"]["responses"]["200"]
    assert "VolumeReportOut" in str(report)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_dataset_statistics_at_upload(client, auth) -> None:
    image = (_phases((90, 120), seed=3) * 100).astype(np.uint8)
    response = client.post(
        "/v1/datasets", headers=auth, files={"files": ("slice.png", _png(image), "image/png")}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    [entry] = body["statistics"]
    assert entry["file_name"] == "slice.png" and entry["sampled"] is None
    assert entry["shape"] == [90, 120] and entry["kind"] == "nphase"
    for value in (0, 100, 200):
        phase = entry["phases"][str(value)]
        assert phase["volume_fraction"] == pytest.approx((image == value).mean())
        assert set(phase["tpc"]) == {"x", "y"} and "tortuosity" not in phase
    assert entry["triple_phase_boundary_density"] > 0
    again = client.get(f"/v1/datasets/{body['id']}", headers=auth).json()
    assert again["statistics"] == body["statistics"]


def test_big_stack_statistics_use_a_central_crop(client, auth) -> None:
    stack = _phases((140, 30, 34), seed=4)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, stack)
    response = client.post(
        "/v1/datasets",
        headers=auth,
        files={"files": ("stack.tif", buffer.getvalue(), "image/tiff")},
    )
    assert response.status_code == 201, response.text
    [entry] = response.json()["statistics"]
    assert entry["sampled"] == {"shape": [128, 30, 34], "of": [140, 30, 34], "region": "central"}
    crop = stack[6:134]
    assert entry["phases"]["2"]["volume_fraction"] == pytest.approx((crop == 2).mean())
    assert set(entry["phases"]["2"]["tpc"]) == {"x", "y", "z"}


def test_colour_datasets_have_no_statistics(client, auth) -> None:
    rng = np.random.default_rng(5)
    colour = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    response = client.post(
        "/v1/datasets",
        headers=auth,
        files={"files": ("colour.png", _png(colour), "image/png")},
        data={"image_type": "colour"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["statistics"] is None


def test_upload_statistics_never_import_torch(tmp_path) -> None:
    code = (
        "import io, sys\n"
        "import numpy as np\n"
        "from PIL import Image\n"
        "from fastapi.testclient import TestClient\n"
        "from microforge.api.app import create_app\n"
        "from microforge.storage.api_keys import create_api_key\n"
        "app = create_app()\n"
        "with TestClient(app) as client:\n"
        "    with app.state.service.session_factory() as session:\n"
        "        _, key = create_api_key(session, 'k')\n"
        "    image = np.zeros((40, 50), np.uint8); image[:, 20:] = 1; image[10:20] = 2\n"
        "    buffer = io.BytesIO(); Image.fromarray(image).save(buffer, format='PNG')\n"
        "    response = client.post('/v1/datasets', headers={'Authorization': 'Bearer ' + key},\n"
        "                           files={'files': ('a.png', buffer.getvalue(), 'image/png')})\n"
        "    assert response.status_code == 201, response.text\n"
        "    assert response.json()['statistics'][0]['phases']['1']['volume_fraction'] > 0\n"
        "assert 'torch' not in sys.modules, 'the API imported torch'\n"
        "assert 'taufactor' not in sys.modules, 'the API imported taufactor'\n"
    )
    run_api_code_without_torch(code, tmp_path)
