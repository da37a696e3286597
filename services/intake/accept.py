"""Accepting a complaint: one statement stores it, its timeline entry and its event."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.intake import repository
from services.intake.domain import (
    ComplaintIn,
    Status,
    format_ticket_no,
    provisional_first_response_due,
)
from services.intake.repository import Queryable, Tenant
from shared import outbox
from shared.events import new_event
from shared.topics import COMPLAINTS_RECEIVED


class TicketNumbers:
    """Ticket sequence numbers from blocks reserved in Postgres: one query per block
    instead of one per complaint. Unused numbers of a block are lost on restart (gaps,
    never duplicates)."""

    def __init__(self) -> None:
        self._next = 0
        self._end = 0
        self._refill = asyncio.Lock()

    async def take(self, conn: Queryable) -> int:
        while self._next >= self._end:
            async with self._refill:
                if self._next >= self._end:  # another request may have refilled meanwhile
                    first, size = await repository.reserve_ticket_block(conn)
                    self._next, self._end = first, first + size
        number = self._next
        self._next += 1
        return number


@dataclass(frozen=True)
class Accepted:
    complaint_id: uuid.UUID
    ticket_no: str
    received_at: datetime
    first_response_due: datetime
    replayed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "complaint_id": str(self.complaint_id),
            "ticket_no": self.ticket_no,
            "status": Status.RECEIVED.value,
            "received_at": self.received_at.isoformat(),
            "first_response_due": self.first_response_due.isoformat(),
            "links": {"self": f"/v1/complaints/{self.ticket_no}"},
        }


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body."""


async def accept_complaint(
    conn: asyncpg.Connection,
    *,
    tenant: Tenant,
    complaint: ComplaintIn,
    idempotency_key: str,
    fingerprint: bytes,
    first_response_hours: int,
    correlation_id: uuid.UUID,
    tickets: TicketNumbers,
) -> Accepted:
    received_at = datetime.now(UTC)
    complaint_id = uuid.uuid4()
    ticket_no = format_ticket_no(received_at, await tickets.take(conn))
    first_response_due = provisional_first_response_due(received_at, first_response_hours)
    customer = complaint.customer.model_dump(exclude={"id"}, exclude_none=True)
    evidence = [e.model_dump(exclude_none=True) for e in complaint.evidence]
    event = new_event(
        "complaint.received",
        producer="intake",
        tenant_id=tenant.id,
        complaint_id=complaint_id,
        ticket_no=ticket_no,
        correlation_id=correlation_id,
        occurred_at=received_at,
        payload={
            "customer": {"id": complaint.customer.id, **customer},
            "channel": complaint.channel.value,
            "description": complaint.description,
            "amount": complaint.amount,
            "currency": complaint.currency,
            "transaction_ref": complaint.transaction_ref,
            "merchant": complaint.merchant,
            "occurred_at": complaint.occurred_at.isoformat() if complaint.occurred_at else None,
            "category_hint": complaint.category_hint,
            "evidence": evidence,
            "received_at": received_at.isoformat(),
            "first_response_due": first_response_due.isoformat(),
            "tenant": {
                "jurisdiction": tenant.jurisdiction,
                "locale": tenant.locale,
                "webhook_url": tenant.webhook_url,
            },
        },
    )
    inserted = await repository.insert_complaint(
        conn,
        {
            "id": complaint_id,
            "tenant_id": tenant.id,
            "ticket_no": ticket_no,
            "idempotency_key": idempotency_key,
            "request_hash": fingerprint,
            "customer_id": complaint.customer.id,
            "customer": customer,
            "channel": complaint.channel.value,
            "description": complaint.description,
            "amount": complaint.amount_decimal,
            "currency": complaint.currency,
            "transaction_ref": complaint.transaction_ref,
            "merchant": complaint.merchant,
            "occurred_at": complaint.occurred_at,
            "category_hint": complaint.category_hint,
            "evidence": evidence,
            "received_at": received_at,
            "first_response_due": first_response_due,
        },
        outbox.outbox_row(COMPLAINTS_RECEIVED, event),
    )
    if not inserted:
        return await _replay(conn, tenant, idempotency_key, fingerprint)
    return Accepted(complaint_id, ticket_no, received_at, first_response_due, replayed=False)


async def _replay(
    conn: asyncpg.Connection, tenant: Tenant, idempotency_key: str, fingerprint: bytes
) -> Accepted:
    row = await repository.find_by_idempotency_key(conn, tenant.id, idempotency_key)
    if row is None:  # cannot happen: ON CONFLICT waited for the conflicting row to commit
        raise RuntimeError("idempotency conflict without a stored complaint")
    if bytes(row["request_hash"]) != fingerprint:
        raise IdempotencyConflict
    # The first answer's due time, not the read model's: triage may have moved that since.
    return Accepted(
        row["id"],
        row["ticket_no"],
        row["received_at"],
        row["ack_first_response_due"],
        replayed=True,
    )
