"""Intake's domain: what a valid complaint is, and the facts derived at acceptance.

Pure Python: no I/O, so it is unit-tested without a database.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared import jsonutil


class Channel(StrEnum):
    APP = "app"
    WEB = "web"
    PHONE = "phone"
    EMAIL = "email"
    CHAT = "chat"
    SOCIAL_MEDIA = "social_media"
    REGULATOR = "regulator"
    CONSUMER_ASSOCIATION = "consumer_association"


class Status(StrEnum):
    RECEIVED = "received"
    TRIAGED = "triaged"
    IN_PROGRESS = "in_progress"
    AWAITING_CUSTOMER = "awaiting_customer"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"


# ISO 4217 codes wallets in our jurisdictions settle in; extend as tenants need.
CURRENCIES = frozenset(
    [
        "CNY",
        "USD",
        "EUR",
        "GBP",
        "HKD",
        "JPY",
        "SGD",
        "AUD",
        "CAD",
        "CHF",
        "KRW",
        "TWD",
        "MOP",
        "MYR",
        "THB",
        "INR",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
    ]
)

# Money arrives as a decimal string, never a JSON number (no float on the way in).
AmountStr = Annotated[str, StringConstraints(pattern=r"^(0|[1-9]\d{0,14})(\.\d{1,4})?$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Strict(BaseModel):
    # Lax mode still refuses a JSON number for a str field: amounts stay strings.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Customer(Strict):
    id: Annotated[Text, StringConstraints(max_length=128)]
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
    email: (
        Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
        | None
    ) = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{5,20}$")] | None = None


class Evidence(Strict):
    kind: Annotated[Text, StringConstraints(max_length=32)]
    uri: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None


class ComplaintIn(Strict):
    """The body of POST /v1/complaints (CONTRACT section 3)."""

    customer: Customer
    channel: Channel
    description: Annotated[Text, StringConstraints(max_length=5000)]
    amount: AmountStr | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    transaction_ref: Annotated[Text, StringConstraints(max_length=128)] | None = None
    merchant: Annotated[Text, StringConstraints(max_length=256)] | None = None
    occurred_at: AwareDatetime | None = None
    category_hint: Annotated[Text, StringConstraints(max_length=64)] | None = None
    evidence: list[Evidence] = Field(default_factory=list, max_length=20)

    def semantic_errors(self) -> list[dict[str, str]]:
        """Rules across fields that a schema cannot say."""
        errors = []
        if self.currency is not None and self.currency not in CURRENCIES:
            errors.append({"field": "currency", "message": "unknown ISO 4217 currency code"})
        if self.amount is not None and self.currency is None:
            errors.append({"field": "currency", "message": "required when amount is given"})
        if self.amount is not None and Decimal(self.amount) <= 0:
            errors.append({"field": "amount", "message": "must be greater than zero"})
        return errors

    @property
    def amount_decimal(self) -> Decimal | None:
        return Decimal(self.amount) if self.amount is not None else None


def request_fingerprint(body: dict[str, Any]) -> bytes:
    """Same body (whatever its key order or whitespace) -> same fingerprint."""
    return hashlib.sha256(jsonutil.dumps_sorted(body)).digest()


def provisional_first_response_due(received_at: datetime, hours: int) -> datetime:
    return received_at + timedelta(hours=hours)


def format_ticket_no(received_at: datetime, sequence: int) -> str:
    return f"WC-{received_at:%Y%m%d}-{sequence:06d}"


# Status moves the read model accepts from triage: it never overrides a later state.
def apply_triaged_status(current: str) -> str:
    return Status.TRIAGED if current == Status.RECEIVED else current
