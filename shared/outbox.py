"""The outbox: events written in the same transaction as the state change, then relayed.

One relay per service is the leader (a session-level advisory lock on a dedicated
connection), so per-complaint order holds. LISTEN/NOTIFY wakes it; a poll covers misses.
Rows are marked published only after the broker acknowledged them.

Each record carries headers taken from its stored envelope: `correlation_id` (the id the
complaint's `POST` started, followed to the webhook), `event_id` and `event_type`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Protocol

import asyncpg
import structlog

from shared import jsonutil
from shared.db import connect
from shared.deferred_inserts import insert_many
from shared.events import Envelope
from shared.logging import get_logger
from shared.metrics import ServiceMetrics
from shared.wakeup import wait_for_wakeup

log = get_logger(__name__)


async def enqueue(conn: asyncpg.Connection, topic: str, event: Envelope) -> None:
    await enqueue_many(conn, [(topic, event)])


def outbox_row(topic: str, event: Envelope) -> tuple[uuid.UUID, str, bytes, bytes]:
    """(event_id, topic, message_key, message): the outbox columns, for callers that fold
    the insert into a statement of their own."""
    return event.event_id, topic, event.key, jsonutil.dumps(event.to_json_dict())


async def enqueue_many(conn: asyncpg.Connection, items: Iterable[tuple[str, Envelope]]) -> None:
    """In a consumer's transaction, written with the batch's other events before the
    commit (shared.deferred_inserts); elsewhere at once."""
    await insert_many(
        conn,
        "INSERT INTO outbox (event_id, topic, message_key, message) VALUES ($1, $2, $3, $4)",
        [outbox_row(topic, event) for topic, event in items],
    )


class Producer(Protocol):
    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[object]: ...


# Envelope fields copied into Kafka headers (and bound to the relay's log lines).
HEADER_FIELDS = ("correlation_id", "event_id", "event_type")
_LOG_FIELDS = ("correlation_id", "event_id", "event_type", "ticket_no")


def _story(message: bytes) -> dict[str, str]:
    """The stored envelope's identifiers (never its payload); {} if it is not an object."""
    try:
        envelope: Any = jsonutil.loads(message)
    except ValueError:
        return {}
    if not isinstance(envelope, dict):
        return {}
    return {k: str(envelope[k]) for k in _LOG_FIELDS if envelope.get(k) is not None}


def record_headers(story: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, story[name].encode()) for name in HEADER_FIELDS if name in story]


class OutboxRelay:
    """Publishes the outbox in order per message key, once leader.

    Leadership is a session-level advisory lock on a dedicated connection whose session the
    server ends after `leader_timeout_s` idle or busy (see shared.db.connect): a leader that
    hangs or is paused loses the lock within that bound, and the relay keeps its session
    busier than that while it leads. Every instance, leader or not, reports the backlog.
    """

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        producer: Producer,
        metrics: ServiceMetrics,
        service: str | None = None,
        poll_interval_s: float = 0.5,
        batch_size: int = 500,
        leader_timeout_s: float = 10.0,
    ) -> None:
        self._database_url = database_url
        self._schema = schema
        self._producer = producer
        self._metrics = metrics
        self._service = service or schema
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._leader_timeout_s = leader_timeout_s
        self._wakeup = asyncio.Event()
        self.is_leader = False
        self.publish_failures = 0  # rows the broker did not acknowledge (sent again later)

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
                # Leadership went with the session; not claimed through the backoff.
                self._set_leader(False)
                log.warning("outbox_relay_error", schema=self._schema, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._set_leader(False)

    def _set_leader(self, leader: bool) -> None:
        self.is_leader = leader
        self._metrics.outbox_relay_leader.set(1 if leader else 0)

    async def _run_once(self) -> None:
        conn = await connect(
            self._database_url, self._schema, session_timeout_s=self._leader_timeout_s
        )
        try:
            # Standby: ask for the lock often enough to keep the session alive, and report
            # the backlog, so an alert on it fires even when no leader is left.
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"{self._schema}.outbox_relay"
            ):
                await self._report_backlog(conn)
                await asyncio.sleep(min(self._poll_interval_s * 4, self._leader_timeout_s / 3))
            self._set_leader(True)
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
        await wait_for_wakeup(self._wakeup, min(self._poll_interval_s, self._leader_timeout_s / 3))
        self._wakeup.clear()

    async def _report_backlog(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(
            "SELECT count(*) AS pending, "
            "coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_s "
            "FROM outbox WHERE published_at IS NULL"
        )
        self._metrics.outbox_pending.set(row["pending"])
        self._metrics.outbox_oldest_pending_age.set(float(row["oldest_s"]))

    async def publish_pending(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(
            "SELECT id, topic, message_key, message FROM outbox "
            "WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if not rows:
            self._metrics.outbox_pending.set(0)
            self._metrics.outbox_oldest_pending_age.set(0)
            return 0
        # One chain per message key: a key's next row is sent only once the broker has
        # acknowledged the one before it, so a failed send can never be overtaken by a
        # later event of the same complaint. Different keys go out concurrently.
        chains: dict[bytes, list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            chains[bytes(row["message_key"])].append(row)
        acked: list[int] = []

        async def send_in_order(chain: list[asyncpg.Record]) -> None:
            for row in chain:
                story = _story(row["message"])
                with structlog.contextvars.bound_contextvars(service=self._service, **story):
                    try:
                        sent = await self._producer.send(
                            row["topic"],
                            value=row["message"],
                            key=row["message_key"],
                            headers=record_headers(story),
                        )
                        await sent
                    except Exception as exc:  # the rest of this chain waits for the next round
                        log.warning("outbox_publish_failed", topic=row["topic"], error=repr(exc))
                        return
                    log.info("event_published", topic=row["topic"])
                acked.append(row["id"])

        # Bounded well inside the session timeout: the leader's session must not sit idle
        # past it while the broker is slow, or the rows it did publish go out twice.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._leader_timeout_s / 2):
                await asyncio.gather(*(send_in_order(chain) for chain in chains.values()))
        failed = len(rows) - len(acked)
        if acked:
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", acked
            )
        if failed or len(rows) == self._batch_size:
            await self._report_backlog(conn)
        else:
            # Every row there was is published: no count needed for a backlog of none.
            # (A row committed since then wakes the next round, which reports it.)
            self._metrics.outbox_pending.set(0)
            self._metrics.outbox_oldest_pending_age.set(0)
        if failed:
            self.publish_failures += failed
            raise RuntimeError(f"broker did not acknowledge {failed} outbox rows")
        return len(acked)
