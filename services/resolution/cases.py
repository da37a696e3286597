"""Opening a case for each triaged complaint (or linking a duplicate to its original's
case), inside EventConsumer's transaction, and telling everyone through the outbox."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from shared import outbox
from shared.events import Envelope, follow_up
from shared.topics import COMPLAINTS_RESOLUTION

DEFAULT_JURISDICTION = "cn"


async def on_triaged(conn: asyncpg.Connection, envelope: Envelope) -> None:
    if envelope.event_type != "complaint.triaged":
        return
    p = envelope.payload
    original = p.get("duplicate_of")
    if original and await _case_exists(conn, original):
        await _link_duplicate(conn, envelope, original)
    else:
        # An original whose case is unknown here (e.g. older than this service) opens one.
        await _open_case(conn, envelope)


async def _case_exists(conn: asyncpg.Connection, complaint_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM cases WHERE complaint_id = $1", complaint_id))


async def _open_case(conn: asyncpg.Connection, envelope: Envelope) -> None:
    p = envelope.payload
    tenant = p.get("tenant") or {}
    amount = Decimal(p["amount"]) if p.get("amount") is not None else None
    await conn.execute(
        """
        INSERT INTO cases (complaint_id, tenant_id, ticket_no, status, category, priority,
            jurisdiction, locale, channel, amount, currency, transaction_ref, received_at,
            first_response_due, resolution_due)
        VALUES ($1, $2, $3, 'triaged', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        """,
        envelope.complaint_id,
        envelope.tenant_id,
        envelope.ticket_no,
        p["category"],
        p["priority"],
        tenant.get("jurisdiction") or DEFAULT_JURISDICTION,
        (p.get("customer") or {}).get("locale") or tenant.get("locale"),
        p.get("channel"),
        amount,
        p.get("currency"),
        p.get("transaction_ref"),
        datetime.fromisoformat(p["received_at"]),
        datetime.fromisoformat(p["first_response_due"]),
        datetime.fromisoformat(p["resolution_due"]),
    )
    note = f"Case opened: {p['category']}, {p['priority']}."
    await _history(conn, envelope, "triaged", note)
    await _emit_status(conn, envelope, reason="case_opened", note=note, extra={})


async def _link_duplicate(conn: asyncpg.Connection, envelope: Envelope, original: str) -> None:
    original_ticket = await conn.fetchval(
        "SELECT ticket_no FROM cases WHERE complaint_id = $1", original
    )
    await conn.execute(
        "INSERT INTO linked_complaints (complaint_id, original_complaint_id, ticket_no) "
        "VALUES ($1, $2, $3)",
        envelope.complaint_id,
        original,
        envelope.ticket_no,
    )
    note = f"Linked to {original_ticket}, which is already being handled."
    await _history(conn, envelope, "triaged", note)
    await _emit_status(
        conn,
        envelope,
        reason="duplicate_linked",
        note=note,
        extra={"duplicate_of": original, "duplicate_of_ticket_no": original_ticket},
    )


async def _history(conn: asyncpg.Connection, envelope: Envelope, status: str, note: str) -> None:
    await conn.execute(
        "INSERT INTO case_history (complaint_id, status, actor, note) "
        "VALUES ($1, $2, 'system', $3)",
        envelope.complaint_id,
        status,
        note,
    )


async def _emit_status(
    conn: asyncpg.Connection,
    envelope: Envelope,
    *,
    reason: str,
    note: str,
    extra: dict[str, Any],
) -> None:
    p = envelope.payload
    event = follow_up(
        envelope,
        "complaint.status_changed",
        producer="resolution",
        payload={
            "status": "triaged",
            "previous_status": "received",
            "reason": reason,
            "note": note,
            "category": p["category"],
            "priority": p["priority"],
            "first_response_due": p["first_response_due"],
            "resolution_due": p["resolution_due"],
            "actor": "system",
            **extra,
        },
    )
    await outbox.enqueue(conn, COMPLAINTS_RESOLUTION, event)
