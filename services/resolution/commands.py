"""What agents (and the automatic refund policy) do to a case, one transaction each.

Every command locks the case row (`SELECT ... FOR UPDATE`, scoped by the agent's tenant:
another tenant's case is the same 404 as a missing one), so agents acting on one case at
once are serialised: that is what keeps the sum of refunds within the disputed amount
under concurrent requests. It then asks the pure rules (case.py), writes, moves the
clocks (clock_store), adds to case_history and emits its events through the unit of work
in the same transaction, and returns a JSON-ready dict. Errors are Problem 403/404/409/422.

Status changes happen only when asked for: a status change, or a message requesting
information (-> awaiting_customer). Claiming, assigning, messages, resolutions and
recategorising leave the status alone.

Metrics: record_resolution takes an optional ServiceMetrics and counts
`resolutions_recorded_total{kind}` after its commit (never for a replay).
auto_refund runs inside its caller's transaction, so it cannot know the commit: it returns
the entry it recorded (or None) for the caller to count once committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from services.resolution import clock_store
from services.resolution.case import (
    AUTO,
    AUTO_CATEGORY,
    OUTCOMES,
    RECORDED,
    Accepted,
    Approver,
    AutoRefundFacts,
    Entry,
    Ledger,
    LedgerRefused,
    Proposed,
    Status,
    TransitionRefused,
    check_approval,
    check_entry,
    check_transition,
    decide_auto_refund,
    entry_status,
)
from services.resolution.requests import MessageIn, RecategoriseIn, ResolutionIn, StatusIn
from services.resolution.settings import ResolutionSettings
from services.resolution.unit_of_work import ResolutionUnitOfWork
from shared import jsonutil
from shared.event_payloads import (
    CaseAssigned,
    ClockView,
    ComplaintAgentMessage,
    ComplaintRecategorised,
    ComplaintStatusChanged,
    EventPayload,
    ResolutionApproved,
    ResolutionRecorded,
)
from shared.events import Envelope, new_event
from shared.metrics import ServiceMetrics
from shared.money import money_string as money
from shared.problems import Problem

PRODUCER = "resolution"


@dataclass(frozen=True)
class Agent:
    """The authenticated agent (auth.Agent has the same fields and may be passed as is)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    approver: bool


class AgentLike(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def tenant_id(self) -> uuid.UUID: ...
    @property
    def approver(self) -> bool: ...


class CaseFacts(Protocol):
    """What auto_refund needs of the case the triage consumer just opened (domain.NewCase)."""

    @property
    def complaint_id(self) -> uuid.UUID: ...
    @property
    def tenant_id(self) -> uuid.UUID: ...
    @property
    def customer_id(self) -> str | None: ...


# --------------------------------------------------------------------------- helpers

_CASE = (
    "complaint_id, tenant_id, ticket_no, status, category, priority, amount, currency, "
    "transaction_ref, customer_id, assigned_to, outcome, first_responded_at, updated_at, "
    "needs_review"
)

_ENTRY = (
    "e.id, e.kind, e.compensation_type, e.amount, e.currency, e.note, e.requires_approval, "
    "e.decided_by, e.reverses, e.reasons::text AS reasons, e.created_at, "
    "a.approved_by, a.approved_at"
)


def _not_found(ticket_no: str) -> Problem:
    return Problem(404, f"No case {ticket_no}.")


async def _lock_case(conn: asyncpg.Connection, agent: AgentLike, ticket_no: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {_CASE} FROM cases WHERE ticket_no = $1 AND tenant_id = $2 FOR UPDATE",
        ticket_no,
        agent.tenant_id,
    )
    if row is None:
        raise _not_found(ticket_no)
    return row


async def _lock_case_by_id(
    conn: asyncpg.Connection, complaint_id: uuid.UUID, tenant_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_CASE} FROM cases WHERE complaint_id = $1 AND tenant_id = $2 FOR UPDATE",
        complaint_id,
        tenant_id,
    )


async def _entries(conn: asyncpg.Connection, complaint_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_ENTRY} FROM ledger_entries e "
        "LEFT JOIN ledger_approvals a ON a.entry_id = e.id "
        "WHERE e.complaint_id = $1 ORDER BY e.seq",
        complaint_id,
    )


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(
        id=row["id"],
        kind=row["kind"],
        amount=row["amount"],
        currency=row["currency"],
        decided_by=row["decided_by"],
        requires_approval=row["requires_approval"],
        approved_by=str(row["approved_by"]) if row["approved_by"] is not None else None,
        reverses=row["reverses"],
        compensation_type=row["compensation_type"],
    )


