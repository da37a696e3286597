"""Intake's domain: what a valid complaint is, and the facts derived at acceptance.

Pure Python: no I/O, so it is unit-tested without a database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from services.intake.card_numbers import redact_card_numbers
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
# What a customer typed: a card number in it is kept as its last four digits only, before
# anything stores or publishes the text (see card_numbers).
Redacted = AfterValidator(redact_card_numbers)


def _timestamp_string(value: Any) -> Any:
    # pydantic would read a JSON number as unix time: the contract says RFC 3339 text.
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_string)]
# Outside this range a timestamp is a client bug (and year 1 with +14:00 overflows on the
# way into Postgres): rejected as a field error instead.
EARLIEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(days=1)


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
    description: Annotated[Text, StringConstraints(max_length=5000), Redacted]
    amount: AmountStr | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    transaction_ref: Annotated[Text, StringConstraints(max_length=128)] | None = None
    merchant: Annotated[Text, StringConstraints(max_length=256)] | None = None
    occurred_at: Timestamp | None = None
    category_hint: Annotated[Text, StringConstraints(max_length=64)] | None = None
    evidence: list[Evidence] = Field(default_factory=list, max_length=20)

    def semantic_errors(self, now: datetime | None = None) -> list[dict[str, str]]:
        """Rules across fields that a schema cannot say."""
        errors = []
        now = now or datetime.now(UTC)
        if self.occurred_at is not None and not (
            EARLIEST_OCCURRED_AT <= self.occurred_at <= now + CLOCK_SKEW
        ):
            errors.append(
                {"field": "occurred_at", "message": "must be after 1970 and not in the future"}
            )
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


class MessageIn(Strict):
    """The body of POST /v1/complaints/{ticket_no}/messages: a customer follow-up."""

    text: Annotated[Text, StringConstraints(max_length=5000), Redacted]
    evidence: list[Evidence] = Field(default_factory=list, max_length=20)


class FeedbackIn(Strict):
    """The body of POST /v1/complaints/{ticket_no}/feedback: satisfaction after resolution."""

    # strict: 4.0, "4" and true are wrong types, not scores.
    score: Annotated[int, Field(strict=True, ge=1, le=5)]
    comment: Annotated[Text, StringConstraints(max_length=2000), Redacted] | None = None


def nul_errors(data: Any, path: str = "") -> list[dict[str, str]]:
    """Field errors for strings holding U+0000: valid JSON, but Postgres cannot store it."""
    return [
        {"field": field or "body", "message": "must not contain the NUL character"}
        for field in _nul_paths(data, path)
    ]


def _nul_paths(data: Any, path: str) -> Iterator[str]:
    if isinstance(data, str):
        if "\x00" in data:
            yield path
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _nul_paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _nul_paths(value, f"{path}.{index}" if path else str(index))


# What a client may use as an Idempotency-Key: 1-128 visible ASCII characters.
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,128}$")


def valid_idempotency_key(key: str) -> bool:
    return bool(_IDEMPOTENCY_KEY.fullmatch(key))


_TICKET_NO = re.compile(r"^WC-\d{8}-\d{6,}$")


def is_ticket_no(value: str) -> bool:
    """A cheap 404 for what can never be a ticket (and no odd bytes reach the database)."""
    return bool(_TICKET_NO.fullmatch(value))


def request_fingerprint(body: Any, scope: str = "") -> bytes:
    """Same body (whatever its key order or whitespace) -> same fingerprint.

    `scope` binds the fingerprint to more than the body (the ticket a message is for),
    so one Idempotency-Key reused on another ticket is a conflict, not a replay.
    """
    canonical = jsonutil.dumps_sorted(body)
    return hashlib.sha256(scope.encode() + b"\x00" + canonical if scope else canonical).digest()


def provisional_first_response_due(received_at: datetime, hours: int) -> datetime:
    return received_at + timedelta(hours=hours)


def format_ticket_no(received_at: datetime, sequence: int) -> str:
    return f"WC-{received_at:%Y%m%d}-{sequence:06d}"


# Status moves the read model accepts from triage: it never overrides a later state.
def apply_triaged_status(current: str) -> str:
    return Status.TRIAGED if current == Status.RECEIVED else current


# Feedback is about a resolution: before there is one, there is nothing to rate.
FEEDBACK_STATUSES = frozenset({Status.RESOLVED, Status.CLOSED})
REOPEN_MAX_SCORE = 2


class FeedbackNotAccepted(Exception):
    """Feedback on a complaint that is not resolved or closed."""


def reopens(score: int) -> bool:
    return score <= REOPEN_MAX_SCORE


def status_after_feedback(current: str, score: int) -> str:
    """The complaint's status once this feedback is recorded: a score of 1 or 2 reopens."""
    if current not in FEEDBACK_STATUSES:
        raise FeedbackNotAccepted(current)
    return Status.REOPENED.value if reopens(score) else current


def feedback_detail(score: int) -> str:
    if reopens(score):
        return f"Customer rated the resolution {score}/5; the complaint is reopened."
    return f"Customer rated the resolution {score}/5."


def message_detail(evidence_count: int) -> str:
    if evidence_count:
        return f"Customer sent a follow-up message with {evidence_count} attachment(s)."
    return "Customer sent a follow-up message."
