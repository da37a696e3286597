"""What /openapi.json says about the intake API: response models, examples, errors.

The handlers read and validate request bodies themselves (orjson, our 413/415 and
problem+json errors), so FastAPI cannot see the request models: `install_openapi` adds
them, and the problem document, to the schema's components.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from services.intake.domain import Channel, ComplaintIn, FeedbackIn, MessageIn
from services.intake.webhook_docs import install_webhooks
from shared.api_vocabulary import CATEGORIES, CATEGORY_DESCRIPTION, Category
from shared.problems import PROBLEM_JSON, ProblemDetails

TICKET_EXAMPLE = "WC-20261122-000042"
_AT = "2026-11-22T02:16:03.412877+00:00"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# ------------------------------------------------------------------ request bodies

COMPLAINT_EXAMPLES: dict[str, dict[str, Any]] = {
    "duplicate_charge_zh": {
        "summary": "A duplicate charge, in Chinese, with the disputed amount",
        "value": {
            "customer": {
                "id": "u-829",
                "locale": "zh-CN",
                "email": "a@example.com",
                "phone": "+8613800138000",
            },
            "channel": "app",
            "description": "同一笔订单被扣了两次款，请退回多扣的86.50元。",
            "amount": "86.50",
            "currency": "CNY",
            "transaction_ref": "T20261122-0001",
            "merchant": "Example Mart",
            "occurred_at": "2026-11-22T10:15:00+08:00",
            "category_hint": "duplicate_charge",
            "evidence": [
                {
                    "kind": "screenshot",
                    "uri": "https://files.example.com/e/829-1.png",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                }
            ],
        },
    },
    "minimal_en": {
        "summary": "Only the required fields",
        "value": {
            "customer": {"id": "u-1204"},
            "channel": "web",
            "description": "I cannot log in since the last app update.",
        },
    },
}

MESSAGE_EXAMPLES: dict[str, dict[str, Any]] = {
    "with_evidence": {
        "summary": "The customer sends the bank statement asked for",
        "value": {
            "text": "附上银行对账单，两笔扣款都在上面。",
            "evidence": [{"kind": "statement", "uri": "https://files.example.com/e/829-2.pdf"}],
        },
    },
    "text_only": {
        "summary": "A plain follow-up",
        "value": {"text": "Any news? It has been three days."},
    },
}

FEEDBACK_EXAMPLES: dict[str, dict[str, Any]] = {
    "satisfied": {"summary": "A good rating", "value": {"score": 5, "comment": "退款很快，谢谢"}},
    "reopens": {
        "summary": "A score of 1 or 2 reopens the complaint",
        "value": {"score": 1, "comment": "Only half of the amount came back."},
    },
}


def request_body(model: type[BaseModel], examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """openapi_extra for an operation whose JSON body the handler validates itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    "examples": examples,
                }
            },
        }
    }


# The bearer scheme of the other routes (their Security dependency), for a route that
# authenticates in its own code.
BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


def idempotency_header(*, required: bool) -> dict[str, Any]:
    """openapi_extra for the Idempotency-Key header (checked by the handler, after auth)."""
    description = (
        "1-128 visible ASCII characters, e.g. a UUID per user action. The same key with "
        "the same body answers what the first request answered and creates nothing (the "
        "answer then carries `Idempotent-Replayed: true`); with another body: 409. Keys "
        "are scoped to the tenant and the endpoint and kept as long as what they created."
    )
    if not required:
        description += (
            " Optional here: without a key every request is a new one; reusing a key for "
            "another ticket is a 409."
        )
    return {
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": required,
                "description": description,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                "example": "3f1c2a8e-5b7d-4c39-9a61-0e2f4b8d7c15",
            }
        ]
    }


# ------------------------------------------------------------------ responses


class Links(BaseModel):
    self: str


