"""A consumer that dies inside aiokafka is noticed and restarted.

The real fault is `make chaos`'s Kafka restart under uvloop (aio-libs/aiokafka#1038),
which is not reproducible on demand; here the consumer's group coordination task is
replaced by one that ended with that error, which is the state aiokafka is left in.
On the real broker: /readyz reports the consumer, the watchdog restarts its subscriber,
and the next event is consumed."""

from __future__ import annotations

import asyncio
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
from tests.support import Infra, eventually, produce

TOPIC = "watchdog.test.v1"
SCHEMA = "watchdogtest"


async def _record(conn: asyncpg.Connection, envelope: Envelope) -> None:
    await conn.execute("INSERT INTO effects (event_id) VALUES ($1)", envelope.event_id)


@pytest.fixture(scope="module")
async def runtime(infra: Infra) -> AsyncIterator[ServiceRuntime]:
    await asyncio.to_thread(apply_migrations, infra.database_url, SCHEMA, [SHARED_MIGRATIONS])
    await ensure_topics(infra.kafka_bootstrap, (TOPIC, dead_letter_topic(TOPIC)))
    service = ServiceRuntime(infra.settings(ServiceSettings, service_name=SCHEMA), SCHEMA)
    service.on(TOPIC, _record)
    await service.start()
    await service.pool.execute("CREATE TABLE effects (event_id uuid)")
    try:
        yield service
    finally:
        await service.stop()


async def _applied(runtime: ServiceRuntime, event: Envelope) -> bool:
    return bool(
        await runtime.pool.fetchval(
            "SELECT count(*) FROM effects WHERE event_id = $1", event.event_id
        )
    )


async def _crashed() -> None:
    raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")


async def test_a_consumer_that_died_in_aiokafka_is_reported_and_restarted(
    infra: Infra, runtime: ServiceRuntime
) -> None:
    before = uncontracted_event("test.watchdog")
    await produce(infra.kafka_bootstrap, TOPIC, as_bytes(before), before.key)
    await eventually(lambda: _applied(runtime, before))

    [subscriber] = runtime.broker.subscribers
    coordinator = subscriber.consumer._coordinator
    coordinator._coordination_task.cancel()
    coordinator._coordination_task = asyncio.ensure_future(_crashed())
    await asyncio.sleep(0)
    assert (await runtime.readiness())["consumer"] is False

    async def restarted() -> bool:
        return runtime.consumer_restarts == 1

    # The watchdog notices and restarts the subscriber (its fetcher alone may still hand
    # over a record or two meanwhile: that is not what is tested here).
    await eventually(restarted, within_s=60)
    after = uncontracted_event("test.watchdog")
    await produce(infra.kafka_bootstrap, TOPIC, as_bytes(after), after.key)
    await eventually(lambda: _applied(runtime, after), within_s=60)  # by the new one
    assert runtime.consumer_restarts == 1
    assert (await runtime.readiness())["consumer"] is True