def _ledger(case: asyncpg.Record, rows: list[asyncpg.Record]) -> Ledger:
    return Ledger(case["amount"], case["currency"], tuple(_entry(r) for r in rows))


def _money_value(amount: Decimal | None) -> Decimal | None:
    return Decimal(money(amount)) if amount is not None else None  # type: ignore[arg-type]


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None


def _entry_json(row: asyncpg.Record, ticket_no: str) -> dict[str, Any]:
    approved_by = row["approved_by"]
    status = entry_status(_entry(row))
    return {
        "id": str(row["id"]),
        "ticket_no": ticket_no,
        "kind": row["kind"],
        "compensation_type": row["compensation_type"],
        "amount": money(row["amount"]),
        "currency": row["currency"],
        "note": row["note"],
        "status": status,
        "requires_approval": row["requires_approval"],
        "decided_by": row["decided_by"],
        "approved_by": _str(approved_by),
        "approved_at": row["approved_at"].isoformat() if row["approved_at"] else None,
        "reverses": _str(row["reverses"]),
        "reasons": list(jsonutil.loads(row["reasons"])) if row["reasons"] else [],
        "created_at": row["created_at"].isoformat(),
    }


def _refused(refused: LedgerRefused) -> Problem:
    errors = [{"field": refused.field, "message": refused.detail}] if refused.field else None
    return Problem(refused.status, refused.detail, errors=errors)


def _transition_refused(refused: TransitionRefused) -> Problem:
    allowed = ", ".join(refused.allowed) or "none"
    return Problem(
        409, str(refused), errors=[{"field": "status", "message": f"allowed: {allowed}"}]
    )


def _event(
    case: asyncpg.Record,
    event_type: str,
    payload: EventPayload,
    now: datetime,
    correlation_id: uuid.UUID | None = None,
) -> Envelope:
    return new_event(
        event_type,
        producer=PRODUCER,
        tenant_id=case["tenant_id"],
        complaint_id=case["complaint_id"],
        ticket_no=case["ticket_no"],
        # One agent request is one chain of facts.
        correlation_id=correlation_id or uuid.uuid4(),
        payload=payload,
        occurred_at=now,
    )


async def _history(
    conn: asyncpg.Connection,
    case: asyncpg.Record,
    status: str,
    actor: str,
    note: str,
    now: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO case_history (complaint_id, at, status, actor, note) "
        "VALUES ($1, $2, $3, $4, $5)",
        case["complaint_id"],
        now,
        status,
        actor,
        note,
    )


async def _customer_saw(conn: asyncpg.Connection, case: asyncpg.Record, now: datetime) -> None:
    """The customer saw something from us: the first time (the case row as locked by
    this command), that is the first response and the legal clock's holding response
    (clock_store also sets cases.first_responded_at)."""
    if case["first_responded_at"] is None:
        await clock_store.agent_responded(conn, case["complaint_id"], now)


def _recorded_payload(
    row: asyncpg.Record, case: asyncpg.Record, model: type[ResolutionRecorded]
) -> ResolutionRecorded:
    return model(
        resolution_id=row["id"],
        kind=row["kind"],
        amount=_money_value(row["amount"]),
        currency=row["currency"],
        transaction_ref=case["transaction_ref"],
        reason=row["note"],
        decided_by=row["decided_by"],
        approved_by=_str(row["approved_by"]),
        status=entry_status(_entry(row)),
        compensation_type=row["compensation_type"],
        reverses=row["reverses"],
        reasons=list(jsonutil.loads(row["reasons"])) if row["reasons"] else [],
    )


