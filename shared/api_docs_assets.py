"""/docs (Swagger UI) and /redoc with every asset served by the service itself.

FastAPI's default pages load Swagger UI and ReDoc from a CDN (and ReDoc Google's fonts):
where the service runs without Internet access, /docs is a blank page. The assets ship
in the `fastapi-offline` package (its `static/` folder: Swagger UI 5, ReDoc 2, a
favicon); they are mounted under ASSETS_PATH and the pages point there.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def install_docs(app: FastAPI, docs_url: str | None, redoc_url: str | None) -> None:
    """Serve the assets and the two pages (a None URL leaves that page out)."""
    if docs_url is None and redoc_url is None:
        return
    # check_dir: a missing asset folder fails at start-up, not as a blank page later.
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR, check_dir=True), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{_root(request)}{ASSETS_PATH}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{_root(request)}{app.openapi_url}"

    if docs_url is not None:
        oauth2_redirect = f"{docs_url}/oauth2-redirect"

        @app.get(docs_url, include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=openapi_url(request),
                title=f"{app.title} - Swagger UI",
                swagger_js_url=asset(request, SWAGGER_JS),
                swagger_css_url=asset(request, SWAGGER_CSS),
                swagger_favicon_url=asset(request, FAVICON),
                oauth2_redirect_url=f"{_root(request)}{oauth2_redirect}",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )

        @app.get(oauth2_redirect, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    if redoc_url is not None:

        @app.get(redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            return get_redoc_html(
                openapi_url=openapi_url(request),
                title=f"{app.title} - ReDoc",
                redoc_js_url=asset(request, REDOC_JS),
                redoc_favicon_url=asset(request, FAVICON),
                with_google_fonts=False,
            )


def _root(request: Request) -> str:
    """The prefix a proxy mounts the service under (ASGI root_path), as FastAPI does."""
    return str(request.scope.get("root_path", "")).rstrip("/")
