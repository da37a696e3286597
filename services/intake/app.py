"""intake's composition root: everything wired in one place."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from services.intake import read_model
from services.intake.api import build_router
from services.intake.api_docs import install_openapi
from services.intake.auth import TenantAuthenticator
from services.intake.settings import IntakeSettings
from services.intake.view_batch import view_batch
from shared.runtime import ServiceRuntime
from shared.service_app import build_app, serve_plainly
from shared.topics import COMPLAINTS_RESOLUTION, COMPLAINTS_TRIAGED, NOTIFICATIONS

SCHEMA = "intake"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    runtime = ServiceRuntime(settings, SCHEMA)
    runtime.on(COMPLAINTS_TRIAGED, read_model.on_triaged)
    runtime.on(COMPLAINTS_RESOLUTION, read_model.on_resolution)
    # A failed notification leaves no line on the customer's timeline.
    runtime.on(NOTIFICATIONS, read_model.on_notification, event_types={"notification.sent"})
    runtime.scope_transactions(view_batch)

    app = build_app(
        runtime,
        title="Wallet complaints: intake API",
        version="1.0.0",
        description=(
            "The API wallet apps post customer complaints to. Every request carries "
            "`Authorization: Bearer <api_key>`; every error is `application/problem+json` "
            "(RFC 9457), with `errors: [{field, message}]` for validation errors."
        ),
    )
    authenticator: dict[str, TenantAuthenticator] = {}

    def get_authenticator() -> TenantAuthenticator:
        # Built lazily: the pool exists only once the lifespan has started the runtime.
        if "instance" not in authenticator:
            authenticator["instance"] = TenantAuthenticator(runtime.pool, settings.auth_cache_s)
        return authenticator["instance"]

    router = build_router(settings, lambda: runtime.pool, get_authenticator, runtime.metrics)
    app.include_router(router)
    # The route every complaint takes, served without FastAPI's per-request machinery.
    serve_plainly(app, _route(router, "POST", "/v1/complaints"))
    install_openapi(app)
    return app


def _route(router: APIRouter, method: str, path: str) -> APIRoute:
    return next(
        r
        for r in router.routes
        if isinstance(r, APIRoute) and r.path == path and method in r.methods
    )
