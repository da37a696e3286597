"""Incident detection inside the triage transaction (rules in incident_policy.py, SQL in
unit_of_work.py).

Every complaint adds one to its causes' per-minute counters, so thresholds are sums over
minutes, not counts over complaints. A lock per (tenant, cause) until the transaction
ends lets exactly one complaint open an incident however many triage consumers run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

from services.triage import domain
from services.triage.domain import Cause, IncidentChange, TriagedComplaint
from services.triage.incident_policy import IncidentPolicy
from services.triage.unit_of_work import PgIncidentCounters, UnitOfWork
from shared.logging import get_logger

log = get_logger(__name__)


async def detect(
    uow: UnitOfWork, policy: IncidentPolicy, complaint: TriagedComplaint
) -> IncidentChange | None:
    """The incident this complaint opens or joins, if any; a merchant cluster first."""
    causes = complaint.incident_causes()
    # Every cause is locked and counted before any is judged, in one order for everyone.
    for cause in causes:
        await uow.incident_counters.lock_and_add_one(
            complaint.tenant_id, cause, complaint.received_at
        )
    for cause in causes:
        change = await _join_open(uow, policy, complaint, cause)
        if change is None and await _threshold_met(uow, policy, complaint, cause):
            change = await _open(uow, policy, complaint, cause)
        if change is not None:
            return change
    return None


async def _join_open(
    uow: UnitOfWork, policy: IncidentPolicy, c: TriagedComplaint, cause: Cause
) -> IncidentChange | None:
    incident = await uow.incidents.join_open(
        c.tenant_id, cause, c.received_at, policy.window, member=c.complaint_id
    )
    return domain.incident_updated(incident, c) if incident is not None else None


async def _threshold_met(
    uow: UnitOfWork, policy: IncidentPolicy, c: TriagedComplaint, cause: Cause
) -> bool:
    # No upper bound: complaints on other partitions may be triaged out of receipt order.
    window_start = c.received_at - policy.window
    counters = uow.incident_counters
    in_window = await counters.count(c.tenant_id, cause, window_start, None)
    if cause.kind == "merchant":
        return policy.merchant_cluster(in_window)
    in_baseline = await counters.count(
        c.tenant_id, cause, window_start - policy.baseline, window_start
    )
    return policy.category_spike(in_window, in_baseline)


async def _open(
    uow: UnitOfWork, policy: IncidentPolicy, c: TriagedComplaint, cause: Cause
) -> IncidentChange:
    members = await uow.complaints.not_in_incident(
        c.tenant_id, cause, c.received_at - policy.window
    )
    incident = await uow.incidents.open(
        uuid.uuid4(), c.tenant_id, cause, c.category, c.received_at, len(members)
    )
    await uow.complaints.join_incident(incident.incident_id, [m.complaint_id for m in members])
    window_minutes = int(policy.window.total_seconds() // 60)
    return domain.incident_opened(incident, c, members, window_minutes=window_minutes)


async def purge_counts(pool: asyncpg.Pool, policy: IncidentPolicy) -> None:
    """Counters older than any window or baseline still needs them."""
    await PgIncidentCounters(pool).purge_older_than(
        policy.window + policy.baseline + timedelta(hours=1)
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
