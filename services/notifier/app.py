"""notifier's composition root."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.notifier import handlers
from services.notifier.delivery import DeliveryWorker
from services.notifier.settings import NotifierSettings
from shared.runtime import ServiceRuntime
from shared.service_app import build_app
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_RESOLUTION

SCHEMA = "notifier"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    runtime = ServiceRuntime(settings, SCHEMA)
    runtime.on(COMPLAINTS_RECEIVED, handlers.on_received)
    runtime.on(COMPLAINTS_RESOLUTION, handlers.on_resolution)
    worker = DeliveryWorker(lambda: runtime.pool, settings, runtime.metrics)
    runtime.add_background(worker.run_forever)
    return build_app(
        runtime,
        title="Wallet complaints: notifier",
        version="1.0.0",
        description="Delivers customer notifications; only health and metrics over HTTP.",
    )
