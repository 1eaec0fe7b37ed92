"""Who may see what: 401 without a valid key, 404 for another key's resources everywhere.

Also: the OpenAPI document lists every route, and the API never imports torch.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.routing import APIRoute

from microforge.storage.api_keys import revoke_api_key
from microforge.storage.tables import Job
from tests.test_api_datasets import png_bytes, two_phase
from tests.test_api_files import add_volume, generator_file_bytes, owner_id

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def resources(client, auth, api_app) -> dict[str, str]:
    """One of everything, owned by ``auth``."""
    files = {"files": ("a.png", png_bytes(two_phase()), "image/png")}
    dataset = client.post("/v1/datasets", headers=auth, files=files).json()["id"]
    job = client.post("/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset})
    generator = client.post(
        "/v1/generators", headers=auth, files={"file": ("g.safetensors", generator_file_bytes())}
    ).json()["id"]
    volume = add_volume(api_app, owner_id(api_app, auth), np.zeros((2, 3, 4), np.uint8))
    return {"dataset": dataset, "job": job.json()["id"], "generator": generator, "volume": volume}


def owned_urls(ids: dict[str, str]) -> list[tuple[str, str]]:
    d, j, g, v = ids["dataset"], ids["job"], ids["generator"], ids["volume"]
    return [
        ("GET", f"/v1/datasets/{d}"),
        ("GET", f"/v1/datasets/{d}/preview.png"),
        ("DELETE", f"/v1/datasets/{d}"),
        ("GET", f"/v1/jobs/{j}"),
        ("POST", f"/v1/jobs/{j}/cancel"),
        ("GET", f"/v1/jobs/{j}/metrics"),
        ("GET", f"/v1/jobs/{j}/preview.png"),
        ("POST", f"/v1/jobs/{j}/continue"),
        ("DELETE", f"/v1/jobs/{j}"),
        ("GET", f"/v1/generators/{g}"),
        ("GET", f"/v1/generators/{g}/file"),
        ("DELETE", f"/v1/generators/{g}"),
        ("GET", f"/v1/volumes/{v}"),
        ("GET", f"/v1/volumes/{v}/file"),
        ("GET", f"/v1/volumes/{v}/slice.png"),
        ("GET", f"/v1/volumes/{v}/report"),
        ("GET", f"/v1/volumes/{v}/report.png"),
        ("POST", f"/v1/volumes/{v}/share"),
        ("DELETE", f"/v1/volumes/{v}"),
    ]


def body_for(url: str) -> dict | None:
    """A valid body where the route needs one, so that only ownership decides."""
    return {"iterations": 10} if url.endswith("/continue") else None


LISTS = ["/v1/datasets", "/v1/jobs", "/v1/generators", "/v1/volumes"]


def test_another_key_gets_404_everywhere(client, auth, other_auth, resources, api_app) -> None:
    for method, url in owned_urls(resources):
        response = client.request(method, url, headers=other_auth, json=body_for(url))
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["code"].endswith("_not_found"), url
    for url in LISTS:
        assert client.get(url, headers=other_auth).json()["items"] == [], url
        assert len(client.get(url, headers=auth).json()["items"]) == 1, url
    # Using another key's dataset or generator in a new job is a 404 too.
    train = {"kind": "train", "dataset_id": resources["dataset"]}
    assert client.post("/v1/jobs", headers=other_auth, json=train).status_code == 404
    generate = {"kind": "generate", "generator_id": resources["generator"], "shape": [4, 4, 4]}
    assert client.post("/v1/jobs", headers=other_auth, json=generate).status_code == 404
    # Nothing was changed by the attempts.
    with api_app.state.service.session_factory() as session:
        assert session.get(Job, resources["job"]).cancel_requested is False
    assert client.get(f"/v1/datasets/{resources['dataset']}", headers=auth).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer mf_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_bad_key_is_401(client, resources, headers) -> None:
    lists = [("GET", url) for url in [*LISTS, "/v1/usage"]]
    for method, url in [*owned_urls(resources), *lists]:
        response = client.request(method, url, headers=headers, json=body_for(url))
        assert response.status_code == 401, (method, url)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["code"] == "unauthorized"
    assert client.post("/v1/jobs", headers=headers, json={}).status_code == 401
    assert (
        client.post("/v1/datasets", headers=headers, files={"files": ("a", b"x")}).status_code
        == 401
    )


def test_revoked_key_is_401(client, auth, api_app) -> None:
    """Revocation takes effect once the process's key lookup expires (auth_cache_seconds)."""
    api_app.state.service.key_cache.ttl = 0.3
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    with api_app.state.service.session_factory() as session:
        revoke_api_key(session, auth["Authorization"][len("Bearer ") : len("Bearer ") + 11])
    time.sleep(0.35)
    assert client.get("/v1/jobs", headers=auth).status_code == 401


