from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


def _money_by_currency(**amounts: str) -> dict[str, Decimal]:
    return {currency: Decimal(amount) for currency, amount in amounts.items()}


class ResolutionSettings(ServiceSettings):
    """Env prefix RESOLUTION_ for resolution's own settings (e.g. RESOLUTION_HTTP_PORT).
    Maps are JSON, e.g. RESOLUTION_APPROVAL_THRESHOLDS='{"CNY": "500", "USD": "75"}'."""

    model_config = SettingsConfigDict(
        env_prefix="RESOLUTION_", extra="ignore", populate_by_name=True
    )

    service_name: str = "resolution"
    http_port: int = 8082
    max_body_bytes: int = 64 * 1024
    # How long a duplicate waits for its original's case before opening one that stands
    # in for it (domain.py). Far above consumer lag between partitions, far below the
    # first-response due time the customer was promised.
    duplicate_wait_s: float = 600
    duplicate_release_every_s: float = 30
    # Agent tokens looked up at most this often per token (a revoked agent's grace).
    auth_cache_s: float = 30

    # Money (CONTRACT section 6 defaults). A refund above the threshold of its currency
    # waits for an approver; a currency with no threshold always does.
    approval_thresholds: dict[str, Decimal] = Field(
        default_factory=lambda: _money_by_currency(CNY="500", USD="75")
    )
    # A duplicate_charge naming a transaction_ref, at most this much: refunded on triage.
    auto_refund_limits: dict[str, Decimal] = Field(
        default_factory=lambda: _money_by_currency(CNY="200", USD="30")
    )
    auto_refund_once_per_days: int = 30

    # Clocks: a tenant's holiday overrides (TOML, see clocks.py), and the scheduler.
    holiday_overrides_file: Path | None = None
    clock_scan_every_s: float = 5
    clock_batch_size: int = 100
