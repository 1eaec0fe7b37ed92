"""The front end as the API serves it: the page, its assets, its security headers.

Fast checks with the ASGI test client (no browser, no broker); the browser walk-through
is tests/test_web_e2e.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from microforge.api.app import create_app
from microforge.settings import Settings
from microforge.web import STATIC_DIR

ASSETS = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "javascript",
    ".svg": "image/svg+xml",
}
#: Strings that look like origins but fetch nothing: the SVG namespace of createElementNS.
NOT_ORIGINS = ("http://www.w3.org/2000/svg",)
#: Ways to turn data into markup or code; the pages use text nodes and textContent only.
BANNED_JS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """One app for the module, on SQLite: these checks do not touch the database."""
    data = tmp_path_factory.mktemp("web")
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'db.sqlite3'}",
        redis_url=None,
        blob_dir=data / "blobs",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _csp(response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    parts = [part.strip().partition(" ") for part in policy.split(";") if part.strip()]
    return {name: value for name, _, value in parts}


def test_root_serves_the_page_with_a_strict_policy(web):
    response = web.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/main.js"></script>' in response.text
    csp = _csp(response)
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"  # no inline scripts, no other origin
    assert csp["connect-src"] == "'self'"
    assert "'unsafe-inline'" not in csp["style-src"]
    assert csp["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ASSETS, ids=lambda p: str(p.relative_to(STATIC_DIR)))
def test_assets_have_their_content_type_and_the_policy(web, path: Path):
    response = web.get(f"/ui/{path.relative_to(STATIC_DIR).as_posix()}")
    assert response.status_code == 200
    assert CONTENT_TYPES[path.suffix] in response.headers["content-type"]
    assert "content-security-policy" in response.headers
    assert response.content == path.read_bytes()


def test_no_asset_reaches_another_origin_or_runs_inline_code():
    for path in ASSETS:
        text = path.read_text()
        for allowed in NOT_ORIGINS:
            text = text.replace(allowed, "")
        assert not re.search(r"https?://|(?:src|href)=[\"']//", text), path
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline script: {path}"
            assert not re.search(r"\son\w+\s*=", text), f"inline handler: {path}"
            assert " style=" not in text, f"inline style: {path}"
        if path.suffix == ".js":
            # user data reaches the page only as text (textContent, text nodes)
            for banned in BANNED_JS:
                assert banned not in text.replace('"innerHTML"', ""), f"{banned} in {path}"


def test_the_key_is_kept_in_session_storage_and_sent_as_a_header():
    api_js = (STATIC_DIR / "js" / "api.js").read_text()
    assert "sessionStorage" in api_js and "Authorization" in api_js
    everything = "".join(p.read_text() for p in ASSETS if p.suffix == ".js")
    assert "localStorage" not in everything and "document.cookie" not in everything


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_api_docs_load_nothing_from_a_cdn(web, page: str, script: str):
    response = web.get(page)
    assert response.status_code == 200
    assert f'<script src="/docs-assets/{script}"></script>' in response.text
    assert not re.search(r"https?://", response.text)
    assert _csp(response)["script-src"] == "'self'"
    asset = web.get(f"/docs-assets/{script}")
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    assert web.head(page).status_code == 200


def test_swagger_ui_is_a_version_that_reads_openapi_3_1(web):
    assert web.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = web.get("/docs-assets/swagger-ui-bundle.js").text
    assert "OpenAPI 3.1" in bundle or "openapi31" in bundle.lower()
    assert web.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_the_api_is_unchanged_beside_the_page(web):
    missing = web.get("/v1/datasets")
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "content-security-policy" not in missing.headers
    assert web.get("/v1/nothing-here").status_code == 404
    assert web.get("/ui/js/no-such-file.js").status_code == 404


def test_every_asset_is_package_data():
    """A file the globs miss works from a checkout but is missing from a wheel."""
    import tomllib
    from pathlib import PurePosixPath

    pyproject = tomllib.loads((STATIC_DIR.parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["microforge.web"]
    for path in ASSETS:
        relative = PurePosixPath(path.relative_to(STATIC_DIR.parent).as_posix())
        # one path component per pattern component: "static/*.js" is not "static/js/a.js"
        assert any(
            relative.match(p) and len(relative.parts) == len(PurePosixPath(p).parts)
            for p in patterns
        ), relative


def test_the_viewer_legend_has_the_colours_the_api_draws_phases_in():
    """app.css's --phase-N are PHASE_COLOURS, which slice.png?colour=phases and OME-Zarr use."""
    from microforge.phase_colours import PHASE_COLOURS

    css = (STATIC_DIR / "app.css").read_text()
    found = dict(re.findall(r"--phase-(\d+): (#[0-9a-f]{6});", css))
    assert [found[str(i)] for i in range(len(found))] == list(PHASE_COLOURS)
    volumes_js = (STATIC_DIR / "js" / "pages" / "volumes.js").read_text()
    assert 'query.set("colour", colour.value)' in volumes_js


def test_the_import_form_sends_the_fields_the_api_reads(web):
    """generators.js IMPORT_FIELDS are the multipart fields POST /v1/generators documents."""
    body = web.get("/openapi.json").json()["paths"]["/v1/generators"]["post"]["requestBody"]
    documented = set(body["content"]["multipart/form-data"]["schema"]["properties"])
    source = (STATIC_DIR / "js" / "pages" / "generators.js").read_text()
    block = re.search(r"IMPORT_FIELDS = \{(.*?)\};", source, re.S).group(1)
    names = dict(re.findall(r'(\w+): "(\w+)"', block))
    assert set(names.values()) == documented
    # every one of them is appended to the form somewhere, and nothing else is
    assert set(re.findall(r"data\.append\(f\.(\w+)", source)) == set(names)
    assert 'upload("/v1/generators", data)' in source
