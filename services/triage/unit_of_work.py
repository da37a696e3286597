"""triage's unit of work: its repositories (all of its SQL) and `emit` (the outbox), on
the connection and transaction EventConsumer opened for one event.

Handlers are written against the `UnitOfWork` protocol, take `(envelope, uow)`, and are
adapted to the runtime's `(conn, envelope)` signature by `bind`; the unit tests run the
same handlers on a fake with dicts. (The same `emit`/`flush`/`bind` shape is in
resolution, notifier and intake: a candidate for shared/.)
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from services.triage.corrections import Classified, LabelledExample
from services.triage.domain import (
    Cause,
    DuplicateKey,
    Incident,
    IncidentMember,
    TriagedComplaint,
)
from shared.consumer import Handler
from shared.events import Envelope, TypedEnvelope
from shared.topics import COMPLAINTS_TRIAGED
from shared.unit_of_work import OutboxUnitOfWork
from shared.unit_of_work import bind as bind_handler


class ClassifiedText(Protocol):
    """What the classifier read (classifier.ComplaintFacts is one): kept with the
    decision so an agent's correction can become a labelled example."""

    @property
    def description(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def amount(self) -> Decimal | None: ...
    @property
    def currency(self) -> str | None: ...


class TriagedComplaints(Protocol):
    async def add(self, complaint: TriagedComplaint, text: ClassifiedText | None = None) -> None:
        """The decision, and the text and facts it was taken on (when given)."""

    async def classified(self, complaint_id: uuid.UUID) -> Classified | None:
        """What was classified for this complaint and decided, or None when it was not."""

    async def not_in_incident(
        self, tenant_id: uuid.UUID, cause: Cause, received_after: datetime
    ) -> list[IncidentMember]:
        """Complaints with this cause received after the time and in no incident yet,
        oldest first: the members of an incident about to open."""

    async def join_incident(
        self, incident_id: uuid.UUID, complaint_ids: list[uuid.UUID]
    ) -> None: ...


class Duplicates(Protocol):
    async def find_original(
        self, key: DuplicateKey, received_at: datetime, window: timedelta
    ) -> uuid.UUID | None:
        """The original this complaint repeats, or None.

        The window reaches both ways: complaints on different partitions may be triaged
        out of receipt order, and whichever was triaged first holds the case. Two copies
        triaged at the same moment by different consumers are serialised (a lock on the
        key until the transaction ends), so exactly one is the original."""


class IncidentCounters(Protocol):
    """Per-minute complaint counts per cause: thresholds are sums over minutes."""

    async def lock_and_add_one(
        self, tenant_id: uuid.UUID, cause: Cause, received_at: datetime
    ) -> None:
        """Serialise every transaction counting this cause (a lock held until the
        transaction ends), so exactly one complaint opens an incident however many triage
        consumers run; then count this complaint in its minute."""

    async def count(
        self, tenant_id: uuid.UUID, cause: Cause, since: datetime, until: datetime | None
    ) -> int:
        """Complaints in [since, until), to the minute; no upper bound when until is None."""


class Incidents(Protocol):
    async def join_open(
        self,
        tenant_id: uuid.UUID,
        cause: Cause,
        seen_at: datetime,
        window: timedelta,
        member: uuid.UUID,
    ) -> Incident | None:
        """Count `member` (a triaged complaint) in the latest incident of this cause seen
        within the window before `seen_at`, and mark it as one of the incident's
        complaints; that incident as it is now, or None."""

    async def open(
        self,
        incident_id: uuid.UUID,
        tenant_id: uuid.UUID,
        cause: Cause,
        category: str,
        opened_at: datetime,
        complaint_count: int,
    ) -> Incident: ...


class LabelledExamples(Protocol):
    async def record(self, example: LabelledExample) -> None:
        """One example per complaint: a later correction replaces the label."""


class UnitOfWork(Protocol):
    complaints: TriagedComplaints
    duplicates: Duplicates
    incident_counters: IncidentCounters
    incidents: Incidents
    examples: LabelledExamples

    def emit(self, event: Envelope, topic: str = COMPLAINTS_TRIAGED) -> None: ...


class PgTriagedComplaints:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, complaint: TriagedComplaint, text: ClassifiedText | None = None) -> None:
        c = complaint
        await self._conn.execute(
            """
            INSERT INTO triaged_complaints (complaint_id, tenant_id, ticket_no, customer_id,
                transaction_ref, merchant, category, priority, received_at, duplicate_of,
                merchant_key, description, channel, amount, currency)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            """,
            c.complaint_id,
            c.tenant_id,
            c.ticket_no,
            c.customer_id,
            c.transaction_ref,
            c.merchant,
            c.category,
            c.priority,
            c.received_at,
            c.duplicate_of,
            c.merchant_key,
            text.description if text else None,
            (text.channel or None) if text else None,
            text.amount if text else None,
            text.currency if text else None,
        )

    async def classified(self, complaint_id: uuid.UUID) -> Classified | None:
        row = await self._conn.fetchrow(
            "SELECT complaint_id, tenant_id, ticket_no, description, channel, amount, currency, "
            "category, priority FROM triaged_complaints WHERE complaint_id = $1",
            complaint_id,
        )
        return Classified(**dict(row)) if row else None

    async def not_in_incident(
        self, tenant_id: uuid.UUID, cause: Cause, received_after: datetime
    ) -> list[IncidentMember]:
        # The column name comes from the cause's kind, a closed set, never from input.
        column = "merchant_key" if cause.kind == "merchant" else "category"
        rows = await self._conn.fetch(
            f"SELECT complaint_id, ticket_no FROM triaged_complaints WHERE tenant_id = $1 "
            f"AND {column} = $2 AND received_at > $3 AND incident_id IS NULL "
            f"ORDER BY received_at",
            tenant_id,
            cause.value,
            received_after,
        )
        return [IncidentMember(r["complaint_id"], r["ticket_no"]) for r in rows]

    async def join_incident(self, incident_id: uuid.UUID, complaint_ids: list[uuid.UUID]) -> None:
        await self._conn.execute(
            "UPDATE triaged_complaints SET incident_id = $1 WHERE complaint_id = ANY($2::uuid[])",
            incident_id,
            complaint_ids,
        )


