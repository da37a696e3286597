"""After a complaint: customer follow-up messages and satisfaction feedback.

Each request is one transaction: the tenant's complaint row locked, the message or
feedback stored, a timeline entry, the read model's status (feedback that reopens) and the
outbox event for the other services. Intake only records: the resolution service owns the
case and decides what a follow-up or a reopen means for it.

Idempotency-Key is optional here. With one, a replay (same key, same ticket, same body)
answers what the first request answered and writes nothing; the same key with another
ticket or body is a conflict. Without one, every request is a new message or rating.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.intake import repository
from services.intake.domain import (
    FeedbackIn,
    MessageIn,
    feedback_detail,
    message_detail,
    reopens,
    status_after_feedback,
)
from services.intake.repository import Tenant
from shared import outbox
from shared.events import new_event
from shared.topics import COMPLAINTS_RECEIVED


class ComplaintNotFound(Exception):
    """No complaint with this ticket number for this tenant (whether or not another has it)."""


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was used before for another ticket or with another body."""


@dataclass(frozen=True)
class Request:
    """What every follow-up request carries besides its body."""

    tenant: Tenant
    ticket_no: str
    idempotency_key: str | None
    fingerprint: bytes
    correlation_id: uuid.UUID


@dataclass(frozen=True)
class MessageAccepted:
    message_id: uuid.UUID
    ticket_no: str
    received_at: datetime
    replayed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": str(self.message_id),
            "ticket_no": self.ticket_no,
            "received_at": self.received_at.isoformat(),
            "links": {"complaint": f"/v1/complaints/{self.ticket_no}"},
        }


@dataclass(frozen=True)
class FeedbackAccepted:
    feedback_id: uuid.UUID
    ticket_no: str
    score: int
    reopened: bool
    status: str
    received_at: datetime
    replayed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "feedback_id": str(self.feedback_id),
            "ticket_no": self.ticket_no,
            "score": self.score,
            "reopened": self.reopened,
            "status": self.status,
            "received_at": self.received_at.isoformat(),
            "links": {"complaint": f"/v1/complaints/{self.ticket_no}"},
        }


async def add_message(
    conn: asyncpg.Connection, request: Request, message: MessageIn
) -> MessageAccepted:
    async with conn.transaction():
        complaint = await _locked_complaint(conn, request)
        if request.idempotency_key is not None:
            earlier = await repository.find_message(
                conn, request.tenant.id, request.idempotency_key
            )
            if earlier is not None:
                return _message_replay(earlier, complaint, request)
        accepted = MessageAccepted(uuid.uuid4(), complaint["ticket_no"], _now(), replayed=False)
        evidence = [e.model_dump(exclude_none=True) for e in message.evidence]
        stored = await repository.insert_message(
            conn,
            {
                "id": accepted.message_id,
                "complaint_id": complaint["id"],
                "tenant_id": request.tenant.id,
                "idempotency_key": request.idempotency_key,
                "request_hash": request.fingerprint,
                "text": message.text,
                "evidence": evidence,
                "received_at": accepted.received_at,
            },
        )
        if not stored:  # a concurrent request with this key on another ticket won
            raise IdempotencyKeyReused
        await repository.add_timeline(
            conn,
            complaint["id"],
            accepted.received_at,
            complaint["status"],
            message_detail(len(evidence)),
        )
        payload = {
            "message_id": str(accepted.message_id),
            "text": message.text,
            "evidence": evidence,
            "received_at": accepted.received_at.isoformat(),
            # Lets resolution see the customer answered while it was awaiting them.
            "complaint_status": complaint["status"],
        }
        await _emit(conn, request, complaint, "complaint.message_added", payload, accepted)
    return accepted


