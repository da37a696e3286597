"""EventConsumer: the records of one fetched batch in one Postgres transaction (inbox +
effects + outbox of every record, each partition's in order), one transaction per record
when a batch cannot commit.

- The batch path is the fast path: one round trip claims every event id in the inbox,
  each new event's handler runs on the same connection, one commit. If anything in it
  fails (a poison message, a deadlock with another partition's batch, a database
  outage), nothing of it is kept and its records are handled again one at a time, below,
  where each failure gets its own retries, dead letter or seek-back.

- Inserts that nothing in the transaction reads back (the outbox's events above all) are
  written together just before its commit, one `executemany` per statement instead of
  one round trip per event (shared.deferred_inserts).

- A service may open a `TransactionScope` around the handlers of each transaction (a
  batch, or one record): it sees the transaction's new events before the first handler
  and writes what the handlers buffered before the commit, so one statement can carry
  what the events of a whole batch change (intake's read model does).

- A topic's event types its handler does not act on (`ServiceRuntime.on(...,
  event_types=...)`) are passed over by the record's `event_type` header before any
  parsing, inbox row or transaction, and counted with outcome `ignored`.

- A message that can never succeed (bad JSON, unknown schema version, a handler bug that
  persists across bounded retries) goes to `<topic>.dlq` untouched, with headers saying
  why, and the partition moves on.
- A transient failure (database or broker unreachable) is never dead-lettered: it is
  retried with backoff, then raised so the broker integration seeks back and redelivers.
- Every line logged while an event is handled (by us, the handler or a library) carries
  `service`, `event_id`, `event_type`, `ticket_no` and `correlation_id`: the record's
  `correlation_id` header (set by the outbox relay), else the envelope's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import asyncpg
import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from shared.deferred_inserts import deferred_inserts
from shared.events import Envelope, parse_envelope
from shared.inbox import claim, claim_many
from shared.logging import get_logger
from shared.masking import mask
from shared.metrics import ServiceMetrics
from shared.topics import dead_letter_topic

log = get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Envelope], Awaitable[None]]

# Opened after the inbox claimed a transaction's events, around their handlers, on the
# transaction's connection with the events to be applied; it may write on exit (before the
# commit). An exception inside it rolls the whole transaction back.
TransactionScope = Callable[
    [asyncpg.Connection, Sequence[Envelope]], AbstractAsyncContextManager[object]
]


def no_scope(
    _conn: asyncpg.Connection, _envelopes: Sequence[Envelope]
) -> AbstractAsyncContextManager[None]:
    """The default scope: nothing around the handlers."""
    return contextlib.nullcontext()


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. "cannot switch to state": the connection died mid-call
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    KafkaError,
)


class Record(Protocol):
    """The parts of an aiokafka ConsumerRecord this module reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


def header(record: Record, name: str) -> bytes | None:
    """The last value of header `name` on `record`, if any."""
    found = None
    for key, value in record.headers or ():
        if key == name:
            found = value
    return found


def correlation_id(record: Record, envelope: Envelope) -> str:
    """The `correlation_id` header when it is a UUID, else the envelope's."""
    raw = header(record, "correlation_id")
    if raw:
        try:
            return str(uuid.UUID(raw.decode()))
        except (UnicodeDecodeError, ValueError):
            pass
    return str(envelope.correlation_id)