async def _insert_entry(
    conn: asyncpg.Connection,
    case: asyncpg.Record,
    accepted: Accepted,
    *,
    decided_by: str,
    reasons: list[str],
    now: datetime,
) -> asyncpg.Record:
    entry_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO ledger_entries (id, complaint_id, tenant_id, kind, compensation_type, "
        "amount, currency, note, requires_approval, decided_by, reverses, reasons, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::jsonb, $13)",
        entry_id,
        case["complaint_id"],
        case["tenant_id"],
        accepted.kind,
        accepted.compensation_type,
        accepted.amount,
        accepted.currency,
        accepted.note,
        accepted.requires_approval,
        decided_by,
        accepted.reverses,
        jsonutil.dumps_str(reasons),  # as text: works with or without the pool's codec
        now,
    )
    return await conn.fetchrow(
        f"SELECT {_ENTRY} FROM ledger_entries e LEFT JOIN ledger_approvals a "
        "ON a.entry_id = e.id WHERE e.id = $1",
        entry_id,
    )


def _entry_note(row: asyncpg.Record) -> str:
    kind, amount = row["kind"], money(row["amount"])
    what = f"{kind} {amount} {row['currency']}" if amount else kind
    if row["compensation_type"]:
        what = f"{what} ({row['compensation_type']})"
    if row["kind"] == "reversal":
        what = f"{what} of {row['reverses']}"
    if row["requires_approval"]:
        what = f"{what}, waiting for approval"
    return f"Recorded {what}: {row['note']}"


# ------------------------------------------------------------------------ resolutions


def _fingerprint(value: str | bytes) -> str:
    return value.hex() if isinstance(value, bytes) else value


async def record_resolution(
    conn: asyncpg.Connection,
    settings: ResolutionSettings,
    agent: AgentLike,
    ticket_no: str,
    body: ResolutionIn,
    idempotency_key: str | None,
    fingerprint: str | bytes,
    now: datetime,
    *,
    metrics: ServiceMetrics | None = None,
) -> tuple[int, dict[str, Any], bool]:
    """(201, the entry, replayed). With an Idempotency-Key (kept per agent): the same key
    with the same fingerprint answers the first answer again (replayed=True); with
    another fingerprint, 409. `fingerprint`: e.g. sha256 of method, path and canonical
    body (hex, or bytes: stored as hex)."""
    fingerprint = _fingerprint(fingerprint)
    async with conn.transaction():
        if idempotency_key is not None:
            # Two requests with one key wait for each other; the second sees the first.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"idempotency|{agent.id}|{idempotency_key}",
            )
            stored = await conn.fetchrow(
                "SELECT fingerprint, status_code, response::text AS response "
                "FROM idempotency_keys WHERE agent_id = $1 AND key = $2",
                agent.id,
                idempotency_key,
            )
            if stored is not None:
                if stored["fingerprint"] != fingerprint:
                    raise Problem(
                        409, "This Idempotency-Key was already used with a different request."
                    )
                return stored["status_code"], jsonutil.loads(stored["response"]), True
        case = await _lock_case(conn, agent, ticket_no)
        if case["status"] == Status.CLOSED:
            raise Problem(409, f"Case {ticket_no} is closed; reopen it to record a resolution.")
        ledger = _ledger(case, await _entries(conn, case["complaint_id"]))
        proposed = Proposed(
            kind=body.kind,
            note=body.note,
            amount=body.amount,
            currency=body.currency,
            compensation_type=body.compensation_type,
            reverses=body.reverses,
        )
        try:
            accepted = check_entry(ledger, proposed, settings.approval_thresholds)
        except LedgerRefused as refused:
            raise _refused(refused) from None
        row = await _insert_entry(
            conn, case, accepted, decided_by=str(agent.id), reasons=[], now=now
        )
        await _history(conn, case, case["status"], str(agent.id), _entry_note(row), now)
        if accepted.status == RECORDED and accepted.kind != "reversal":
            await _customer_saw(conn, case, now)
        uow = ResolutionUnitOfWork(conn, settings)
        uow.emit(
            _event(
                case, "resolution.recorded", _recorded_payload(row, case, ResolutionRecorded), now
            )
        )
        answer = _entry_json(row, ticket_no)
        if idempotency_key is not None:
            await conn.execute(
                "INSERT INTO idempotency_keys (agent_id, key, fingerprint, status_code, "
                "response, created_at) VALUES ($1, $2, $3, 201, $4::text::jsonb, $5)",
                agent.id,
                idempotency_key,
                fingerprint,
                jsonutil.dumps_str(answer),
                now,
            )
        await uow.flush()
    if metrics is not None:
        metrics.resolutions_recorded.labels(kind=accepted.kind).inc()
    return 201, answer, False


