"""What intake's /openapi.json says about the webhooks a tenant receives (OpenAPI 3.1
`webhooks`): one operation per notification type, with its payload and headers.

The notifier sends them (services/notifier/delivery.py: `webhook_body`, `_post`); what
each type's `data` holds is decided by services/notifier/planning.py. The registration
is documentation only: nothing here receives a webhook. tests/unit/
test_openapi_documents.py checks every type planning.py can send is here, and that
planned data validates against the schema documented for its type.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Body, FastAPI, Header
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from shared.api_vocabulary import CATEGORY_DESCRIPTION, Category

TICKET_EXAMPLE = "WC-20261122-000042"
_AT = "2026-11-22T02:16:03.412877+00:00"
Priority = Literal["P1", "P2", "P3", "P4"]

SIGNATURE_DESCRIPTION = (
    "`sha256=` and the lower-case hex HMAC-SHA256 of `{X-Complaints-Timestamp}.{raw "
    "body}` (the body's exact bytes, not re-serialised JSON) under the tenant's "
    "`webhook_secret` as `create-tenant` printed it, its UTF-8 bytes as the key. Compare "
    "in constant time; reject a timestamp more than 5 minutes away from your clock."
)


# ------------------------------------------------------------------ data, per type


class Dues(BaseModel):
    first_response_due: datetime | None = Field(
        None, description="When the customer will have a first answer at the latest"
    )
    resolution_due: datetime | None = Field(
        None, description="When the complaint should be resolved at the latest"
    )
    category: Category | None = Field(None, description=CATEGORY_DESCRIPTION)
    priority: Priority | None = Field(None, description="P1 (most urgent) to P4")


class AcknowledgedData(BaseModel):
    """The complaint is registered, at once (before triage): its ticket number and the
    first response due time the `202` promised. Triage's due times follow in
    `complaint.triaged`."""

    first_response_due: datetime | None = Field(
        None, description="When the customer will have a first answer at the latest"
    )


class TriagedData(Dues):
    """Triage's category and priority, and the due times they set; for a complaint that
    repeats an open one, the ticket where the two are handled together."""

    duplicate_of_ticket_no: str | None = Field(
        None,
        description="Only when it repeats an open complaint of the same customer: that "
        "complaint's ticket number, where the case is handled",
    )


class AgentMessageData(BaseModel):
    """The support team's words to the customer (who wrote them stays out)."""

    text: str
    request_information: bool = Field(
        description="True: the team asks the customer for something (answer with "
        "POST /v1/complaints/{ticket_no}/messages); the case waits for them"
    )


class WorkingDays(BaseModel):
    min: int = Field(ge=1)
    max: int = Field(ge=1)


class ResolutionRecordedData(BaseModel):
    """A refund, compensation, explanation, rejection or a reversal of one of them is in
    effect (a refund waiting for approval is not news yet)."""

    resolution_id: UUID
    kind: Literal["refund", "compensation", "explanation", "rejection", "reversal"]
    amount: str | None = Field(None, description="A decimal string, never a number")
    currency: str | None = Field(None, description="ISO 4217")
    compensation_type: Literal["cash", "coupon", "points"] | None = None
    reverses: UUID | None = Field(None, description="For a reversal: the entry it undoes")
    refund_working_days: WorkingDays | None = Field(
        None, description="For a refund: in how many working days the money arrives"
    )


class ResolvedData(BaseModel):
    """The complaint is resolved; a survey follows."""

    outcome: (
        Literal["monetary_relief", "non_monetary_relief", "explanation", "no_relief"] | None
    ) = None


class SlaBreachedData(BaseModel):
    """A promised time was missed: an apology and the new estimate."""

    clock: str = Field(description="first_response, resolution, legal_response or legal_final")
    due_at: datetime | None = Field(None, description="The time that was missed")
    new_estimate: datetime | None = None
    priority: Priority | None = None


