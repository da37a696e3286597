"""notifier's unit of work for its event handlers: the recipients and deliveries
repositories (the handlers' SQL) and `emit` (the outbox), on the connection and
transaction EventConsumer opened for one event.

Handlers are written against the `UnitOfWork` protocol, take `(envelope, uow)`, and are
adapted to the runtime's `(conn, envelope)` signature by `bind`; the unit tests run the
same handlers on a fake. The delivery worker (delivery.py) keeps its own SQL: it works on
claimed batches outside any consumed event. (The same `emit`/`flush`/`bind` shape is in
resolution, triage and intake: a candidate for shared/.)
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import asyncpg

from services.notifier.planning import ACKNOWLEDGEMENT, PlannedNotification
from shared.consumer import Handler
from shared.deferred_inserts import insert_many
from shared.events import Envelope, EnvelopeHeader, TypedEnvelope
from shared.topics import NOTIFICATIONS
from shared.unit_of_work import OutboxUnitOfWork
from shared.unit_of_work import bind as bind_handler


@dataclass(frozen=True)
class Recipient:
    """Where and how a complaint's notifications go."""

    complaint_id: uuid.UUID
    tenant_id: uuid.UUID
    ticket_no: str
    webhook_url: str
    locale: str
    email: str | None  # customer contact: never logged
    received_at: datetime


class Recipients(Protocol):
    async def add(self, recipient: Recipient) -> bool:
        """The first one stays: complaint.received redelivered changes nothing (False)."""


class Deliveries(Protocol):
    async def queue(self, cause: EnvelopeHeader, planned: list[PlannedNotification]) -> None:
        """One pending delivery per notification, in order, each with an event id of its
        own; the delivery worker sends them."""


class Contacts(Protocol):
    async def case_status(self, complaint_id: uuid.UUID, status: str, at: datetime) -> None:
        """Resolved or closed starts the address's retention period; any other status
        (reopened, in progress ...) stops it."""


class UnitOfWork(Protocol):
    recipients: Recipients
    deliveries: Deliveries

    def emit(self, event: Envelope, topic: str = NOTIFICATIONS) -> None: ...


# The e-mail race: complaint.received (with the address) and the case events travel on
# different topics, so a case event may be handled first. Both the recipient's insert and
# the case event's queue take this per-complaint lock, and each makes the e-mail twins of
# the webhook rows it can see (a twin at most once: the unique index on source_id). Under
# READ COMMITTED the one that waited sees what the other committed: whichever comes
# second makes the twins, in webhook order, so each channel keeps the complaint's order.
_LOCK_COMPLAINT = "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 11))"
_EMAIL_TWINS = """
INSERT INTO deliveries (event_id, complaint_id, tenant_id, ticket_no, correlation_id, type,
    template, data, occurred_at, channel, source_id, precedence)
SELECT gen_random_uuid(), w.complaint_id, w.tenant_id, w.ticket_no, w.correlation_id, w.type,
    w.template, w.data, w.occurred_at, 'email', w.id, w.precedence
FROM deliveries w JOIN recipients r ON r.complaint_id = w.complaint_id
WHERE w.complaint_id = $1 AND w.channel = 'webhook' AND r.email IS NOT NULL
  AND w.state IN ('pending', 'retrying')  -- never e-mail what went out before SMTP was set
  AND NOT EXISTS (SELECT 1 FROM deliveries t WHERE t.source_id = w.id AND t.channel = 'email')
ORDER BY w.id
ON CONFLICT DO NOTHING
"""


class PgRecipients:
    def __init__(self, conn: asyncpg.Connection, *, email: bool = False) -> None:
        self._conn = conn
        self._email = email  # SMTP_URL is set: e-mail rows are made

    async def add(self, recipient: Recipient) -> bool:
        r = recipient
        if self._email:  # the e-mail race (above); without SMTP there are no twins to make
            await self._conn.execute(_LOCK_COMPLAINT, r.complaint_id)
        added = await self._conn.fetchval(
            """
            INSERT INTO recipients (complaint_id, tenant_id, ticket_no, webhook_url, locale,
                email, received_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (complaint_id) DO NOTHING
            RETURNING true
            """,
            r.complaint_id,
            r.tenant_id,
            r.ticket_no,
            r.webhook_url,
            r.locale,
            r.email,
            r.received_at,
        )
        if added and self._email and r.email:
            await self._conn.execute(_EMAIL_TWINS, r.complaint_id)
        return bool(added)


class PgDeliveries:
    def __init__(self, conn: asyncpg.Connection, *, email: bool = False) -> None:
        self._conn = conn
        self._email = email

    async def queue(self, cause: EnvelopeHeader, planned: list[PlannedNotification]) -> None:
        if not planned:
            return
        if self._email:
            await self._conn.execute(_LOCK_COMPLAINT, cause.complaint_id)
        # Without e-mail nothing reads these rows back before the commit, so a consumer
        # batch writes them together (shared.deferred_inserts); the twins below read them.
        write = self._conn.executemany if self._email else partial(insert_many, self._conn)
        await write(
            """
            INSERT INTO deliveries (event_id, complaint_id, tenant_id, ticket_no,
                correlation_id, type, template, data, occurred_at, precedence)
            VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            [
                (
                    cause.complaint_id,
                    cause.tenant_id,
                    cause.ticket_no,
                    cause.correlation_id,
                    n.type,
                    n.template,
                    n.data,  # the pool's jsonb codec encodes it
                    cause.occurred_at,
                    0 if n.type == ACKNOWLEDGEMENT else 1,  # see migration 0008
                )
                for n in planned
            ],
        )
        if self._email:  # no-op until the recipient with an address is there
            await self._conn.execute(_EMAIL_TWINS, cause.complaint_id)


class PgContacts:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def case_status(self, complaint_id: uuid.UUID, status: str, at: datetime) -> None:
        # The first resolution/closure starts the period (closed after resolved does not
        # restart it); a later event of any other status clears it.
        await self._conn.execute(
            """
            INSERT INTO contact_retention (complaint_id, closed_at)
            VALUES ($1, CASE WHEN $2 IN ('resolved', 'closed') THEN $3::timestamptz END)
            ON CONFLICT (complaint_id) DO UPDATE SET
                closed_at = CASE WHEN $2 IN ('resolved', 'closed')
                                 THEN coalesce(contact_retention.closed_at, $3) END,
                updated_at = now()
            """,
            complaint_id,
            status,
            at,
        )


class NotifierUnitOfWork(OutboxUnitOfWork):
    """Built from the connection whose transaction the caller owns; `flush` writes the
    emitted events to the outbox in that transaction."""

    default_topic = NOTIFICATIONS

    def __init__(self, conn: asyncpg.Connection, *, email: bool = False) -> None:
        super().__init__(conn)
        self.recipients = PgRecipients(conn, email=email)
        self.deliveries = PgDeliveries(conn, email=email)
        self.contacts = PgContacts(conn)


UowHandler = Callable[[TypedEnvelope[Any], Any], Awaitable[None]]


def bind(handler: UowHandler, *, email: bool = False) -> Handler:
    """The runtime's handler for `handler(typed_envelope, NotifierUnitOfWork)`; `email`:
    SMTP is configured, so notifications get e-mail rows where there is an address."""
    return bind_handler(partial(NotifierUnitOfWork, email=email), handler)
