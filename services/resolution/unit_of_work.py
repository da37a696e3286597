"""resolution's unit of work: its repositories (all of its SQL) and `emit` (the outbox),
on the connection and transaction EventConsumer opened for one event.

Handlers are written against the `UnitOfWork` protocol, take `(envelope, uow)`, and are
adapted to the runtime's `(conn, envelope)` signature by `bind`; the unit tests run the
same handlers on a fake with dicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from services.resolution import clock_store
from services.resolution.domain import CaseRef, NewCase
from services.resolution.settings import ResolutionSettings
from shared.consumer import Handler
from shared.deferred_inserts import insert_many
from shared.event_payloads import ClockView, ComplaintTriaged
from shared.events import Envelope, TypedEnvelope
from shared.metrics import ServiceMetrics
from shared.topics import COMPLAINTS_RESOLUTION
from shared.unit_of_work import OutboxUnitOfWork
from shared.unit_of_work import bind as bind_handler


class Cases(Protocol):
    async def lock_group(self, original_id: uuid.UUID) -> None:
        """Serialise every transaction touching one duplicate group (an original and its
        duplicates) so a duplicate cannot start waiting while its original's case opens."""

    async def find(self, complaint_id: uuid.UUID) -> CaseRef | None: ...

    async def find_stand_in(self, original_id: uuid.UUID) -> CaseRef | None: ...

    async def add(self, case: NewCase) -> bool:
        """False when the case was already there (the same complaint triaged twice)."""

    async def reopen(self, complaint_id: uuid.UUID) -> str | None:
        """Reopen a resolved or closed case; its previous status, or None when it has no
        case of its own or the case is not resolved or closed (the state machine's rule)."""

    async def resume_from_awaiting(self, complaint_id: uuid.UUID) -> bool:
        """awaiting_customer -> in_progress; False when the case was not awaiting."""


class Clocks(Protocol):
    """The case's clocks (clock_store.py), in the caller's transaction."""

    async def start(self, case: NewCase, now: datetime) -> None: ...

    async def resume_internal(self, complaint_id: uuid.UUID, now: datetime) -> None: ...

    async def reopened(self, complaint_id: uuid.UUID, now: datetime) -> None: ...

    async def views(self, complaint_id: uuid.UUID) -> list[ClockView]: ...


class Messages(Protocol):
    async def from_customer(
        self,
        message_id: uuid.UUID,
        complaint_id: uuid.UUID,
        at: datetime,
        text: str,
        evidence: list[dict[str, Any]],
    ) -> None:
        """The complaint's own text or a follow-up; once per message id."""


class Refunds(Protocol):
    async def auto_refund(self, case: NewCase, now: datetime, correlation_id: uuid.UUID) -> None:
        """A small duplicate charge refunded at once, when the policy allows it."""


class Links(Protocol):
    async def link(self, complaint_id: uuid.UUID, ticket_no: str, case: CaseRef) -> None: ...

    async def wait_for_original(self, event: TypedEnvelope[ComplaintTriaged]) -> None: ...

    async def take_waiting(
        self, original_id: uuid.UUID
    ) -> list[TypedEnvelope[ComplaintTriaged]]: ...

    async def originals_waited_for(self, longer_than: timedelta, limit: int) -> list[uuid.UUID]: ...


class History(Protocol):
    async def add(self, complaint_id: uuid.UUID, status: str, actor: str, note: str) -> None: ...

    async def add_to_case(
        self, complaint_id: uuid.UUID, actor: str, note: str, status: str | None = None
    ) -> None:
        """A note on the complaint's case at its current status (or `status`); nothing
        when the complaint has no case of its own."""


class UnitOfWork(Protocol):
    cases: Cases
    links: Links
    history: History
    clocks: Clocks
    messages: Messages
    refunds: Refunds

    def emit(self, event: Envelope, topic: str = COMPLAINTS_RESOLUTION) -> None: ...


