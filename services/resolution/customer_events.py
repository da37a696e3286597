"""What customers say after filing, from `complaints.received.v1`: follow-up messages go
into the case history; poor feedback (score 1 or 2) reopens the case."""

from __future__ import annotations

import asyncpg

from shared import outbox
from shared.events import Envelope, follow_up
from shared.topics import COMPLAINTS_RESOLUTION


async def on_customer_event(conn: asyncpg.Connection, envelope: Envelope) -> None:
    if envelope.event_type == "complaint.message_added":
        await _history(conn, envelope, "Customer sent a follow-up message.")
    elif envelope.event_type == "complaint.feedback_received":
        await _on_feedback(conn, envelope)
    # complaint.received opens nothing here: a case opens once triage has spoken.


async def _on_feedback(conn: asyncpg.Connection, envelope: Envelope) -> None:
    p = envelope.payload
    note = f"Customer rated the handling {p.get('score')}/5."
    if not p.get("reopen"):
        await _history(conn, envelope, note)
        return
    previous = await conn.fetchval(
        "UPDATE cases c SET status = 'reopened', updated_at = now() "
        "FROM (SELECT status FROM cases WHERE complaint_id = $1 FOR UPDATE) old "
        "WHERE c.complaint_id = $1 RETURNING old.status",
        envelope.complaint_id,
    )
    if previous is None:
        return  # no case of its own (a linked duplicate): its original's case carries on
    note = f"{note} Reopened."
    await _history(conn, envelope, note, status="reopened")
    event = follow_up(
        envelope,
        "complaint.status_changed",
        producer="resolution",
        payload={
            "status": "reopened",
            "previous_status": previous,
            "reason": "customer_feedback",
            "note": note,
            "actor": "customer",
        },
    )
    await outbox.enqueue(conn, COMPLAINTS_RESOLUTION, event)


async def _history(
    conn: asyncpg.Connection, envelope: Envelope, note: str, status: str | None = None
) -> None:
    await conn.execute(
        "INSERT INTO case_history (complaint_id, status, actor, note) "
        "SELECT complaint_id, coalesce($2, status), 'customer', $3 FROM cases "
        "WHERE complaint_id = $1",
        envelope.complaint_id,
        status,
        note,
    )
