"""At-least-once delivery with idempotent effects, on a real broker and database:
a transient failure is redelivered (never dead-lettered), a redelivered event is applied
once, a persistent handler failure is dead-lettered with its reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.events import Envelope
from shared.kafka_admin import ensure_topics
from shared.migrations import apply_migrations
from shared.runtime import SHARED_MIGRATIONS, ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import dead_letter_topic
from tests.integration.events import as_bytes, uncontracted_event
from tests.support import Infra, eventually, produce, read_topic

TOPIC = "consumer.test.v1"
SCHEMA = "consumertest"


class FlakyHandler:
    """Fails with a transient error `failures` times per event, then records it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: dict[uuid.UUID, int] = {}

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        seen = self.attempts.get(envelope.event_id, 0)
        self.attempts[envelope.event_id] = seen + 1
        if envelope.payload.get("always_fails"):
            raise ValueError("this complaint can never be handled")
        if seen < self.failures:
            raise ConnectionResetError("database went away")
        await conn.execute("INSERT INTO effects (event_id) VALUES ($1)", envelope.event_id)


@pytest.fixture(scope="module")
async def handler(infra: Infra) -> AsyncIterator[FlakyHandler]:
    await asyncio.to_thread(apply_migrations, infra.database_url, SCHEMA, [SHARED_MIGRATIONS])
    await ensure_topics(infra.kafka_bootstrap, (TOPIC, dead_letter_topic(TOPIC)), partitions=2)
    settings = infra.settings(
        ServiceSettings, service_name=SCHEMA, consumer_max_attempts=2, consumer_retry_base_s=0.05
    )
    runtime = ServiceRuntime(settings, SCHEMA)
    flaky = FlakyHandler(failures=3)  # more than max_attempts: forces a seek-back
    runtime.on(TOPIC, flaky)
    await runtime.start()
    await runtime.pool.execute("CREATE TABLE IF NOT EXISTS effects (event_id uuid)")
    try:
        yield flaky
    finally:
        await runtime.stop()


async def _effects(infra: Infra, event_id: uuid.UUID) -> int:
    conn = await asyncpg.connect(infra.database_url)
    try:
        return await conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.effects WHERE event_id = $1", event_id
        )
    finally:
        await conn.close()


async def test_transient_failures_are_redelivered_until_applied_once(
    infra: Infra, handler: FlakyHandler
) -> None:
    event = uncontracted_event()
    await produce(infra.kafka_bootstrap, TOPIC, as_bytes(event), event.key)

    await eventually(lambda: _effects(infra, event.event_id))
    assert handler.attempts[event.event_id] == 4  # 2 in-process tries, seek back, 2 more
    assert await _effects(infra, event.event_id) == 1
    dead = await read_topic(infra.kafka_bootstrap, dead_letter_topic(TOPIC))
    assert not [m for m in dead if m.key == event.key]


async def test_a_redelivered_event_is_applied_once(infra: Infra, handler: FlakyHandler) -> None:
    handler.failures = 0
    event = uncontracted_event()
    for _ in range(3):
        await produce(infra.kafka_bootstrap, TOPIC, as_bytes(event), event.key)
    marker = uncontracted_event()
    await produce(infra.kafka_bootstrap, TOPIC, as_bytes(marker), event.key)  # same partition

    await eventually(lambda: _effects(infra, marker.event_id))
    assert await _effects(infra, event.event_id) == 1


async def test_a_persistent_failure_is_dead_lettered_and_the_partition_moves_on(
    infra: Infra, handler: FlakyHandler
) -> None:
    handler.failures = 0
    doomed, after = uncontracted_event(always_fails=True), uncontracted_event()
    await produce(infra.kafka_bootstrap, TOPIC, as_bytes(doomed), doomed.key)
    await produce(infra.kafka_bootstrap, TOPIC, as_bytes(after), doomed.key)

    await eventually(lambda: _effects(infra, after.event_id))
    dead = [
        m
        for m in await read_topic(infra.kafka_bootstrap, dead_letter_topic(TOPIC))
        if m.key == doomed.key
    ]
    assert len(dead) == 1 and dead[0].value == as_bytes(doomed)
    assert dead[0].headers["x-dlq-error-type"] == b"ValueError"
    assert dead[0].headers["x-dlq-error"] == b"this complaint can never be handled"
