"""Which customer notifications an event calls for. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.events import Envelope


@dataclass(frozen=True)
class PlannedNotification:
    type: str  # the webhook's "type" (CONTRACT section 7)
    template: str  # the text to render (messages.py)
    data: dict[str, Any]


def plan(envelope: Envelope) -> list[PlannedNotification]:
    p = envelope.payload
    kind = envelope.event_type
    if kind == "complaint.status_changed":
        return _on_status(p)
    if kind in ("resolution.recorded", "resolution.approved") and p.get("status") != (
        "pending_approval"
    ):
        data = _pick(p, "resolution_id", "kind", "amount", "currency")
        return [
            PlannedNotification(
                "complaint.resolution_recorded", "complaint.resolution_recorded", data
            )
        ]
    if kind == "complaint.sla_breached":
        data = _pick(p, "clock", "due_at", "new_estimate", "priority")
        return [PlannedNotification("complaint.sla_breached", "complaint.sla_breached", data)]
    return []


def _on_status(p: dict[str, Any]) -> list[PlannedNotification]:
    reason, status = p.get("reason"), p.get("status")
    dues = _pick(p, "first_response_due", "resolution_due", "category", "priority")
    if reason == "case_opened":
        return [
            PlannedNotification("complaint.acknowledged", "complaint.acknowledged", dues),
            PlannedNotification("complaint.triaged", "complaint.triaged", dues),
        ]
    if reason == "duplicate_linked":
        data = {**dues, **_pick(p, "duplicate_of_ticket_no")}
        return [
            PlannedNotification("complaint.acknowledged", "complaint.acknowledged.duplicate", data)
        ]
    if status == "resolved":
        return [
            PlannedNotification("complaint.resolved", "complaint.resolved", {}),
            PlannedNotification("complaint.survey", "complaint.survey", {"scale": [1, 5]}),
        ]
    return []


def _pick(p: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: p[key] for key in keys if p.get(key) is not None}
