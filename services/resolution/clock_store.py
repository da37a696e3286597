"""The case clocks in PostgreSQL (rules in clocks.py), on the caller's connection and
inside the caller's transaction.

Every function locks the case row first (`SELECT ... FOR UPDATE`; a no-op when the caller
holds it already) and then the clock rows, the same order as the scheduler's breach, so
the two never deadlock. Each keeps `cases.next_due_at` (the earliest due time of a running
clock, NULL when none) and `cases.breached` (any clock breached) current.

Business days need the tenants' holiday overrides: `use_holiday_overrides(path)` loads
the file once (ClockScheduler does it from its settings); without it the library's
calendars apply unchanged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.resolution import clocks
from services.resolution.clocks import ClockName, ClockState, HolidayOverrides
from shared.event_payloads import ClockView

_overrides: HolidayOverrides = clocks.NO_OVERRIDES


def use_holiday_overrides(path: Path | None) -> HolidayOverrides:
    """Load the override file (settings.holiday_overrides_file) for every later call;
    None means the library's calendars unchanged. Raises InvalidOverrides on a bad file,
    so a wrong file stops the service at start rather than silently miscounting days."""
    global _overrides
    _overrides = (
        clocks.NO_OVERRIDES
        if path is None
        else clocks.parse_overrides(Path(path).read_text(encoding="utf-8"))
    )
    return _overrides


def holiday_overrides() -> HolidayOverrides:
    return _overrides


def calendar(jurisdiction: str, tenant_id: uuid.UUID | None) -> clocks.BusinessCalendar | None:
    if jurisdiction not in clocks.TIME_ZONES:
        return None
    return clocks.calendar_for(jurisdiction, tenant_id, _overrides)


@dataclass(frozen=True)
class ClockCase:
    complaint_id: uuid.UUID
    tenant_id: uuid.UUID
    jurisdiction: str
    received_at: datetime
    first_response_due: datetime
    resolution_due: datetime


# The latest round of each clock of a case.
_LATEST = """
    SELECT DISTINCT ON (name) * FROM clocks WHERE complaint_id = $1
    ORDER BY name, round DESC
