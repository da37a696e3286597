"""Fires the case clocks: a running clock past its due time is breached once.

Exactly once per clock holds in the database, not by leadership: each breach is one
transaction that locks the case row and then the clock row (`FOR UPDATE SKIP LOCKED`, the
order every clock_store function uses), re-reads the clock as still running and due,
breaches it, and writes `complaint.sla_breached` to the outbox in that transaction. A
racing scheduler skips the locked rows or finds the clock breached already, and migration
0004 refuses to breach a breached clock again.

Leadership only keeps the other instances from scanning in vain: a session-level advisory
lock on a dedicated connection whose session the server ends once it hangs (as the outbox
relay does, shared/outbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.resolution import clock_store, clocks
from services.resolution.clock_store import ClockKey
from services.resolution.settings import ResolutionSettings
from services.resolution.unit_of_work import ResolutionUnitOfWork
from shared.db import connect
from shared.event_payloads import ComplaintSlaBreached, ComplaintStatusChanged
from shared.events import new_event
from shared.logging import get_logger
from shared.metrics import ServiceMetrics

log = get_logger(__name__)

PRODUCER = "resolution"
SCHEMA = "resolution"
# A breach escalates the case, unless it is already there or past it.
NOT_ESCALATED_FROM = frozenset({"escalated", "resolved", "closed"})


@dataclass(frozen=True)
class Breach:
    key: ClockKey
    priority: str
    escalated: bool


class ClockScheduler:
    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        settings: ResolutionSettings,
        metrics: ServiceMetrics,
        now: Callable[[], datetime],
        *,
        leader_timeout_s: float | None = None,
    ) -> None:
        self._pool_getter = pool_getter
        self._settings = settings
        self._metrics = metrics
        self._now = now
        self._leader_timeout_s = leader_timeout_s or settings.outbox_leader_timeout_s
        self.is_leader = False
        self.last_scan_at: datetime | None = None
        self.last_error: str | None = None
        self.errors = 0  # failed attempts (database unreachable, leader session lost)
        self.breaches_fired = 0
        self._running = False
        # The tenants' calendars (a bad file fails here, at start).
        clock_store.use_holiday_overrides(settings.holiday_overrides_file)

    # --- one pass -------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Breach every running clock due by now(); the number this call breached."""
        now = self._now()
        pool = self._pool_getter()
        fired: list[Breach] = []
        after: tuple[datetime, uuid.UUID, str, int] | None = None
        batch = max(1, self._settings.clock_batch_size)
        while True:
            async with pool.acquire() as conn:
                due = await clock_store.due_clocks(conn, now, batch, after)
                for _due_at, key in due:
                    breach = await self._breach(conn, key, now)
                    if breach is not None:
                        fired.append(breach)
                        # After commit only: a rolled back breach counts nothing.
                        self._metrics.sla_breaches.labels(breach.priority).inc()
            if len(due) < batch:
                break
            last_due, last = due[-1]
            after = (last_due, last.complaint_id, last.name, last.round)
        self.breaches_fired += len(fired)
        self.last_scan_at = now
        if fired:
            log.info("sla_breaches_fired", count=len(fired))
        return len(fired)

    async def _breach(
        self, conn: asyncpg.Connection, key: ClockKey, now: datetime
    ) -> Breach | None:
        async with conn.transaction():
            case = await conn.fetchrow(
                "SELECT complaint_id, tenant_id, ticket_no, status, priority, jurisdiction "
                "FROM cases WHERE complaint_id = $1 FOR UPDATE SKIP LOCKED",
                key.complaint_id,
            )
            if case is None:
                return None  # busy (a command holds it): the next scan takes it
            clock = await conn.fetchrow(
                "SELECT name, round, due_at, duration FROM clocks "
                "WHERE complaint_id = $1 AND name = $2 AND round = $3 "
                "AND state = 'running' AND due_at <= $4 FOR UPDATE SKIP LOCKED",
                key.complaint_id,
                key.name,
                key.round,
                now,
            )
            if clock is None:
                return None  # met, paused, moved or breached meanwhile
            estimate = clocks.new_estimate(
                clock["name"],
                clock["duration"],
                now,
                clock_store.calendar(case["jurisdiction"], case["tenant_id"]),
                case["jurisdiction"],
            )
            event_id = uuid.uuid4()
            await conn.execute(
                "UPDATE clocks SET state = 'breached', breached_at = $4, new_estimate = $5, "
                "breach_event_id = $6, updated_at = $4 "
                "WHERE complaint_id = $1 AND name = $2 AND round = $3",
                key.complaint_id,
                key.name,
                key.round,
                now,
                estimate,
                event_id,
            )
            previous = case["status"]
            escalated = previous not in NOT_ESCALATED_FROM
            if escalated:
                await conn.execute(
                    "UPDATE cases SET status = 'escalated', updated_at = $2 "
                    "WHERE complaint_id = $1",
                    key.complaint_id,
                    now,
                )
                note = f"Escalated: the {key.name} clock passed its due time."
                await conn.execute(
                    "INSERT INTO case_history (complaint_id, at, status, actor, note) "
                    "VALUES ($1, $2, 'escalated', 'system', $3)",
                    key.complaint_id,
                    now,
                    note,
                )
                if previous == "awaiting_customer":
                    # No longer the customer's turn: the internal clocks run again.
                    await clock_store.resume_internal(conn, key.complaint_id, now)
            await clock_store.refresh_case(conn, key.complaint_id)
            views = await clock_store.views(conn, key.complaint_id)
            uow = ResolutionUnitOfWork(conn)
            correlation = uuid.uuid4()
            header: dict[str, Any] = {
                "producer": PRODUCER,
                "tenant_id": case["tenant_id"],
                "complaint_id": case["complaint_id"],
                "ticket_no": case["ticket_no"],
                "correlation_id": correlation,
                "occurred_at": now,
            }
            breached = new_event(
                "complaint.sla_breached",
                payload=ComplaintSlaBreached(
                    clock=key.name,
                    due_at=clock["due_at"],
                    new_estimate=estimate,
                    priority=case["priority"],
                    clocks=views,
                ),
                **header,
            )
            # The outbox row carries the id the clock row holds: one event per breach.
            uow.emit(breached.model_copy(update={"event_id": event_id}))
            if escalated:
                uow.emit(
                    new_event(
                        "complaint.status_changed",
                        payload=ComplaintStatusChanged(
                            status="escalated",
                            previous_status=previous,
                            reason="sla_breached",
                            note=note,
                            actor="system",
                            priority=case["priority"],
                            clocks=views,
                        ),
                        **header,
                    )
                )
            await uow.flush()
        return Breach(key, case["priority"], escalated)

    # --- leadership -----------------------------------------------------------------

    async def run_forever(self) -> None:
        """Compete for leadership; scan every clock_scan_every_s while leader; survive
        database restarts (reconnect with backoff, leadership given up meanwhile)."""
        self._running = True
        backoff = 0.2
        try:
            while True:
                try:
                    await self._run_once()
                    backoff = 0.2
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Leadership went with the session; not claimed through the backoff.
                    self.is_leader = False
                    self.last_error = repr(exc)
                    self.errors += 1
                    log.warning("clock_scheduler_error", error=repr(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                finally:
                    self.is_leader = False
        finally:
            self._running = False

    async def _run_once(self) -> None:
        timeout = self._leader_timeout_s
        conn = await connect(
            self._settings.database_url, SCHEMA, purpose="clocks", session_timeout_s=timeout
        )
        try:
            # Standby: asking often enough keeps the session under its idle timeout.
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"{SCHEMA}.clock_scheduler"
            ):
                self.last_error = None  # the database answers again
                await asyncio.sleep(min(self._settings.clock_scan_every_s, timeout / 3))
            self.is_leader = True
            log.info("clock_scheduler_leader")
            keepalive = asyncio.create_task(self._keep_alive(conn))
            try:
                while True:
                    await self.fire_due()
                    self.last_error = None
                    # Wakes early when the leader session died: leadership is gone.
                    await asyncio.wait({keepalive}, timeout=self._settings.clock_scan_every_s)
                    if keepalive.done():
                        keepalive.result()  # raises why
                        raise RuntimeError("clock scheduler lost its leader session")
            finally:
                keepalive.cancel()
                with contextlib.suppress(BaseException):
                    await keepalive
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _keep_alive(self, conn: asyncpg.Connection) -> None:
        """The leader's session must never sit idle past its timeout, scan or not."""
        while True:
            await conn.fetchval("SELECT 1")
            await asyncio.sleep(self._leader_timeout_s / 3)

    def health(self) -> dict[str, Any]:
        """For /readyz: ok unless the last attempt to reach the database (or to scan, as
        leader) failed; leader or standby; the last scan."""
        return {
            "ok": self.last_error is None,
            "running": self._running,
            "leader": self.is_leader,
            "last_scan_at": self.last_scan_at.isoformat() if self.last_scan_at else None,
            "breaches_fired": self.breaches_fired,
            "errors": self.errors,
            "last_error": self.last_error,
        }