async def approve_resolution(
    conn: asyncpg.Connection,
    settings: ResolutionSettings,
    agent: AgentLike,
    resolution_id: uuid.UUID,
    now: datetime,
) -> dict[str, Any]:
    """POST /v1/resolutions/{id}/approve: 200 with the entry, now `approved`. 404 for an
    entry of another tenant; 403 for its own author or an agent without the approver
    role; 409 when it is not waiting for approval (approved already, or reversed)."""
    async with conn.transaction():
        complaint_id = await conn.fetchval(
            "SELECT complaint_id FROM ledger_entries WHERE id = $1 AND tenant_id = $2",
            resolution_id,
            agent.tenant_id,
        )
        case = await _lock_case_by_id(conn, complaint_id, agent.tenant_id) if complaint_id else None
        if case is None:
            raise Problem(404, f"No resolution {resolution_id}.")
        if case["status"] == Status.CLOSED:
            raise Problem(409, "The case is closed: reopen it before approving a resolution.")
        rows = await _entries(conn, case["complaint_id"])
        ledger = _ledger(case, rows)
        entry = ledger.find(resolution_id)
        assert entry is not None  # found above, and ledger rows are never deleted
        try:
            check_approval(ledger, entry, Approver(str(agent.id), agent.approver))
        except LedgerRefused as refused:
            raise _refused(refused) from None
        await conn.execute(
            "INSERT INTO ledger_approvals (entry_id, approved_by, approved_at) VALUES ($1, $2, $3)",
            resolution_id,
            agent.id,
            now,
        )
        row = await conn.fetchrow(
            f"SELECT {_ENTRY} FROM ledger_entries e LEFT JOIN ledger_approvals a "
            "ON a.entry_id = e.id WHERE e.id = $1",
            resolution_id,
        )
        note = f"Approved {row['kind']} {money(row['amount'])} {row['currency']} ({row['id']})."
        await _history(conn, case, case["status"], str(agent.id), note, now)
        await _customer_saw(conn, case, now)
        uow = ResolutionUnitOfWork(conn, settings)
        uow.emit(
            _event(
                case, "resolution.approved", _recorded_payload(row, case, ResolutionApproved), now
            )
        )
        await uow.flush()
    return _entry_json(row, case["ticket_no"])


# ---------------------------------------------------------------------------- status


async def _move(
    conn: asyncpg.Connection,
    case: asyncpg.Record,
    requested: str,
    *,
    actor: str,
    note: str,
    reason: str,
    now: datetime,
    outcome: str | None = None,
) -> tuple[ComplaintStatusChanged, list[ClockView]]:
    """Writes the (already checked) status change, moves the clocks, notes it in the
    history; the status_changed payload and the clocks after the change."""
    current, complaint_id = case["status"], case["complaint_id"]
    await conn.execute(
        "UPDATE cases SET status = $2, updated_at = $3, "
        "outcome = CASE WHEN $2 = 'resolved' THEN $4 ELSE outcome END, "
        "resolved_at = CASE WHEN $2 = 'resolved' THEN $3 ELSE resolved_at END "
        "WHERE complaint_id = $1",
        complaint_id,
        requested,
        now,
        outcome,
    )
    if current == Status.AWAITING_CUSTOMER:
        await clock_store.resume_internal(conn, complaint_id, now)
    if requested == Status.AWAITING_CUSTOMER:
        await clock_store.pause_internal(conn, complaint_id, now)
    elif requested == Status.RESOLVED:
        await clock_store.case_resolved(conn, complaint_id, now)
    elif requested == Status.REOPENED:
        await clock_store.case_reopened(conn, complaint_id, now)
    elif requested == Status.CLOSED:
        await clock_store.case_closed(conn, complaint_id, now)
    await _history(conn, case, requested, actor, note, now)
    clocks = await clock_store.views(conn, complaint_id)
    payload = ComplaintStatusChanged(
        status=requested,
        previous_status=current,
        reason=reason,
        note=note,
        actor=actor,
        category=case["category"],
        priority=case["priority"],
        outcome=outcome,
        company_response=OUTCOMES[outcome] if outcome else None,
        clocks=clocks,
    )
    return payload, clocks