class ComplaintAccepted(BaseModel):
    model_config = _examples(
        {
            "complaint_id": "6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b2c",
            "ticket_no": TICKET_EXAMPLE,
            "status": "received",
            "received_at": _AT,
            "first_response_due": "2026-11-23T02:16:03.412877+00:00",
            "links": {"self": f"/v1/complaints/{TICKET_EXAMPLE}"},
        }
    )

    complaint_id: str
    ticket_no: str
    status: str
    received_at: datetime
    first_response_due: datetime
    links: Links


class TimelineEntry(BaseModel):
    at: datetime
    status: str
    detail: str


class ResolutionView(BaseModel):
    id: str
    kind: str = Field(
        description="refund, compensation, explanation, rejection, or reversal (a "
        "correction undoing the entry named in `reverses`)"
    )
    amount: str | None = Field(description="A decimal string, never a number")
    currency: str | None
    compensation_type: str | None = Field(description="For a compensation: cash, coupon or points")
    status: str = Field(
        description="recorded or approved: in effect; pending_approval: waiting for an "
        "approver, not paid (and perhaps never)"
    )
    decided_by: str | None = Field(
        description="`agent` (a person on the support team) or `auto` (an automatic "
        "refund); never who"
    )
    recorded_at: datetime
    approved_at: datetime | None = Field(description="When a pending entry was approved")
    reverses: str | None = Field(description="For a reversal: the id of the entry it undoes")
    reversed: bool = Field(description="True once a reversal of this entry is in effect")
    reversed_by: str | None = Field(description="The id of that reversal")


class ClockView(BaseModel):
    name: str = Field(
        description="first_response, resolution (paused while waiting for the customer), "
        "legal_response or legal_final (the regulator's deadlines of the tenant's "
        "jurisdiction)"
    )
    due_at: datetime
    state: str = Field(description="running, paused, met or breached")


_SUMMARY_EXAMPLE: dict[str, Any] = {
    "complaint_id": "6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b2c",
    "ticket_no": TICKET_EXAMPLE,
    "status": "resolved",
    "category": "duplicate_charge",
    "priority": "P2",
    "channel": "app",
    "customer_id": "u-829",
    "amount": "86.50",
    "currency": "CNY",
    "transaction_ref": "T20261122-0001",
    "merchant": "Example Mart",
    "received_at": _AT,
    "first_response_due": "2026-11-22T06:16:03.600000+00:00",
    "resolution_due": "2026-11-25T02:16:03.600000+00:00",
    "updated_at": "2026-11-22T02:16:05.100000+00:00",
    "outcome": "monetary_relief",
    "company_response": "Closed with monetary relief",
    "links": {"self": f"/v1/complaints/{TICKET_EXAMPLE}"},
}


class ComplaintSummary(BaseModel):
    model_config = _examples(_SUMMARY_EXAMPLE)

    complaint_id: str
    ticket_no: str
    status: str = Field(
        description="received, triaged, in_progress, awaiting_customer, escalated, "
        "resolved, closed or reopened"
    )
    category: Category | None = Field(description=f"Set once triaged. {CATEGORY_DESCRIPTION}")
    priority: str | None = Field(description="P1 (most urgent) to P4, set once triaged")
    channel: Channel
    customer_id: str
    amount: str | None
    currency: str | None
    transaction_ref: str | None
    merchant: str | None
    received_at: datetime
    first_response_due: datetime
    resolution_due: datetime | None
    updated_at: datetime
    outcome: str | None = Field(
        description="Once resolved: monetary_relief, non_monetary_relief, explanation or "
        "no_relief (null before, and again once reopened)"
    )
    company_response: str | None = Field(
        description="The outcome in CFPB's words, e.g. `Closed with monetary relief`"
    )
    links: Links


