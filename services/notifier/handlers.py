"""Consumers of other services' events: where to send, and what to send."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.notifier.planning import plan
from shared.events import Envelope


async def on_received(conn: asyncpg.Connection, envelope: Envelope) -> None:
    """Remember the complaint's recipient: the tenant's webhook and the customer's locale."""
    if envelope.event_type != "complaint.received":
        return
    p = envelope.payload
    tenant = p.get("tenant") or {}
    customer = p.get("customer") or {}
    await conn.execute(
        """
        INSERT INTO recipients (complaint_id, tenant_id, ticket_no, webhook_url, locale, email,
            received_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (complaint_id) DO NOTHING
        """,
        envelope.complaint_id,
        envelope.tenant_id,
        envelope.ticket_no,
        tenant["webhook_url"],
        customer.get("locale") or tenant.get("locale") or "zh-CN",
        customer.get("email"),
        datetime.fromisoformat(p["received_at"]),
    )


async def on_resolution(conn: asyncpg.Connection, envelope: Envelope) -> None:
    """Queue the notifications this case event calls for, in order."""
    planned = plan(envelope)
    if not planned:
        return
    await conn.executemany(
        """
        INSERT INTO deliveries (event_id, complaint_id, tenant_id, ticket_no, correlation_id,
            type, template, data, occurred_at)
        VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7, $8)
        """,
        [
            (
                envelope.complaint_id,
                envelope.tenant_id,
                envelope.ticket_no,
                envelope.correlation_id,
                n.type,
                n.template,
                n.data,
                envelope.occurred_at,
            )
            for n in planned
        ],
    )
