"""Offsets under control through a real database outage.

The consumer takes batches that span all six partitions of a topic; PostgreSQL (a
cluster this module owns) is stopped for longer than the in-process retries last, while
events keep arriving, then started again. Counted in SQL: every event's effect exactly
once, so no offset was committed past a record whose effect did not commit, on any
partition of a failed batch. The seek-backs (batch nacks) and the redeliveries the inbox
absorbed are counted from the consumer's own metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from shared.events import Envelope
from shared.kafka_admin import ensure_topics
from shared.migrations import apply_migrations
from shared.runtime import SHARED_MIGRATIONS, ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import dead_letter_topic
from tests.integration.events import as_bytes, uncontracted_event
from tests.support import (
    ThrowawayPostgres,
    create_database,
    eventually,
    read_topic,
    throwaway_postgres,
)

TOPIC = "outage.test.v1"
SCHEMA = "outagetest"
EVENTS_BEFORE, EVENTS_DURING, EVENTS_AFTER = 150, 300, 150
OUTAGE_S = 8  # the in-process retries give up after about 0.3 s


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as own:
        yield own


@pytest.fixture(scope="module")
def database_url(cluster: ThrowawayPostgres) -> str:
    return create_database(cluster.admin_url, "outage")


async def _record_effect(conn: asyncpg.Connection, envelope: Envelope) -> None:
    await conn.execute(
        "INSERT INTO effects (event_id, seq) VALUES ($1, $2)",
        envelope.event_id,
        envelope.payload["seq"],
    )


@pytest.fixture(scope="module")
async def runtime(database_url: str, kafka_bootstrap: str) -> AsyncIterator[ServiceRuntime]:
    await asyncio.to_thread(apply_migrations, database_url, SCHEMA, [SHARED_MIGRATIONS])
    await ensure_topics(kafka_bootstrap, (TOPIC, dead_letter_topic(TOPIC)), partitions=6)
    conn = await asyncpg.connect(database_url)
    await conn.execute(f"CREATE TABLE {SCHEMA}.effects (event_id uuid NOT NULL, seq int)")
    await conn.close()
    settings = ServiceSettings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        service_name=SCHEMA,
        log_format="console",
        consumer_max_attempts=2,
        consumer_retry_base_s=0.1,
        kafka_max_batch=100,
    )
    service = ServiceRuntime(settings, SCHEMA)
    service.on(TOPIC, _record_effect)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def _events(count: int, first_seq: int) -> list[Envelope]:
    return [uncontracted_event("test.outage", seq=first_seq + n) for n in range(count)]


async def _publish(producer: AIOKafkaProducer, events: list[Envelope]) -> None:
    sent = [await producer.send(TOPIC, as_bytes(e), key=e.key) for e in events]
    await asyncio.gather(*sent)


async def _effect_counts(database_url: str) -> tuple[int, int]:
    """(effects, distinct events with an effect); raises while the database is down."""
    conn = await asyncpg.connect(database_url, timeout=2)
    try:
        row = await conn.fetchrow(
            f"SELECT count(*) AS effects, count(DISTINCT event_id) AS events FROM {SCHEMA}.effects"
        )
        return row["effects"], row["events"]
    finally:
        await conn.close()


def _consumed(runtime: ServiceRuntime, outcome: str) -> float:
    labels = {"service": SCHEMA, "topic": TOPIC, "outcome": outcome}
    return runtime.metrics.registry.get_sample_value("events_consumed_total", labels) or 0.0


async def test_a_database_outage_loses_no_effect_and_applies_none_twice(
    cluster: ThrowawayPostgres, database_url: str, kafka_bootstrap: str, runtime: ServiceRuntime
) -> None:
    total = EVENTS_BEFORE + EVENTS_DURING + EVENTS_AFTER
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await _publish(producer, _events(EVENTS_BEFORE, 0))
        await eventually(
            lambda: _seen_at_least(database_url, EVENTS_BEFORE // 3), within_s=60, interval=0.05
        )
        # The database goes away while the consumer is in the middle of the backlog.
        await asyncio.to_thread(cluster.stop, "fast")
        down_at = time.monotonic()
        await _publish(producer, _events(EVENTS_DURING, EVENTS_BEFORE))
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        retried_during_outage = _consumed(runtime, "retried")
        await asyncio.to_thread(cluster.start)
        await _publish(producer, _events(EVENTS_AFTER, EVENTS_BEFORE + EVENTS_DURING))
    finally:
        await producer.stop()

    await eventually(lambda: _seen_at_least(database_url, total), within_s=120, interval=0.2)
    await asyncio.sleep(2)  # anything applied twice would show up by now
    assert await _effect_counts(database_url) == (total, total)
    # The fault hit the window: batches were nacked (seek back) while the database was down.
    assert retried_during_outage >= 1
    # A commit cut off by the shutdown can succeed unseen: its redelivery is a duplicate.
    assert _consumed(runtime, "processed") + _consumed(runtime, "duplicate") >= total
    # Every partition carried events, so the failed batches spanned them all.
    carried = {m.partition for m in await read_topic(kafka_bootstrap, TOPIC)}
    assert carried == set(range(6))
    assert not await read_topic(kafka_bootstrap, dead_letter_topic(TOPIC))
    print(
        f"\noutage {OUTAGE_S}s: {total} events, seek-backs {retried_during_outage:.0f}, "
        f"redeliveries absorbed by the inbox {_consumed(runtime, 'duplicate'):.0f}"
    )


async def _seen_at_least(database_url: str, count: int) -> bool:
    try:
        effects, _ = await _effect_counts(database_url)
    except (OSError, asyncpg.PostgresError):
        return False
    return effects >= count