async def add_feedback(
    conn: asyncpg.Connection, request: Request, feedback: FeedbackIn
) -> FeedbackAccepted:
    """Raises domain.FeedbackNotAccepted before the complaint is resolved or closed."""
    async with conn.transaction():
        complaint = await _locked_complaint(conn, request)
        if request.idempotency_key is not None:
            earlier = await repository.find_feedback(
                conn, request.tenant.id, request.idempotency_key
            )
            if earlier is not None:
                return _feedback_replay(earlier, complaint, request)
        previous_status = complaint["status"]
        status = status_after_feedback(previous_status, feedback.score)
        accepted = FeedbackAccepted(
            uuid.uuid4(),
            complaint["ticket_no"],
            feedback.score,
            reopened=reopens(feedback.score),
            status=status,
            received_at=_now(),
            replayed=False,
        )
        await _store_feedback(conn, request, complaint, feedback, accepted)
        payload = {
            "feedback_id": str(accepted.feedback_id),
            "score": feedback.score,
            "comment": feedback.comment,
            # Resolution owns the case: this flag is what tells it to reopen.
            "reopen": accepted.reopened,
            "previous_status": previous_status,
            "received_at": accepted.received_at.isoformat(),
        }
        await _emit(conn, request, complaint, "complaint.feedback_received", payload, accepted)
    return accepted


async def _locked_complaint(conn: asyncpg.Connection, request: Request) -> asyncpg.Record:
    complaint = await repository.lock_tenant_complaint(conn, request.tenant.id, request.ticket_no)
    if complaint is None:
        raise ComplaintNotFound
    return complaint


async def _store_feedback(
    conn: asyncpg.Connection,
    request: Request,
    complaint: asyncpg.Record,
    feedback: FeedbackIn,
    accepted: FeedbackAccepted,
) -> None:
    stored = await repository.insert_feedback(
        conn,
        {
            "id": accepted.feedback_id,
            "complaint_id": complaint["id"],
            "tenant_id": request.tenant.id,
            "idempotency_key": request.idempotency_key,
            "request_hash": request.fingerprint,
            "score": feedback.score,
            "comment": feedback.comment,
            "reopened": accepted.reopened,
            "status_after": accepted.status,
            "received_at": accepted.received_at,
        },
    )
    if not stored:  # a concurrent request with this key on another ticket won
        raise IdempotencyKeyReused
    if accepted.status != complaint["status"]:
        await repository.update_read_model(conn, complaint["id"], status=accepted.status)
    detail = feedback_detail(feedback.score)
    await repository.add_timeline(
        conn, complaint["id"], accepted.received_at, accepted.status, detail
    )


async def _emit(
    conn: asyncpg.Connection,
    request: Request,
    complaint: asyncpg.Record,
    event_type: str,
    payload: dict[str, Any],
    accepted: MessageAccepted | FeedbackAccepted,
) -> None:
    event = new_event(
        event_type,
        producer="intake",
        tenant_id=request.tenant.id,
        complaint_id=complaint["id"],
        ticket_no=complaint["ticket_no"],
        correlation_id=request.correlation_id,
        occurred_at=accepted.received_at,
        payload=payload,
    )
    await outbox.enqueue(conn, COMPLAINTS_RECEIVED, event)


def _same_request(earlier: asyncpg.Record, complaint: asyncpg.Record, request: Request) -> bool:
    return earlier["complaint_id"] == complaint["id"] and (
        bytes(earlier["request_hash"]) == request.fingerprint
    )


def _message_replay(
    earlier: asyncpg.Record, complaint: asyncpg.Record, request: Request
) -> MessageAccepted:
    if not _same_request(earlier, complaint, request):
        raise IdempotencyKeyReused
    return MessageAccepted(
        earlier["id"], complaint["ticket_no"], earlier["received_at"], replayed=True
    )


def _feedback_replay(
    earlier: asyncpg.Record, complaint: asyncpg.Record, request: Request
) -> FeedbackAccepted:
    if not _same_request(earlier, complaint, request):
        raise IdempotencyKeyReused
    return FeedbackAccepted(
        earlier["id"],
        complaint["ticket_no"],
        earlier["score"],
        reopened=earlier["reopened"],
        status=earlier["status_after"],
        received_at=earlier["received_at"],
        replayed=True,
    )


def _now() -> datetime:
    return datetime.now(UTC)
