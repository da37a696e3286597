from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    """Env prefix INTAKE_ for intake's own settings (e.g. INTAKE_HTTP_PORT)."""

    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", populate_by_name=True)

    service_name: str = "intake"
    http_port: int = 8080
    # Promised before triage knows the priority; triage then sets the real due times.
    provisional_first_response_hours: int = 24
    max_body_bytes: int = 64 * 1024
    # Per-tenant token bucket (per intake process).
    rate_limit_per_s: float = 200.0
    rate_limit_burst: int = 400
    # How long a verified API key stays cached in the process (revocation delay).
    auth_cache_s: float = 30.0
