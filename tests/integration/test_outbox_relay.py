"""The outbox relay against real PostgreSQL and a real broker: one leader per service,
every event published once, order kept per key, a new leader takes over."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

import asyncpg
import pytest

from shared import outbox
from shared.db import create_pool
from shared.events import new_event
from shared.housekeeping import purge_once
from shared.kafka_admin import ensure_topics
from shared.migrations import apply_migrations
from shared.outbox import OutboxRelay
from shared.runtime import SHARED_MIGRATIONS
from tests.integration.relay_runner import running_relay
from tests.support import Infra, eventually, read_topic

TOPIC = "relay.test.v1"
SCHEMA = "relaytest"


@pytest.fixture(scope="module")
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, infra.database_url, SCHEMA, [SHARED_MIGRATIONS])
    await ensure_topics(infra.kafka_bootstrap, (TOPIC,), partitions=3)
    pool = await create_pool(infra.database_url, SCHEMA)
    yield pool
    await pool.close()


def relay(infra: Infra) -> AbstractAsyncContextManager[OutboxRelay]:
    return running_relay(infra.database_url, SCHEMA, infra.kafka_bootstrap)


async def _enqueue(pool: asyncpg.Pool, complaint_id: uuid.UUID, count: int) -> list[str]:
    events = [
        new_event(
            "test.step",
            producer="relaytest",
            tenant_id=uuid.uuid4(),
            complaint_id=complaint_id,
            ticket_no="WC-T",
            correlation_id=uuid.uuid4(),
            payload={"step": step},
        )
        for step in range(count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue_many(conn, [(TOPIC, e) for e in events])
    return [str(e.event_id) for e in events]


async def _published(infra: Infra, complaint_id: uuid.UUID, count: int) -> list[dict]:
    async def probe() -> list[dict] | None:
        found = [
            json.loads(m.value or b"")
            for m in await read_topic(infra.kafka_bootstrap, TOPIC)
            if m.key == str(complaint_id).encode()
        ]
        return found if len(found) >= count else None

    return await eventually(probe)


async def test_one_leader_publishes_each_event_once_in_order(
    infra: Infra, pool: asyncpg.Pool
) -> None:
    complaint_id = uuid.uuid4()
    async with relay(infra) as first, relay(infra) as second:
        await eventually(lambda: _any_leader(first, second))
        ids = await _enqueue(pool, complaint_id, 120)
        published = await _published(infra, complaint_id, 120)
        assert [first.is_leader, second.is_leader].count(True) == 1
    assert [e["event_id"] for e in published] == ids  # once each, in order
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_a_standby_takes_over_when_the_leader_stops(infra: Infra, pool: asyncpg.Pool) -> None:
    complaint_id = uuid.uuid4()
    leading = relay(infra)
    leader = await leading.__aenter__()
    await eventually(lambda: _any_leader(leader))
    async with relay(infra) as standby:
        await asyncio.sleep(0.5)
        assert not standby.is_leader
        await leading.__aexit__(None, None, None)  # the leader's process goes away
        await eventually(lambda: _any_leader(standby))
        await _enqueue(pool, complaint_id, 5)
        assert len(await _published(infra, complaint_id, 5)) == 5


async def _any_leader(*relays: OutboxRelay) -> bool:
    return any(r.is_leader for r in relays)


async def test_housekeeping_drops_only_what_is_past_retention(
    infra: Infra, pool: asyncpg.Pool
) -> None:
    complaint_id = uuid.uuid4()
    async with relay(infra):
        await _enqueue(pool, complaint_id, 3)
        await _published(infra, complaint_id, 3)
    await pool.execute(
        "UPDATE outbox SET published_at = now() - interval '8 days' WHERE message_key = $1",
        str(complaint_id).encode(),
    )
    old, recent = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, processed_at) VALUES "
        "('t', $1, now() - interval '31 days'), ('t', $2, now())",
        old,
        recent,
    )
    pending_before = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")

    deleted = await purge_once(
        pool, outbox_retention=timedelta(days=7), inbox_retention=timedelta(days=30)
    )

    assert deleted[0] >= 3 and deleted[1] == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", recent) == 1
    assert (
        await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        == pending_before
    )


async def test_a_leader_that_has_published_everything_reports_no_backlog(
    infra: Infra, pool: asyncpg.Pool
) -> None:
    async with relay(infra) as leader:
        await eventually(lambda: _any_leader(leader))
        registry = leader._metrics.registry
        labels = {"service": SCHEMA}
        leader._metrics.outbox_pending.set(99)  # stale: what a round must overwrite
        complaint_id = uuid.uuid4()
        await _enqueue(pool, complaint_id, 3)
        await _published(infra, complaint_id, 3)

        async def reported_none() -> bool:
            return registry.get_sample_value("outbox_pending_events", labels) == 0

        await eventually(reported_none, within_s=10)
        assert registry.get_sample_value("outbox_oldest_pending_age_seconds", labels) == 0
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_a_standby_reports_the_backlog_while_another_holds_the_lead(
    infra: Infra, pool: asyncpg.Pool
) -> None:
    """The backlog alert must fire with no working leader: a standby reports it too."""
    holder = await asyncpg.connect(infra.database_url)  # a leader that publishes nothing
    await holder.execute("SELECT pg_advisory_lock(hashtext($1))", f"{SCHEMA}.outbox_relay")
    try:
        async with relay(infra) as standby:
            registry = standby._metrics.registry
            labels = {"service": SCHEMA}
            before = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            await _enqueue(pool, uuid.uuid4(), 3)

            async def reported() -> bool:
                pending = registry.get_sample_value("outbox_pending_events", labels)
                return pending == before + 3

            await eventually(reported, within_s=10)
            assert registry.get_sample_value("outbox_oldest_pending_age_seconds", labels) > 0
            assert registry.get_sample_value("outbox_relay_leader", labels) == 0
            assert not standby.is_leader
    finally:
        await holder.close()
