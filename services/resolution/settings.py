from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ResolutionSettings(ServiceSettings):
    """Env prefix RESOLUTION_ for resolution's own settings (e.g. RESOLUTION_HTTP_PORT)."""

    model_config = SettingsConfigDict(
        env_prefix="RESOLUTION_", extra="ignore", populate_by_name=True
    )

    service_name: str = "resolution"
    http_port: int = 8082
