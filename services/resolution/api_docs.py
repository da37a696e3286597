"""What /openapi.json says about the agent API: response models, examples, errors.

The POST handlers read and validate their bodies themselves (orjson, 413/415 and
problem+json errors), so FastAPI cannot see the request models: `install_openapi` adds
them, and the problem document, to the schema's components.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from shared.api_vocabulary import CATEGORY_DESCRIPTION, Category, ChannelName
from shared.problems import PROBLEM_JSON, ProblemDetails

TICKET_EXAMPLE = "WC-20261122-000042"
AGENT_EXAMPLE = "5b7d3f1c-2a8e-4c39-9a61-0e2f4b8d7c15"
RESOLUTION_EXAMPLE = "0b8e6d2f-1c3a-4e5b-8d7f-9a1b2c3d4e5f"
_COMPLAINT = "6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b2c"
_AT = "2026-11-22T02:16:03.412877+00:00"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# ------------------------------------------------------------------ request bodies

RESOLUTION_EXAMPLES: dict[str, dict[str, Any]] = {
    "refund": {
        "summary": "Refund the duplicate charge (a decimal string, in the disputed currency)",
        "value": {
            "kind": "refund",
            "amount": "86.50",
            "currency": "CNY",
            "note": "Charged twice for order 1188; the second charge is refunded.",
        },
    },
    "compensation": {
        "summary": "A coupon for the trouble",
        "value": {
            "kind": "compensation",
            "compensation_type": "coupon",
            "amount": "20.00",
            "currency": "CNY",
            "note": "Coupon for the delay.",
        },
    },
    "explanation": {
        "summary": "An explanation, no money",
        "value": {
            "kind": "explanation",
            "note": "The second charge was a pre-authorisation; it is released within 7 days.",
        },
    },
    "rejection": {
        "summary": "The claim is refused, with the reason",
        "value": {"kind": "rejection", "note": "Both payments were for two separate orders."},
    },
}

STATUS_EXAMPLES: dict[str, dict[str, Any]] = {
    "in_progress": {
        "summary": "Start working the case",
        "value": {"status": "in_progress", "note": "Checking with the acquirer."},
    },
    "resolved": {
        "summary": "Resolve it: an outcome is required",
        "value": {
            "status": "resolved",
            "note": "Refund of the duplicate charge sent.",
            "outcome": "monetary_relief",
        },
    },
    "escalated": {
        "summary": "Escalate to the second line",
        "value": {"status": "escalated", "note": "Possible fraud pattern; to the risk team."},
    },
}

MESSAGE_EXAMPLES: dict[str, dict[str, Any]] = {
    "message": {
        "summary": "A message to the customer",
        "value": {"text": "我们已收到您的投诉，正在与商户核实，预计两个工作日内答复。"},
    },
    "request_information": {
        "summary": "Ask the customer for something: the case waits for them, clocks pause",
        "value": {
            "text": "Please send a screenshot of both charges from your bank statement.",
            "request_information": True,
        },
    },
}

ASSIGN_EXAMPLES: dict[str, dict[str, Any]] = {
    "assign": {
        "summary": "Hand the case to another agent of this tenant",
        "value": {"agent_id": AGENT_EXAMPLE},
    },
}


RECATEGORISE_EXAMPLES: dict[str, dict[str, Any]] = {
    "correct": {
        "summary": "Triage read an account takeover as a failed payment",
        "value": {
            "category": "fraud",
            "priority": "P1",
            "note": "The customer never made these payments: an account takeover.",
        },
    },
    "category_only": {
        "summary": "Another category; the case keeps its priority",
        "value": {"category": "transfer_delay"},
    },
}


def request_body(model_name: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """openapi_extra for an operation whose JSON body the handler validates itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model_name}"},
                    "examples": examples,
                }
            },
        }
    }


