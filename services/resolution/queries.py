"""The agent API's read side: the work queue and the case, always scoped by tenant.

Another tenant's case is never found: every query carries the agent's `tenant_id`, so
its ticket answers exactly like a ticket that does not exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.resolution import clock_store
from shared.money import money_string as money
from shared.problems import Problem

MAX_PAGE = 100
# Without a status filter the queue lists what is still to be worked on.
CLOSED_STATUSES = ("resolved", "closed")


@dataclass(frozen=True)
class QueueFilters:
    status: str | None = None
    priority: str | None = None
    category: str | None = None
    breached: bool | None = None
    # "none": unassigned cases only; otherwise an agent id (the API turns "me" into one).
    assigned_to: uuid.UUID | str | None = None

    def scope(self, tenant_id: uuid.UUID) -> str:
        """What a cursor is bound to: it pages this query, for this tenant, only."""
        raw = json.dumps(
            [str(tenant_id), self.status, self.priority, self.category, self.breached,
             str(self.assigned_to) if self.assigned_to is not None else None]
        )  # fmt: skip
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class QueuePosition:
    """The last row of a page in the queue's order: needs_review first, then the most
    urgent running clock (no running clock: last), then complaint_id."""

    needs_review: bool
    next_due_at: datetime | None
    complaint_id: uuid.UUID


class CursorCodec:
    """Opaque, tamper-safe cursors: the position and the query it belongs to, signed.
    Any change to a cursor, or its use with other filters, fails the signature: 422."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, position: QueuePosition, scope: str) -> str:
        due = position.next_due_at.isoformat() if position.next_due_at else None
        body = json.dumps(
            [1, position.needs_review, due, str(position.complaint_id), scope],
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def decode(self, cursor: str, scope: str) -> QueuePosition:
        try:
            body_part, signature_part = cursor.split(".")
            body = _unb64(body_part)
            if not hmac.compare_digest(_unb64(signature_part), self._sign(body)):
                raise ValueError("signature")
            version, needs_review, due, complaint_id, cursor_scope = json.loads(body)
            if version != 1 or cursor_scope != scope or not isinstance(needs_review, bool):
                raise ValueError("scope")
            next_due_at = datetime.fromisoformat(due).astimezone(UTC) if due else None
            return QueuePosition(needs_review, next_due_at, uuid.UUID(complaint_id))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, OverflowError):
            raise Problem(
                422,
                "Invalid cursor: pass the `next_cursor` of the previous page, with the same "
                "filters.",
                errors=[{"field": "cursor", "message": "invalid"}],
            ) from None

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]