class PgCases:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock_group(self, original_id: uuid.UUID) -> None:
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"group|{original_id}"
        )

    async def find(self, complaint_id: uuid.UUID) -> CaseRef | None:
        row = await self._conn.fetchrow(
            "SELECT complaint_id, ticket_no FROM cases WHERE complaint_id = $1", complaint_id
        )
        return CaseRef(row["complaint_id"], row["ticket_no"]) if row else None

    async def find_stand_in(self, original_id: uuid.UUID) -> CaseRef | None:
        row = await self._conn.fetchrow(
            "SELECT complaint_id, ticket_no FROM cases WHERE stands_in_for = $1", original_id
        )
        return CaseRef(row["complaint_id"], row["ticket_no"]) if row else None

    async def add(self, case: NewCase) -> bool:
        inserted = await self._conn.fetchval(
            """
            INSERT INTO cases (complaint_id, tenant_id, ticket_no, status, category, priority,
                jurisdiction, locale, channel, amount, currency, transaction_ref, received_at,
                first_response_due, resolution_due, stands_in_for, customer_id, needs_review)
            VALUES ($1, $2, $3, 'triaged', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                $16, $17)
            ON CONFLICT (complaint_id) DO NOTHING
            RETURNING true
            """,
            case.complaint_id,
            case.tenant_id,
            case.ticket_no,
            case.category,
            case.priority,
            case.jurisdiction,
            case.locale,
            case.channel,
            case.amount,
            case.currency,
            case.transaction_ref,
            case.received_at,
            case.first_response_due,
            case.resolution_due,
            case.stands_in_for,
            case.customer_id,
            case.needs_review,
        )
        return bool(inserted)

    async def reopen(self, complaint_id: uuid.UUID) -> str | None:
        return await self._conn.fetchval(
            "UPDATE cases c SET status = 'reopened', updated_at = now() "
            "FROM (SELECT status FROM cases WHERE complaint_id = $1 FOR UPDATE) old "
            "WHERE c.complaint_id = $1 AND old.status IN ('resolved', 'closed') "
            "RETURNING old.status",
            complaint_id,
        )

    async def resume_from_awaiting(self, complaint_id: uuid.UUID) -> bool:
        resumed = await self._conn.fetchval(
            "UPDATE cases SET status = 'in_progress', updated_at = now() "
            "WHERE complaint_id = $1 AND status = 'awaiting_customer' RETURNING true",
            complaint_id,
        )
        return bool(resumed)


class PgClocks:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def start(self, case: NewCase, now: datetime) -> None:
        await clock_store.start_clocks(
            self._conn,
            clock_store.ClockCase(
                complaint_id=case.complaint_id,
                tenant_id=case.tenant_id,
                jurisdiction=case.jurisdiction,
                received_at=case.received_at,
                first_response_due=case.first_response_due,
                resolution_due=case.resolution_due,
            ),
            now,
        )

    async def resume_internal(self, complaint_id: uuid.UUID, now: datetime) -> None:
        await clock_store.resume_internal(self._conn, complaint_id, now)

    async def reopened(self, complaint_id: uuid.UUID, now: datetime) -> None:
        await clock_store.case_reopened(self._conn, complaint_id, now)

    async def views(self, complaint_id: uuid.UUID) -> list[ClockView]:
        return await clock_store.views(self._conn, complaint_id)


class PgMessages:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def from_customer(
        self,
        message_id: uuid.UUID,
        complaint_id: uuid.UUID,
        at: datetime,
        text: str,
        evidence: list[dict[str, Any]],
    ) -> None:
        # Nothing in a consumer's transaction reads the messages back: written with the
        # batch's other inserts before the commit (shared.deferred_inserts).
        await insert_many(
            self._conn,
            "INSERT INTO case_messages (id, complaint_id, at, author, text, evidence) "
            "VALUES ($1, $2, $3, 'customer', $4, $5) ON CONFLICT (id) DO NOTHING",
            [(message_id, complaint_id, at, text, evidence)],
        )


