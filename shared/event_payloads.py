"""One pydantic model per event type and schema version (CONTRACT section 4).

Written from what the services emit today. Each model requires and type-checks the keys
some consumer reads; other keys are allowed (extra="allow") so a producer can add a field
before every consumer knows it. Money is a decimal string on the wire, never a JSON
number. Events on topics that downstream systems read carry no tenant webhook URL and no
customer contact: their models reject those keys wherever they appear.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from shared.topics import (
    COMPLAINTS_RECEIVED,
    COMPLAINTS_RESOLUTION,
    COMPLAINTS_TRIAGED,
    INCIDENTS,
    NOTIFICATIONS,
)

AMOUNT_PATTERN = r"^(0|[1-9]\d{0,14})(\.\d{1,4})?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)


def _decimal_string(value: Any) -> Any:
    # A float has already lost cents by the time it is here: only text (or a Decimal
    # built in-process) is money.
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError("money must be a decimal string, not a JSON number")
    if not _AMOUNT.match(value):
        raise ValueError("money must be a plain decimal string such as 86.50")
    return value


def _timestamp_string(value: Any) -> Any:
    # pydantic would read a number as unix time: the contract says RFC 3339 text.
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


Money = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(ge=0, max_digits=19, decimal_places=4),
    PlainSerializer(str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["86.50"]}),
]
# Serialised as datetime.isoformat() ("+00:00"), as every producer writes it today.
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_timestamp_string),
    PlainSerializer(lambda d: d.isoformat(), when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Text = Annotated[str, StringConstraints(min_length=1)]
Priority = Literal["P1", "P2", "P3", "P4"]
ResolutionKind = Literal["refund", "compensation", "explanation", "rejection", "reversal"]
CompensationType = Literal["cash", "coupon", "points"]
ClockState = Literal["running", "paused", "met", "breached"]


class EventPayload(BaseModel):
    """Base of every payload model."""

    model_config = ConfigDict(extra="allow", frozen=True)


class InnerPart(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# Keys that name a way to reach the tenant or the customer.
CONTACT_KEYS = frozenset({"webhook_url", "email", "phone"})


def _contact_paths(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            here = f"{path}.{key}" if path else str(key)
            if key in CONTACT_KEYS:
                yield here
            yield from _contact_paths(inner, here)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _contact_paths(inner, f"{path}[{index}]")


def _no_contact_schema(schema: dict[str, Any]) -> None:
    schema["description"] = (
        "Read outside this system: carries no webhook_url, email or phone, at any depth."
    )
    schema["not"] = {"anyOf": [{"required": [key]} for key in sorted(CONTACT_KEYS)]}


class NoContactPayload(EventPayload):
    """A payload on a topic downstream systems read: no webhook URL, e-mail or phone,
    even as an extra key. The error names the key, never its value (it ends up in
    dead-letter headers and logs)."""

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra=_no_contact_schema)

    @model_validator(mode="before")
    @classmethod
    def _no_contact(cls, data: Any) -> Any:
        found = list(_contact_paths(data))
        if found:
            raise ValueError(f"must not carry contact details: {', '.join(found)}")
        return data


# --- complaints.received.v1 (intake) ---------------------------------------------------


class ReceivedCustomer(InnerPart):
    id: Text
    locale: str | None = None
    email: str | None = None
    phone: str | None = None


class ReceivedTenant(InnerPart):
    webhook_url: Text  # the notifier's only source for where to deliver
    jurisdiction: str | None = None
    locale: str | None = None


class ComplaintReceived(EventPayload):
    customer: ReceivedCustomer
    channel: Text
    description: Text
    amount: Money | None = None
    currency: str | None = None
    transaction_ref: str | None = None
    merchant: str | None = None
    occurred_at: Timestamp | None = None
    category_hint: str | None = None
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    received_at: Timestamp
    first_response_due: Timestamp | None = None
    tenant: ReceivedTenant


class ComplaintMessageAdded(EventPayload):
    message_id: uuid.UUID
    text: Text
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    received_at: Timestamp
    complaint_status: str | None = None


class ComplaintFeedbackReceived(EventPayload):
    feedback_id: uuid.UUID
    score: Annotated[int, Field(strict=True, ge=1, le=5)]
    comment: str | None = None
    reopen: bool
    previous_status: str | None = None
    received_at: Timestamp


# --- complaints.triaged.v1 (triage) ----------------------------------------------------


class TriagedCustomer(InnerPart):
    id: Text
    locale: str | None = None


class TriagedTenant(InnerPart):
    jurisdiction: str | None = None
    locale: str | None = None


class ComplaintTriaged(NoContactPayload):
    category: Text
    priority: Priority
    reasons: list[str] = Field(default_factory=list)
    regulatory_issue: str | None = None
    actions: list[str] = Field(default_factory=list)
    first_response_due: Timestamp
    resolution_due: Timestamp
    duplicate_of: uuid.UUID | None = None
    incident_id: uuid.UUID | None = None
    customer: TriagedCustomer | None = None
    tenant: TriagedTenant | None = None
    channel: str | None = None
    amount: Money | None = None
    currency: str | None = None
    transaction_ref: str | None = None
    merchant: str | None = None
    received_at: Timestamp  # starts the case's clocks
    confidence: float | None = None  # 0-1, how sure triage is of category and priority
    needs_review: bool = False  # uncertain: the case goes to the top of the agents' queue


# --- complaints.resolution.v1 (resolution) ---------------------------------------------


class ClockView(InnerPart):
    """One of a case's clocks as the customer's app may show it."""

    name: Text  # first_response | resolution | legal_response | legal_final
    due_at: Timestamp
    state: ClockState


class ResolutionRecorded(NoContactPayload):
    resolution_id: uuid.UUID
    kind: ResolutionKind
    amount: Money | None = None
    currency: str | None = None
    transaction_ref: str | None = None
    reason: str | None = None
    decided_by: str | None = None  # an agent id or "auto"
    approved_by: str | None = None
    status: str = "recorded"  # recorded | pending_approval | approved
    compensation_type: CompensationType | None = None  # for kind compensation
    reverses: uuid.UUID | None = None  # for kind reversal: the entry it corrects
    reasons: list[str] = Field(default_factory=list)  # why an automatic decision was taken


class ResolutionApproved(ResolutionRecorded):
    status: str = "approved"


class ComplaintStatusChanged(NoContactPayload):
    status: Text
    previous_status: str | None = None
    reason: str | None = None
    note: str | None = None
    actor: str | None = None
    category: str | None = None
    priority: Priority | None = None
    first_response_due: Timestamp | None = None
    resolution_due: Timestamp | None = None
    duplicate_of: uuid.UUID | None = None
    duplicate_of_ticket_no: str | None = None
    outcome: str | None = None  # on resolved: monetary_relief | non_monetary_relief | ...
    company_response: str | None = None  # the outcome in CFPB's company_response words
    clocks: list[ClockView] = Field(default_factory=list)


class ComplaintSlaBreached(NoContactPayload):
    clock: Text
    due_at: Timestamp | None = None
    new_estimate: Timestamp | None = None
    priority: Priority | None = None
    clocks: list[ClockView] = Field(default_factory=list)


class ComplaintAgentMessage(NoContactPayload):
    """An agent wrote to the customer (the notifier delivers it)."""

    message_id: uuid.UUID
    text: Text
    request_information: bool = False
    agent_id: Text
    clocks: list[ClockView] = Field(default_factory=list)


class CaseAssigned(NoContactPayload):
    agent_id: Text
    assigned_by: Text
    previous_agent_id: str | None = None


class ComplaintClockExtended(NoContactPayload):
    """A legal deadline moved by an approver's decision, with notice to the customer."""

    clock: Text
    previous_due_at: Timestamp
    due_at: Timestamp
    approved_by: Text
    reason: Text
    clocks: list[ClockView] = Field(default_factory=list)


