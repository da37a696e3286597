"""The clock scheduler through a real database outage.

PostgreSQL (a cluster this module owns) is stopped as in a crash while the scheduler
leads and a clock falls due, then started again. The scheduler must notice (its health
turns not ok, its failed attempts are counted), reconnect by itself, take the lead again
and breach the clock that fell due during the outage exactly once; a clock breached
before the outage is not breached again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest

from services.resolution.scheduler import ClockScheduler
from services.resolution.settings import ResolutionSettings
from shared.metrics import ServiceMetrics
from tests.integration.test_resolution_clocks import (
    Case,
    FakeClock,
    events,
    migrated_pool,
    open_case,
)
from tests.support import ThrowawayPostgres, create_database, eventually, holds, throwaway_postgres

OUTAGE_S = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as own:
        yield own


@pytest.fixture(scope="module")
def settings(cluster: ThrowawayPostgres) -> ResolutionSettings:
    return ResolutionSettings(
        database_url=create_database(cluster.admin_url, "clock_outage"),
        clock_batch_size=7,
        clock_scan_every_s=0.05,
    )


@pytest.fixture(scope="module")
async def pool(settings: ResolutionSettings) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(settings, min_size=1, max_size=4) as pool:
        yield pool


async def _breaches(pool: asyncpg.Pool, case: Case) -> int:
    return len(await events(pool, case, "complaint.sla_breached"))


async def test_the_scheduler_reconnects_after_a_database_crash_and_breaches_once(
    cluster: ThrowawayPostgres, settings: ResolutionSettings, pool: asyncpg.Pool
) -> None:
    clock = FakeClock()
    scheduler = ClockScheduler(
        lambda: pool, settings, ServiceMetrics("resolution"), clock, leader_timeout_s=2
    )
    task = asyncio.create_task(scheduler.run_forever())
    try:
        await eventually(lambda: holds(scheduler.is_leader))
        before = await open_case(pool, jurisdiction="us", received_at=clock.now)
        during = await open_case(
            pool, jurisdiction="us", received_at=clock.now + timedelta(hours=1)
        )
        clock.advance(timedelta(hours=8, minutes=30))  # `before` falls due, `during` not yet
        await eventually(lambda: _breaches(pool, before))

        await asyncio.to_thread(cluster.stop, "immediate")
        try:
            clock.advance(timedelta(hours=1))  # `during` falls due while nobody can breach it
            await eventually(lambda: holds(not scheduler.health()["ok"]), within_s=15)
            assert scheduler.is_leader is False
            failed_in_outage = scheduler.errors
            assert failed_in_outage >= 1
            await asyncio.sleep(OUTAGE_S)
        finally:
            await asyncio.to_thread(cluster.start)

        await eventually(
            lambda: holds(scheduler.is_leader and scheduler.health()["ok"]), within_s=30
        )
        assert scheduler.errors >= failed_in_outage  # it kept retrying until the server came back
        await eventually(lambda: _breaches(pool, during), within_s=30)
        await asyncio.sleep(0.3)  # a few more scans: nothing is breached twice
        assert await _breaches(pool, before) == 1
        assert await _breaches(pool, during) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
