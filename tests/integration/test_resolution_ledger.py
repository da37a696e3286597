"""The money ledger and the case commands on real PostgreSQL: append-only enforced by the
database, refunds of concurrent agents within the disputed amount, Idempotency-Key replay
and conflict, approvals, and each fact in the outbox exactly once."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from services.resolution import clock_store, commands
from services.resolution.agents import create_agent
from services.resolution.app import MIGRATIONS, SCHEMA
from services.resolution.commands import Agent
from services.resolution.domain import NewCase
from services.resolution.requests import AssignIn, MessageIn, ResolutionIn, StatusIn
from services.resolution.settings import ResolutionSettings
from shared.db import create_pool
from shared.problems import Problem
from shared.runtime import migrate

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
_tickets = itertools.count(1)


@pytest.fixture(scope="module")
def settings(database_url: str) -> ResolutionSettings:
    s = ResolutionSettings(database_url=database_url)
    migrate(s, SCHEMA, MIGRATIONS)
    return s


@pytest.fixture
async def pool(settings: ResolutionSettings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url, SCHEMA, min_size=1, max_size=12)
    try:
        yield pool
    finally:
        await pool.close()


async def new_agent(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, *, approver: bool = False, name: str = "a"
) -> Agent:
    async with pool.acquire() as conn:
        made = await create_agent(conn, name=name, approver=approver, tenant_id=tenant_id)
    return Agent(uuid.UUID(made["agent_id"]), tenant_id, name, approver)


async def new_case(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    *,
    amount: str | None = "100.00",
    currency: str | None = "CNY",
    category: str = "duplicate_charge",
    customer_id: str = "u-1",
    transaction_ref: str | None = "T-1",
) -> NewCase:
    case = NewCase(
        complaint_id=uuid.uuid4(),
        tenant_id=tenant_id,
        ticket_no=f"WC-20261123-{next(_tickets):06d}-{uuid.uuid4().hex[:4]}",
        category=category,
        priority="P2",
        jurisdiction="cn",
        locale="zh-CN",
        channel="app",
        amount=Decimal(amount) if amount else None,
        currency=currency,
        transaction_ref=transaction_ref,
        received_at=NOW - timedelta(hours=1),
        first_response_due=NOW + timedelta(hours=8),
        resolution_due=NOW + timedelta(hours=72),
        customer_id=customer_id,
    )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO cases (complaint_id, tenant_id, ticket_no, status, category, priority,"
            " jurisdiction, amount, currency, transaction_ref, received_at, first_response_due,"
            " resolution_due, customer_id)"
            " VALUES ($1, $2, $3, 'triaged', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            case.complaint_id,
            tenant_id,
            case.ticket_no,
            category,
            case.priority,
            case.jurisdiction,
            case.amount,
            currency,
            transaction_ref,
            case.received_at,
            case.first_response_due,
            case.resolution_due,
            customer_id,
        )
        await clock_store.start_clocks(
            conn,
            clock_store.ClockCase(
                complaint_id=case.complaint_id,
                tenant_id=tenant_id,
                jurisdiction=case.jurisdiction,
                received_at=case.received_at,
                first_response_due=case.first_response_due,
                resolution_due=case.resolution_due,
            ),
            NOW - timedelta(hours=1),
        )
    return case


def refund(amount: str, currency: str = "CNY", **extra: Any) -> ResolutionIn:
    return ResolutionIn.model_validate(
        {"kind": "refund", "amount": amount, "currency": currency, "note": "refund", **extra}
    )


async def record(
    pool: asyncpg.Pool,
    settings: ResolutionSettings,
    agent: Agent,
    case: NewCase,
    body: ResolutionIn,
    key: str | None = None,
    fingerprint: str = "f",
) -> tuple[int, dict[str, Any], bool]:
    async with pool.acquire() as conn:
        return await commands.record_resolution(
            conn, settings, agent, case.ticket_no, body, key or uuid.uuid4().hex, fingerprint, NOW
        )


async def outbox(pool: asyncpg.Pool, case: NewCase) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT message FROM outbox WHERE message_key = $1 ORDER BY id",
        str(case.complaint_id).encode(),
    )
    return [json.loads(r["message"]) for r in rows]


async def problem_of(coro: Any) -> Problem:
    with pytest.raises(Problem) as raised:
        await coro
    return raised.value


# ------------------------------------------------------------------ append-only


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET note = 'changed'",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
        "UPDATE ledger_approvals SET approved_at = now()",
        "DELETE FROM ledger_approvals",
        "TRUNCATE ledger_approvals",
    ],
)
async def test_the_database_refuses_to_change_or_remove_ledger_rows(
    pool: asyncpg.Pool, settings: ResolutionSettings, statement: str
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    approver = await new_agent(pool, tenant, approver=True)
    case = await new_case(pool, tenant, amount="1000.00")
    _, entry, _ = await record(pool, settings, agent, case, refund("600"))
    async with pool.acquire() as conn:
        await commands.approve_resolution(conn, settings, approver, uuid.UUID(entry["id"]), NOW)
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await pool.execute(statement)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE id = $1", uuid.UUID(entry["id"])
        )
        == 1
    )


# ------------------------------------------------------------------ refund sums


async def test_concurrent_refunds_of_several_agents_never_exceed_the_disputed_amount(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agents = [await new_agent(pool, tenant, name=f"agent-{i}") for i in range(8)]
    case = await new_case(pool, tenant, amount="100.00")
    results = await asyncio.gather(
        *(record(pool, settings, a, case, refund("30")) for a in agents), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, Problem)]
    assert len(accepted) == 3 and len(refused) == 5, results
    assert all(p.status == 422 and p.errors[0]["field"] == "amount" for p in refused)  # type: ignore[index]
    total = await pool.fetchval(
        "SELECT sum(amount) FROM ledger_entries WHERE complaint_id = $1", case.complaint_id
    )
    assert total == Decimal("90")
    recorded = [e for e in await outbox(pool, case) if e["event_type"] == "resolution.recorded"]
    assert len(recorded) == 3
    assert {e["payload"]["amount"] for e in recorded} == {"30.00"}


async def test_a_reversal_frees_its_amount_and_is_taken_only_once(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    case = await new_case(pool, tenant, amount="50.00")
    _, first, _ = await record(pool, settings, agent, case, refund("50"))
    problem = await problem_of(record(pool, settings, agent, case, refund("10")))
    assert problem.status == 422
    reversal = ResolutionIn(kind="reversal", reverses=uuid.UUID(first["id"]), note="wrong case")
    status, reversed_, _ = await record(pool, settings, agent, case, reversal)
    assert status == 201
    assert (reversed_["kind"], reversed_["amount"], reversed_["reverses"]) == (
        "reversal",
        "50.00",
        first["id"],
    )
    again = await problem_of(record(pool, settings, agent, case, reversal))
    assert again.status == 409
    _, _, _ = await record(pool, settings, agent, case, refund("50"))
    events = [e for e in await outbox(pool, case) if e["event_type"] == "resolution.recorded"]
    assert [e["payload"]["kind"] for e in events] == ["refund", "reversal", "refund"]
    assert events[1]["payload"]["reverses"] == first["id"]


async def test_a_refund_in_another_currency_than_the_disputed_one_is_refused(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    case = await new_case(pool, tenant)
    problem = await problem_of(record(pool, settings, agent, case, refund("10", "USD")))
    assert problem.status == 422
    assert problem.errors == [{"field": "currency", "message": problem.detail}]


# ------------------------------------------------------------------ idempotency


async def test_the_same_idempotency_key_replays_the_first_answer_and_another_body_is_409(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    case = await new_case(pool, tenant)
    first = await record(pool, settings, agent, case, refund("20"), key="k-1", fingerprint="a")
    again = await asyncio.gather(
        *(
            record(pool, settings, agent, case, refund("20"), key="k-1", fingerprint="a")
            for _ in range(4)
        )
    )
    assert first[2] is False
    assert all(r == (201, first[1], True) for r in again)
    conflict = await problem_of(
        record(pool, settings, agent, case, refund("21"), key="k-1", fingerprint="b")
    )
    assert conflict.status == 409
    # The same key of another agent is another key.
    other = await new_agent(pool, tenant)
    status, _, replayed = await record(
        pool, settings, other, case, refund("20"), key="k-1", fingerprint="a"
    )
    assert (status, replayed) == (201, False)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE complaint_id = $1", case.complaint_id
        )
        == 2
    )
    events = [e for e in await outbox(pool, case) if e["event_type"] == "resolution.recorded"]
    assert len(events) == 2


async def test_concurrent_first_uses_of_one_key_record_once(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    case = await new_case(pool, tenant)
    results = await asyncio.gather(
        *(
            record(pool, settings, agent, case, refund("5"), key="same", fingerprint="x")
            for _ in range(6)
        )
    )
    assert len({r[1]["id"] for r in results}) == 1
    assert sorted(r[2] for r in results) == [False] + [True] * 5


# ------------------------------------------------------------------ approvals


async def test_a_refund_above_the_threshold_waits_for_a_different_approver(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    author = await new_agent(pool, tenant, approver=True)
    plain = await new_agent(pool, tenant)
    approver = await new_agent(pool, tenant, approver=True)
    stranger = await new_agent(pool, uuid.uuid4(), approver=True)
    case = await new_case(pool, tenant, amount="1000.00")
    _, entry, _ = await record(pool, settings, author, case, refund("600"))
    assert entry["status"] == "pending_approval"
    entry_id = uuid.UUID(entry["id"])
    responded = "SELECT first_responded_at FROM cases WHERE complaint_id = $1"
    # A refund waiting for approval is nothing the customer sees yet.
    assert await pool.fetchval(responded, case.complaint_id) is None

    async def approve(agent: Agent, what: uuid.UUID = entry_id) -> dict[str, Any]:
        async with pool.acquire() as conn:
            return await commands.approve_resolution(conn, settings, agent, what, NOW)

    assert (await problem_of(approve(author))).status == 403
    assert (await problem_of(approve(plain))).status == 403
    assert (await problem_of(approve(stranger))).status == 404
    assert (await problem_of(approve(approver, uuid.uuid4()))).status == 404
    approved = await approve(approver)
    assert (approved["status"], approved["approved_by"]) == ("approved", str(approver.id))
    assert await pool.fetchval(responded, case.complaint_id) == NOW
    assert (await problem_of(approve(approver))).status == 409

    # Within the threshold: recorded at once, and nothing to approve.
    _, small, _ = await record(pool, settings, author, case, refund("100"))
    assert small["status"] == "recorded"
    assert (await problem_of(approve(approver, uuid.UUID(small["id"])))).status == 409

    events = await outbox(pool, case)
    money = [e for e in events if e["event_type"].startswith("resolution.")]
    assert [(e["event_type"], e["payload"]["status"]) for e in money] == [
        ("resolution.recorded", "pending_approval"),
        ("resolution.approved", "approved"),
        ("resolution.recorded", "recorded"),
    ]
    approved_event = money[1]["payload"]
    assert approved_event["resolution_id"] == entry["id"]
    assert approved_event["approved_by"] == str(approver.id)
    assert approved_event["decided_by"] == str(author.id)
    assert approved_event["transaction_ref"] == "T-1"
    assert approved_event["reason"] == "refund"
    assert len({e["event_id"] for e in events}) == len(events)


# ------------------------------------------------------------------ status & messages


async def test_a_refund_on_a_case_with_no_disputed_amount_always_waits_for_approval(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    case = await new_case(pool, tenant, amount=None, currency=None)
    _, entry, _ = await record(pool, settings, agent, case, refund("1.00"))
    assert entry["status"] == "pending_approval"  # no cap to check it against


async def test_nothing_is_approved_on_a_closed_case(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    author, approver = await new_agent(pool, tenant), await new_agent(pool, tenant, approver=True)
    case = await new_case(pool, tenant, amount="1000.00")
    _, entry, _ = await record(pool, settings, author, case, refund("600"))
    await pool.execute(
        "UPDATE cases SET status = 'closed' WHERE complaint_id = $1", case.complaint_id
    )
    async with pool.acquire() as conn:
        refused = await problem_of(
            commands.approve_resolution(conn, settings, approver, uuid.UUID(entry["id"]), NOW)
        )
    assert refused.status == 409
    approvals = "SELECT count(*) FROM ledger_approvals WHERE entry_id = $1"
    assert await pool.fetchval(approvals, uuid.UUID(entry["id"])) == 0


async def test_status_changes_follow_the_machine_and_resolving_takes_an_outcome(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    case = await new_case(pool, tenant)

    async def move(status: str, outcome: str | None = None) -> dict[str, Any]:
        async with pool.acquire() as conn:
            body = StatusIn(status=status, note=f"to {status}", outcome=outcome)  # type: ignore[arg-type]
            return await commands.change_status(conn, agent, case.ticket_no, body, NOW)

    refused = await problem_of(move("closed"))
    assert refused.status == 409 and "in_progress" in refused.detail
    assert (await problem_of(move("resolved"))).status == 422
    assert (await problem_of(move("in_progress", "no_relief"))).status == 422
    await move("in_progress")
    resolved = await move("resolved", "monetary_relief")
    assert resolved["company_response"] == "Closed with monetary relief"
    row = await pool.fetchrow(
        "SELECT status, outcome, resolved_at, first_responded_at FROM cases "
        "WHERE complaint_id = $1",
        case.complaint_id,
    )
    assert dict(row) == {
        "status": "resolved",
        "outcome": "monetary_relief",
        "resolved_at": NOW,
        "first_responded_at": NOW,
    }
    await move("reopened")
    await move("resolved", "explanation")
    await move("closed")
    assert (await problem_of(move("in_progress"))).status == 409

    changes = [e for e in await outbox(pool, case) if e["event_type"] == "complaint.status_changed"]
    assert [(e["payload"]["previous_status"], e["payload"]["status"]) for e in changes] == [
        ("triaged", "in_progress"),
        ("in_progress", "resolved"),
        ("resolved", "reopened"),
        ("reopened", "resolved"),
        ("resolved", "closed"),
    ]
    assert changes[1]["payload"]["outcome"] == "monetary_relief"
    assert changes[1]["payload"]["company_response"] == "Closed with monetary relief"
    assert changes[3]["payload"]["company_response"] == "Closed with explanation"
    assert all(e["payload"]["clocks"] for e in changes)
    history = await pool.fetch(
        "SELECT status FROM case_history WHERE complaint_id = $1 ORDER BY id", case.complaint_id
    )
    assert [h["status"] for h in history] == [
        "in_progress", "resolved", "reopened", "resolved", "closed",
    ]  # fmt: skip
    # A closed case takes no new money.
    assert (await problem_of(record(pool, settings, agent, case, refund("1")))).status == 409


async def test_a_request_for_information_pauses_the_case_until_an_agent_moves_it(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    agent = await new_agent(pool, tenant)
    case = await new_case(pool, tenant)
    async with pool.acquire() as conn:
        plain = await commands.send_message(
            conn, agent, case.ticket_no, MessageIn(text="Looking into it."), NOW
        )
        assert plain["status"] == "triaged"
        asked = await commands.send_message(
            conn,
            agent,
            case.ticket_no,
            MessageIn(text="Please send the receipt.", request_information=True),
            NOW + timedelta(minutes=5),
        )
        assert asked["status"] == "awaiting_customer"
        states = {c.name: c.state for c in await clock_store.views(conn, case.complaint_id)}
        assert states["resolution"] == "paused"
        assert states["first_response"] == "met"
        # The first response was the first message, not the later request.
        assert (
            await conn.fetchval(
                "SELECT first_responded_at FROM cases WHERE complaint_id = $1", case.complaint_id
            )
            == NOW
        )
        await commands.change_status(
            conn, agent, case.ticket_no, StatusIn(status="in_progress", note="back"), NOW
        )
        states = {c.name: c.state for c in await clock_store.views(conn, case.complaint_id)}
        assert states["resolution"] == "running"
    rows = await pool.fetch(
        "SELECT author, agent_id, text, request_information FROM case_messages "
        "WHERE complaint_id = $1 ORDER BY at",
        case.complaint_id,
    )
    assert [(r["author"], r["agent_id"], r["request_information"]) for r in rows] == [
        ("agent", agent.id, False),
        ("agent", agent.id, True),
    ]
    types = [e["event_type"] for e in await outbox(pool, case)]
    assert types == [
        "complaint.agent_message",
        "complaint.agent_message",
        "complaint.status_changed",
        "complaint.status_changed",
    ]


async def test_claim_and_assign_stay_within_the_tenant(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    one, two = await new_agent(pool, tenant), await new_agent(pool, tenant)
    outsider = await new_agent(pool, uuid.uuid4())
    case = await new_case(pool, tenant)
    async with pool.acquire() as conn:
        claimed = await commands.claim(conn, one, case.ticket_no, NOW)
        assert claimed["assigned_to"] == str(one.id)
        assert (await commands.claim(conn, one, case.ticket_no, NOW))["changed"] is False
        assert (await problem_of(commands.claim(conn, two, case.ticket_no, NOW))).status == 409
        assert (await problem_of(commands.claim(conn, outsider, case.ticket_no, NOW))).status == 404
        refused = await problem_of(commands.assign(conn, one, case.ticket_no, outsider.id, NOW))
        assert refused.status == 422 and refused.errors[0]["field"] == "agent_id"  # type: ignore[index]
        body = AssignIn(agent_id=two.id)
        moved = await commands.assign(conn, one, case.ticket_no, body.agent_id, NOW)
        assert moved["previous_assigned_to"] == str(one.id)
        missing = await problem_of(commands.assign(conn, one, "WC-nope", two.id, NOW))
        assert missing.status == 404
        other_tenant = await problem_of(
            commands.send_message(conn, outsider, case.ticket_no, MessageIn(text="hi"), NOW)
        )
        assert other_tenant.status == 404 and other_tenant.detail == missing.detail.replace(
            "WC-nope", case.ticket_no
        )
    assigned = [
        e["payload"] for e in await outbox(pool, case) if e["event_type"] == "case.assigned"
    ]
    assert [(p["agent_id"], p.get("previous_agent_id")) for p in assigned] == [
        (str(one.id), None),
        (str(two.id), str(one.id)),
    ]


# ------------------------------------------------------------------ automatic refunds


async def _auto(pool: asyncpg.Pool, settings: ResolutionSettings, case: NewCase,
                now: datetime = NOW) -> dict[str, Any] | None:  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        return await commands.auto_refund(conn, settings, case, now)


async def test_a_small_duplicate_charge_is_refunded_once_per_customer_in_the_window(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    first = await new_case(pool, tenant, amount="86.50", customer_id="u-auto")
    entry = await _auto(pool, settings, first)
    assert entry is not None
    assert (entry["decided_by"], entry["amount"], entry["status"]) == ("auto", "86.50", "recorded")
    assert entry["reasons"]
    (event,) = [e for e in await outbox(pool, first) if e["event_type"] == "resolution.recorded"]
    assert event["payload"]["decided_by"] == "auto"
    assert event["payload"]["transaction_ref"] == "T-1"
    assert event["payload"]["reasons"] == entry["reasons"]
    # Never twice for one complaint, nor for the same customer within 30 days.
    assert await _auto(pool, settings, first) is None
    second = await new_case(pool, tenant, amount="10.00", customer_id="u-auto")
    assert await _auto(pool, settings, second, NOW + timedelta(days=29)) is None
    assert await outbox(pool, second) == []
    # After the window, the same customer may be refunded automatically again.
    third = await new_case(pool, tenant, amount="10.00", customer_id="u-auto")
    assert await _auto(pool, settings, third, NOW + timedelta(days=31)) is not None
    # Another tenant's customer of the same id is another customer.
    elsewhere = await new_case(pool, uuid.uuid4(), amount="10.00", customer_id="u-auto")
    assert await _auto(pool, settings, elsewhere) is not None


@pytest.mark.parametrize(
    "facts",
    [
        {"amount": "200.01"},
        {"currency": "EUR", "amount": "5"},
        {"transaction_ref": None},
        {"category": "fraud"},
        {"amount": None, "currency": None},
    ],
)
async def test_no_automatic_refund_outside_the_policy(
    pool: asyncpg.Pool, settings: ResolutionSettings, facts: dict[str, Any]
) -> None:
    case = await new_case(pool, uuid.uuid4(), customer_id=f"u-{uuid.uuid4()}", **facts)
    assert await _auto(pool, settings, case) is None
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE complaint_id = $1", case.complaint_id
        )
        == 0
    )


async def test_concurrent_auto_refunds_of_one_customer_refund_once(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    tenant = uuid.uuid4()
    cases = [await new_case(pool, tenant, amount="20.00", customer_id="u-race") for _ in range(4)]
    results = await asyncio.gather(*(_auto(pool, settings, c) for c in cases))
    assert sum(r is not None for r in results) == 1
