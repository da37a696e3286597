"""resolution's composition root."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.resolution import cases, customer_events
from services.resolution.settings import ResolutionSettings
from shared.runtime import ServiceRuntime
from shared.service_app import build_app
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_TRIAGED

SCHEMA = "resolution"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ResolutionSettings | None = None) -> FastAPI:
    settings = settings or ResolutionSettings()
    runtime = ServiceRuntime(settings, SCHEMA)
    runtime.on(COMPLAINTS_TRIAGED, cases.on_triaged)
    runtime.on(COMPLAINTS_RECEIVED, customer_events.on_customer_event)
    return build_app(
        runtime,
        title="Wallet complaints: resolution (agent API)",
        version="1.0.0",
        description="Case management for back-office agents (CONTRACT section 6).",
    )
