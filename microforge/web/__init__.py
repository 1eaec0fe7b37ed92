"""The browser front end, served by the API process at ``/`` (the REST API stays at /v1).

Why here and why this shape: the front end is static HTML, CSS and ES-module JavaScript
shipped as package data, so ``pip install`` is the whole install (no Node toolchain, no
CDN: it works on an offline lab network). It talks only to the documented /v1 API with
the caller's key as a Bearer header, so it has no privileges a REST client lacks.

``mount_web(app)`` is the one call the app factory makes. It adds:

- ``/`` the single page (hash routes, so no other HTML paths exist);
- ``/ui/...`` its assets;
- ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from the copies the ``fastapi-offline``
  package ships (MIT; Swagger UI 5, ReDoc 2), instead of FastAPI's pages, which load
  them from a CDN and stay blank on an offline lab network. Updating them = upgrading
  that package (pyproject pins the range).

Every one of those responses carries a Content-Security-Policy that allows scripts,
styles, images and requests from this origin only (plus ``blob:`` images, which is how
authenticated PNGs are shown), so injected markup could neither run nor phone home.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: The single page's policy: nothing inline, nothing from another origin.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: Swagger UI and ReDoc inject style elements from their own (local) code and ReDoc runs
#: its search in a blob: worker, so the docs pages allow those; scripts stay 'self' only.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


class _SecureStatic(StaticFiles):
    """StaticFiles whose answers carry the security headers (and are revalidated, so an
    upgraded server is never mixed with a browser's cached older modules)."""

    def __init__(self, *args, csp: str = PAGE_CSP, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._headers = {**security_headers(csp), "Cache-Control": "no-cache"}

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self._headers)
        return response


def _docs_assets_dir() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:  # an install without it keeps FastAPI's own (CDN) pages
        return None
    return Path(fastapi_offline.__file__).resolve().parent / "static"


def mount_web(app: FastAPI) -> None:
    """Serve the front end at /, and Swagger UI at /docs and ReDoc at /redoc from local files."""
    page_headers = {**security_headers(PAGE_CSP), "Cache-Control": "no-cache"}

    app.add_api_route(
        "/",
        _file_endpoint(STATIC_DIR / "index.html", page_headers),
        methods=["GET", "HEAD"],
        include_in_schema=False,
    )

    app.mount("/ui", _SecureStatic(directory=STATIC_DIR), name="web")

    assets = _docs_assets_dir()
    if assets is None:
        return
    pages = {app.docs_url: "swagger.html", app.redoc_url: "redoc.html"}
    pages.pop(None, None)
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in pages]
    docs_headers = {**security_headers(DOCS_CSP), "Cache-Control": "no-cache"}
    for url, page in pages.items():
        app.add_api_route(
            url,
            _file_endpoint(STATIC_DIR / "docs" / page, docs_headers),
            methods=["GET", "HEAD"],
            include_in_schema=False,
        )
    app.mount("/docs-assets", _SecureStatic(directory=assets, csp=DOCS_CSP), name="docs-assets")


def _file_endpoint(path: Path, headers: dict[str, str]):
    def endpoint() -> FileResponse:
        return FileResponse(path, headers=headers)

    return endpoint
