"""The baseline: the same PostgreSQL rows and Kafka hops per complaint as the pipeline's
critical path, done by a bare asyncio loop with no framework, no validation, no
classification and no HTTP, and batched as a careful engineer would by hand.

Intake: per complaint (each arrives as a request of its own), 1 transaction inserting its
row, then 1 publish; 32 complaints in flight. Then three consuming stages (triage,
resolution, notifier), each of which, per batch that `getmany` returns: 1 transaction
inserting the batch's handler rows (one per complaint, executemany), publishes the whole
batch to the next topic (all sent, then every ack awaited), 1 transaction inserting the
relay's bookkeeping rows (one per complaint), then commits the offsets. The last stage's
publish stands for the webhook. 4 hops and 7 rows per complaint, as before; the
transactions per complaint are 1 + 6 / batch size.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from shared.kafka_admin import ensure_topics

STAGES = 3
BATCH = 500  # records per getmany: bounds a transaction and a burst of publishes
SCHEMA = "bench_baseline"


async def run_baseline(database_url: str, bootstrap: str, complaints: int) -> float:
    """Complaints per second through the bare pipeline."""
    run = uuid.uuid4().hex[:8]
    topics = tuple(f"bench.baseline.{run}.{i}" for i in range(STAGES + 2))
    await ensure_topics(bootstrap, topics, partitions=6)
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=12)
    assert pool is not None
    await pool.execute(
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}; "
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.work (id uuid, stage int, body bytea)"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    done = asyncio.Event()
    finished = 0

    insert = f"INSERT INTO {SCHEMA}.work VALUES ($1, $2, $3)"

    async def transaction(stage: int, bodies: list[bytes]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(insert, [(uuid.uuid4(), stage, body) for body in bodies])

    async def handle_batch(stage: int, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        await transaction(stage, [record.value or b"" for record in records])
        sent = [
            await producer.send(topics[stage + 1], record.value, key=record.key)
            for record in records
        ]
        await asyncio.gather(*sent)  # every publish acknowledged by the broker
        await transaction(stage, [b"relay"] * len(records))

    async def stage_loop(stage: int) -> None:
        nonlocal finished
        consumer = AIOKafkaConsumer(
            topics[stage],
            bootstrap_servers=bootstrap,
            group_id=f"baseline-{run}-{stage}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=30,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
                records = [record for batch in batches.values() for record in batch]
                if not records:
                    continue
                await handle_batch(stage, records)
                await consumer.commit()
                if stage == STAGES:
                    finished += len(records)
                    if finished >= complaints:
                        done.set()
        finally:
            await consumer.stop()

    async def intake(i: int) -> None:
        body = f'{{"n": {i}}}'.encode()
        await transaction(0, [body])
        await producer.send_and_wait(topics[1], body, key=uuid.uuid4().bytes)

    semaphore = asyncio.Semaphore(32)

    async def bounded(i: int) -> None:
        async with semaphore:
            await intake(i)

    stages = [asyncio.create_task(stage_loop(s)) for s in range(1, STAGES + 1)]
    try:
        await asyncio.sleep(4)  # let every consumer join its group before the clock starts
        started = time.perf_counter()
        await asyncio.gather(*(bounded(i) for i in range(complaints)))
        finished_all = asyncio.create_task(done.wait())
        # A stage that fails ends the wait at once instead of after the timeout.
        await asyncio.wait([finished_all, *stages], timeout=300, return_when="FIRST_COMPLETED")
        finished_all.cancel()
        for stage in stages:
            if stage.done() and stage.exception() is not None:
                raise RuntimeError("a baseline stage failed") from stage.exception()
        if not done.is_set():
            raise TimeoutError(f"baseline: {finished} of {complaints} through in 300 s")
        return complaints / (time.perf_counter() - started)
    finally:
        for task in stages:
            task.cancel()
        await asyncio.gather(*stages, return_exceptions=True)
        await producer.stop()
        await pool.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await pool.close()
        await _delete_topics(bootstrap, topics)


async def _delete_topics(bootstrap: str, topics: tuple[str, ...]) -> None:
    """Each run's topics are its own: leave none behind in the stack's broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    except KafkaError as exc:
        print(f"baseline: topics not deleted ({exc!r})")
    finally:
        await admin.close()
