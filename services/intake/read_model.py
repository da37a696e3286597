"""Keeps intake's view of each complaint current from the other services' events,
so GET never calls another service. Each handler runs inside EventConsumer's
transaction (see unit_of_work.bind), after the inbox made it idempotent.

`apply_*` take the typed envelope and the unit of work (the unit tests call them on a
fake); `on_*` are the same bound to the runtime's `(conn, envelope)`, as app.py wires them."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.intake.domain import apply_triaged_status
from services.intake.unit_of_work import (
    ClockState,
    ResolutionView,
    UnitOfWork,
    ViewUpdate,
    bind,
)
from shared.event_payloads import (
    ClockView,
    ComplaintAgentMessage,
    ComplaintClockExtended,
    ComplaintSlaBreached,
    ComplaintStatusChanged,
    ComplaintTriaged,
    EventPayload,
    NotificationSent,
    ResolutionRecorded,
)
from shared.events import TypedEnvelope

_NOTIFICATION_DETAILS = {
    "complaint.acknowledged": "Acknowledgement delivered to the customer.",
    "complaint.triaged": "Customer informed of the triage.",
    "complaint.resolution_recorded": "Customer informed of the resolution.",
    "complaint.resolved": "Customer informed that the complaint is resolved.",
    "complaint.sla_breached": "Customer informed of a delay and a new estimate.",
    "complaint.survey": "Satisfaction survey sent.",
    "complaint.agent_message": "The support team's message was delivered to the customer.",
    "complaint.clock_extended": "Customer informed of the extended deadline.",
}

# How the wallet app's timeline names a clock (the event's names are internal).
_CLOCK_LABELS = {
    "first_response": "first response",
    "resolution": "resolution",
    "legal_response": "regulatory response",
    "legal_final": "regulatory final answer",
}

_RESOLUTION_STATUS_WORDS = {
    "recorded": "recorded",
    "pending_approval": "awaiting approval",
    "approved": "approved",
}

# A status change to one of these ends the outcome it had (a reopened case has none yet).
_OUTCOME_CLEARED_BY = frozenset({"reopened", "in_progress", "awaiting_customer", "escalated"})

_CLOCK_LIST = TypeAdapter(list[ClockView])


async def _current_status(uow: UnitOfWork, event: TypedEnvelope[Any]) -> str:
    status = await uow.complaints.lock_status(event.complaint_id)
    if status is None:
        # Every complaint starts here, so an unknown one is a bug upstream: dead-letter it.
        raise LookupError(f"unknown complaint {event.complaint_id}")
    return status


async def apply_triaged(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    p = event.payload
    if not isinstance(p, ComplaintTriaged):
        return
    status = apply_triaged_status(await _current_status(uow, event))
    update = ViewUpdate(
        status=status,
        category=p.category,
        priority=p.priority,
        first_response_due=p.first_response_due,
        resolution_due=p.resolution_due,
    )
    await uow.complaints.update(event.complaint_id, update)
    detail = f"Triaged as {p.category} ({p.priority})."
    await uow.complaints.add_timeline(event.complaint_id, event.occurred_at, status, detail)


async def apply_resolution(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    p = event.payload
    status = await _current_status(uow, event)
    detail: str | None
    if isinstance(p, ComplaintStatusChanged):
        status = p.status
        await uow.complaints.update(
            event.complaint_id, ViewUpdate(status=status, resolution_due=p.resolution_due)
        )
        if p.outcome is not None:
            await uow.complaints.set_outcome(event.complaint_id, p.outcome, p.company_response)
        elif status in _OUTCOME_CLEARED_BY:
            await uow.complaints.set_outcome(event.complaint_id, None, None)
        detail = p.note or f"Status changed to {status}."
    elif isinstance(p, ResolutionRecorded):  # resolution.recorded or resolution.approved
        resolution_status = _resolution_status(p)
        await uow.complaints.record_resolution(
            ResolutionView(
                resolution_id=p.resolution_id,
                complaint_id=event.complaint_id,
                kind=p.kind,
                amount=p.amount,
                currency=p.currency,
                status=resolution_status,
                recorded_at=event.occurred_at,
                compensation_type=p.compensation_type,
                reverses=p.reverses,
                decided_by=customer_facing_decider(p.decided_by),
            )
        )
        words = _RESOLUTION_STATUS_WORDS.get(resolution_status, resolution_status)
        detail = f"Resolution {p.kind} {words}."
    elif isinstance(p, ComplaintSlaBreached):
        detail = f"The {_clock_label(p.clock)} deadline was missed."
        if p.new_estimate is not None:
            detail += f" New estimate: {p.new_estimate.isoformat()}."
    elif isinstance(p, ComplaintAgentMessage):
        # The customer's own view: the team wrote, never which agent (agent_id stays out).
        if p.request_information:
            detail = f"The support team asked you for more information: {p.text}"
        else:
            detail = f"The support team wrote to you: {p.text}"
    elif isinstance(p, ComplaintClockExtended):
        detail = (
            f"The {_clock_label(p.clock)} deadline was extended to {p.due_at.isoformat()} "
            f"(it was {p.previous_due_at.isoformat()})."
        )
    else:
        detail = None  # case.assigned and the like: the agents' business, not the customer's
    clocks = clocks_of(p)
    if clocks is not None:
        await uow.complaints.set_clocks(event.complaint_id, clocks, event.occurred_at)
    if detail is not None:
        await uow.complaints.add_timeline(event.complaint_id, event.occurred_at, status, detail)


def _resolution_status(p: ResolutionRecorded) -> str:
    # A status the producer left out reads "recorded", whichever the event type (the
    # resolution.approved model would default to "approved").
    return p.status if "status" in p.model_fields_set else "recorded"


def customer_facing_decider(decided_by: str | None) -> str | None:
    """Who decided, as the wallet app may see it: `auto` or `agent`. It is the tenant's
    customer-facing view, and an agent's id is the back office's business."""
    if decided_by is None:
        return None
    return "auto" if decided_by == "auto" else "agent"


def clocks_of(p: EventPayload) -> list[ClockState] | None:
    """The clocks an event carried; None when it carried none (an empty list is the
    models' default for "not given", so it never wipes the clocks shown)."""
    raw: Any = getattr(p, "clocks", None)
    if raw is None and p.model_extra:
        raw = p.model_extra.get("clocks")  # e.g. a resolution.recorded that carries them
    if not raw:
        return None
    try:
        views = _CLOCK_LIST.validate_python(raw)
    except ValidationError:
        return None  # an extra key we cannot read is not worth dead-lettering the event
    return [ClockState(v.name, v.due_at, v.state) for v in views]


def _clock_label(clock: str) -> str:
    return _CLOCK_LABELS.get(clock, clock.replace("_", " "))


async def apply_notification(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    p = event.payload
    # notification.failed's model is a NotificationSent too: only a delivery counts.
    if event.event_type != "notification.sent" or not isinstance(p, NotificationSent):
        return
    detail = _NOTIFICATION_DETAILS.get(p.type)
    if detail is None:
        return
    status = await _current_status(uow, event)
    await uow.complaints.add_timeline(event.complaint_id, event.occurred_at, status, detail)


on_triaged = bind(apply_triaged)
on_resolution = bind(apply_resolution)
on_notification = bind(apply_notification)
