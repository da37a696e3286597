from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    """Env prefix NOTIFIER_ for notifier's own settings (e.g. NOTIFIER_WEBHOOK_TIMEOUT_S)."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", populate_by_name=True)

    service_name: str = "notifier"
    http_port: int = 8083
    webhook_timeout_s: float = 5.0
    webhook_connections: int = 16
    # Idle poll of the delivery queue; new deliveries also wake the worker at once.
    delivery_poll_interval_s: float = 0.2
    delivery_batch_size: int = 100
    # Backoff: first retry after retry_first_s, doubling up to retry_max_backoff_s;
    # a delivery is given up (notification.failed) only after retry_give_up_hours.
    retry_first_s: float = 1.0
    retry_max_backoff_s: float = 600.0
    retry_give_up_hours: float = 48.0