def idempotency_header(
    *, required: bool = True, optional_because: str = "an approval is itself taken once"
) -> dict[str, Any]:
    """openapi_extra for the Idempotency-Key header of the money calls (and of the
    correction of a category, where it is optional too)."""
    return {
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": required,
                "description": (
                    ("Required" if required else f"Optional ({optional_because})")
                    + ": 1-128 visible ASCII characters, e.g. a UUID per agent action. "
                    "The same key with the same body answers what the first request "
                    "answered and records nothing new (the answer then carries "
                    "`Idempotent-Replayed: true`); with another body or on another "
                    "endpoint: 409. Keys are scoped to the agent."
                ),
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                "example": "3f1c2a8e-5b7d-4c39-9a61-0e2f4b8d7c15",
            }
        ]
    }


# ------------------------------------------------------------------ responses


class Links(BaseModel):
    self: str


_QUEUE_ITEM: dict[str, Any] = {
    "complaint_id": _COMPLAINT,
    "ticket_no": TICKET_EXAMPLE,
    "status": "in_progress",
    "category": "duplicate_charge",
    "priority": "P2",
    "channel": "app",
    "customer_id": "u-829",
    "amount": "86.50",
    "currency": "CNY",
    "transaction_ref": "T20261122-0001",
    "assigned_to": AGENT_EXAMPLE,
    "needs_review": False,
    "breached": False,
    "next_due_at": "2026-11-22T06:16:03.600000+00:00",
    "outcome": None,
    "received_at": _AT,
    "first_response_due": "2026-11-22T06:16:03.600000+00:00",
    "resolution_due": "2026-11-25T02:16:03.600000+00:00",
    "updated_at": "2026-11-22T02:20:11.000000+00:00",
    "links": {"self": f"/v1/cases/{TICKET_EXAMPLE}"},
}


class CaseSummary(BaseModel):
    model_config = _examples(_QUEUE_ITEM)

    complaint_id: str
    ticket_no: str
    status: str = Field(
        description="triaged, in_progress, awaiting_customer, escalated, resolved, closed "
        "or reopened"
    )
    category: Category = Field(description=CATEGORY_DESCRIPTION)
    priority: str = Field(description="P1 (most urgent) to P4")
    channel: ChannelName | None = Field(description="Where the customer complained")
    customer_id: str | None
    amount: str | None = Field(description="The disputed amount: a decimal string")
    currency: str | None
    transaction_ref: str | None
    assigned_to: str | None = Field(description="The agent working the case, if any")
    needs_review: bool = Field(description="Triage was unsure: these come first")
    breached: bool = Field(description="A clock passed its due time")
    next_due_at: datetime | None = Field(
        description="The most urgent due time of a running clock (null: none running)"
    )
    outcome: str | None
    received_at: datetime
    first_response_due: datetime
    resolution_due: datetime
    updated_at: datetime
    links: Links


class CasePage(BaseModel):
    model_config = _examples({"items": [_QUEUE_ITEM], "next_cursor": "WzEsZmFsc2Us.c2lnbmF0dXJl"})

    items: list[CaseSummary] = Field(
        description="needs_review first, then the most urgent running clock, then the rest"
    )
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: none")


class HistoryEntry(BaseModel):
    at: datetime
    status: str
    actor: str = Field(description="An agent id, `customer` or `system`")
    note: str


class ClockDetail(BaseModel):
    name: str = Field(description="first_response, resolution, legal_response or legal_final")
    round: int = Field(description="1; a reopened case runs a fresh resolution clock, round 2...")
    kind: str = Field(description="internal (paused while awaiting the customer) or legal")
    state: str = Field(description="running, paused, met or breached")
    due_at: datetime | None
    started_at: datetime | None = None
    paused_at: datetime | None = None
    remaining_s: float | None = Field(
        default=None, description="While paused: the seconds that were left (negative: overdue)"
    )
    met_at: datetime | None = None
    breached_at: datetime | None = None
    new_estimate: datetime | None = Field(
        default=None, description="After a breach: the new time the customer was given"
    )
    extensions: int = Field(default=0, description="cn: how often an approver extended it (0-2)")