def test_unknown_route_is_a_problem(client) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


def test_openapi_lists_every_route_with_problem_responses(client, api_app) -> None:
    spec = client.get("/openapi.json").json()
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    # The routers' own routes: this FastAPI keeps included routers as wrappers in app.routes.
    from microforge.api import routes as route_package

    modules = [
        importlib.import_module(f"microforge.api.routes.{info.name}")
        for info in pkgutil.iter_modules(route_package.__path__)
    ]
    api_routes = [
        route
        for module in modules
        if hasattr(module, "router")
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]
    assert len(api_routes) >= 25
    for route in api_routes:
        for method in route.methods - {"HEAD"}:
            # OpenAPI writes a path converter's parameter plainly: {path:path} is {path}.
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            assert (method, path) in documented, route.path
    expected = {
        ("POST", "/v1/datasets"),
        ("GET", "/v1/datasets"),
        ("GET", "/v1/datasets/{dataset_id}"),
        ("DELETE", "/v1/datasets/{dataset_id}"),
        ("GET", "/v1/datasets/{dataset_id}/preview.png"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}"),
        ("POST", "/v1/jobs/{job_id}/cancel"),
        ("GET", "/v1/jobs/{job_id}/metrics"),
        ("GET", "/v1/jobs/{job_id}/preview.png"),
        ("POST", "/v1/jobs/{job_id}/continue"),
        ("DELETE", "/v1/jobs/{job_id}"),
        ("POST", "/v1/train"),
        ("GET", "/v1/generators"),
        ("POST", "/v1/generators"),
        ("GET", "/v1/generators/{generator_id}"),
        ("GET", "/v1/generators/{generator_id}/file"),
        ("DELETE", "/v1/generators/{generator_id}"),
        ("GET", "/v1/volumes"),
        ("GET", "/v1/volumes/{volume_id}"),
        ("GET", "/v1/volumes/{volume_id}/file"),
        ("GET", "/v1/volumes/{volume_id}/slice.png"),
        ("DELETE", "/v1/volumes/{volume_id}"),
        ("POST", "/v1/volumes/{volume_id}/share"),
        ("GET", "/v1/shared/{token}"),
        ("GET", "/v1/volumes/{volume_id}/zarr/{path}"),
        ("GET", "/v1/shared/{token}/zarr/{path}"),
        ("OPTIONS", "/v1/shared/{token}/zarr/{path}"),
        ("GET", "/v1/usage"),
        ("GET", "/v1/health"),
    }
    assert expected <= documented
    public = {("GET", "/v1/health")} | {
        (method, path)
        for method in ("GET", "HEAD", "OPTIONS")
        for path in ("/v1/shared/{token}", "/v1/shared/{token}/zarr/{path}")
    }
    for method, path in documented - public:
        operation = spec["paths"][path][method.lower()]
        assert "401" in operation["responses"], (method, path)
        assert "application/problem+json" in operation["responses"]["401"]["content"]
        assert operation.get("security"), (method, path)
    shared = spec["paths"]["/v1/shared/{token}"]["get"]
    assert not shared.get("security") and "410" in shared["responses"]  # no key: honest docs
    upload = spec["paths"]["/v1/datasets"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "202" in spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def run_api_code_without_torch(code: str, tmp_path: Path) -> None:
    """Run ``code`` in a fresh interpreter against a fresh data dir; it must exit 0.

    A fresh process is the only honest check that the API never imports torch: this test
    process has imported it long ago.
    """
    env = os.environ | {
        "MICROFORGE_DATA_DIR": str(tmp_path),
        "MICROFORGE_REDIS_URL": "redis://127.0.0.1:1/0",
        "PYTHONPATH": str(REPO),
    }
    env.pop("MICROFORGE_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_api_never_imports_torch(tmp_path) -> None:
    code = (
        "import sys\n"
        "from microforge.api.app import create_app\n"
        "app = create_app()\n"
        "from fastapi.testclient import TestClient\n"
        "TestClient(app).get('/openapi.json')\n"
        "assert 'torch' not in sys.modules, 'the API imported torch'\n"
    )
    run_api_code_without_torch(code, tmp_path)