"""


async def _lock_case(conn: asyncpg.Connection, complaint_id: uuid.UUID) -> None:
    await conn.execute("SELECT 1 FROM cases WHERE complaint_id = $1 FOR UPDATE", complaint_id)


async def refresh_case(conn: asyncpg.Connection, complaint_id: uuid.UUID) -> None:
    """cases.next_due_at and cases.breached from the clock rows."""
    await conn.execute(
        """
        UPDATE cases SET
            next_due_at = (SELECT min(due_at) FROM clocks
                           WHERE complaint_id = $1 AND state = 'running'),
            breached = EXISTS (SELECT 1 FROM clocks
                               WHERE complaint_id = $1 AND state = 'breached')
        WHERE complaint_id = $1
        """,
        complaint_id,
    )


async def start_clocks(conn: asyncpg.Connection, case: ClockCase, now: datetime) -> None:
    """The first round of clocks of a case opened in the caller's transaction; a second
    call changes nothing. One statement: the clocks, and the case's next due time from
    them (a case this transaction opened has no other clocks, and no other transaction
    sees it yet, so there is nothing to lock first)."""
    planned = clocks.initial_clocks(
        case.jurisdiction,
        case.received_at,
        case.first_response_due,
        case.resolution_due,
        calendar(case.jurisdiction, case.tenant_id),
    )
    await conn.execute(
        """
        WITH started AS (
            INSERT INTO clocks (complaint_id, name, round, kind, state, started_at, due_at,
                duration, updated_at)
            SELECT $1, c.name, 1, c.kind, 'running', c.started_at, c.due_at, c.duration, $7
            FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                        $6::interval[]) AS c(name, kind, started_at, due_at, duration)
            ON CONFLICT (complaint_id, name, round) DO NOTHING
            RETURNING due_at)
        UPDATE cases SET next_due_at = (SELECT min(due_at) FROM started), breached = false
        WHERE complaint_id = $1 AND EXISTS (SELECT 1 FROM started)
        """,
        case.complaint_id,
        [p.name.value for p in planned],
        [p.kind for p in planned],
        [p.started_at for p in planned],
        [p.due_at for p in planned],
        [p.duration for p in planned],
        now,
    )


async def pause_internal(conn: asyncpg.Connection, complaint_id: uuid.UUID, now: datetime) -> None:
    """The case went awaiting_customer: its running internal clocks stop."""
    await _lock_case(conn, complaint_id)
    await conn.execute(
        f"""
        UPDATE clocks c SET state = 'paused', paused_at = $2,
            remaining = c.due_at - $2::timestamptz, updated_at = $2
        FROM ({_LATEST}) latest
        WHERE c.complaint_id = latest.complaint_id AND c.name = latest.name
          AND c.round = latest.round AND c.kind = 'internal' AND c.state = 'running'
        """,
        complaint_id,
        now,
    )
    await refresh_case(conn, complaint_id)


async def resume_internal(conn: asyncpg.Connection, complaint_id: uuid.UUID, now: datetime) -> None:
    """The case is back from awaiting_customer: due times move by the paused time."""
    await _lock_case(conn, complaint_id)
    await conn.execute(
        """
        UPDATE clocks SET state = 'running', due_at = $2::timestamptz + remaining,
            paused_at = NULL, remaining = NULL, updated_at = $2
        WHERE complaint_id = $1 AND state = 'paused'
        """,
        complaint_id,
        now,
    )
    await refresh_case(conn, complaint_id)


async def _meet(
    conn: asyncpg.Connection, complaint_id: uuid.UUID, names: list[str], now: datetime
) -> None:
    await conn.execute(
        """
        UPDATE clocks SET state = 'met', met_at = $3, paused_at = NULL, remaining = NULL,
            updated_at = $3
        WHERE complaint_id = $1 AND name = ANY($2::text[]) AND state IN ('running', 'paused')
        """,
        complaint_id,
        names,
        now,
    )


async def agent_responded(conn: asyncpg.Connection, complaint_id: uuid.UUID, now: datetime) -> None:
    """An agent action the customer sees: the first response, and the legal (holding)
    response, are met. Also records cases.first_responded_at the first time."""
    await _lock_case(conn, complaint_id)
    await _meet(conn, complaint_id, [ClockName.FIRST_RESPONSE, ClockName.LEGAL_RESPONSE], now)
    await conn.execute(
        "UPDATE cases SET first_responded_at = coalesce(first_responded_at, $2) "
        "WHERE complaint_id = $1",
        complaint_id,
        now,
    )
    await refresh_case(conn, complaint_id)


async def case_resolved(conn: asyncpg.Connection, complaint_id: uuid.UUID, now: datetime) -> None:
    """A resolution is also a response: every clock but a breached one is met."""
    await _lock_case(conn, complaint_id)
    await _meet(conn, complaint_id, [n.value for n in ClockName], now)
    await refresh_case(conn, complaint_id)


async def case_reopened(conn: asyncpg.Connection, complaint_id: uuid.UUID, now: datetime) -> None:
    """A fresh resolution clock (the next round), as long as the first round promised.
    Nothing when the latest resolution clock still runs (or is paused)."""
    await _lock_case(conn, complaint_id)
    latest = await conn.fetchrow(
        "SELECT round, state, duration FROM clocks WHERE complaint_id = $1 AND name = $2 "
        "ORDER BY round DESC LIMIT 1",
        complaint_id,
        ClockName.RESOLUTION.value,
    )
    if latest is None or latest["state"] in (ClockState.RUNNING, ClockState.PAUSED):
        return
    first = await conn.fetchval(
        "SELECT duration FROM clocks WHERE complaint_id = $1 AND name = $2 AND round = 1",
        complaint_id,
        ClockName.RESOLUTION.value,
    )
    planned = clocks.fresh_resolution(first, now)
    await conn.execute(
        """
        INSERT INTO clocks (complaint_id, name, round, kind, state, started_at, due_at,
            duration, updated_at)
        VALUES ($1, $2, $3, 'internal', 'running', $4, $5, $6, $4)
        ON CONFLICT DO NOTHING
        """,
        complaint_id,
        planned.name.value,
        latest["round"] + 1,
        planned.started_at,
        planned.due_at,
        planned.duration,
    )
    await refresh_case(conn, complaint_id)


async def case_closed(conn: asyncpg.Connection, complaint_id: uuid.UUID, now: datetime) -> None:
    """Closed: every running or paused clock is met (a breached one stays breached)."""
    await _lock_case(conn, complaint_id)
    await _meet(conn, complaint_id, [n.value for n in ClockName], now)
    await refresh_case(conn, complaint_id)


_ORDER = {name: i for i, name in enumerate(ClockName)}


def _view_order(row: asyncpg.Record) -> tuple[int, int]:
    return (_ORDER.get(row["name"], 99), row["round"])


async def views(conn: asyncpg.Connection, complaint_id: uuid.UUID) -> list[ClockView]:
    """The latest round of each clock, as event payloads carry them to the customer."""
    rows = sorted(await conn.fetch(_LATEST, complaint_id), key=_view_order)
    return [ClockView(name=r["name"], due_at=r["due_at"], state=r["state"]) for r in rows]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _detail(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "name": row["name"],
        "round": row["round"],
        "kind": row["kind"],
        "state": row["state"],
        "due_at": _iso(row["due_at"]),
        "started_at": _iso(row["started_at"]),
        "paused_at": _iso(row["paused_at"]),
        "remaining_s": (row["remaining"].total_seconds() if row["remaining"] is not None else None),
        "met_at": _iso(row["met_at"]),
        "breached_at": _iso(row["breached_at"]),
        "new_estimate": _iso(row["new_estimate"]),
        "extensions": row["extensions"],
    }


async def detail(conn: asyncpg.Connection, complaint_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every clock of the case, every round, JSON-ready (GET /v1/cases/{ticket_no})."""
    rows = sorted(
        await conn.fetch("SELECT * FROM clocks WHERE complaint_id = $1", complaint_id),
        key=_view_order,
    )
    return [_detail(r) for r in rows]