class ComplaintRecategorised(NoContactPayload):
    """An agent corrected triage's category (and perhaps its priority): the case's new
    values and the ones it had. Triage records it as a labelled example. No customer
    text travels here: triage has the complaint's own words already."""

    category: Text
    priority: Priority
    previous_category: Text
    previous_priority: Priority
    corrected_by: Text  # the agent's id
    note: str | None = None  # the agent's reason, if given


# --- incidents.v1 (triage) -------------------------------------------------------------


class IncidentOpened(NoContactPayload):
    incident_id: uuid.UUID
    kind: Literal["merchant", "category"]
    cause: Text
    category: Text
    opened_at: Timestamp
    last_seen_at: Timestamp
    complaint_count: int
    window_minutes: int | None = None
    complaint_ids: list[uuid.UUID] = Field(default_factory=list)
    ticket_nos: list[str] = Field(default_factory=list)


class IncidentUpdated(NoContactPayload):
    incident_id: uuid.UUID
    kind: Literal["merchant", "category"]
    cause: Text
    category: Text
    opened_at: Timestamp
    last_seen_at: Timestamp
    complaint_count: int
    complaint_id: uuid.UUID | None = None  # the complaint that joined
    ticket_no: str | None = None


# --- notifications.v1 (notifier) -------------------------------------------------------