class LedgerEntry(BaseModel):
    id: str
    kind: str = Field(description="refund, compensation, explanation, rejection or reversal")
    compensation_type: str | None = Field(description="cash, coupon or points (compensation)")
    amount: str | None = Field(description="A decimal string, never a number")
    currency: str | None
    note: str
    status: str = Field(description="recorded, pending_approval or approved")
    requires_approval: bool
    decided_by: str = Field(description="An agent id, or `auto`")
    approved_by: str | None
    approved_at: datetime | None
    reverses: str | None = Field(description="For a reversal: the entry it corrects")
    reversed_by: str | None = Field(description="The reversal entry that corrected this one")
    reasons: list[str] = Field(description="Why an automatic decision was taken")
    created_at: datetime


class LinkedComplaint(BaseModel):
    complaint_id: str
    ticket_no: str
    linked_at: datetime


class CaseMessage(BaseModel):
    id: str
    ticket_no: str = Field(description="The ticket it was written under (a duplicate's too)")
    at: datetime
    author: str = Field(description="customer or agent")
    agent_id: str | None
    text: str
    evidence: list[Any] = Field(description="What the customer attached")
    request_information: bool


class CaseView(CaseSummary):
    model_config = _examples(
        {
            **_QUEUE_ITEM,
            "jurisdiction": "cn",
            "locale": "zh-CN",
            "stands_in_for": None,
            "first_responded_at": "2026-11-22T02:20:11.000000+00:00",
            "resolved_at": None,
            "opened_at": "2026-11-22T02:16:03.600000+00:00",
            "history": [
                {
                    "at": "2026-11-22T02:16:03.600000+00:00",
                    "status": "triaged",
                    "actor": "system",
                    "note": "Case opened: duplicate_charge (P2).",
                },
                {
                    "at": "2026-11-22T02:20:11.000000+00:00",
                    "status": "in_progress",
                    "actor": AGENT_EXAMPLE,
                    "note": "Checking with the acquirer.",
                },
            ],
            "clocks": [
                {
                    "name": "first_response",
                    "round": 1,
                    "kind": "internal",
                    "state": "met",
                    "due_at": "2026-11-22T06:16:03.600000+00:00",
                    "started_at": "2026-11-22T02:16:03.600000+00:00",
                    "paused_at": None,
                    "remaining_s": None,
                    "met_at": "2026-11-22T02:20:11.000000+00:00",
                    "breached_at": None,
                    "new_estimate": None,
                    "extensions": 0,
                },
                {
                    "name": "legal_final",
                    "round": 1,
                    "kind": "legal",
                    "state": "running",
                    "due_at": "2026-12-07T02:16:03.412877+00:00",
                    "started_at": _AT,
                    "paused_at": None,
                    "remaining_s": None,
                    "met_at": None,
                    "breached_at": None,
                    "new_estimate": None,
                    "extensions": 0,
                },
            ],
            "ledger": [
                {
                    "id": RESOLUTION_EXAMPLE,
                    "kind": "refund",
                    "compensation_type": None,
                    "amount": "86.50",
                    "currency": "CNY",
                    "note": "Second charge refunded.",
                    "status": "recorded",
                    "requires_approval": False,
                    "decided_by": AGENT_EXAMPLE,
                    "approved_by": None,
                    "approved_at": None,
                    "reverses": None,
                    "reversed_by": None,
                    "reasons": [],
                    "created_at": "2026-11-22T02:25:40.000000+00:00",
                }
            ],
            "linked_complaints": [
                {
                    "complaint_id": "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
                    "ticket_no": "WC-20261122-000043",
                    "linked_at": "2026-11-22T02:17:00.000000+00:00",
                }
            ],
            "messages": [
                {
                    "id": "c2a4e6f8-0b1d-4f3a-8c5e-7a9b1d3f5e7a",
                    "ticket_no": TICKET_EXAMPLE,
                    "at": _AT,
                    "author": "customer",
                    "agent_id": None,
                    "text": "同一笔订单被扣了两次款。",
                    "evidence": [
                        {"kind": "screenshot", "uri": "https://files.example.com/e/829-1.png"}
                    ],
                    "request_information": False,
                }
            ],
        }
    )

    jurisdiction: str = Field(description="cn, eu, uk or us: decides the legal clocks")
    locale: str | None
    stands_in_for: str | None = Field(
        description="A duplicate's case standing in for an original that never arrived"
    )
    first_responded_at: datetime | None
    resolved_at: datetime | None
    opened_at: datetime
    history: list[HistoryEntry] = Field(description="Oldest first")
    clocks: list[ClockDetail]
    ledger: list[LedgerEntry] = Field(description="Append-only, oldest first")
    linked_complaints: list[LinkedComplaint] = Field(description="Duplicates joined to it")
    messages: list[CaseMessage] = Field(description="Customer's and agents', oldest first")


