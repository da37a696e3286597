"""triage's composition root."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from services.triage import corrections, incidents
from services.triage.handler import TriageHandler
from services.triage.settings import TriageSettings
from services.triage.unit_of_work import bind
from shared.runtime import ServiceRuntime
from shared.service_app import build_app
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_RESOLUTION

SCHEMA = "triage"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: TriageSettings | None = None) -> FastAPI:
    settings = settings or TriageSettings()
    classifier = settings.classifier()
    runtime = ServiceRuntime(settings, SCHEMA)
    triage = TriageHandler(
        classifier,
        runtime.metrics,
        duplicate_window=timedelta(days=settings.duplicate_window_days),
        incident_policy=settings.incident_policy(),
    )
    # Follow-up messages and feedback need no triage; of the case events only an agent's
    # correction teaches triage anything.
    runtime.on(COMPLAINTS_RECEIVED, bind(triage), event_types={"complaint.received"})
    runtime.on(
        COMPLAINTS_RESOLUTION,
        bind(corrections.on_resolution_event),
        event_types={"complaint.recategorised"},
    )
    runtime.add_background(
        incidents.purge_counts_loop(lambda: runtime.pool, settings.incident_policy()),
        name="incident_counter_purge",
    )
    return build_app(
        runtime,
        title="Wallet complaints: triage",
        version="1.0.0",
        description="Classifies complaints; only health and metrics over HTTP.",
    )
