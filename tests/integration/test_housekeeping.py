"""Housekeeping on real PostgreSQL: one instance of a service leads (an advisory lock) and
the others stand by; the leader's rounds VACUUM the churning tables and report their
dead tuples; a failing retention step does not stop the VACUUM; the notifier's finished
deliveries go with their attempts after their retention, and nothing else does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.notifier.app import MIGRATIONS, SCHEMA
from services.notifier.retention import DeliveryRetention
from services.notifier.settings import NotifierSettings
from shared.db import create_pool
from shared.housekeeping import TABLE_VOCABULARY, Housekeeping, Policy, analyze_statement
from shared.metrics import ServiceMetrics
from shared.migrations import apply_migrations
from shared.runtime import SHARED_MIGRATIONS
from tests.support import eventually

LEAD_SCHEMA = "hktest"
FAST = Policy(timedelta(0), timedelta(0), purge_every_s=0.2, vacuum_every_s=0.2)


@pytest.fixture(scope="module")
async def notifier_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    for schema, dirs in (
        (SCHEMA, [SHARED_MIGRATIONS, MIGRATIONS]),
        (LEAD_SCHEMA, [SHARED_MIGRATIONS]),
    ):
        await asyncio.to_thread(apply_migrations, database_url, schema, dirs)
    pool = await create_pool(database_url, SCHEMA, 1, 2)
    yield pool
    await pool.close()


class Looping:
    """An instance's supervised loop, as its service runs it; `stop` is the service's stop."""

    def __init__(self, housekeeping: Housekeeping) -> None:
        self.housekeeping = housekeeping
        self._task = asyncio.create_task(housekeeping.run_forever())

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def looping(housekeeping: Housekeeping) -> AsyncIterator[Looping]:
    running = Looping(housekeeping)
    try:
        yield running
    finally:
        await running.stop()


def instance(
    database_url: str, schema: str = LEAD_SCHEMA, metrics: ServiceMetrics | None = None
) -> Housekeeping:
    return Housekeeping(database_url=database_url, schema=schema, policy=FAST, metrics=metrics)


async def leads(housekeeping: Housekeeping) -> bool:
    return housekeeping.is_leader


async def test_one_instance_leads_and_another_takes_over_when_it_goes(
    database_url: str, notifier_pool: asyncpg.Pool
) -> None:
    first, second = instance(database_url), instance(database_url)
    async with looping(first) as running_first:
        await eventually(lambda: leads(first), within_s=10)
        async with looping(second):
            await asyncio.sleep(0.6)  # several ticks: the standby keeps asking
            assert not second.is_leader
            assert await instance(database_url).maintain_once() is None  # the lock is held
            await running_first.stop()  # its service stops: the session, and the lock, go
            await eventually(lambda: leads(second), within_s=10)
    assert await instance(database_url).maintain_once() is not None  # nobody holds it now


async def test_the_leaders_rounds_vacuum_and_report_dead_tuples_by_table(
    database_url: str, notifier_pool: asyncpg.Pool
) -> None:
    metrics = ServiceMetrics("notifier")
    await notifier_pool.execute(
        "INSERT INTO circuits (endpoint, channel) VALUES ('https://a.example', 'webhook')"
    )
    for _ in range(20):  # dead tuples for the first round to report
        await notifier_pool.execute("UPDATE circuits SET failures = failures + 1")
    housekeeping = instance(database_url, SCHEMA, metrics=metrics)
    async with looping(housekeeping):

        async def vacuumed() -> bool:
            return bool(
                await notifier_pool.fetchval(
                    "SELECT bool_and(last_vacuum IS NOT NULL) FROM pg_stat_user_tables "
                    "WHERE schemaname = $1 AND relname = ANY($2::text[])",
                    SCHEMA,
                    ["outbox", "inbox", "deliveries", "delivery_attempts", "circuits"],
                )
            )

        await eventually(vacuumed, within_s=15)
        samples = [
            s
            for family in text_string_to_metric_families(_exposition(metrics))
            for s in family.samples
            if s.name == "table_dead_tuples"
        ]
    tables = {s.labels["table"] for s in samples}
    assert {"outbox", "deliveries", "circuits"} <= tables <= TABLE_VOCABULARY
    assert {s.labels["service"] for s in samples} == {"notifier"}
    assert not housekeeping.is_leader
    # Leadership gone, the gauge is cleared: the next leader reports.
    assert "table_dead_tuples{" not in _exposition(metrics)


async def test_a_record_table_is_analyzed_alone_by_the_statement_the_round_uses(
    notifier_pool: asyncpg.Pool,
) -> None:
    await notifier_pool.execute(analyze_statement(SCHEMA, "recipients"))
    analyzed = await notifier_pool.fetchval(
        "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
        "WHERE schemaname = $1 AND relname = 'recipients'",
        SCHEMA,
    )
    assert analyzed is True


def _exposition(metrics: ServiceMetrics) -> str:
    return generate_latest(metrics.registry).decode()


async def test_a_failing_retention_step_does_not_stop_the_vacuum(database_url: str) -> None:
    async def broken(conn: asyncpg.Connection) -> dict[str, int]:
        await conn.execute("SELECT * FROM no_such_table")
        return {}

    housekeeping = instance(database_url)
    housekeeping.add_retention(broken)
    done = await housekeeping.maintain_once()
    assert done is not None and {"outbox", "inbox"} <= set(done.vacuumed)


# -- the notifier's deliveries ------------------------------------------------------------


async def _delivery(
    pool: asyncpg.Pool,
    *,
    state: str,
    ended_days_ago: float = 0,
    channel: str = "webhook",
    source_id: int | None = None,
) -> int:
    delivery_id = await pool.fetchval(
        """
        INSERT INTO deliveries (event_id, complaint_id, tenant_id, ticket_no, correlation_id,
            type, template, data, occurred_at, channel, source_id)
        VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'WC-1',
            gen_random_uuid(), 'complaint.triaged', 'complaint_triaged', '{}', now(), $1, $2)
        RETURNING id
        """,
        channel,
        source_id,
    )
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, at, channel, endpoint, latency_ms) "
        "VALUES ($1, 1, now(), $2, 'https://hooks.example', 5)",
        delivery_id,
        channel,
    )
    if state != "pending":
        await pool.execute("UPDATE deliveries SET state = $2 WHERE id = $1", delivery_id, state)
    if ended_days_ago:
        await pool.execute(
            "UPDATE deliveries SET finished_at = now() - make_interval(secs => $2) WHERE id = $1",
            delivery_id,
            ended_days_ago * 86400,
        )
    return delivery_id


async def test_the_transition_to_a_final_state_records_when_it_ended(
    notifier_pool: asyncpg.Pool,
) -> None:
    delivery_id = await _delivery(notifier_pool, state="retrying")
    assert await _finished_at(notifier_pool, delivery_id) is None
    await notifier_pool.execute("UPDATE deliveries SET state = 'failed' WHERE id = $1", delivery_id)
    ended = await _finished_at(notifier_pool, delivery_id)
    assert ended is not None
    await notifier_pool.execute("UPDATE deliveries SET last_error = 'x' WHERE id = $1", delivery_id)
    assert await _finished_at(notifier_pool, delivery_id) == ended  # set once


async def _finished_at(pool: asyncpg.Pool, delivery_id: int) -> object:
    return await pool.fetchval("SELECT finished_at FROM deliveries WHERE id = $1", delivery_id)


async def test_finished_deliveries_go_with_their_attempts_after_the_retention_only(
    notifier_pool: asyncpg.Pool,
) -> None:
    p = notifier_pool
    await p.execute("DELETE FROM delivery_attempts")
    await p.execute("DELETE FROM deliveries WHERE source_id IS NOT NULL")
    await p.execute("DELETE FROM deliveries")
    old_delivered = await _delivery(p, state="delivered", ended_days_ago=31)
    old_failed = await _delivery(p, state="failed", ended_days_ago=31)
    recent = await _delivery(p, state="delivered", ended_days_ago=29)
    still_open = await _delivery(p, state="retrying")
    await p.execute(
        "UPDATE deliveries SET created_at = now() - interval '60 days' WHERE id = $1", still_open
    )
    # A webhook row whose e-mail twin is still open stays (the twin names it) ...
    kept_source = await _delivery(p, state="delivered", ended_days_ago=31)
    open_twin = await _delivery(p, state="pending", channel="email", source_id=kept_source)
    # ... and one whose twin ended long ago too goes with it.
    gone_source = await _delivery(p, state="delivered", ended_days_ago=31)
    gone_twin = await _delivery(
        p, state="failed", ended_days_ago=31, channel="email", source_id=gone_source
    )
    # A twin past retention goes alone when its webhook row is recent.
    young_source = await _delivery(p, state="delivered", ended_days_ago=1)
    old_twin = await _delivery(
        p, state="delivered", ended_days_ago=31, channel="email", source_id=young_source
    )

    retention = DeliveryRetention(NotifierSettings(delivery_retention_days=30), batch=1)
    async with p.acquire() as conn:
        deleted = await retention.purge_once(conn)
        assert await retention.purge_once(conn) == {"deliveries": 0, "delivery_attempts": 0}

    gone = {old_delivered, old_failed, gone_source, gone_twin, old_twin}
    assert deleted == {"deliveries": len(gone), "delivery_attempts": len(gone)}
    left = {r["id"] for r in await p.fetch("SELECT id FROM deliveries")}
    assert left == {recent, still_open, kept_source, open_twin, young_source}
    attempts_left = {
        r["delivery_id"] for r in await p.fetch("SELECT delivery_id FROM delivery_attempts")
    }
    assert attempts_left == left


async def test_a_delivery_that_finished_before_the_migration_ages_from_its_last_lease(
    notifier_pool: asyncpg.Pool,
) -> None:
    """No finished_at (ended before 0006): delivered_at, else next_attempt_at is its end."""
    p = notifier_pool
    delivered = await _delivery(p, state="delivered")
    failed = await _delivery(p, state="failed")
    await p.execute(
        "UPDATE deliveries SET finished_at = NULL, delivered_at = now() - interval '40 days', "
        "next_attempt_at = now() WHERE id = $1",
        delivered,
    )
    await p.execute(
        "UPDATE deliveries SET finished_at = NULL, next_attempt_at = now() - interval '40 days' "
        "WHERE id = $1",
        failed,
    )
    fresh_failed = await _delivery(p, state="failed")
    await p.execute("UPDATE deliveries SET finished_at = NULL WHERE id = $1", fresh_failed)
    async with p.acquire() as conn:
        await DeliveryRetention(NotifierSettings(delivery_retention_days=30)).purge_once(conn)
    left = {
        r["id"]
        for r in await p.fetch(
            "SELECT id FROM deliveries WHERE id = ANY($1::bigint[])",
            [delivered, failed, fresh_failed],
        )
    }
    assert left == {fresh_failed}
