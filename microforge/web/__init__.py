"""The browser front end, served by the API process at ``/`` (the REST API stays at /v1).

Why here and why this shape: the front end is static HTML, CSS and ES-module JavaScript
shipped as package data, so ``pip install`` is the whole install (no Node toolchain, no
CDN: it works on an offline lab network). It talks only to the documented /v1 API with
the caller's key as a Bearer header, so it has no privileges a REST client lacks.

``mount_web(app)`` is the one call the app factory makes. It adds:

- ``/`` the single page (hash routes, so no other HTML paths exist);
- ``/ui/...`` its assets;
- ``/docs`` Swagger UI from the ``swagger-ui-bundle`` package's local copy instead of
  FastAPI's CDN page (``/redoc``, CDN-only, answers with a redirect to ``/docs``).

Every one of those responses carries a Content-Security-Policy that allows scripts,
styles, images and requests from this origin only (plus ``blob:`` images, which is how
authenticated PNGs are shown), so injected markup could neither run nor phone home.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
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
#: Swagger UI sets style attributes from its own (local) code, so /docs allows inline
#: styles; scripts stay 'self' only.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
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


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # an install without it keeps FastAPI's own /docs page
        return None
    return Path(str(swagger_ui_path))


def mount_web(app: FastAPI) -> None:
    """Serve the front end at / and the local Swagger UI at /docs on ``app``."""
    page_headers = {**security_headers(PAGE_CSP), "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=page_headers)

    app.mount("/ui", _SecureStatic(directory=STATIC_DIR), name="web")

    swagger = _swagger_dir()
    if swagger is None or not app.docs_url:
        return
    replaced = {app.docs_url, app.redoc_url}
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in replaced]
    docs_headers = {**security_headers(DOCS_CSP), "Cache-Control": "no-cache"}

    @app.get(app.docs_url, include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "swagger" / "docs.html", headers=docs_headers)

    if app.redoc_url:

        @app.get(app.redoc_url, include_in_schema=False)
        def redoc() -> RedirectResponse:
            return RedirectResponse(app.docs_url)

    app.mount("/docs-assets", _SecureStatic(directory=swagger, csp=DOCS_CSP), name="swagger-ui")
