"""EventConsumer: one consumed message = one Postgres transaction (inbox + effect + outbox).

- A message that can never succeed (bad JSON, unknown schema version, a handler bug that
  persists across bounded retries) goes to `<topic>.dlq` untouched, with headers saying
  why, and the partition moves on.
- A transient failure (database or broker unreachable) is never dead-lettered: it is
  retried with backoff, then raised so the broker integration seeks back and redelivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from shared.events import Envelope, parse_envelope
from shared.inbox import claim
from shared.logging import get_logger
from shared.metrics import ServiceMetrics
from shared.topics import dead_letter_topic

log = get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Envelope], Awaitable[None]]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
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
    ) -> None:
        self._service = service
        self._pool = pool
        self._producer = producer
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._retry_base_s = retry_base_s

    async def handle(self, record: Record, handler: Handler) -> None:
        started = time.perf_counter()
        topic = record.topic
        try:
            try:
                envelope = parse_envelope(record.value or b"")
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(record, exc, attempts=1)
                return
            with structlog.contextvars.bound_contextvars(
                event_id=str(envelope.event_id),
                event_type=envelope.event_type,
                ticket_no=envelope.ticket_no,
                correlation_id=str(envelope.correlation_id),
            ):
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
                    await self._dead_letter(record, exc, attempts=attempt)
                    return
            else:
                self._count(topic, "processed" if applied else "duplicate")
                return
            await asyncio.sleep(self._retry_base_s * 2 ** (attempt - 1))

    async def _apply(self, envelope: Envelope, handler: Handler) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim(conn, self._service, envelope.event_id):
                return False
            await handler(conn, envelope)
            return True

    async def _dead_letter(self, record: Record, exc: BaseException, *, attempts: int) -> None:
        headers = [
            *(record.headers or ()),
            ("x-dlq-error", str(exc)[:1000].encode()),
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
            error=str(exc)[:300],
        )

    def _count(self, topic: str, outcome: str) -> None:
        self._metrics.events_consumed.labels(self._service, topic, outcome).inc()