async def change_status(
    conn: asyncpg.Connection,
    agent: AgentLike,
    ticket_no: str,
    body: StatusIn,
    now: datetime,
) -> dict[str, Any]:
    """POST /v1/cases/{ticket_no}/status. 409 naming the allowed transitions; resolving
    takes an outcome (422 without one, and 422 for an outcome on another status)."""
    if body.status == Status.RESOLVED and body.outcome is None:
        raise Problem(
            422,
            "Resolving a case takes an outcome.",
            errors=[
                {
                    "field": "outcome",
                    "message": "required when status is resolved: " + ", ".join(OUTCOMES),
                }
            ],
        )
    if body.status != Status.RESOLVED and body.outcome is not None:
        raise Problem(
            422,
            "An outcome is given only when resolving.",
            errors=[{"field": "outcome", "message": "only with status resolved"}],
        )
    async with conn.transaction():
        case = await _lock_case(conn, agent, ticket_no)
        try:
            check_transition(case["status"], body.status)
        except TransitionRefused as refused:
            raise _transition_refused(refused) from None
        await _customer_saw(conn, case, now)
        uow = ResolutionUnitOfWork(conn)
        payload, clocks = await _move(
            conn,
            case,
            body.status,
            actor=str(agent.id),
            note=body.note,
            reason="agent_status_change",
            now=now,
            outcome=body.outcome,
        )
        uow.emit(_event(case, "complaint.status_changed", payload, now))
        await uow.flush()
    return {
        "ticket_no": ticket_no,
        "status": body.status,
        "previous_status": case["status"],
        "outcome": body.outcome,
        "company_response": payload.company_response,
        "note": body.note,
        "updated_at": now.isoformat(),
        "clocks": [c.model_dump(mode="json") for c in clocks],
    }


# -------------------------------------------------------------------------- messages


async def send_message(
    conn: asyncpg.Connection,
    agent: AgentLike,
    ticket_no: str,
    body: MessageIn,
    now: datetime,
) -> dict[str, Any]:
    """POST /v1/cases/{ticket_no}/messages: stored for the case, emitted for the notifier.
    With request_information the case goes awaiting_customer (its internal clocks pause);
    409 where that transition is not allowed (a resolved or closed case)."""
    async with conn.transaction():
        case = await _lock_case(conn, agent, ticket_no)
        current = case["status"]
        to_awaiting = body.request_information and current != Status.AWAITING_CUSTOMER
        if to_awaiting:
            try:
                check_transition(current, Status.AWAITING_CUSTOMER)
            except TransitionRefused as refused:
                raise _transition_refused(refused) from None
        message_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO case_messages (id, complaint_id, at, author, agent_id, text, "
            "request_information) VALUES ($1, $2, $3, 'agent', $4, $5, $6)",
            message_id,
            case["complaint_id"],
            now,
            agent.id,
            body.text,
            body.request_information,
        )
        await _customer_saw(conn, case, now)
        uow = ResolutionUnitOfWork(conn)
        actor = str(agent.id)
        status = current
        status_payload = None
        if to_awaiting:
            status = Status.AWAITING_CUSTOMER
            status_payload, clocks = await _move(
                conn,
                case,
                status,
                actor=actor,
                note="Agent asked the customer for information.",
                reason="information_requested",
                now=now,
            )
        else:
            what = (
                "asked the customer for information"
                if body.request_information
                else ("wrote to the customer")
            )
            await _history(conn, case, current, actor, f"Agent {what}.", now)
            clocks = await clock_store.views(conn, case["complaint_id"])
        message = ComplaintAgentMessage(
            message_id=message_id,
            text=body.text,
            request_information=body.request_information,
            agent_id=actor,
            clocks=clocks,
        )
        uow.emit(_event(case, "complaint.agent_message", message, now))
        if status_payload is not None:
            uow.emit(_event(case, "complaint.status_changed", status_payload, now))
        await uow.flush()
    return {
        "id": str(message_id),
        "ticket_no": ticket_no,
        "at": now.isoformat(),
        "author": "agent",
        "agent_id": actor,
        "text": body.text,
        "request_information": body.request_information,
        "evidence": [],
        "status": str(status),
    }


# ------------------------------------------------------------------------ assignment


