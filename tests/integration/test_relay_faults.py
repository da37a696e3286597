"""The outbox relay through real faults: the broker killed and restarted under load, and
a leader paused (SIGSTOP) while a standby waits. Nothing lost, order kept per complaint
(each key's events first appear on the topic in the order they were written), and the
takeover bound measured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import asyncpg
import pytest

from shared import outbox
from shared.db import create_pool
from shared.kafka_admin import ensure_topics
from shared.migrations import apply_migrations
from shared.outbox import OutboxRelay
from shared.runtime import SHARED_MIGRATIONS
from tests.integration.events import uncontracted_event
from tests.integration.relay_runner import running_relay
from tests.support import ThrowawayKafka, eventually, read_topic, start_throwaway_kafka

TOPIC = "relayfault.test.v1"
SCHEMA = "relayfault"
KEYS = 40
LEADER_TIMEOUT_S = 4.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database_url, SCHEMA, [SHARED_MIGRATIONS])
    pool = await create_pool(database_url, SCHEMA)
    yield pool
    await pool.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[ThrowawayKafka]:
    """A broker this test may kill: not the session's."""
    with start_throwaway_kafka(tmp_path / "kafka") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, (TOPIC,)))
        yield broker


def relay(database_url: str, bootstrap: str) -> AbstractAsyncContextManager[OutboxRelay]:
    return running_relay(database_url, SCHEMA, bootstrap, LEADER_TIMEOUT_S)


class Writer:
    """Writes numbered events for KEYS complaints into the outbox, a few every 20 ms."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.keys = [uuid.uuid4() for _ in range(KEYS)]
        self.written: dict[str, list[int]] = defaultdict(list)

    async def write(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        step = 0
        while time.monotonic() < deadline:
            batch = []
            for key in self.keys[step % 4 :: 4]:
                seq = len(self.written[str(key)])
                self.written[str(key)].append(seq)
                batch.append((TOPIC, uncontracted_event("test.step", complaint_id=key, seq=seq)))
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                async with self.pool.acquire() as conn, conn.transaction():
                    await outbox.enqueue_many(conn, batch)
            step += 1
            await asyncio.sleep(0.02)

    def total(self) -> int:
        return sum(len(seqs) for seqs in self.written.values())


async def _pending(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")


async def _all_published(pool: asyncpg.Pool) -> bool:
    return await _pending(pool) == 0


async def _check_topic(bootstrap: str, writer: Writer) -> tuple[int, int]:
    """Asserts every written event is on the topic and each key's events first appear in
    the order written; returns (messages, copies beyond the first)."""
    first_seen: dict[str, list[int]] = defaultdict(list)
    messages = 0
    for message in await read_topic(bootstrap, TOPIC):
        messages += 1
        key = (message.key or b"").decode()
        seq = json.loads(message.value or b"")["payload"]["seq"]
        if seq not in first_seen[key]:
            first_seen[key].append(seq)
    expected = {key: seqs for key, seqs in writer.written.items() if seqs}
    assert {k: v for k, v in first_seen.items() if k in expected} == expected
    return messages, messages - writer.total()


async def test_a_broker_killed_under_load_loses_nothing_and_keeps_order(
    database_url: str, pool: asyncpg.Pool, own_broker: ThrowawayKafka
) -> None:
    await pool.execute("TRUNCATE outbox")
    writer = Writer(pool)
    async with relay(database_url, own_broker.bootstrap) as leader:
        await eventually(lambda: _is_leader(leader))
        load = asyncio.create_task(writer.write(14))
        await asyncio.sleep(3)
        await asyncio.to_thread(own_broker.kill)  # kill -9: no clean shutdown
        await asyncio.sleep(4)
        await asyncio.to_thread(own_broker.start)  # the same log directory
        await load
        await eventually(lambda: _all_published(pool), within_s=90, interval=0.2)
        failures = leader.publish_failures
    _, copies = await _check_topic(own_broker.bootstrap, writer)
    assert failures >= 1  # the kill hit sends in flight: they were retried
    print(f"\nbroker kill: {writer.total()} events, {failures} sends retried, {copies} copies")


async def test_a_paused_leader_loses_leadership_within_the_bound(
    database_url: str, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    await ensure_topics(kafka_bootstrap, (TOPIC,))
    await pool.execute("TRUNCATE outbox")
    runner = subprocess.Popen(  # noqa: ASYNC220 - a process of its own, to SIGSTOP
        [
            sys.executable,
            *("-m", "tests.integration.relay_runner"),
            *(database_url, SCHEMA, kafka_bootstrap, str(LEADER_TIMEOUT_S)),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    writer = Writer(pool)
    try:
        await eventually(lambda: _leader_pid(pool, runner.pid), within_s=30)
        async with relay(database_url, kafka_bootstrap) as standby:
            load = asyncio.create_task(writer.write(12))
            await asyncio.sleep(2)
            assert not standby.is_leader
            runner.send_signal(signal.SIGSTOP)  # a zombie leader: alive, holding its lock
            paused_at = time.monotonic()
            await eventually(lambda: _is_leader(standby), within_s=30, interval=0.05)
            takeover_s = time.monotonic() - paused_at
            await load
            runner.send_signal(signal.SIGCONT)  # it wakes up to a closed session
            await eventually(lambda: _all_published(pool), within_s=60, interval=0.2)
            await asyncio.sleep(1)  # what the old leader still had in hand goes out now
    finally:
        runner.send_signal(signal.SIGCONT)
        runner.kill()
        runner.wait(timeout=10)
    _, copies = await _check_topic(kafka_bootstrap, writer)
    # The session timeout, plus at most one standby poll and one connection attempt.
    assert takeover_s <= LEADER_TIMEOUT_S + 3
    print(
        f"\npaused leader: takeover after {takeover_s:.1f} s (timeout {LEADER_TIMEOUT_S} s), "
        f"{writer.total()} events, {copies} copies"
    )


async def _is_leader(instance: OutboxRelay) -> bool:
    return instance.is_leader


async def _leader_pid(pool: asyncpg.Pool, pid: int) -> bool:
    """Whether process `pid`'s relay holds the advisory lock (client_port tells whose)."""
    holder = await pool.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1",
        f"{SCHEMA}-relay",
    )
    return bool(holder) and _process_alive(pid)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