# --- the cn extension (api_clocks.py) ---------------------------------------------------


@dataclass(frozen=True)
class Extended:
    extension: clocks.Extension
    clock: dict[str, Any]


async def extend_legal_final(
    conn: asyncpg.Connection,
    complaint_id: uuid.UUID,
    jurisdiction: str,
    received_at: datetime,
    approved_by: uuid.UUID,
    reason: str,
    now: datetime,
) -> Extended:
    """The next step of cn's ladder on the latest legal_final; raises
    clocks.ExtensionRefused (the caller answers 409 with its reason)."""
    await _lock_case(conn, complaint_id)
    row = await conn.fetchrow(
        "SELECT * FROM clocks WHERE complaint_id = $1 AND name = $2 "
        "ORDER BY round DESC LIMIT 1 FOR UPDATE",
        complaint_id,
        ClockName.LEGAL_FINAL.value,
    )
    if row is None:
        raise clocks.ExtensionRefused("this case has no legal final-answer deadline")
    ext = clocks.extend_legal_final(
        jurisdiction, received_at, row["state"], row["extensions"], row["due_at"], now
    )
    updated = await conn.fetchrow(
        "UPDATE clocks SET due_at = $4, extensions = $5, updated_at = $6 "
        "WHERE complaint_id = $1 AND name = $2 AND round = $3 RETURNING *",
        complaint_id,
        row["name"],
        row["round"],
        ext.due_at,
        ext.extensions,
        now,
    )
    await conn.execute(
        "INSERT INTO clock_extensions (complaint_id, name, round, extensions, previous_due_at, "
        "due_at, approved_by, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        complaint_id,
        row["name"],
        row["round"],
        ext.extensions,
        ext.previous_due_at,
        ext.due_at,
        approved_by,
        reason,
        now,
    )
    await refresh_case(conn, complaint_id)
    return Extended(ext, _detail(updated))


# --- the scheduler's side (scheduler.py) ------------------------------------------------


@dataclass(frozen=True)
class ClockKey:
    complaint_id: uuid.UUID
    name: str
    round: int


async def due_clocks(
    conn: asyncpg.Connection,
    now: datetime,
    limit: int,
    after: tuple[datetime, uuid.UUID, str, int] | None = None,
) -> list[tuple[datetime, ClockKey]]:
    """Running clocks due by `now`, in (due_at, key) order after `after` (keyset paging,
    so clocks skipped as locked are not read again in the same pass)."""
    if after is None:
        rows = await conn.fetch(
            "SELECT due_at, complaint_id, name, round FROM clocks "
            "WHERE state = 'running' AND due_at <= $1 "
            "ORDER BY due_at, complaint_id, name, round LIMIT $2",
            now,
            limit,
        )
    else:
        rows = await conn.fetch(
            "SELECT due_at, complaint_id, name, round FROM clocks "
            "WHERE state = 'running' AND due_at <= $1 "
            "AND (due_at, complaint_id, name, round) > ($3, $4, $5, $6) "
            "ORDER BY due_at, complaint_id, name, round LIMIT $2",
            now,
            limit,
            *after,
        )
    return [(r["due_at"], ClockKey(r["complaint_id"], r["name"], r["round"])) for r in rows]