class PgDuplicates:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def find_original(
        self, key: DuplicateKey, received_at: datetime, window: timedelta
    ) -> uuid.UUID | None:
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"{key.tenant_id}|{key.customer_id}|{key.transaction_ref}",
        )
        return await self._conn.fetchval(
            """
            SELECT complaint_id FROM triaged_complaints
            WHERE tenant_id = $1 AND customer_id = $2 AND transaction_ref = $3
              AND duplicate_of IS NULL
              AND received_at BETWEEN $4::timestamptz - $5::interval
                                  AND $4::timestamptz + $5::interval
            ORDER BY received_at, complaint_id
            LIMIT 1
            """,
            key.tenant_id,
            key.customer_id,
            key.transaction_ref,
            received_at,
            window,
        )


class PgIncidentCounters:
    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._conn = conn

    async def lock_and_add_one(
        self, tenant_id: uuid.UUID, cause: Cause, received_at: datetime
    ) -> None:
        # One round trip: the insert reads its row from the lock's, so the lock is held
        # first. The upsert needs no snapshot taken after the lock (ON CONFLICT sees the
        # latest committed row); the statements that judge the counts come after it.
        await self._conn.execute(
            """
            WITH locked AS (SELECT pg_advisory_xact_lock(hashtextextended($5, 1)))
            INSERT INTO incident_counts (tenant_id, kind, cause, minute, complaints)
            SELECT $1, $2, $3, date_trunc('minute', $4::timestamptz), 1 FROM locked
            ON CONFLICT (tenant_id, kind, cause, minute)
            DO UPDATE SET complaints = incident_counts.complaints + 1
            """,
            tenant_id,
            cause.kind,
            cause.value,
            received_at,
            f"{tenant_id}|{cause.kind}|{cause.value}",
        )

    async def count(
        self, tenant_id: uuid.UUID, cause: Cause, since: datetime, until: datetime | None
    ) -> int:
        return await self._conn.fetchval(
            """
            SELECT coalesce(sum(complaints), 0) FROM incident_counts
            WHERE tenant_id = $1 AND kind = $2 AND cause = $3
              AND minute >= date_trunc('minute', $4::timestamptz)
              AND ($5::timestamptz IS NULL OR minute < date_trunc('minute', $5::timestamptz))
            """,
            tenant_id,
            cause.kind,
            cause.value,
            since,
            until,
        )

    async def purge_older_than(self, age: timedelta) -> None:
        await self._conn.execute(
            "DELETE FROM incident_counts WHERE minute < now() - $1::interval", age
        )


