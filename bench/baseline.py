"""The baseline: the same PostgreSQL transactions and Kafka hops per complaint as the
pipeline's critical path, done by a bare asyncio loop with no framework, no validation,
no classification and no HTTP.

Per complaint: intake (1 transaction, 1 publish), then three consuming stages (triage,
resolution, notifier), each doing 2 transactions (the handler's, and the relay's
bookkeeping) and publishing to the next topic; the last stage's publish stands for the
webhook. 4 hops, 7 transactions.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.kafka_admin import ensure_topics

STAGES = 3
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

    async def transaction(stage: int, body: bytes) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {SCHEMA}.work VALUES ($1, $2, $3)", uuid.uuid4(), stage, body
            )

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
            async for record in consumer:
                await transaction(stage, record.value or b"")
                await producer.send(topics[stage + 1], record.value, key=record.key)
                await transaction(stage, b"relay")
                await consumer.commit()
                if stage == STAGES:
                    finished += 1
                    if finished >= complaints:
                        done.set()
        finally:
            await consumer.stop()

    stages = [asyncio.create_task(stage_loop(s)) for s in range(1, STAGES + 1)]
    await asyncio.sleep(4)  # let every consumer join its group before the clock starts
    started = time.perf_counter()

    async def intake(i: int) -> None:
        body = f'{{"n": {i}}}'.encode()
        await transaction(0, body)
        await producer.send_and_wait(topics[1], body, key=uuid.uuid4().bytes)

    semaphore = asyncio.Semaphore(32)

    async def bounded(i: int) -> None:
        async with semaphore:
            await intake(i)

    await asyncio.gather(*(bounded(i) for i in range(complaints)))
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    for task in stages:
        task.cancel()
    await asyncio.gather(*stages, return_exceptions=True)
    await producer.stop()
    await pool.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    await pool.close()
    return complaints / elapsed