class ClockExtendedData(BaseModel):
    """The legal final-answer deadline was extended (the notice the law asks for)."""

    clock: str = Field(description="legal_final")
    previous_due_at: datetime
    due_at: datetime


class ReopenedData(BaseModel):
    """The complaint is open again (e.g. a low satisfaction score)."""

    previous_status: str | None = None
    reason: str | None = None
    resolution_due: datetime | None = Field(None, description="The new resolution due time")


class SurveyData(BaseModel):
    """How to rate the handling: POST the score to `feedback_path` (intake's API)."""

    scale: list[int] = Field(min_length=2, max_length=2, description="[lowest, highest]")
    feedback_path: str = Field(description="/v1/complaints/{ticket_no}/feedback")
    reopen_max_score: int = Field(description="A score at or below it reopens the complaint")


# type -> (data model, summary, an example of data)
WEBHOOK_TYPES: dict[str, tuple[type[BaseModel], str, dict[str, Any]]] = {
    "complaint.acknowledged": (
        AcknowledgedData,
        "The complaint is received: ticket number and expected handling time",
        {"first_response_due": "2026-11-23T02:16:03.412877+00:00"},
    ),
    "complaint.triaged": (
        TriagedData,
        "Triaged: category, priority and due times",
        {
            "first_response_due": "2026-11-22T06:16:03.600000+00:00",
            "resolution_due": "2026-11-25T02:16:03.600000+00:00",
            "category": "duplicate_charge",
            "priority": "P2",
        },
    ),
    "complaint.agent_message": (
        AgentMessageData,
        "A message from the support team, or a request for information",
        {
            "text": "Please send a screenshot of both charges from your bank statement.",
            "request_information": True,
        },
    ),
    "complaint.resolution_recorded": (
        ResolutionRecordedData,
        "A resolution (refund, compensation, explanation, rejection, reversal) is in effect",
        {
            "resolution_id": "0b8e6d2f-1c3a-4e5b-8d7f-9a1b2c3d4e5f",
            "kind": "refund",
            "amount": "86.50",
            "currency": "CNY",
            "refund_working_days": {"min": 3, "max": 7},
        },
    ),
    "complaint.resolved": (
        ResolvedData,
        "The complaint is resolved, with its outcome",
        {"outcome": "monetary_relief"},
    ),
    "complaint.sla_breached": (
        SlaBreachedData,
        "A due time was missed: apology and new estimate",
        {
            "clock": "first_response",
            "due_at": "2026-11-22T06:16:03.600000+00:00",
            "new_estimate": "2026-11-22T10:16:03.600000+00:00",
            "priority": "P2",
        },
    ),
    "complaint.clock_extended": (
        ClockExtendedData,
        "The legal deadline was extended",
        {
            "clock": "legal_final",
            "previous_due_at": "2026-12-07T02:16:03.412877+00:00",
            "due_at": "2026-12-22T02:16:03.412877+00:00",
        },
    ),
    "complaint.reopened": (
        ReopenedData,
        "The complaint is open again",
        {
            "previous_status": "resolved",
            "reason": "customer_feedback",
            "resolution_due": "2026-11-29T02:16:03.412877+00:00",
        },
    ),
    "complaint.survey": (
        SurveyData,
        "The satisfaction survey, after resolution",
        {
            "scale": [1, 5],
            "feedback_path": f"/v1/complaints/{TICKET_EXAMPLE}/feedback",
            "reopen_max_score": 2,
        },
    ),
}

MESSAGE_EXAMPLE = "您的投诉已受理，工单号 WC-20261122-000042，我们将在北京时间 14:16 前首次回复。"