def cursor_key(master_key: str) -> bytes:
    """A key of its own for cursors, derived so every instance signs alike."""
    return hmac.new(master_key.encode(), b"resolution:queue-cursor", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or len(text) > 1024:
        raise ValueError("length")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ------------------------------------------------------------------ the work queue

_QUEUE_COLUMNS = """
    complaint_id, ticket_no, status, category, priority, channel, customer_id, amount,
    currency, transaction_ref, assigned_to, needs_review, breached, next_due_at, outcome,
    received_at, first_response_due, resolution_due, updated_at
"""


async def work_queue(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant_id: uuid.UUID,
    filters: QueueFilters,
    *,
    limit: int,
    after: QueuePosition | None,
) -> tuple[list[dict[str, Any]], QueuePosition | None]:
    """One page of the queue and the position to continue from (None: last page)."""
    where = ["tenant_id = $1"]
    args: list[Any] = [tenant_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.status:
        where.append(f"status = {arg(filters.status)}")
    else:
        where.append(f"status <> ALL({arg(list(CLOSED_STATUSES))}::text[])")
    if filters.priority:
        where.append(f"priority = {arg(filters.priority)}")
    if filters.category:
        where.append(f"category = {arg(filters.category)}")
    if filters.breached is not None:
        where.append(f"breached = {arg(filters.breached)}")
    if filters.assigned_to == "none":
        where.append("assigned_to IS NULL")
    elif filters.assigned_to is not None:
        where.append(f"assigned_to = {arg(filters.assigned_to)}")
    if after is not None:
        # Rows after `after` in ORDER BY needs_review DESC, next_due_at NULLS LAST, id.
        nr, due, cid = arg(after.needs_review), arg(after.next_due_at), arg(after.complaint_id)
        where.append(
            f"""(needs_review < {nr} OR (needs_review = {nr} AND (
                CASE WHEN {due}::timestamptz IS NULL
                     THEN next_due_at IS NULL AND complaint_id > {cid}
                     ELSE next_due_at > {due} OR next_due_at IS NULL
                          OR (next_due_at = {due} AND complaint_id > {cid})
                END)))"""
        )
    # Only placeholders are interpolated: every value travels as a parameter.
    rows = await conn.fetch(
        f"SELECT {_QUEUE_COLUMNS} FROM cases WHERE {' AND '.join(where)} "
        f"ORDER BY needs_review DESC, next_due_at ASC NULLS LAST, complaint_id "
        f"LIMIT {arg(limit + 1)}",
        *args,
    )
    page = rows[:limit]
    position = None
    if len(rows) > limit:
        last = page[-1]
        position = QueuePosition(last["needs_review"], last["next_due_at"], last["complaint_id"])
    return [_queue_item(r) for r in page], position


def _queue_item(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "complaint_id": str(row["complaint_id"]),
        "ticket_no": row["ticket_no"],
        "status": row["status"],
        "category": row["category"],
        "priority": row["priority"],
        "channel": row["channel"],
        "customer_id": row["customer_id"],
        "amount": money(row["amount"]),
        "currency": row["currency"],
        "transaction_ref": row["transaction_ref"],
        "assigned_to": _str(row["assigned_to"]),
        "needs_review": row["needs_review"],
        "breached": row["breached"],
        "next_due_at": iso(row["next_due_at"]),
        "outcome": row["outcome"],
        "received_at": iso(row["received_at"]),
        "first_response_due": iso(row["first_response_due"]),
        "resolution_due": iso(row["resolution_due"]),
        "updated_at": iso(row["updated_at"]),
        "links": {"self": f"/v1/cases/{row['ticket_no']}"},
    }


# ------------------------------------------------------------------ the case


async def case_detail(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, ticket_no: str
) -> dict[str, Any] | None:
    """The case with everything an agent needs to work it; None when this tenant has no
    such case (missing, or another tenant's: the same None)."""
    # One snapshot: the ledger, clocks and history agree with each other.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        case = await conn.fetchrow(
            "SELECT * FROM cases WHERE ticket_no = $1 AND tenant_id = $2", ticket_no, tenant_id
        )
        if case is None:
            return None
        complaint_id = case["complaint_id"]
        history = await conn.fetch(
            "SELECT at, status, actor, note FROM case_history WHERE complaint_id = $1 ORDER BY id",
            complaint_id,
        )
        linked = await conn.fetch(
            "SELECT complaint_id, ticket_no, linked_at FROM linked_complaints "
            "WHERE original_complaint_id = $1 ORDER BY linked_at, complaint_id",
            complaint_id,
        )
        ledger = await conn.fetch(
            """
            SELECT e.*, a.approved_by, a.approved_at, r.id AS reversed_by
            FROM ledger_entries e
            LEFT JOIN ledger_approvals a ON a.entry_id = e.id
            LEFT JOIN ledger_entries r ON r.reverses = e.id
            WHERE e.complaint_id = $1 AND e.tenant_id = $2
            ORDER BY e.seq
            """,
            complaint_id,
            tenant_id,
        )
        # The customer may have written under a duplicate's ticket: its messages are
        # part of this case too.
        tickets = {complaint_id: case["ticket_no"]} | {
            r["complaint_id"]: r["ticket_no"] for r in linked
        }
        messages = await conn.fetch(
            "SELECT * FROM case_messages WHERE complaint_id = ANY($1::uuid[]) ORDER BY at, id",
            list(tickets),
        )
        clocks = await clock_store.detail(conn, complaint_id)
    return {
        **_case_fields(case),
        "history": [
            {"at": iso(h["at"]), "status": h["status"], "actor": h["actor"], "note": h["note"]}
            for h in history
        ],
        "clocks": clocks,
        "ledger": [_ledger_entry(e) for e in ledger],
        "linked_complaints": [
            {
                "complaint_id": str(r["complaint_id"]),
                "ticket_no": r["ticket_no"],
                "linked_at": iso(r["linked_at"]),
            }
            for r in linked
        ],
        "messages": [_message(m, tickets[m["complaint_id"]]) for m in messages],
    }


def _case_fields(case: asyncpg.Record) -> dict[str, Any]:
    return {
        "complaint_id": str(case["complaint_id"]),
        "ticket_no": case["ticket_no"],
        "status": case["status"],
        "category": case["category"],
        "priority": case["priority"],
        "jurisdiction": case["jurisdiction"],
        "locale": case["locale"],
        "channel": case["channel"],
        "customer_id": case["customer_id"],
        "amount": money(case["amount"]),
        "currency": case["currency"],
        "transaction_ref": case["transaction_ref"],
        "assigned_to": _str(case["assigned_to"]),
        "outcome": case["outcome"],
        "needs_review": case["needs_review"],
        "breached": case["breached"],
        "next_due_at": iso(case["next_due_at"]),
        "stands_in_for": _str(case["stands_in_for"]),
        "received_at": iso(case["received_at"]),
        "first_response_due": iso(case["first_response_due"]),
        "resolution_due": iso(case["resolution_due"]),
        "first_responded_at": iso(case["first_responded_at"]),
        "resolved_at": iso(case["resolved_at"]),
        "opened_at": iso(case["opened_at"]),
        "updated_at": iso(case["updated_at"]),
        "links": {"self": f"/v1/cases/{case['ticket_no']}"},
    }


def ledger_status(requires_approval: bool, approved: bool) -> str:
    if not requires_approval:
        return "recorded"
    return "approved" if approved else "pending_approval"


def _ledger_entry(e: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(e["id"]),
        "kind": e["kind"],
        "compensation_type": e["compensation_type"],
        "amount": money(e["amount"]),
        "currency": e["currency"],
        "note": e["note"],
        "status": ledger_status(e["requires_approval"], e["approved_by"] is not None),
        "requires_approval": e["requires_approval"],
        "decided_by": e["decided_by"],
        "approved_by": _str(e["approved_by"]),
        "approved_at": iso(e["approved_at"]),
        "reverses": _str(e["reverses"]),
        "reversed_by": _str(e["reversed_by"]),
        "reasons": list(e["reasons"] or []),
        "created_at": iso(e["created_at"]),
    }


def _message(m: asyncpg.Record, ticket_no: str) -> dict[str, Any]:
    return {
        "id": str(m["id"]),
        "ticket_no": ticket_no,
        "at": iso(m["at"]),
        "author": m["author"],
        "agent_id": _str(m["agent_id"]),
        "text": m["text"],
        "evidence": list(m["evidence"] or []),
        "request_information": m["request_information"],
    }


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None