class PgIncidents:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def join_open(
        self,
        tenant_id: uuid.UUID,
        cause: Cause,
        seen_at: datetime,
        window: timedelta,
        member: uuid.UUID,
    ) -> Incident | None:
        # The incident counted and its member marked in one statement (one round trip);
        # the member's row was written earlier in this transaction.
        row = await self._conn.fetchrow(
            """
            WITH joined AS (
                UPDATE incidents SET complaint_count = complaint_count + 1,
                                     last_seen_at = greatest(last_seen_at, $4)
                WHERE id = (
                    SELECT id FROM incidents
                    WHERE tenant_id = $1 AND kind = $2 AND cause = $3
                      AND last_seen_at >= $4::timestamptz - $5::interval
                    ORDER BY last_seen_at DESC LIMIT 1)
                RETURNING id, kind, cause, category, opened_at, last_seen_at, complaint_count),
            marked AS (
                UPDATE triaged_complaints SET incident_id = joined.id
                FROM joined WHERE complaint_id = $6)
            SELECT * FROM joined
            """,
            tenant_id,
            cause.kind,
            cause.value,
            seen_at,
            window,
            member,
        )
        return _incident(row) if row else None

    async def open(
        self,
        incident_id: uuid.UUID,
        tenant_id: uuid.UUID,
        cause: Cause,
        category: str,
        opened_at: datetime,
        complaint_count: int,
    ) -> Incident:
        row = await self._conn.fetchrow(
            """
            INSERT INTO incidents (id, tenant_id, kind, cause, category, opened_at,
                                   last_seen_at, complaint_count)
            VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
            RETURNING id, kind, cause, category, opened_at, last_seen_at, complaint_count
            """,
            incident_id,
            tenant_id,
            cause.kind,
            cause.value,
            category,
            opened_at,
            complaint_count,
        )
        return _incident(row)


def _incident(row: asyncpg.Record) -> Incident:
    return Incident(
        incident_id=row["id"],
        kind=row["kind"],
        cause=row["cause"],
        category=row["category"],
        opened_at=row["opened_at"],
        last_seen_at=row["last_seen_at"],
        complaint_count=row["complaint_count"],
    )


class PgLabelledExamples:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record(self, example: LabelledExample) -> None:
        e = example
        # A later correction of the same complaint replaces the label; an older one (never
        # on one partition, but cheap to refuse) does not.
        await self._conn.execute(
            """
            INSERT INTO labelled_examples (complaint_id, tenant_id, ticket_no, description,
                channel, amount, currency, category, priority, previous_category,
                previous_priority, corrected_by, event_id, recorded_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            ON CONFLICT (complaint_id) DO UPDATE SET
                category = excluded.category,
                priority = excluded.priority,
                corrected_by = excluded.corrected_by,
                event_id = excluded.event_id,
                recorded_at = excluded.recorded_at
            WHERE labelled_examples.recorded_at <= excluded.recorded_at
            """,
            e.complaint_id,
            e.tenant_id,
            e.ticket_no,
            e.description,
            e.channel,
            e.amount,
            e.currency,
            e.category,
            e.priority,
            e.previous_category,
            e.previous_priority,
            e.corrected_by,
            e.event_id,
            e.recorded_at,
        )


class TriageUnitOfWork(OutboxUnitOfWork):
    """Built from the connection whose transaction the caller owns; `flush` writes the
    emitted events to the outbox in that transaction."""

    default_topic = COMPLAINTS_TRIAGED

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__(conn)
        self.complaints = PgTriagedComplaints(conn)
        self.duplicates = PgDuplicates(conn)
        self.incident_counters = PgIncidentCounters(conn)
        self.incidents = PgIncidents(conn)
        self.examples = PgLabelledExamples(conn)


UowHandler = Callable[[TypedEnvelope[Any], UnitOfWork], Awaitable[None]]


def bind(handler: UowHandler) -> Handler:
    """The runtime's handler for `handler(typed_envelope, TriageUnitOfWork)`."""
    return bind_handler(TriageUnitOfWork, handler)