async def _assign(
    conn: asyncpg.Connection,
    agent: AgentLike,
    case: asyncpg.Record,
    to: uuid.UUID,
    now: datetime,
) -> dict[str, Any]:
    previous = case["assigned_to"]
    if previous != to:
        await conn.execute(
            "UPDATE cases SET assigned_to = $2, updated_at = $3 WHERE complaint_id = $1",
            case["complaint_id"],
            to,
            now,
        )
        note = "Claimed." if to == agent.id else f"Assigned to agent {to}."
        await _history(conn, case, case["status"], str(agent.id), note, now)
        uow = ResolutionUnitOfWork(conn)
        payload = CaseAssigned(
            agent_id=str(to), assigned_by=str(agent.id), previous_agent_id=_str(previous)
        )
        uow.emit(_event(case, "case.assigned", payload, now))
        await uow.flush()
    return {
        "ticket_no": case["ticket_no"],
        "status": case["status"],
        "assigned_to": str(to),
        "previous_assigned_to": _str(previous),
        "assigned_by": str(agent.id),
        "changed": previous != to,
    }


async def claim(
    conn: asyncpg.Connection, agent: AgentLike, ticket_no: str, now: datetime
) -> dict[str, Any]:
    """POST /v1/cases/{ticket_no}/claim: the case is assigned to the caller. Claiming a
    case one already holds changes nothing; one held by another agent is 409 (assign
    moves it)."""
    async with conn.transaction():
        case = await _lock_case(conn, agent, ticket_no)
        holder = case["assigned_to"]
        if holder is not None and holder != agent.id:
            raise Problem(
                409, f"Case {ticket_no} is assigned to agent {holder}; assign it to move it."
            )
        return await _assign(conn, agent, case, agent.id, now)


async def assign(
    conn: asyncpg.Connection,
    agent: AgentLike,
    ticket_no: str,
    agent_id: uuid.UUID,
    now: datetime,
) -> dict[str, Any]:
    """POST /v1/cases/{ticket_no}/assign: to an agent of the caller's tenant (422 for any
    other id: an agent of another tenant is indistinguishable from none)."""
    async with conn.transaction():
        case = await _lock_case(conn, agent, ticket_no)
        known = await conn.fetchval(
            "SELECT true FROM agents WHERE id = $1 AND tenant_id = $2", agent_id, agent.tenant_id
        )
        if not known:
            raise Problem(
                422,
                "No agent with this id works for your tenant.",
                errors=[{"field": "agent_id", "message": "no agent of your tenant"}],
            )
        return await _assign(conn, agent, case, agent_id, now)


# ------------------------------------------------------------------ recategorising


def recategorised_payload(
    case: Any, body: RecategoriseIn, agent_id: uuid.UUID
) -> ComplaintRecategorised | None:
    """complaint.recategorised for an agent's correction of a case (`case`: its current
    category, priority and needs_review), or None when there is nothing to record: the
    same category and priority again on a case no longer waiting for review. The same
    values on a case triage flagged for review are the agent's confirmation: recorded
    (it clears the flag and is a labelled example like any correction). Pure."""
    priority = body.priority or case["priority"]
    unchanged = (body.category, priority) == (case["category"], case["priority"])
    if unchanged and not case["needs_review"]:
        return None
    return ComplaintRecategorised(
        category=body.category,
        priority=priority,
        previous_category=case["category"],
        previous_priority=case["priority"],
        corrected_by=str(agent_id),
        note=body.note,
    )


def recategorised_note(payload: ComplaintRecategorised) -> str:
    """The case history's line for it (agents read it; the customer never does)."""
    before = f"{payload.previous_category} {payload.previous_priority}"
    after = f"{payload.category} {payload.priority}"
    note = (
        f"Triage's decision confirmed: {after}."
        if before == after
        else f"Recategorised from {before} to {after}."
    )
    return f"{note} {payload.note}" if payload.note else note