class ComplaintView(ComplaintSummary):
    model_config = _examples(
        {
            **_SUMMARY_EXAMPLE,
            "resolutions": [
                {
                    "id": "0b8e6d2f-1c3a-4e5b-8d7f-9a1b2c3d4e5f",
                    "kind": "refund",
                    "amount": "86.50",
                    "currency": "CNY",
                    "compensation_type": None,
                    "status": "approved",
                    "decided_by": "agent",
                    "recorded_at": "2026-11-22T02:16:04.900000+00:00",
                    "approved_at": "2026-11-22T02:16:04.950000+00:00",
                    "reverses": None,
                    "reversed": False,
                    "reversed_by": None,
                },
                {
                    "id": "5c7e9a1b-3d5f-4b7d-9f1a-2c4e6a8b0d2f",
                    "kind": "compensation",
                    "amount": "10.00",
                    "currency": "CNY",
                    "compensation_type": "coupon",
                    "status": "recorded",
                    "decided_by": "agent",
                    "recorded_at": "2026-11-22T02:16:05.000000+00:00",
                    "approved_at": None,
                    "reverses": None,
                    "reversed": False,
                    "reversed_by": None,
                },
            ],
            "clocks": [
                {
                    "name": "first_response",
                    "due_at": "2026-11-22T06:16:03.600000+00:00",
                    "state": "met",
                },
                {
                    "name": "resolution",
                    "due_at": "2026-11-25T02:16:03.600000+00:00",
                    "state": "met",
                },
                {
                    "name": "legal_final",
                    "due_at": "2026-12-07T02:16:03.412877+00:00",
                    "state": "met",
                },
            ],
            "timeline": [
                {"at": _AT, "status": "received", "detail": "Complaint received."},
                {
                    "at": "2026-11-22T02:16:03.600000+00:00",
                    "status": "triaged",
                    "detail": "Triaged as duplicate_charge (P2).",
                },
                {
                    "at": "2026-11-22T02:16:04.100000+00:00",
                    "status": "triaged",
                    "detail": "The support team asked you for more information: Please "
                    "send the bank statement showing both charges.",
                },
                {
                    "at": "2026-11-22T02:16:04.900000+00:00",
                    "status": "in_progress",
                    "detail": "Resolution refund awaiting approval.",
                },
                {
                    "at": "2026-11-22T02:16:04.950000+00:00",
                    "status": "in_progress",
                    "detail": "Resolution refund approved.",
                },
                {
                    "at": "2026-11-22T02:16:05.000000+00:00",
                    "status": "in_progress",
                    "detail": "Resolution compensation recorded.",
                },
                {
                    "at": "2026-11-22T02:16:05.100000+00:00",
                    "status": "resolved",
                    "detail": "Status changed to resolved.",
                },
            ],
        }
    )

    resolutions: list[ResolutionView] = Field(
        description="The case's ledger entries in the order they were recorded; "
        "corrections are reversal entries, never edits"
    )
    clocks: list[ClockView] = Field(
        description="The case's clocks as last reported (empty until the case has any)"
    )
    timeline: list[TimelineEntry] = Field(
        description="Oldest first: status changes, resolutions, the support team's "
        "messages, missed and extended deadlines, notifications delivered"
    )


class ComplaintPage(BaseModel):
    model_config = _examples(
        {"items": [_SUMMARY_EXAMPLE], "next_cursor": "MjAyNi0xMS0yMlQwMjoxNjowMy40MTI4Nzc"}
    )

    items: list[ComplaintSummary] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: none")


class MessageLinks(BaseModel):
    complaint: str


class MessageAccepted(BaseModel):
    model_config = _examples(
        {
            "message_id": "c2a4e6f8-0b1d-4f3a-8c5e-7a9b1d3f5e7a",
            "ticket_no": TICKET_EXAMPLE,
            "received_at": _AT,
            "links": {"complaint": f"/v1/complaints/{TICKET_EXAMPLE}"},
        }
    )

    message_id: str
    ticket_no: str
    received_at: datetime
    links: MessageLinks


