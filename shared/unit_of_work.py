"""What every service's unit of work shares: `emit` into the outbox, `flush` in the
caller's transaction, and `bind`, which turns a handler of (typed envelope, unit of work)
into the runtime's (connection, envelope) handler (shared.consumer runs it inside the
transaction that also claims the inbox row)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import asyncpg

from shared import outbox
from shared.consumer import Handler
from shared.event_payloads import PAYLOAD_MODELS
from shared.events import Envelope, TypedEnvelope


class OutboxUnitOfWork:
    """A service's unit of work: subclasses add repositories built on `self._conn`."""

    default_topic: ClassVar[str]

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._emitted: list[tuple[str, Envelope]] = []

    def emit(self, event: Envelope, topic: str | None = None) -> None:
        self._emitted.append((topic or self.default_topic, event))

    async def flush(self) -> None:
        """Writes the emitted events to the outbox, in the caller's transaction."""
        emitted, self._emitted = self._emitted, []
        await outbox.enqueue_many(self._conn, emitted)


U = TypeVar("U", bound=OutboxUnitOfWork)


def bind(
    unit_of_work: Callable[[asyncpg.Connection], U],
    handler: Callable[[TypedEnvelope[Any], U], Awaitable[None]],
) -> Handler:
    """The runtime's `(conn, envelope)` handler for `handler(typed_envelope, uow)`.
    Events with no contract are skipped: there is nothing typed to hand over."""

    async def run(conn: asyncpg.Connection, envelope: Envelope) -> None:
        if (envelope.event_type, envelope.schema_version) not in PAYLOAD_MODELS:
            return
        uow = unit_of_work(conn)
        await handler(envelope.typed(), uow)
        await uow.flush()

    run.__name__ = getattr(handler, "__name__", type(handler).__name__)
    return run
