from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.triage.incident_policy import IncidentPolicy
from shared.settings import ServiceSettings


class TriageSettings(ServiceSettings):
    """Env prefix TRIAGE_ for triage's own settings (e.g. TRIAGE_RULES_FILE)."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore", populate_by_name=True)

    service_name: str = "triage"
    http_port: int = 8081
    # Lexicons, weights, thresholds and due times; None means the bundled rules.toml.
    rules_file: Path | None = None
    # A complaint about the same transaction by the same customer within this window
    # is linked to the first one instead of opening a second case.
    duplicate_window_days: int = 30
    # Incidents (see incident_policy.py): many complaints with one cause in a short window.
    incident_window_minutes: int = 30
    incident_baseline_hours: int = 24
    incident_merchant_min_complaints: int = 5
    incident_category_min_complaints: int = 20
    incident_spike_factor: float = 3.0

    def incident_policy(self) -> IncidentPolicy:
        return IncidentPolicy(
            window=timedelta(minutes=self.incident_window_minutes),
            baseline=timedelta(hours=self.incident_baseline_hours),
            merchant_min_complaints=self.incident_merchant_min_complaints,
            category_min_complaints=self.incident_category_min_complaints,
            spike_factor=self.incident_spike_factor,
        )