class PgRefunds:
    def __init__(
        self,
        conn: asyncpg.Connection,
        settings: ResolutionSettings,
        emit: Callable[[Envelope], None],
        metrics: ServiceMetrics | None,
    ) -> None:
        self._conn = conn
        self._settings = settings
        self._emit = emit
        self._metrics = metrics

    async def auto_refund(self, case: NewCase, now: datetime, correlation_id: uuid.UUID) -> None:
        # Imported here: commands builds on this module's unit of work.
        from services.resolution import commands

        recorded = await commands.auto_refund(
            self._conn, self._settings, case, now, emit=self._emit, correlation_id=correlation_id
        )
        if recorded is not None and self._metrics is not None:
            # Counted in the consumer's transaction: a transaction that fails after this
            # line and is redelivered counts the refund again (rare; the ledger is exact).
            self._metrics.resolutions_recorded.labels("refund").inc()


class PgLinks:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def link(self, complaint_id: uuid.UUID, ticket_no: str, case: CaseRef) -> None:
        await self._conn.execute(
            "INSERT INTO linked_complaints (complaint_id, original_complaint_id, ticket_no) "
            "VALUES ($1, $2, $3)",
            complaint_id,
            case.complaint_id,
            ticket_no,
        )

    async def wait_for_original(self, event: TypedEnvelope[ComplaintTriaged]) -> None:
        await self._conn.execute(
            "INSERT INTO pending_links (complaint_id, original_complaint_id, triaged_event) "
            "VALUES ($1, $2, $3) ON CONFLICT (complaint_id) DO NOTHING",
            event.complaint_id,
            event.payload.duplicate_of,
            event.model_dump(mode="json"),  # the pool's jsonb codec encodes it
        )

    async def take_waiting(self, original_id: uuid.UUID) -> list[TypedEnvelope[ComplaintTriaged]]:
        rows = await self._conn.fetch(
            "DELETE FROM pending_links WHERE original_complaint_id = $1 "
            "RETURNING triaged_event AS event, waiting_since",
            original_id,
        )
        ordered = sorted(rows, key=lambda r: r["waiting_since"])
        return [Envelope.model_validate(r["event"]).typed(ComplaintTriaged) for r in ordered]

    async def originals_waited_for(self, longer_than: timedelta, limit: int) -> list[uuid.UUID]:
        rows = await self._conn.fetch(
            "SELECT original_complaint_id FROM pending_links "
            "GROUP BY original_complaint_id "
            "HAVING min(waiting_since) < now() - $1::interval "
            "ORDER BY min(waiting_since) LIMIT $2",
            longer_than,
            limit,
        )
        return [r["original_complaint_id"] for r in rows]


class PgHistory:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, complaint_id: uuid.UUID, status: str, actor: str, note: str) -> None:
        await self._conn.execute(
            "INSERT INTO case_history (complaint_id, status, actor, note) VALUES ($1, $2, $3, $4)",
            complaint_id,
            status,
            actor,
            note,
        )

    async def add_to_case(
        self, complaint_id: uuid.UUID, actor: str, note: str, status: str | None = None
    ) -> None:
        await self._conn.execute(
            "INSERT INTO case_history (complaint_id, status, actor, note) "
            "SELECT complaint_id, coalesce($2, status), $3, $4 FROM cases "
            "WHERE complaint_id = $1",
            complaint_id,
            status,
            actor,
            note,
        )


class ResolutionUnitOfWork(OutboxUnitOfWork):
    """Built from the connection whose transaction the caller owns; `flush` writes the
    emitted events to the outbox in that transaction."""

    default_topic = COMPLAINTS_RESOLUTION

    def __init__(
        self,
        conn: asyncpg.Connection,
        settings: ResolutionSettings | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        super().__init__(conn)
        self.cases = PgCases(conn)
        self.links = PgLinks(conn)
        self.history = PgHistory(conn)
        self.clocks = PgClocks(conn)
        self.messages = PgMessages(conn)
        self.refunds = PgRefunds(conn, settings or ResolutionSettings(), self.emit, metrics)


UowHandler = Callable[[TypedEnvelope[Any], UnitOfWork], Awaitable[None]]


def bind(
    handler: UowHandler,
    settings: ResolutionSettings | None = None,
    metrics: ServiceMetrics | None = None,
) -> Handler:
    """The runtime's handler for `handler(typed_envelope, ResolutionUnitOfWork)`."""
    return bind_handler(lambda conn: ResolutionUnitOfWork(conn, settings, metrics), handler)
