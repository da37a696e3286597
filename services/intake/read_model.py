"""Keeps intake's view of each complaint current from the other services' events,
so GET never calls another service. Each handler runs inside EventConsumer's
transaction, after the inbox made it idempotent."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from services.intake import repository
from services.intake.domain import apply_triaged_status
from shared.events import Envelope

_NOTIFICATION_DETAILS = {
    "complaint.acknowledged": "Acknowledgement delivered to the customer.",
    "complaint.triaged": "Customer informed of the triage.",
    "complaint.resolution_recorded": "Customer informed of the resolution.",
    "complaint.resolved": "Customer informed that the complaint is resolved.",
    "complaint.sla_breached": "Customer informed of a delay and a new estimate.",
    "complaint.survey": "Satisfaction survey sent.",
}


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def _current_status(conn: asyncpg.Connection, envelope: Envelope) -> str:
    row = await repository.lock_complaint(conn, envelope.complaint_id)
    if row is None:
        # Every complaint starts here, so an unknown one is a bug upstream: dead-letter it.
        raise LookupError(f"unknown complaint {envelope.complaint_id}")
    return str(row["status"])


async def on_triaged(conn: asyncpg.Connection, envelope: Envelope) -> None:
    if envelope.event_type != "complaint.triaged":
        return
    p = envelope.payload
    status = apply_triaged_status(await _current_status(conn, envelope))
    await repository.update_read_model(
        conn,
        envelope.complaint_id,
        status=status,
        category=p["category"],
        priority=p["priority"],
        first_response_due=_dt(p["first_response_due"]),
        resolution_due=_dt(p["resolution_due"]),
    )
    await repository.add_timeline(
        conn,
        envelope.complaint_id,
        envelope.occurred_at,
        status,
        f"Triaged as {p['category']} ({p['priority']}).",
    )


async def on_resolution(conn: asyncpg.Connection, envelope: Envelope) -> None:
    p = envelope.payload
    status = await _current_status(conn, envelope)
    if envelope.event_type == "complaint.status_changed":
        status = p["status"]
        fields: dict[str, Any] = {"status": status}
        if p.get("resolution_due"):
            fields["resolution_due"] = _dt(p["resolution_due"])
        await repository.update_read_model(conn, envelope.complaint_id, **fields)
        detail = p.get("note") or f"Status changed to {status}."
    elif envelope.event_type in ("resolution.recorded", "resolution.approved"):
        await repository.upsert_resolution(
            conn,
            {
                "resolution_id": p["resolution_id"],
                "complaint_id": envelope.complaint_id,
                "kind": p["kind"],
                "amount": Decimal(p["amount"]) if p.get("amount") is not None else None,
                "currency": p.get("currency"),
                "status": p.get("status", "recorded"),
                "recorded_at": envelope.occurred_at,
            },
        )
        detail = f"Resolution {p['kind']} {p.get('status', 'recorded')}."
    elif envelope.event_type == "complaint.sla_breached":
        detail = f"The {p.get('clock', 'handling')} deadline was missed."
    else:
        return
    await repository.add_timeline(conn, envelope.complaint_id, envelope.occurred_at, status, detail)


async def on_notification(conn: asyncpg.Connection, envelope: Envelope) -> None:
    if envelope.event_type != "notification.sent":
        return
    detail = _NOTIFICATION_DETAILS.get(envelope.payload.get("type", ""))
    if detail is None:
        return
    status = await _current_status(conn, envelope)
    await repository.add_timeline(conn, envelope.complaint_id, envelope.occurred_at, status, detail)
