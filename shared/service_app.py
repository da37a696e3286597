"""Builds the FastAPI app around a ServiceRuntime and serves it with uvicorn."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from shared.api_docs_assets import install_docs
from shared.consumer import TRANSIENT_ERRORS
from shared.logging import configure_logging
from shared.problems import Problem, install_problem_handlers, problem_response
from shared.runtime import ServiceRuntime, add_ops_routes
from shared.settings import ServiceSettings


def build_app(runtime: ServiceRuntime, **fastapi_kwargs: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if getattr(app.state, "freeze_gc", False):
            freeze_startup_objects()
        try:
            yield
        finally:
            await runtime.stop()

    # FastAPI's own /docs and /redoc load their assets from a CDN: ours are served here.
    docs_url = fastapi_kwargs.pop("docs_url", "/docs")
    redoc_url = fastapi_kwargs.pop("redoc_url", "/redoc")
    # FastAPI's native OpenTelemetry off: it looked up the global providers on every
    # request (about 4 % of intake's CPU at saturation, py-spy); metrics are Prometheus's.
    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
        **fastapi_kwargs,
    )
    app.state.runtime = runtime
    install_docs(app, docs_url, redoc_url)
    install_problem_handlers(app)
    add_ops_routes(app, runtime)

    # While Postgres is unreachable: 503 with Retry-After, never a 202 for an unstored request.
    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    async def on_unavailable(_request: Any, exc: Exception) -> Any:
        if isinstance(exc, TRANSIENT_ERRORS):
            return problem_response(
                Problem(503, "Temporarily unavailable; retry later.", headers={"Retry-After": "5"})
            )
        raise exc

    return app


def serve_plainly(app: FastAPI, route: APIRoute) -> None:
    """Serve `route` (documented as FastAPI documents it) as a plain Starlette route ahead
    of the app's routing: its endpoint takes the Request and returns a Response, and is
    called without FastAPI's dependency solving, exit stacks and included-router dispatch
    (at intake's saturation the framework's share of its CPU went 22 % -> 13 %; README,
    Figures). The middleware and the exception handlers still apply."""
    plain = Route(route.path, route.endpoint, methods=list(route.methods), include_in_schema=False)
    app.router.routes.insert(0, plain)


def freeze_startup_objects() -> None:
    """Move what start-up built (modules, settings, triage's model and lexicons, the
    templates) out of the garbage collector's reach: it lives as long as the process,
    and each full collection would otherwise walk all of it again (40 ms and more here).
    Collected first, so that no start-up garbage is kept for good."""
    gc.collect()
    gc.freeze()


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.log_level, settings.log_format, service=settings.service_name)
    app.state.freeze_gc = True  # a served process; the test suite's apps are left alone
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        log_config=None,  # uvicorn's dictConfig would add unmasked handlers of its own
        access_log=False,
        # The plain asyncio loop: under uvloop, aiokafka's consumer dies for good when the
        # broker restarts (aio-libs/aiokafka#1038, found by `make chaos`).
        loop="asyncio",
        http="httptools",
    )