class DeadLetterProducer(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]
    ) -> Any: ...


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        pool: asyncpg.Pool,
        producer: DeadLetterProducer,
        metrics: ServiceMetrics,
        max_attempts: int = 5,
        retry_base_s: float = 0.2,
        scope: TransactionScope = no_scope,
        event_types: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._service = service
        self._scope = scope
        self._event_types = dict(event_types or {})
        self._pool = pool
        self._producer = producer
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._retry_base_s = retry_base_s

    def note_taken(self, group: str, partitions: Sequence[Sequence[Record]]) -> None:
        """Publishes how far this process has taken each partition of a fetched batch
        (kafka_consumer_fetched_offset), before the batch is handled."""
        for records in partitions:
            last = records[-1]
            self._metrics.kafka_consumer_fetched_offset.labels(
                group, last.topic, str(last.partition)
            ).set(last.offset + 1)

    async def handle_batch(
        self,
        partitions: Sequence[Sequence[Record]],
        handler_for: Callable[[str], Handler],
    ) -> None:
        """Handle a fetched batch: each partition's records in order.

        One transaction for the whole batch when it commits. Its partitions run one after
        the other in that transaction, not concurrently in several: concurrent
        transactions that each hold the locks of many events (a case row, an incident
        counter) deadlock as soon as two take the same locks in different orders. If it
        cannot commit, each partition falls back to one transaction per record,
        partitions concurrently (the per-record path decides retries and dead letters);
        the first exception is raised once every partition is done (seek back)."""
        partitions = [kept for p in partitions if (kept := self._acted_on(p))]
        records = [record for partition in partitions for record in partition]
        if len(records) > 1:
            try:
                await self._apply_batch(records, handler_for)
                return
            except Exception as exc:
                log.info(
                    "event_batch_fell_back",
                    service=self._service,
                    records=len(records),
                    error_type=type(exc).__name__,
                )

        async def one_by_one(partition: Sequence[Record]) -> None:
            for record in partition:
                await self.handle(record, handler_for(record.topic))

        outcomes = await asyncio.gather(
            *(one_by_one(p) for p in partitions), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _acted_on(self, records: Sequence[Record]) -> list[Record]:
        """The records whose handler acts on their type: a topic's other types (by the
        `event_type` header the outbox relay sets) are counted as `ignored` and passed
        over. A record without the header is kept: parsing decides."""
        if not records or records[0].topic not in self._event_types:
            return list(records)
        wanted = self._event_types[records[0].topic]
        kept = []
        for record in records:
            event_type = header(record, "event_type")
            if event_type is None or event_type.decode(errors="replace") in wanted:
                kept.append(record)
            else:
                self._count(record.topic, "ignored")
        return kept

    async def _apply_batch(
        self, records: Sequence[Record], handler_for: Callable[[str], Handler]
    ) -> None:
        started = time.perf_counter()
        envelopes = [parse_envelope(record.value or b"") for record in records]
        async with self._pool.acquire() as conn, conn.transaction():
            new = await claim_many(conn, self._service, [e.event_id for e in envelopes])
            # Per record; an id seen twice (a redelivery within the batch) is applied once.
            applied: list[bool] = []
            for envelope in envelopes:
                applied.append(envelope.event_id in new)
                new.discard(envelope.event_id)
            todo = [
                (record, envelope)
                for record, envelope, was_new in zip(records, envelopes, applied, strict=True)
                if was_new
            ]
            async with (
                deferred_inserts(conn),
                self._scope(conn, [envelope for _, envelope in todo]),
            ):
                for record, envelope in todo:
                    with self._event_context(record, envelope):
                        await handler_for(record.topic)(conn, envelope)
        elapsed = time.perf_counter() - started
        for record, envelope, was_applied in zip(records, envelopes, applied, strict=True):
            self._metrics.event_handling_seconds.labels(self._service, record.topic).observe(
                elapsed / len(records)
            )
            with self._event_context(record, envelope):
                outcome = "processed" if was_applied else "duplicate"
                self._handled(record, outcome, attempt=1, batch=len(records))

    def _handled(self, record: Record, outcome: str, *, attempt: int, **extra: Any) -> None:
        """Count and log one record the inbox has applied or recognised."""
        self._count(record.topic, outcome)
        log.info(
            "event_handled",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            outcome=outcome,
            attempt=attempt,
            **extra,
        )

    def _event_context(self, record: Record, envelope: Envelope) -> Any:
        return structlog.contextvars.bound_contextvars(
            service=self._service,
            event_id=str(envelope.event_id),
            event_type=envelope.event_type,
            ticket_no=envelope.ticket_no,
            correlation_id=correlation_id(record, envelope),
        )

    async def handle(self, record: Record, handler: Handler) -> None:
        started = time.perf_counter()
        topic = record.topic
        try:
            try:
                envelope = parse_envelope(record.value or b"")
            except (ValidationError, ValueError) as exc:
                with structlog.contextvars.bound_contextvars(service=self._service):
                    await self._dead_letter(record, exc, attempts=1)
                return
            with self._event_context(record, envelope):
                await self._apply_with_retries(record, envelope, handler)
        finally:
            self._metrics.event_handling_seconds.labels(self._service, topic).observe(
                time.perf_counter() - started
            )

    async def _apply_with_retries(
        self, record: Record, envelope: Envelope, handler: Handler
    ) -> None:
        topic = record.topic
        for attempt in range(1, self._max_attempts + 1):
            try:
                applied = await self._apply(envelope, handler)
            except TRANSIENT_ERRORS as exc:
                log.warning("event_transient_failure", attempt=attempt, error=repr(exc))
                if attempt == self._max_attempts:
                    self._count(topic, "retried")
                    raise  # seek back: redelivered once the dependency is back
            except Exception as exc:
                log.warning("event_handler_failed", attempt=attempt, error=repr(exc))
                if attempt == self._max_attempts:
                    if not await self._database_reachable():
                        # Whatever the error said, the database is gone: not a poison
                        # message. Seek back and try again once it is back.
                        self._count(topic, "retried")
                        raise
                    await self._dead_letter(record, exc, attempts=attempt)
                    return
            else:
                self._handled(record, "processed" if applied else "duplicate", attempt=attempt)
                return
            await asyncio.sleep(self._retry_base_s * 2 ** (attempt - 1))

    async def _database_reachable(self) -> bool:
        try:
            async with asyncio.timeout(2):
                return bool(await self._pool.fetchval("SELECT true"))
        except Exception:
            return False

    async def _apply(self, envelope: Envelope, handler: Handler) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim(conn, self._service, envelope.event_id):
                return False
            async with deferred_inserts(conn), self._scope(conn, [envelope]):
                await handler(conn, envelope)
            return True

    async def _dead_letter(self, record: Record, exc: BaseException, *, attempts: int) -> None:
        headers = [
            *(record.headers or ()),
            ("x-dlq-error", mask(str(exc))[:1000].encode()),
            ("x-dlq-error-type", type(exc).__name__.encode()),
            ("x-dlq-consumer", self._service.encode()),
            ("x-dlq-original-topic", record.topic.encode()),
            ("x-dlq-original-partition", str(record.partition).encode()),
            ("x-dlq-original-offset", str(record.offset).encode()),
            ("x-dlq-attempts", str(attempts).encode()),
        ]
        await self._producer.send_and_wait(
            dead_letter_topic(record.topic), value=record.value, key=record.key, headers=headers
        )
        self._metrics.events_dead_lettered.labels(self._service, record.topic).inc()
        self._count(record.topic, "dead_lettered")
        log.error(
            "event_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error_type=type(exc).__name__,
            error=mask(str(exc))[:300],
        )

    def _count(self, topic: str, outcome: str) -> None:
        self._metrics.events_consumed.labels(self._service, topic, outcome).inc()
