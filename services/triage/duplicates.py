"""Duplicate detection: the same tenant, customer and transaction within a window."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg


async def find_original(
    conn: asyncpg.Connection,
    *,
    tenant_id: uuid.UUID,
    customer_id: str,
    transaction_ref: str | None,
    received_at: datetime,
    window: timedelta,
) -> uuid.UUID | None:
    """The complaint this one repeats, or None. Call inside the triage transaction.

    The window reaches both ways: complaints on different partitions may be triaged out
    of receipt order, and whichever was triaged first holds the case.

    A transaction-scoped advisory lock on (tenant, customer, transaction) serialises two
    copies triaged at the same moment by different consumers, so exactly one is the original.
    """
    if not transaction_ref:
        return None
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"{tenant_id}|{customer_id}|{transaction_ref}",
    )
    return await conn.fetchval(
        """
        SELECT complaint_id FROM triaged_complaints
        WHERE tenant_id = $1 AND customer_id = $2 AND transaction_ref = $3
          AND duplicate_of IS NULL
          AND received_at BETWEEN $4::timestamptz - $5::interval
                              AND $4::timestamptz + $5::interval
        ORDER BY received_at, complaint_id
        LIMIT 1
        """,
        tenant_id,
        customer_id,
        transaction_ref,
        received_at,
        window,
    )