class FeedbackAccepted(BaseModel):
    model_config = _examples(
        {
            "feedback_id": "d3b5f7a9-1c2e-4a6b-9d8f-0e1a2b3c4d5e",
            "ticket_no": TICKET_EXAMPLE,
            "score": 1,
            "reopened": True,
            "status": "reopened",
            "received_at": _AT,
            "links": {"complaint": f"/v1/complaints/{TICKET_EXAMPLE}"},
        }
    )

    feedback_id: str
    ticket_no: str
    score: int = Field(ge=1, le=5)
    reopened: bool = Field(description="True for a score of 1 or 2")
    status: str = Field(description="The complaint's status once the feedback is recorded")
    received_at: datetime
    links: MessageLinks


# ------------------------------------------------------------------ errors


_PROBLEMS: dict[int, tuple[str, str, list[dict[str, str]] | None]] = {
    400: ("Malformed request: the body is not JSON, or Idempotency-Key is missing.",
          "The body is not valid JSON: unexpected character: line 1 column 2 (char 1)", None),
    401: ("Missing, unknown or expired API key.", "A valid API key is required.", None),
    404: ("No such complaint for this tenant (another tenant's ticket looks the same).",
          "No such complaint.", None),
    409: ("Idempotency-Key reused with another body (or ticket), or feedback before the "
          "complaint is resolved.",
          "This Idempotency-Key was already used with a different body.", None),
    413: ("The body is over 64 KiB.", "The body exceeds 65536 bytes.", None),
    415: ("Content-Type is not application/json.", "Content-Type must be application/json.",
          None),
    422: ("The request is not valid: see `errors`.", "The request is not valid.",
          [{"field": "amount", "message": "Input should be a valid string"},
           {"field": "currency", "message": "unknown ISO 4217 currency code"}]),
    429: ("Over this tenant's rate limit: retry after `Retry-After` seconds.",
          "Rate limit exceeded for this tenant.", None),
    503: ("The database is unreachable: retry after `Retry-After` seconds (nothing was stored).",
          "Temporarily unavailable; retry later.", None),
}  # fmt: skip

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting the problem+json answers an operation can give."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, detail, errors = _PROBLEMS[status]
        example: dict[str, Any] = {
            "type": f"https://errors.complaints.example/{status}",
            "title": _TITLE.get(status, "Error"),
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
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        responses[status] = entry
    return responses


_TITLE = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}

REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when this answers a replayed Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}

# Models the handlers validate by hand, plus the error document: added to components.
_EXTRA_MODELS: tuple[type[BaseModel], ...] = (ComplaintIn, MessageIn, FeedbackIn, ProblemDetails)


CATEGORY_HINT_DESCRIPTION = (
    "What the wallet app thinks the complaint is about: one of triage's categories. "
    "A hint only: triage follows it when the text agrees, and ignores a value it does "
    "not know."
)


def install_openapi(app: FastAPI) -> None:
    """/openapi.json with the hand-validated request models, the error document and the
    webhooks (OpenAPI 3.1 `webhooks`, see webhook_docs)."""
    install_webhooks(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                webhooks=app.webhooks.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in _EXTRA_MODELS:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            _category_hint_enum(components["ComplaintIn"])
            _drop_fastapi_validation_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _category_hint_enum(complaint_in: dict[str, Any]) -> None:
    """`category_hint` is validated as text (at most 64 characters); what a client
    should send is a category: documented as the enum."""
    complaint_in["properties"]["category_hint"] = {
        "anyOf": [{"type": "string", "enum": list(CATEGORIES)}, {"type": "null"}],
        "title": "Category Hint",
        "description": CATEGORY_HINT_DESCRIPTION,
        "default": None,
    }


def _drop_fastapi_validation_errors(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 `HTTPValidationError` on every operation with parameters
    (and webhook); ours are problem documents (documented where they can happen), and a
    webhook receiver answers what it likes, so drop its shape."""
    operations = [
        op
        for section in ("paths", "webhooks")
        for path in schema.get(section, {}).values()
        for op in path.values()
    ]
    for operation in operations:
        content = operation.get("responses", {}).get("422", {}).get("content", {})
        if "HTTPValidationError" in str(content.get("application/json", "")):
            del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
