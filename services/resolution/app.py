"""resolution's composition root."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI

from services.resolution import clock_metrics, handlers, pending
from services.resolution.api import REQUEST_MODELS, agent_dependency, build_router
from services.resolution.api_clocks import ExtendIn, build_clock_router
from services.resolution.api_docs import install_openapi
from services.resolution.auth import AgentAuthenticator
from services.resolution.scheduler import ClockScheduler
from services.resolution.settings import ResolutionSettings
from services.resolution.unit_of_work import bind
from shared.runtime import ServiceRuntime
from shared.service_app import build_app
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_TRIAGED

SCHEMA = "resolution"
MIGRATIONS = Path(__file__).parent / "migrations"


def system_clock() -> datetime:
    return datetime.now(UTC)


def create_app(settings: ResolutionSettings | None = None) -> FastAPI:
    settings = settings or ResolutionSettings()
    runtime = ServiceRuntime(settings, SCHEMA)
    runtime.on(COMPLAINTS_TRIAGED, bind(handlers.on_triaged, settings, runtime.metrics))
    runtime.on(COMPLAINTS_RECEIVED, bind(handlers.on_customer_event, settings, runtime.metrics))
    runtime.add_background(
        pending.release_loop(
            lambda: runtime.pool,
            grace=timedelta(seconds=settings.duplicate_wait_s),
            every=timedelta(seconds=settings.duplicate_release_every_s),
        ),
        name="duplicate_release",
    )
    app = build_app(
        runtime,
        title="Wallet complaints: resolution (agent API)",
        version="1.0.0",
        description=(
            "Case management for back-office agents (CONTRACT section 6): the work queue, "
            "the case, the money ledger, statuses, messages to the customer and the clocks. "
            "Every request carries `Authorization: Bearer <agent token>` (`python -m "
            "services.resolution create-agent NAME --tenant TENANT_ID`); an agent sees its "
            "own tenant's cases only. Every error is `application/problem+json` (RFC 9457), "
            "with `errors: [{field, message}]` for validation errors. Money is a decimal "
            "string, never a JSON number."
        ),
    )
    # Injectable "now" (tests replace it): read on every request, never captured.
    app.state.clock = system_clock

    def now() -> datetime:
        clock: Callable[[], datetime] = app.state.clock
        return clock()

    authenticator: dict[str, AgentAuthenticator] = {}

    def get_authenticator() -> AgentAuthenticator:
        # Built lazily: the pool exists only once the lifespan has started the runtime.
        if "instance" not in authenticator:
            authenticator["instance"] = AgentAuthenticator(runtime.pool, settings.auth_cache_s)
        return authenticator["instance"]

    current_agent = agent_dependency(get_authenticator)
    app.include_router(
        build_router(settings, lambda: runtime.pool, current_agent, runtime.metrics, now)
    )
    app.include_router(
        build_clock_router(lambda: runtime.pool, current_agent, now, settings.max_body_bytes)
    )

    # One instance fires the clocks (leader election inside); supervised like the relay.
    scheduler = ClockScheduler(lambda: runtime.pool, settings, runtime.metrics, now)
    app.state.clock_scheduler = scheduler
    runtime.add_background(scheduler.run_forever, name="clock_scheduler")
    runtime.add_background(clock_metrics.due_soon_loop(lambda: runtime.pool, runtime.metrics, now))
    runtime.add_readiness_check("clock_scheduler", lambda: bool(scheduler.health()["ok"]))

    install_openapi(app, (*REQUEST_MODELS, ExtendIn))
    return app
