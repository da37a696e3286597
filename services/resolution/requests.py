"""The request bodies of the agent API (CONTRACT section 6), validated before any
command runs. Unknown fields are refused; money is a decimal string, never a JSON number
(a float has already lost cents by the time it is parsed). Rules across fields (a refund
needs an amount, an explanation has none, ...) are the ledger's: case.check_entry."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from shared.event_payloads import AMOUNT_PATTERN

TEXT_MAX = 5000
_AMOUNT = re.compile(AMOUNT_PATTERN)


def _amount_string(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value  # built in-process (tests, the automatic policy)
    if not isinstance(value, str):
        raise ValueError('money must be a decimal string such as "86.50", not a JSON number')
    if not _AMOUNT.match(value):
        raise ValueError('money must be a plain decimal string such as "86.50"')
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _no_nul(value: str) -> str:
    # Valid JSON, but PostgreSQL text cannot hold U+0000.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount_string),
    AfterValidator(_positive),
    PlainSerializer(str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": AMOUNT_PATTERN,
            "examples": ["86.50"],
            "description": "A decimal string greater than zero; a JSON number is refused.",
        }
    ),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TEXT_MAX),
    AfterValidator(_no_nul),
]
Kind = Literal["refund", "compensation", "explanation", "rejection", "reversal"]
CompensationType = Literal["cash", "coupon", "points"]
StatusName = Literal[
    "triaged", "in_progress", "awaiting_customer", "escalated", "resolved", "closed", "reopened"
]
Outcome = Literal["monetary_relief", "non_monetary_relief", "explanation", "no_relief"]
Priority = Literal["P1", "P2", "P3", "P4"]
# CONTRACT section 5, in triage's precedence order (shared.api_vocabulary.CATEGORIES;
# tests/unit/test_openapi_documents.py checks the two agree).
Category = Literal[
    "fraud", "duplicate_charge", "account_frozen", "transfer_delay", "top_up_withdrawal",
    "refund", "privacy", "fees", "payment_failure", "account_access", "terms_marketing",
    "app_usability", "customer_service", "other",
]  # fmt: skip


def _config(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": list(examples)})


class ResolutionIn(BaseModel):
    """POST /v1/cases/{ticket_no}/resolutions (with an Idempotency-Key)."""

    model_config = _config(
        {
            "kind": "refund",
            "amount": "86.50",
            "currency": "CNY",
            "note": "Duplicate charge confirmed with the acquirer; refunding the second charge.",
        },
        {
            "kind": "compensation",
            "amount": "20",
            "currency": "CNY",
            "compensation_type": "coupon",
            "note": "Coupon for the inconvenience.",
        },
        {"kind": "explanation", "note": "The charge is a pre-authorisation; it lapses in 7 days."},
        {
            "kind": "reversal",
            "reverses": "5b0f3c1e-8a55-4d0e-9c61-1f0a3d2b7e44",
            "note": "Recorded on the wrong case.",
        },
    )

    kind: Kind
    amount: Amount | None = None
    currency: Currency | None = None
    compensation_type: CompensationType | None = None
    note: Text
    reverses: uuid.UUID | None = None  # for kind reversal: the ledger entry it corrects


class StatusIn(BaseModel):
    """POST /v1/cases/{ticket_no}/status. Resolving takes an outcome."""

    model_config = _config(
        {"status": "in_progress", "note": "Looking into it with the payments team."},
        {
            "status": "resolved",
            "note": "Refund issued for the duplicate charge.",
            "outcome": "monetary_relief",
        },
    )

    status: StatusName
    note: Text
    outcome: Outcome | None = None


class MessageIn(BaseModel):
    """POST /v1/cases/{ticket_no}/messages: to the customer (the notifier delivers it)."""

    model_config = _config(
        {"text": "We are checking the charge with the merchant and will be back shortly."},
        {"text": "Could you send a screenshot of the two charges?", "request_information": True},
    )

    text: Text
    # strict: "yes" or 1 is a wrong type, not a request.
    request_information: Annotated[bool, Field(strict=True)] = False


class AssignIn(BaseModel):
    """POST /v1/cases/{ticket_no}/assign: to an agent of the same tenant."""

    model_config = _config({"agent_id": "0d7c3a52-6f1e-4b8f-9a0e-2c4d5e6f7a8b"})

    agent_id: uuid.UUID


class RecategoriseIn(BaseModel):
    """POST /v1/cases/{ticket_no}/category: an agent corrects triage's category (and,
    when given, its priority). Without a priority the case keeps the one it has."""

    model_config = _config(
        {
            "category": "fraud",
            "priority": "P1",
            "note": "The customer never made these payments: an account takeover.",
        },
        {"category": "transfer_delay"},
    )

    category: Category
    priority: Priority | None = None
    note: Text | None = None
