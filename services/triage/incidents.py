"""Incident detection inside the triage transaction (rules in incident_policy.py).

Every complaint adds one to its causes' per-minute counters (`incident_counts`), so
thresholds are sums over minutes, not counts over complaints. A transaction-scoped
advisory lock per (tenant, cause) lets exactly one complaint open an incident however
many triage consumers run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.triage.incident_policy import IncidentPolicy
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Triaged:
    tenant_id: uuid.UUID
    complaint_id: uuid.UUID
    ticket_no: str
    category: str
    merchant: str | None
    merchant_key: str | None
    received_at: datetime


@dataclass(frozen=True)
class IncidentChange:
    incident_id: uuid.UUID
    event_type: str  # incident.opened | incident.updated
    payload: dict[str, Any]


async def detect(
    conn: asyncpg.Connection, policy: IncidentPolicy, complaint: Triaged
) -> IncidentChange | None:
    """The incident this complaint opens or joins, if any; a merchant cluster first."""
    causes = [("merchant", complaint.merchant_key)] if complaint.merchant_key else []
    causes.append(("category", complaint.category))
    for kind, cause in causes:
        assert cause is not None
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 1))",
            f"{complaint.tenant_id}|{kind}|{cause}",
        )
        await _bump(conn, complaint, kind, cause)
    for kind, cause in causes:
        assert cause is not None
        change = await _join_open(conn, policy, complaint, kind, cause)
        if change is None and await _threshold_met(conn, policy, complaint, kind, cause):
            change = await _open(conn, policy, complaint, kind, cause)
        if change is not None:
            return change
    return None


async def _join_open(
    conn: asyncpg.Connection, policy: IncidentPolicy, c: Triaged, kind: str, cause: str
) -> IncidentChange | None:
    row = await conn.fetchrow(
        """
        UPDATE incidents SET complaint_count = complaint_count + 1,
                             last_seen_at = greatest(last_seen_at, $4)
        WHERE id = (
            SELECT id FROM incidents
            WHERE tenant_id = $1 AND kind = $2 AND cause = $3
              AND last_seen_at >= $4::timestamptz - $5::interval
            ORDER BY last_seen_at DESC LIMIT 1)
        RETURNING id, kind, cause, category, opened_at, last_seen_at, complaint_count
        """,
        c.tenant_id,
        kind,
        cause,
        c.received_at,
        policy.window,
    )
    if row is None:
        return None
    await _link(conn, row["id"], [c.complaint_id])
    payload = {**_describe(row, c), "complaint_id": str(c.complaint_id), "ticket_no": c.ticket_no}
    return IncidentChange(row["id"], "incident.updated", payload)


async def _bump(conn: asyncpg.Connection, c: Triaged, kind: str, cause: str) -> None:
    await conn.execute(
        """
        INSERT INTO incident_counts (tenant_id, kind, cause, minute, complaints)
        VALUES ($1, $2, $3, date_trunc('minute', $4::timestamptz), 1)
        ON CONFLICT (tenant_id, kind, cause, minute)
        DO UPDATE SET complaints = incident_counts.complaints + 1
        """,
        c.tenant_id,
        kind,
        cause,
        c.received_at,
    )


async def _threshold_met(
    conn: asyncpg.Connection, policy: IncidentPolicy, c: Triaged, kind: str, cause: str
) -> bool:
    # No upper bound: complaints on other partitions may be triaged out of receipt order.
    window_start = c.received_at - policy.window
    in_window = await _count(conn, c, kind, cause, window_start, None)
    if kind == "merchant":
        return policy.merchant_cluster(in_window)
    in_baseline = await _count(conn, c, kind, cause, window_start - policy.baseline, window_start)
    return policy.category_spike(in_window, in_baseline)


async def _count(
    conn: asyncpg.Connection,
    c: Triaged,
    kind: str,
    cause: str,
    since: datetime,
    until: datetime | None,
) -> int:
    """Complaints in [since, until), to the minute."""
    return await conn.fetchval(
        """
        SELECT coalesce(sum(complaints), 0) FROM incident_counts
        WHERE tenant_id = $1 AND kind = $2 AND cause = $3
          AND minute >= date_trunc('minute', $4::timestamptz)
          AND ($5::timestamptz IS NULL OR minute < date_trunc('minute', $5::timestamptz))
        """,
        c.tenant_id,
        kind,
        cause,
        since,
        until,
    )


async def _open(
    conn: asyncpg.Connection, policy: IncidentPolicy, c: Triaged, kind: str, cause: str
) -> IncidentChange:
    column = "merchant_key" if kind == "merchant" else "category"
    members = await conn.fetch(
        f"SELECT complaint_id, ticket_no FROM triaged_complaints WHERE tenant_id = $1 "
        f"AND {column} = $2 AND received_at > $3 AND incident_id IS NULL ORDER BY received_at",
        c.tenant_id,
        cause,
        c.received_at - policy.window,
    )
    row = await conn.fetchrow(
        """
        INSERT INTO incidents (id, tenant_id, kind, cause, category, opened_at, last_seen_at,
                               complaint_count)
        VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
        RETURNING id, kind, cause, category, opened_at, last_seen_at, complaint_count
        """,
        uuid.uuid4(),
        c.tenant_id,
        kind,
        cause,
        c.category,
        c.received_at,
        len(members),
    )
    await _link(conn, row["id"], [m["complaint_id"] for m in members])
    payload = {
        **_describe(row, c),
        "window_minutes": int(policy.window.total_seconds() // 60),
        "complaint_ids": [str(m["complaint_id"]) for m in members],
        "ticket_nos": [m["ticket_no"] for m in members],
    }
    return IncidentChange(row["id"], "incident.opened", payload)


async def _link(conn: asyncpg.Connection, incident_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    await conn.execute(
        "UPDATE triaged_complaints SET incident_id = $1 WHERE complaint_id = ANY($2::uuid[])",
        incident_id,
        ids,
    )


def _describe(row: asyncpg.Record, c: Triaged) -> dict[str, Any]:
    return {
        "incident_id": str(row["id"]),
        "kind": row["kind"],
        # The merchant as the customer wrote it reads better than its normalised key.
        "cause": c.merchant if row["kind"] == "merchant" and c.merchant else row["cause"],
        "category": row["category"],
        "opened_at": row["opened_at"].isoformat(),
        "last_seen_at": row["last_seen_at"].isoformat(),
        "complaint_count": row["complaint_count"],
    }


async def purge_counts(pool: asyncpg.Pool, policy: IncidentPolicy) -> None:
    """Counters older than any window or baseline still needs them."""
    await pool.execute(
        "DELETE FROM incident_counts WHERE minute < now() - $1::interval",
        policy.window + policy.baseline + timedelta(hours=1),
    )


def purge_counts_loop(
    pool_getter: Callable[[], asyncpg.Pool], policy: IncidentPolicy
) -> Callable[[], Awaitable[None]]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(600)
            try:
                await purge_counts(pool_getter(), policy)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("incident_counts_purge_failed", error=repr(exc))

    return loop
