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

from services.intake.domain import ComplaintIn, FeedbackIn, MessageIn
from shared.problems import PROBLEM_JSON

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
    kind: str = Field(description="refund, compensation, explanation or rejection")
    amount: str | None = Field(description="A decimal string, never a number")
    currency: str | None
    status: str = Field(description="recorded, pending_approval or approved")
    recorded_at: datetime


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
    category: str | None = Field(description="Set once triaged")
    priority: str | None = Field(description="P1 (most urgent) to P4, set once triaged")
    channel: str
    customer_id: str
    amount: str | None
    currency: str | None
    transaction_ref: str | None
    merchant: str | None
    received_at: datetime
    first_response_due: datetime
    resolution_due: datetime | None
    updated_at: datetime
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
                    "status": "recorded",
                    "recorded_at": "2026-11-22T02:16:04.900000+00:00",
                }
            ],
            "timeline": [
                {"at": _AT, "status": "received", "detail": "Complaint received."},
                {
                    "at": "2026-11-22T02:16:03.600000+00:00",
                    "status": "triaged",
                    "detail": "Triaged as duplicate_charge (P2).",
                },
                {
                    "at": "2026-11-22T02:16:04.900000+00:00",
                    "status": "triaged",
                    "detail": "Resolution refund recorded.",
                },
                {
                    "at": "2026-11-22T02:16:05.100000+00:00",
                    "status": "resolved",
                    "detail": "Status changed to resolved.",
                },
            ],
        }
    )

    resolutions: list[ResolutionView]
    timeline: list[TimelineEntry] = Field(description="Oldest first")


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


class FieldError(BaseModel):
    field: str = Field(description="Dotted path into the body, or the parameter's name")
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details: the shape of every error answer."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="Validation errors only: one entry per faulty field"
    )


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


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in _EXTRA_MODELS:
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
