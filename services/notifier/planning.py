"""Which customer notifications an event calls for, in order, and the data their
templates read (templates/<locale>/<template>.*.j2). Pure: no I/O (the refund timing is
settings, read once).

Per complaint the customer hears: complaint.acknowledged (ticket number, the first
response due time intake promised), at once from complaint.received, so that no other
service stands between the complaint and its acknowledgement; complaint.triaged
(category, due times, or the earlier ticket a duplicate joins); complaint.agent_message
(an agent's words or request for information); complaint.resolution_recorded (what, how
much, when a refund arrives); complaint.sla_breached (apology, new estimate);
complaint.clock_extended (the legal extension); complaint.resolved (outcome);
complaint.survey (how to rate us) and complaint.reopened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.notifier import refund_timing
from services.notifier.refund_timing import RefundTimingSettings
from shared.event_payloads import (
    ComplaintAgentMessage,
    ComplaintClockExtended,
    ComplaintReceived,
    ComplaintSlaBreached,
    ComplaintStatusChanged,
    EventPayload,
    ResolutionRecorded,
)
from shared.events import TypedEnvelope

# The wallet app's feedback endpoint (intake): where the survey's answer goes, and the
# score at or below which intake reopens the complaint.
FEEDBACK_PATH = "/v1/complaints/{ticket_no}/feedback"
SURVEY_SCALE = (1, 5)
REOPEN_MAX_SCORE = 2


@dataclass(frozen=True)
class PlannedNotification:
    type: str  # the webhook's "type" (CONTRACT section 7)
    template: str  # the templates to render (rendering.py): templates/<locale>/<template>.*
    data: dict[str, Any]


ACKNOWLEDGEMENT = "complaint.acknowledged"


def acknowledgement(p: ComplaintReceived) -> PlannedNotification:
    """The acknowledgement: the ticket number and the first response due time that
    intake's `202` promised (triage's own due times follow in complaint.triaged)."""
    data = _pick(p, "first_response_due")
    return PlannedNotification("complaint.acknowledged", "complaint.acknowledged", data)


def plan(
    event: TypedEnvelope[Any], *, refunds: RefundTimingSettings | None = None
) -> list[PlannedNotification]:
    p = event.payload
    if isinstance(p, ComplaintStatusChanged):
        return _on_status(event, p)
    # resolution.approved's model is a ResolutionRecorded too: an approved refund is news
    # as "resolution recorded"; a pending one is not news for the customer yet.
    if isinstance(p, ResolutionRecorded) and p.status != "pending_approval":
        data = _pick(
            p, "resolution_id", "kind", "amount", "currency", "compensation_type", "reverses"
        )
        if p.kind == "refund":
            # When the money arrives, as this tenant promises it; kept with the delivery
            # so a retry says what the first attempt said.
            timing = (refunds or refund_timing.default()).for_tenant(event.tenant_id)
            data["refund_working_days"] = timing.as_data()
        return [
            PlannedNotification(
                "complaint.resolution_recorded", "complaint.resolution_recorded", data
            )
        ]
    if isinstance(p, ComplaintSlaBreached):
        data = _pick(p, "clock", "due_at", "new_estimate", "priority")
        return [PlannedNotification("complaint.sla_breached", "complaint.sla_breached", data)]
    if isinstance(p, ComplaintAgentMessage):
        # The agent's words, wrapped in the customer's locale; who wrote stays out
        # (agent_id is the back office's).
        template = (
            "complaint.agent_message.request_information"
            if p.request_information
            else "complaint.agent_message"
        )
        data = {"text": p.text, "request_information": p.request_information}
        return [PlannedNotification("complaint.agent_message", template, data)]
    if isinstance(p, ComplaintClockExtended):
        # The notice the law asks for; the approver's id and internal reason stay out.
        data = _pick(p, "clock", "previous_due_at", "due_at")
        return [PlannedNotification("complaint.clock_extended", "complaint.clock_extended", data)]
    return []


def _on_status(event: TypedEnvelope[Any], p: ComplaintStatusChanged) -> list[PlannedNotification]:
    dues = _pick(p, "first_response_due", "resolution_due", "category", "priority")
    if p.reason == "case_opened":
        return [PlannedNotification("complaint.triaged", "complaint.triaged", dues)]
    if p.reason == "duplicate_linked":
        data = {**dues, **_pick(p, "duplicate_of_ticket_no")}
        return [PlannedNotification("complaint.triaged", "complaint.triaged.duplicate", data)]
    # awaiting_customer needs no notice of its own: the agent's request for information
    # (complaint.agent_message) that moved the case there already told the customer.
    if p.status == "resolved":
        survey = {
            "scale": list(SURVEY_SCALE),
            "feedback_path": FEEDBACK_PATH.format(ticket_no=event.ticket_no),
            "reopen_max_score": REOPEN_MAX_SCORE,
        }
        return [
            PlannedNotification("complaint.resolved", "complaint.resolved", _pick(p, "outcome")),
            PlannedNotification("complaint.survey", "complaint.survey", survey),
        ]
    if p.status == "reopened":
        # The internal note (the score, who reopened) stays out; the fresh resolution
        # clock, when resolution sent it, is the new promise.
        data = _pick(p, "previous_status", "reason")
        due = _running_due(p, "resolution")
        if due is not None:
            data["resolution_due"] = due
        return [PlannedNotification("complaint.reopened", "complaint.reopened", data)]
    return []


def _running_due(p: ComplaintStatusChanged, clock: str) -> str | None:
    for view in p.clocks:
        if view.name == clock and view.state == "running":
            return view.due_at.isoformat()
    return None


def _pick(p: EventPayload, *keys: str) -> dict[str, Any]:
    """The keys' values as they travel (JSON: times and money as text), for the template
    data stored with each delivery."""
    wire = p.model_dump(mode="json", include=set(keys))
    return {key: wire[key] for key in keys if wire.get(key) is not None}