class NotificationSent(EventPayload):
    type: Text  # the webhook's type, e.g. complaint.acknowledged
    channel: str | None = None
    notification_id: uuid.UUID | None = None
    attempts: int | None = None
    status_code: int | None = None
    error: str | None = None


class NotificationFailed(NotificationSent):
    pass


@dataclass(frozen=True)
class EventContract:
    event_type: str
    schema_version: int
    model: type[EventPayload]
    topic: str
    producer: str
    summary: str


CONTRACTS: tuple[EventContract, ...] = (
    EventContract(
        "complaint.received",
        1,
        ComplaintReceived,
        COMPLAINTS_RECEIVED,
        "intake",
        "A complaint was accepted.",
    ),
    EventContract(
        "complaint.message_added",
        1,
        ComplaintMessageAdded,
        COMPLAINTS_RECEIVED,
        "intake",
        "The customer sent a follow-up message.",
    ),
    EventContract(
        "complaint.feedback_received",
        1,
        ComplaintFeedbackReceived,
        COMPLAINTS_RECEIVED,
        "intake",
        "The customer rated the handling; a poor score reopens the case.",
    ),
    EventContract(
        "complaint.triaged",
        1,
        ComplaintTriaged,
        COMPLAINTS_TRIAGED,
        "triage",
        "Category, priority, due times, duplicate and incident of a complaint.",
    ),
    EventContract(
        "resolution.recorded",
        1,
        ResolutionRecorded,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "A refund, compensation, explanation or rejection was decided.",
    ),
    EventContract(
        "resolution.approved",
        1,
        ResolutionApproved,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "A resolution that needed approval was approved.",
    ),
    EventContract(
        "complaint.status_changed",
        1,
        ComplaintStatusChanged,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "The case moved to another status.",
    ),
    EventContract(
        "complaint.sla_breached",
        1,
        ComplaintSlaBreached,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "A case clock ran past its due time.",
    ),
    EventContract(
        "complaint.agent_message",
        1,
        ComplaintAgentMessage,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "An agent wrote to the customer, perhaps asking for information.",
    ),
    EventContract(
        "case.assigned",
        1,
        CaseAssigned,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "A case was claimed by or assigned to an agent.",
    ),
    EventContract(
        "complaint.clock_extended",
        1,
        ComplaintClockExtended,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "An approver extended a legal deadline; the customer is told.",
    ),
    EventContract(
        "complaint.recategorised",
        1,
        ComplaintRecategorised,
        COMPLAINTS_RESOLUTION,
        "resolution",
        "An agent corrected the category (and perhaps the priority) triage gave the case.",
    ),
    EventContract(
        "incident.opened",
        1,
        IncidentOpened,
        INCIDENTS,
        "triage",
        "A cluster of complaints with one cause was detected.",
    ),
    EventContract(
        "incident.updated",
        1,
        IncidentUpdated,
        INCIDENTS,
        "triage",
        "Another complaint joined an open incident.",
    ),
    EventContract(
        "notification.sent",
        1,
        NotificationSent,
        NOTIFICATIONS,
        "notifier",
        "A customer notification was delivered.",
    ),
    EventContract(
        "notification.failed",
        1,
        NotificationFailed,
        NOTIFICATIONS,
        "notifier",
        "A customer notification was given up on.",
    ),
)

# The registry: (event_type, schema_version) -> payload model.
PAYLOAD_MODELS: dict[tuple[str, int], type[EventPayload]] = {
    (c.event_type, c.schema_version): c.model for c in CONTRACTS
}