def _payload_model(webhook_type: str, data_model: type[BaseModel], data: dict[str, Any]) -> Any:
    """The body of one webhook type: the common envelope with this type's `data`."""
    name = "".join(part.title() for part in webhook_type.split(".")[1].split("_")) + "Webhook"
    example = {
        "event_id": "3c8e1f5a-7b2d-4e9f-a1c3-5d7e9f1b3a5c",
        "type": webhook_type,
        "ticket_no": TICKET_EXAMPLE,
        "complaint_id": "6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b2c",
        "occurred_at": _AT,
        "locale": "zh-CN",
        "message": MESSAGE_EXAMPLE,
        "data": data,
    }

    return create_model(
        name,
        __config__=ConfigDict(json_schema_extra={"examples": [example]}),
        __doc__=f"The body of a `{webhook_type}` webhook.",
        event_id=(
            UUID,
            Field(description="The notification's id: the same on every retry; deduplicate on it"),
        ),
        type=(
            str,
            Field(description="The notification type", json_schema_extra={"const": webhook_type}),
        ),
        ticket_no=(str, Field(examples=[TICKET_EXAMPLE])),
        complaint_id=(UUID, Field()),
        occurred_at=(datetime, Field(description="When what it tells of happened")),
        locale=(Literal["zh-CN", "en"], Field(description="The language of `message`")),
        message=(str, Field(description="The text for the customer, ready to show")),
        data=(
            data_model,
            Field(description="The facts behind the message, for the app's own display"),
        ),
    )


def _header(name: str, description: str, example: str | int) -> Any:
    return Header(alias=name, description=description, examples=[example])


def _receiver(body_model: Any) -> Callable[..., Coroutine[Any, Any, None]]:
    async def receive(
        body: Any,  # annotated below: a string annotation cannot name this local model
        event_id: Annotated[
            UUID,
            _header(
                "X-Complaints-Event-Id",
                "The body's `event_id`: the same on every retry",
                "3c8e1f5a-7b2d-4e9f-a1c3-5d7e9f1b3a5c",
            ),
        ],
        timestamp: Annotated[
            int,
            _header(
                "X-Complaints-Timestamp",
                "Unix seconds when this attempt was signed (a retry is signed anew)",
                1795313763,
            ),
        ],
        signature: Annotated[
            str,
            _header(
                "X-Complaints-Signature",
                SIGNATURE_DESCRIPTION,
                "sha256=5d41402abc4b2a76b9719d911017c592c3a1f4e5b6d7e8f9a0b1c2d3e4f5a6b7",
            ),
        ],
        correlation_id: Annotated[
            str | None,
            _header(
                "X-Correlation-Id",
                "The id that follows the complaint through every service, from its POST "
                "to this webhook: quote it when asking the operator about a notification",
                "9b2f4d6a-8c1e-4a3b-9d5f-7e1a3c5b7d9f",
            ),
        ] = None,
    ) -> None:
        return None

    receive.__annotations__["body"] = Annotated[body_model, Body()]
    return receive


WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Any 2xx answer acknowledges the notification; the body is ignored"},
    "default": {
        "description": "Any other answer, or none within the timeout, is retried with "
        "exponential backoff (the first retry within 5 seconds) for at least 24 hours, "
        "with the same body and `event_id`"
    },
}


def install_webhooks(app: FastAPI) -> None:
    """Register every webhook type on `app.webhooks` (documentation only)."""
    for webhook_type, (data_model, summary, data) in WEBHOOK_TYPES.items():
        body_model = _payload_model(webhook_type, data_model, data)
        description = (data_model.__doc__ or "").strip() + (
            "\n\n`POST {webhook_url}` with `Content-Type: application/json`. Verify "
            "`X-Complaints-Signature` before trusting the body (the README shows how, in "
            "Python and JavaScript)."
        )
        app.webhooks.add_api_route(
            webhook_type,
            _receiver(body_model),
            methods=["POST"],
            summary=summary,
            description=description,
            operation_id=webhook_type.replace(".", "_"),
            response_model=None,
            response_class=Response,  # the receiver's answer body is ignored
            status_code=200,
            responses=WEBHOOK_RESPONSES,
            tags=["webhooks"],
        )
