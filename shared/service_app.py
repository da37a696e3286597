"""Builds the FastAPI app around a ServiceRuntime and serves it with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI

from shared.consumer import TRANSIENT_ERRORS
from shared.logging import configure_logging
from shared.problems import Problem, install_problem_handlers, problem_response
from shared.runtime import ServiceRuntime, add_ops_routes
from shared.settings import ServiceSettings


def build_app(runtime: ServiceRuntime, **fastapi_kwargs: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(lifespan=lifespan, **fastapi_kwargs)
    app.state.runtime = runtime
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


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
