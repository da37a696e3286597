from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

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
