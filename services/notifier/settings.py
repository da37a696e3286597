from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    """Env prefix NOTIFIER_ for notifier's own settings (e.g. NOTIFIER_WEBHOOK_TIMEOUT_S)."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", populate_by_name=True)

    service_name: str = "notifier"
    http_port: int = 8083
    # The total deadline of one webhook request, from its claim to the last byte read.
    webhook_timeout_s: float = 5.0
    # How long a request waits for one of our own pooled connections before it gives its
    # claim back (our pool being full is not the tenant's fault).
    webhook_pool_timeout_s: float = 1.0
    webhook_connections: int = 16
    # A claim owns its delivery this long. Invariant: longer than webhook_timeout_s, so a
    # request is over before anyone else may claim the delivery again. Default: timeout + 10.
    delivery_lease_s: float | None = None
    # Idle poll of the delivery queue; new deliveries also wake the worker at once.
    delivery_poll_interval_s: float = 0.2
    delivery_batch_size: int = 100
    # Backoff: first retry after retry_first_s, doubling up to retry_max_backoff_s;
    # a delivery is given up (notification.failed) only after retry_give_up_hours.
    retry_first_s: float = 1.0
    retry_max_backoff_s: float = 600.0
    retry_give_up_hours: float = 48.0  # at least 24 (CONTRACT section 7)
    # Circuit breaker per endpoint (webhook scheme://host:port, or the SMTP server):
    # open after this many consecutive unreachable/5xx outcomes; half-open (one probe)
    # after the cool-down, which doubles on each reopening up to circuit_max_cooldown_s.
    circuit_failure_threshold: int = 5
    circuit_cooldown_s: float = 30.0
    circuit_max_cooldown_s: float = 1800.0
    # E-mail (only when SMTP_URL is set, e.g. smtp://127.0.0.1:1025 or smtps://...): the
    # From header. One SMTP conversation has webhook_timeout_s as its total deadline too.
    email_from: str = "Complaints <noreply@notifier.complaints.invalid>"
    # The customer's address is kept while the complaint is open and this long after it
    # was resolved or closed, then purged by the contact_purge loop.
    contact_retention_days: float = 30.0
    contact_purge_interval_s: float = 3600.0
    # Ended deliveries (delivered or failed) and their attempts, the delivery log, are
    # deleted this long after they ended, by the housekeeping leader: a month covers what
    # on-call looks into and a question about a recent notification.
    delivery_retention_days: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _lease_outlives_the_request(self) -> NotifierSettings:
        if self.delivery_lease_s is None:
            self.delivery_lease_s = self.webhook_timeout_s + 10
        if self.delivery_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                f"delivery_lease_s ({self.delivery_lease_s}) must exceed webhook_timeout_s "
                f"({self.webhook_timeout_s}): else a delivery can be sent twice at once"
            )
        if self.webhook_pool_timeout_s >= self.webhook_timeout_s:
            raise ValueError("webhook_pool_timeout_s must be shorter than webhook_timeout_s")
        return self

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_url)

    @property
    def lease_s(self) -> float:
        assert self.delivery_lease_s is not None  # set by the validator
        return self.delivery_lease_s