# ------------------------------------------------------------------ command answers

_ENTRY_EXAMPLE: dict[str, Any] = {
    "id": RESOLUTION_EXAMPLE,
    "ticket_no": TICKET_EXAMPLE,
    "kind": "refund",
    "compensation_type": None,
    "amount": "86.50",
    "currency": "CNY",
    "note": "Second charge refunded.",
    "status": "recorded",
    "requires_approval": False,
    "decided_by": AGENT_EXAMPLE,
    "approved_by": None,
    "approved_at": None,
    "reverses": None,
    "reasons": [],
    "created_at": "2026-11-22T02:25:40.000000+00:00",
}


class ResolutionOut(BaseModel):
    model_config = _examples(
        _ENTRY_EXAMPLE,
        {
            **_ENTRY_EXAMPLE,
            "amount": "800.00",
            "status": "approved",
            "requires_approval": True,
            "approved_by": "7c9e1a3b-5d2f-4e8a-9b0c-1d2e3f4a5b6c",
            "approved_at": "2026-11-22T03:01:12.000000+00:00",
        },
    )

    id: str
    ticket_no: str
    kind: str = Field(description="refund, compensation, explanation, rejection or reversal")
    compensation_type: str | None = Field(description="cash, coupon or points (compensation)")
    amount: str | None = Field(description="A decimal string, never a number")
    currency: str | None
    note: str
    status: str = Field(description="recorded, pending_approval or approved")
    requires_approval: bool
    decided_by: str = Field(description="The agent who recorded it, or `auto`")
    approved_by: str | None
    approved_at: datetime | None
    reverses: str | None = Field(description="For a reversal: the entry it corrects")
    reasons: list[str]
    created_at: datetime


class ClockState(BaseModel):
    name: str
    due_at: datetime
    state: str = Field(description="running, paused, met or breached")


class StatusOut(BaseModel):
    model_config = _examples(
        {
            "ticket_no": TICKET_EXAMPLE,
            "status": "resolved",
            "previous_status": "in_progress",
            "outcome": "monetary_relief",
            "company_response": "Closed with monetary relief",
            "note": "Refund of the duplicate charge sent.",
            "updated_at": "2026-11-22T03:05:00.000000+00:00",
            "clocks": [
                {
                    "name": "resolution",
                    "due_at": "2026-11-25T02:16:03.600000+00:00",
                    "state": "met",
                }
            ],
        }
    )

    ticket_no: str
    status: str
    previous_status: str
    outcome: str | None = Field(description="On resolved: the outcome code")
    company_response: str | None = Field(description="The outcome in CFPB's words")
    note: str
    updated_at: datetime
    clocks: list[ClockState]


class MessageOut(BaseModel):
    model_config = _examples(
        {
            "id": "c2a4e6f8-0b1d-4f3a-8c5e-7a9b1d3f5e7a",
            "ticket_no": TICKET_EXAMPLE,
            "at": "2026-11-22T02:20:11.000000+00:00",
            "author": "agent",
            "agent_id": AGENT_EXAMPLE,
            "text": "Please send a screenshot of both charges from your bank statement.",
            "request_information": True,
            "evidence": [],
            "status": "awaiting_customer",
        }
    )

    id: str
    ticket_no: str
    at: datetime
    author: str
    agent_id: str
    text: str
    request_information: bool
    evidence: list[Any]
    status: str = Field(description="The case's status after the message")


class AssignmentOut(BaseModel):
    model_config = _examples(
        {
            "ticket_no": TICKET_EXAMPLE,
            "status": "triaged",
            "assigned_to": AGENT_EXAMPLE,
            "previous_assigned_to": None,
            "assigned_by": AGENT_EXAMPLE,
            "changed": True,
        }
    )

    ticket_no: str
    status: str
    assigned_to: str
    previous_assigned_to: str | None
    assigned_by: str
    changed: bool = Field(description="False when it was assigned so already")


