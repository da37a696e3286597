"""How many working days a refund takes to reach the customer, as the tenant promises it:
3-7 by default, per tenant where its payment rails are faster or slower.

NOTIFIER_REFUND_WORKING_DAYS="3-7" (or "5": exactly five) and
NOTIFIER_REFUND_WORKING_DAYS_BY_TENANT='{"<tenant uuid>": "2-5"}'.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import cache

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_RANGE = re.compile(r"^\s*(\d{1,2})\s*(?:-\s*(\d{1,2})\s*)?$")


@dataclass(frozen=True)
class WorkingDays:
    min: int
    max: int

    def as_data(self) -> dict[str, int]:
        return {"min": self.min, "max": self.max}


def parse(value: str) -> WorkingDays:
    """ "3-7" -> 3 to 7 working days, "5" -> five; 1 <= min <= max."""
    match = _RANGE.match(value)
    if not match:
        raise ValueError(f"working days must read like 3-7 or 5, not {value!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 1 <= low <= high:
        raise ValueError(f"working days {value!r}: need 1 <= min <= max")
    return WorkingDays(low, high)


class RefundTimingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    refund_working_days: str = "3-7"
    refund_working_days_by_tenant: dict[uuid.UUID, str] = {}

    @field_validator("refund_working_days")
    @classmethod
    def _a_range(cls, value: str) -> str:
        parse(value)
        return value

    @field_validator("refund_working_days_by_tenant")
    @classmethod
    def _ranges(cls, value: dict[uuid.UUID, str]) -> dict[uuid.UUID, str]:
        for days in value.values():
            parse(days)
        return value

    def for_tenant(self, tenant_id: uuid.UUID | None) -> WorkingDays:
        override = self.refund_working_days_by_tenant.get(tenant_id) if tenant_id else None
        return parse(override or self.refund_working_days)


@cache
def default() -> RefundTimingSettings:
    """Read from the environment once, on first use (the service's start can call it to
    fail early on a malformed value)."""
    return RefundTimingSettings()
