"""Outbox relays for the relay tests: `running_relay` in the test's own process, and
`python -m tests.integration.relay_runner DATABASE_URL SCHEMA BOOTSTRAP LEADER_TIMEOUT_S`
in a process of its own, for the failover test to SIGSTOP."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaProducer

from shared.metrics import ServiceMetrics
from shared.outbox import OutboxRelay


def idempotent_producer(bootstrap: str) -> AIOKafkaProducer:
    """The producer the services' relays use (shared.kafka.make_producer's settings)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )


def fault_test_relay(
    database_url: str, schema: str, producer: AIOKafkaProducer, leader_timeout_s: float
) -> OutboxRelay:
    """A relay with a short poll and small batches, so a fault lands between batches."""
    return OutboxRelay(
        database_url=database_url,
        schema=schema,
        producer=producer,
        metrics=ServiceMetrics(schema),
        poll_interval_s=0.1,
        batch_size=50,
        leader_timeout_s=leader_timeout_s,
    )


@contextlib.asynccontextmanager
async def running_relay(
    database_url: str, schema: str, bootstrap: str, leader_timeout_s: float = 10.0
) -> AsyncIterator[OutboxRelay]:
    """A relay competing for leadership while the block runs; stopped on the way out."""
    producer = idempotent_producer(bootstrap)
    await producer.start()
    instance = fault_test_relay(database_url, schema, producer, leader_timeout_s)
    task = asyncio.create_task(instance.run_forever())
    try:
        yield instance
    finally:
        # Cancelled again until it stops, and said so: a relay left running would compete
        # with the next test's for leadership (one full `make test` run hung here once,
        # with the relay still polling after its cancellation).
        task.cancel()
        while not (await asyncio.wait({task}, timeout=10))[0]:
            print("\nthe relay outlived its cancellation: cancelled again")
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()


async def main(database_url: str, schema: str, bootstrap: str, leader_timeout_s: float) -> None:
    producer = idempotent_producer(bootstrap)
    await producer.start()
    await fault_test_relay(database_url, schema, producer, leader_timeout_s).run_forever()


if __name__ == "__main__":
    url, schema, bootstrap, timeout = sys.argv[1:5]
    asyncio.run(main(url, schema, bootstrap, float(timeout)))
