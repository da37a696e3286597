"""notifier's composition root."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.notifier import handlers
from services.notifier.delivery import DeliveryWorker
from services.notifier.retention import ContactPurge, DeliveryRetention
from services.notifier.settings import NotifierSettings
from services.notifier.unit_of_work import bind
from shared.runtime import ServiceRuntime
from shared.service_app import build_app
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_RESOLUTION

SCHEMA = "notifier"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    runtime = ServiceRuntime(settings, SCHEMA)
    email = settings.email_enabled
    # Follow-up messages and feedback change no recipient and call for no notice.
    runtime.on(
        COMPLAINTS_RECEIVED,
        bind(handlers.on_received, email=email),
        event_types={"complaint.received"},
    )
    runtime.on(COMPLAINTS_RESOLUTION, bind(handlers.on_resolution_topic, email=email))
    worker = DeliveryWorker(lambda: runtime.pool, settings, runtime.metrics)
    runtime.add_background(worker.run_forever, name="delivery_loop")
    purge = ContactPurge(lambda: runtime.pool, settings)
    runtime.add_background(purge.run_forever, name="contact_purge")
    runtime.add_retention(DeliveryRetention(settings).purge_once)
    # A stalled loop (alive but not iterating) fails /readyz too, not only a dead one.
    runtime.add_readiness_check("delivery_worker", worker.is_healthy)
    app = build_app(
        runtime,
        title="Wallet complaints: notifier",
        version="1.0.0",
        description="Delivers customer notifications; only health and metrics over HTTP.",
    )
    app.state.delivery_worker = worker
    return app