class RecategoriseOut(BaseModel):
    model_config = _examples(
        {
            "ticket_no": TICKET_EXAMPLE,
            "status": "in_progress",
            "category": "fraud",
            "priority": "P1",
            "needs_review": False,
            "previous_category": "payment_failure",
            "previous_priority": "P3",
            "changed": True,
            "updated_at": "2026-11-22T02:31:40.000000+00:00",
        }
    )

    ticket_no: str
    status: str = Field(description="The case's status (a correction never changes it)")
    category: Category = Field(description="The case's category now")
    priority: str = Field(description="The case's priority now: P1 (most urgent) to P4")
    needs_review: bool = Field(description="Always false after a correction")
    previous_category: Category = Field(description="The category before this request")
    previous_priority: str = Field(description="The priority before this request")
    changed: bool = Field(
        description="False when the case had these values already and no review was pending: "
        "nothing was recorded or published"
    )
    updated_at: datetime


# ------------------------------------------------------------------ errors


_PROBLEMS: dict[int, tuple[str, str, list[dict[str, str]] | None]] = {
    400: ("Malformed request: the body is not JSON, or Idempotency-Key is missing or invalid.",
          "The Idempotency-Key header must be 1-128 visible ASCII characters and is required.",
          None),
    401: ("Missing or unknown agent token (or an agent of no tenant).",
          "A valid agent token is required.", None),
    403: ("Not allowed for this agent: approving needs the approver role and another "
          "agent than the one who recorded it.",
          "Only an approver other than the recording agent may approve this refund.", None),
    404: ("No such case (or resolution) for this agent's tenant: another tenant's looks "
          "exactly the same.", "No such case.", None),
    409: ("A conflict: a status change the state machine refuses (the allowed ones are "
          "named), a resolution already approved, or an Idempotency-Key reused with "
          "another body.",
          "A case in status 'resolved' cannot go to 'in_progress'; allowed: closed, reopened.",
          [{"field": "status", "message": "allowed: closed, reopened"}]),
    413: ("The body is over the size limit.", "The body exceeds 65536 bytes.", None),
    415: ("Content-Type is not application/json.", "Content-Type must be application/json.",
          None),
    422: ("The request is not valid: see `errors` (a number for money, a refund above the "
          "disputed amount or in another currency, an unknown category or priority, an "
          "invalid cursor...).",
          "The request is not valid.",
          [{"field": "amount", "message": "a decimal string, not a number"}]),
    503: ("The database is unreachable: retry after `Retry-After` seconds (nothing was done).",
          "Temporarily unavailable; retry later.", None),
}  # fmt: skip

_TITLE = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"description": "The Bearer challenge", "schema": {"type": "string"}}
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting the problem+json answers an operation can give."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, detail, errors = _PROBLEMS[status]
        example: dict[str, Any] = {
            "type": f"https://errors.complaints.example/{status}",
            "title": _TITLE[status],
            "status": status,
            "detail": detail,
        }
        if errors is not None:
            example["errors"] = errors
        entry: dict[str, Any] = {
            "description": description,
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/ProblemDetails"},
                    "example": example,
                }
            },
        }
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        if status == 401:
            entry["headers"] = _WWW_AUTHENTICATE
        responses[status] = entry
    return responses


REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when this answers a replayed Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def install_openapi(app: FastAPI, extra_models: tuple[type[BaseModel], ...]) -> None:
    """/openapi.json with the models the handlers validate by hand and the error document."""
    models = (*extra_models, ProblemDetails)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            _drop_fastapi_validation_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_fastapi_validation_errors(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 `HTTPValidationError` on every operation with parameters;
    ours are problem documents (documented where they can happen), so drop its shape."""
    for operation in (op for path in schema["paths"].values() for op in path.values()):
        content = operation.get("responses", {}).get("422", {}).get("content", {})
        if "HTTPValidationError" in str(content.get("application/json", "")):
            del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