async def recategorise(
    conn: asyncpg.Connection,
    agent: AgentLike,
    ticket_no: str,
    body: RecategoriseIn,
    now: datetime,
) -> dict[str, Any]:
    """POST /v1/cases/{ticket_no}/category: the case takes the agent's category (and
    priority, when given), leaves the review queue, notes it in the history and emits
    complaint.recategorised, all in one transaction. Correcting to the values the case
    already has (and no review pending) changes nothing and emits nothing: the call is
    idempotent by itself. The clocks stay as they were (triage's due times hold). Any
    status: a closed case's correction is as good a label as an open one's."""
    async with conn.transaction():
        case = await _lock_case(conn, agent, ticket_no)
        payload = recategorised_payload(case, body, agent.id)
        if payload is not None:
            await conn.execute(
                "UPDATE cases SET category = $2, priority = $3, needs_review = false, "
                "updated_at = $4 WHERE complaint_id = $1",
                case["complaint_id"],
                payload.category,
                payload.priority,
                now,
            )
            await _history(
                conn, case, case["status"], str(agent.id), recategorised_note(payload), now
            )
            uow = ResolutionUnitOfWork(conn)
            uow.emit(_event(case, "complaint.recategorised", payload, now))
            await uow.flush()
    return {
        "ticket_no": ticket_no,
        "status": case["status"],
        "category": payload.category if payload else case["category"],
        "priority": payload.priority if payload else case["priority"],
        "needs_review": False,  # cleared now, or it was not set (nothing to change)
        "previous_category": case["category"],
        "previous_priority": case["priority"],
        "changed": payload is not None,
        "updated_at": (now if payload else case["updated_at"]).isoformat(),
    }


# ------------------------------------------------------------------ automatic refunds


async def auto_refund(
    conn: asyncpg.Connection,
    settings: ResolutionSettings,
    case_facts: CaseFacts,
    now: datetime,
    *,
    emit: Callable[[Envelope], None] | None = None,
    correlation_id: uuid.UUID | None = None,
) -> dict[str, Any] | None:
    """The automatic refund policy (case.decide_auto_refund) on the case the triage
    consumer just opened, inside the consumer's transaction. Returns the entry recorded,
    or None.

    `emit`: the caller's unit of work's emit, so resolution.recorded follows the caller's
    "case opened" in the outbox; without it the events are flushed here at once.
    `correlation_id`: the triaged event's, to chain the facts."""
    if getattr(case_facts, "category", AUTO_CATEGORY) != AUTO_CATEGORY:
        return None  # the common case: no lock, no query
    customer_id = case_facts.customer_id
    if customer_id:
        # Two complaints of one customer triaged at once (other partitions): one refund.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"auto_refund|{case_facts.tenant_id}|{customer_id}",
        )
    case = await _lock_case_by_id(conn, case_facts.complaint_id, case_facts.tenant_id)
    if case is None:
        return None
    last = (
        await conn.fetchval(
            "SELECT max(refunded_at) FROM auto_refunds WHERE tenant_id = $1 AND customer_id = $2",
            case["tenant_id"],
            customer_id,
        )
        if customer_id
        else None
    )
    ledger = _ledger(case, await _entries(conn, case["complaint_id"]))
    decision = decide_auto_refund(
        AutoRefundFacts(
            category=case["category"],
            amount=case["amount"],
            currency=case["currency"],
            transaction_ref=case["transaction_ref"],
            customer_id=customer_id,
            last_auto_refund_at=last,
            ledger=ledger,
        ),
        limits=settings.auto_refund_limits,
        once_per_days=settings.auto_refund_once_per_days,
        thresholds=settings.approval_thresholds,
        now=now,
    )
    if not decision.refund:
        return None  # nothing to record: the reasons travel only with a refund
    note = "Automatic refund of a duplicate charge."
    accepted = check_entry(
        ledger,
        Proposed("refund", note, decision.amount, decision.currency),
        settings.approval_thresholds,
    )
    row = await _insert_entry(
        conn, case, accepted, decided_by=AUTO, reasons=decision.reasons, now=now
    )
    await conn.execute(
        "INSERT INTO auto_refunds (entry_id, tenant_id, customer_id, refunded_at) "
        "VALUES ($1, $2, $3, $4)",
        row["id"],
        case["tenant_id"],
        customer_id,
        now,
    )
    await _history(conn, case, case["status"], AUTO, _entry_note(row), now)
    await _customer_saw(conn, case, now)
    event = _event(
        case,
        "resolution.recorded",
        _recorded_payload(row, case, ResolutionRecorded),
        now,
        correlation_id,
    )
    if emit is not None:
        emit(event)
    else:
        uow = ResolutionUnitOfWork(conn, settings)
        uow.emit(event)
        await uow.flush()
    return _entry_json(row, case["ticket_no"])
