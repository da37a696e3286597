"""The outbox: events written in the same transaction as the state change, then relayed.

One relay per service is the leader (a session-level advisory lock on a dedicated
connection), so per-complaint order holds. LISTEN/NOTIFY wakes it; a poll covers misses.
Rows are marked published only after the broker acknowledged them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from typing import Protocol

import asyncpg

from shared import jsonutil
from shared.db import connect
from shared.events import Envelope
from shared.logging import get_logger
from shared.metrics import ServiceMetrics

log = get_logger(__name__)


async def enqueue(conn: asyncpg.Connection, topic: str, event: Envelope) -> None:
    await enqueue_many(conn, [(topic, event)])


def outbox_row(topic: str, event: Envelope) -> tuple[uuid.UUID, str, bytes, bytes]:
    """(event_id, topic, message_key, message): the outbox columns, for callers that fold
    the insert into a statement of their own."""
    return event.event_id, topic, event.key, jsonutil.dumps(event.to_json_dict())


async def enqueue_many(conn: asyncpg.Connection, items: Iterable[tuple[str, Envelope]]) -> None:
    rows = [outbox_row(topic, event) for topic, event in items]
    if rows:
        await conn.executemany(
            "INSERT INTO outbox (event_id, topic, message_key, message) VALUES ($1, $2, $3, $4)",
            rows,
        )


class Producer(Protocol):
    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[object]: ...


class OutboxRelay:
    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        producer: Producer,
        metrics: ServiceMetrics,
        poll_interval_s: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        self._database_url = database_url
        self._schema = schema
        self._producer = producer
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._wakeup = asyncio.Event()
        self.is_leader = False

    async def run_forever(self) -> None:
        """Compete for leadership and relay while leader; survive database restarts."""
        backoff = 0.2
        while True:
            try:
                await self._run_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_relay_error", schema=self._schema, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.is_leader = False

    async def _run_once(self) -> None:
        conn = await connect(self._database_url, self._schema)
        try:
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"{self._schema}.outbox_relay"
            ):
                await asyncio.sleep(self._poll_interval_s * 4)
            self.is_leader = True
            log.info("outbox_relay_leader", schema=self._schema)
            await conn.add_listener(f"{self._schema}_outbox", self._on_notify)
            while not conn.is_closed():
                published = await self.publish_pending(conn)
                if published < self._batch_size:
                    await self._wait_for_work()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    def _on_notify(self, *_args: object) -> None:
        self._wakeup.set()

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self._poll_interval_s)
        self._wakeup.clear()

    async def publish_pending(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(
            "SELECT id, topic, message_key, message FROM outbox "
            "WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if not rows:
            self._metrics.outbox_pending.set(0)
            return 0
        futures = [
            await self._producer.send(r["topic"], value=r["message"], key=r["message_key"])
            for r in rows
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        # Mark only the acknowledged prefix: a failed row is retried with all after it,
        # which keeps per-complaint order (consumers' inboxes absorb the repeats).
        acked: list[int] = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("outbox_publish_failed", topic=row["topic"], error=repr(result))
                break
            acked.append(row["id"])
        if acked:
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", acked
            )
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        self._metrics.outbox_pending.set(pending)
        if len(acked) < len(rows):
            raise RuntimeError("broker did not acknowledge every outbox row")
        return len(acked)
