"""The case clocks on real PostgreSQL: clock_store, ClockScheduler and the cn extension
route. Time is an injectable clock moved by the tests; nothing sleeps to let time pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Header

from services.resolution import clock_store
from services.resolution.api_clocks import build_clock_router
from services.resolution.app import MIGRATIONS, SCHEMA
from services.resolution.clock_store import ClockCase
from services.resolution.scheduler import ClockScheduler
from services.resolution.settings import ResolutionSettings
from shared.db import create_pool
from shared.metrics import ServiceMetrics
from shared.problems import install_problem_handlers
from shared.runtime import migrate
from tests.support import eventually, holds

T0 = datetime(2025, 9, 30, 2, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture(scope="module")
def settings(database_url: str) -> ResolutionSettings:
    return ResolutionSettings(
        database_url=database_url, clock_batch_size=7, clock_scan_every_s=0.05
    )


@contextlib.asynccontextmanager
async def migrated_pool(
    settings: ResolutionSettings, *, min_size: int, max_size: int
) -> AsyncIterator[asyncpg.Pool]:
    """resolution's schema migrated on `settings.database_url`, and a pool on it."""
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    pool = await create_pool(settings.database_url, SCHEMA, min_size=min_size, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def pool(settings: ResolutionSettings) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(settings, min_size=2, max_size=12) as pool:
        yield pool


@dataclass(frozen=True)
class Case:
    clock_case: ClockCase
    ticket_no: str

    @property
    def id(self) -> uuid.UUID:
        return self.clock_case.complaint_id


async def open_case(
    pool: asyncpg.Pool,
    *,
    jurisdiction: str = "uk",
    received_at: datetime = T0,
    status: str = "triaged",
    priority: str = "P2",
    tenant_id: uuid.UUID | None = None,
    start: bool = True,
) -> Case:
    cc = ClockCase(
        complaint_id=uuid.uuid4(),
        tenant_id=tenant_id or uuid.uuid4(),
        jurisdiction=jurisdiction,
        received_at=received_at,
        first_response_due=received_at + timedelta(hours=8),
        resolution_due=received_at + timedelta(hours=72),
    )
    ticket = f"WC-20250930-{uuid.uuid4().int % 10**6:06d}"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO cases (complaint_id, tenant_id, ticket_no, status, category, priority, "
            "jurisdiction, received_at, first_response_due, resolution_due) "
            "VALUES ($1, $2, $3, $4, 'duplicate_charge', $5, $6, $7, $8, $9)",
            cc.complaint_id,
            cc.tenant_id,
            ticket,
            status,
            priority,
            jurisdiction,
            received_at,
            cc.first_response_due,
            cc.resolution_due,
        )
        if start:
            await clock_store.start_clocks(conn, cc, received_at)
    return Case(cc, ticket)


async def clock_rows(pool: asyncpg.Pool, case: Case) -> dict[tuple[str, int], asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM clocks WHERE complaint_id = $1", case.id)
    return {(r["name"], r["round"]): r for r in rows}


async def case_row(pool: asyncpg.Pool, case: Case) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM cases WHERE complaint_id = $1", case.id)


async def events(pool: asyncpg.Pool, case: Case, event_type: str) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT message FROM outbox ORDER BY id")
    out = [json.loads(bytes(r["message"])) for r in rows]
    return [e for e in out if e["complaint_id"] == str(case.id) and e["event_type"] == event_type]


def scheduler(
    pool: asyncpg.Pool, settings: ResolutionSettings, clock: FakeClock, metrics: ServiceMetrics
) -> ClockScheduler:
    return ClockScheduler(lambda: pool, settings, metrics, clock, leader_timeout_s=2)


def breaches_counted(metrics: ServiceMetrics, priority: str) -> float:
    value = metrics.registry.get_sample_value("sla_breaches_total", {"priority": priority})
    return value or 0.0


async def test_start_is_idempotent_and_keeps_next_due_at(pool: asyncpg.Pool) -> None:
    case = await open_case(pool, jurisdiction="uk")
    async with pool.acquire() as conn, conn.transaction():
        await clock_store.start_clocks(conn, case.clock_case, T0 + timedelta(hours=1))
    rows = await clock_rows(pool, case)
    assert sorted(name for name, _ in rows) == [
        "first_response",
        "legal_final",
        "legal_response",
        "resolution",
    ]
    assert all(r["state"] == "running" for r in rows.values())
    assert rows[("legal_response", 1)]["due_at"] == datetime(2025, 10, 21, 23, tzinfo=UTC)
    c = await case_row(pool, case)
    assert c["next_due_at"] == T0 + timedelta(hours=8)
    assert c["breached"] is False


async def test_pause_and_resume_move_internal_due_times_only(pool: asyncpg.Pool) -> None:
    case = await open_case(pool, jurisdiction="us")
    async with pool.acquire() as conn, conn.transaction():
        await clock_store.pause_internal(conn, case.id, T0 + timedelta(hours=2))
    rows = await clock_rows(pool, case)
    assert rows[("first_response", 1)]["state"] == "paused"
    assert rows[("resolution", 1)]["state"] == "paused"
    assert rows[("legal_response", 1)]["state"] == "running"  # legal clocks never pause
    # Only running clocks count: the next due is the legal response now.
    assert (await case_row(pool, case))["next_due_at"] == T0 + timedelta(days=15)

    async with pool.acquire() as conn, conn.transaction():
        await clock_store.resume_internal(conn, case.id, T0 + timedelta(hours=26))
    rows = await clock_rows(pool, case)
    assert rows[("first_response", 1)]["state"] == "running"
    assert rows[("first_response", 1)]["due_at"] == T0 + timedelta(hours=8 + 24)
    assert rows[("resolution", 1)]["due_at"] == T0 + timedelta(hours=72 + 24)
    assert rows[("legal_final", 1)]["due_at"] == T0 + timedelta(days=60)
    assert (await case_row(pool, case))["next_due_at"] == T0 + timedelta(hours=32)


async def test_agent_response_meets_first_and_legal_response(pool: asyncpg.Pool) -> None:
    case = await open_case(pool, jurisdiction="eu")
    async with pool.acquire() as conn, conn.transaction():
        await clock_store.agent_responded(conn, case.id, T0 + timedelta(hours=1))
    rows = await clock_rows(pool, case)
    assert rows[("first_response", 1)]["state"] == "met"
    assert rows[("legal_response", 1)]["state"] == "met"
    assert rows[("resolution", 1)]["state"] == "running"
    assert rows[("legal_final", 1)]["state"] == "running"
    c = await case_row(pool, case)
    assert c["first_responded_at"] == T0 + timedelta(hours=1)
    assert c["next_due_at"] == T0 + timedelta(hours=72)


async def test_two_schedulers_racing_breach_each_clock_exactly_once(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    clock = FakeClock()
    cases = [await open_case(pool, jurisdiction="cn", priority="P1") for _ in range(20)]
    metrics_a, metrics_b = ServiceMetrics("resolution"), ServiceMetrics("resolution")
    a = scheduler(pool, settings, clock, metrics_a)
    b = scheduler(pool, settings, clock, metrics_b)
    await a.fire_due()  # earlier tests' clocks due by now, if any
    assert await a.fire_due() == 0 and await b.fire_due() == 0

    before = await pool.fetchval("SELECT count(*) FROM clocks WHERE state = 'breached'")
    clock.advance(timedelta(hours=9))  # past every first_response (8 h)
    fired = await asyncio.gather(a.fire_due(), b.fire_due(), a.fire_due(), b.fire_due())
    after = await pool.fetchval("SELECT count(*) FROM clocks WHERE state = 'breached'")
    assert sum(fired) == after - before  # each breach reported by exactly one caller
    mine = {c.id for c in cases}
    breached = [
        r
        for r in await pool.fetch("SELECT * FROM clocks WHERE state = 'breached'")
        if r["complaint_id"] in mine
    ]
    assert len(breached) == 20 and {r["name"] for r in breached} == {"first_response"}
    assert breaches_counted(metrics_a, "P1") + breaches_counted(metrics_b, "P1") == 20
    assert await a.fire_due() == 0 and await b.fire_due() == 0

    for case in cases:
        [event] = await events(pool, case, "complaint.sla_breached")
        assert event["payload"]["clock"] == "first_response"
        assert event["payload"]["priority"] == "P1"
        assert event["payload"]["due_at"] == (T0 + timedelta(hours=8)).isoformat()
        assert event["payload"]["new_estimate"] == (clock.now + timedelta(hours=8)).isoformat()
        assert event["producer"] == "resolution"
        row = (await clock_rows(pool, case))[("first_response", 1)]
        assert row["breach_event_id"] == uuid.UUID(event["event_id"])
        [status] = await events(pool, case, "complaint.status_changed")
        assert status["payload"]["status"] == "escalated"
        assert status["payload"]["previous_status"] == "triaged"
        assert status["payload"]["reason"] == "sla_breached"
        c = await case_row(pool, case)
        assert c["status"] == "escalated" and c["breached"] is True
        history = await pool.fetch(
            "SELECT status, actor FROM case_history WHERE complaint_id = $1", case.id
        )
        assert [(h["status"], h["actor"]) for h in history] == [("escalated", "system")]


async def test_a_second_clock_breaching_does_not_escalate_again(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    clock = FakeClock()
    case = await open_case(pool, jurisdiction="us")
    s = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    clock.advance(timedelta(hours=9))
    await s.fire_due()
    clock.advance(timedelta(days=3))
    await s.fire_due()
    assert {e["payload"]["clock"] for e in await events(pool, case, "complaint.sla_breached")} == {
        "first_response",
        "resolution",
    }
    assert len(await events(pool, case, "complaint.status_changed")) == 1


async def test_the_database_refuses_a_second_breach_of_a_clock(pool: asyncpg.Pool) -> None:
    case = await open_case(pool)
    await pool.execute(
        "UPDATE clocks SET state = 'breached', breached_at = $2, breach_event_id = $3 "
        "WHERE complaint_id = $1 AND name = 'first_response'",
        case.id,
        T0,
        uuid.uuid4(),
    )
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute(
            "UPDATE clocks SET breach_event_id = $2 WHERE complaint_id = $1 "
            "AND name = 'first_response'",
            case.id,
            uuid.uuid4(),
        )
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute(
            "UPDATE clocks SET state = 'running', breached_at = NULL, breach_event_id = NULL "
            "WHERE complaint_id = $1 AND name = 'first_response'",
            case.id,
        )


async def test_legal_breach_while_awaiting_customer_escalates_and_resumes(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    clock = FakeClock()
    case = await open_case(pool, jurisdiction="cn", status="awaiting_customer")
    async with pool.acquire() as conn, conn.transaction():
        await clock_store.agent_responded(conn, case.id, T0 + timedelta(hours=1))
        await clock_store.pause_internal(conn, case.id, T0 + timedelta(hours=1))
    clock.advance(timedelta(days=16))
    s = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    await s.fire_due()  # legal_final only: resolution is paused
    [event] = await events(pool, case, "complaint.sla_breached")
    assert event["payload"]["clock"] == "legal_final"
    rows = await clock_rows(pool, case)
    # The 5th business day after Thu 16 Oct 2025 (Beijing): Thu 23 Oct, end of day.
    assert rows[("legal_final", 1)]["new_estimate"] == datetime(2025, 10, 23, 16, tzinfo=UTC)
    # Escalated, so no longer the customer's turn: resolution runs again with its 71 h left.
    assert rows[("resolution", 1)]["state"] == "running"
    assert rows[("resolution", 1)]["due_at"] == clock.now + timedelta(hours=71)
    assert (await case_row(pool, case))["status"] == "escalated"


async def test_resolved_case_is_not_escalated_and_reopen_runs_a_fresh_clock(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    clock = FakeClock()
    case = await open_case(pool, jurisdiction="uk")
    async with pool.acquire() as conn, conn.transaction():
        await clock_store.case_resolved(conn, case.id, T0 + timedelta(hours=2))
    assert all(r["state"] == "met" for r in (await clock_rows(pool, case)).values())
    assert (await case_row(pool, case))["next_due_at"] is None

    reopened_at = T0 + timedelta(days=2)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE cases SET status = 'reopened' WHERE complaint_id = $1", case.id)
        await clock_store.case_reopened(conn, case.id, reopened_at)
        await clock_store.case_reopened(conn, case.id, reopened_at)  # still running: no round 3
    rows = await clock_rows(pool, case)
    assert rows[("resolution", 1)]["state"] == "met"
    assert rows[("resolution", 2)]["state"] == "running"
    assert rows[("resolution", 2)]["due_at"] == reopened_at + timedelta(hours=72)
    assert ("resolution", 3) not in rows
    async with pool.acquire() as conn:
        views = await clock_store.views(conn, case.id)
        detail = await clock_store.detail(conn, case.id)
    assert [(v.name, v.state) for v in views] == [
        ("first_response", "met"),
        ("resolution", "running"),
        ("legal_response", "met"),
        ("legal_final", "met"),
    ]
    assert [(d["name"], d["round"]) for d in detail][1:3] == [("resolution", 1), ("resolution", 2)]

    clock.now = reopened_at + timedelta(hours=73)
    s = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    await s.fire_due()
    [event] = await events(pool, case, "complaint.sla_breached")
    assert event["payload"]["clock"] == "resolution"
    assert (await case_row(pool, case))["status"] == "escalated"  # from reopened

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE cases SET status = 'closed' WHERE complaint_id = $1", case.id)
        await clock_store.case_closed(conn, case.id, clock.now)
    rows = await clock_rows(pool, case)
    assert rows[("resolution", 2)]["state"] == "breached"  # a breach stays a breach
    assert (await case_row(pool, case))["breached"] is True


async def test_closed_case_breach_is_recorded_without_escalation(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    clock = FakeClock(T0 + timedelta(hours=9))
    case = await open_case(pool, jurisdiction="us", status="resolved")
    s = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    await s.fire_due()
    assert len(await events(pool, case, "complaint.sla_breached")) == 1
    assert await events(pool, case, "complaint.status_changed") == []
    assert (await case_row(pool, case))["status"] == "resolved"


async def test_clocks_survive_a_scheduler_restart(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    clock = FakeClock()
    case = await open_case(pool, jurisdiction="uk")
    first = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    await first.fire_due()
    del first  # "restart": the clocks live in PostgreSQL, not in the scheduler
    clock.advance(timedelta(hours=9))
    second = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    await second.fire_due()
    third = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    assert await third.fire_due() == 0
    assert len(await events(pool, case, "complaint.sla_breached")) == 1


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_one_leader_fires_and_a_standby_takes_over(
    pool: asyncpg.Pool, settings: ResolutionSettings
) -> None:
    clock = FakeClock()
    a = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    b = scheduler(pool, settings, clock, ServiceMetrics("resolution"))
    tasks = {a: asyncio.create_task(a.run_forever()), b: asyncio.create_task(b.run_forever())}
    try:
        await eventually(lambda: holds(a.is_leader or b.is_leader))
        for _ in range(5):  # never both
            assert [a.is_leader, b.is_leader].count(True) == 1
            await asyncio.sleep(0.05)
        leader, standby = (a, b) if a.is_leader else (b, a)
        assert leader.health()["leader"] is True and standby.health()["leader"] is False
        assert standby.health()["ok"] is True

        case = await open_case(pool, jurisdiction="us", received_at=clock.now)
        clock.advance(timedelta(hours=9))
        await eventually(lambda: events(pool, case, "complaint.sla_breached"))
        assert leader.breaches_fired >= 1 and standby.breaches_fired == 0

        await _stop(tasks.pop(leader))  # its session ends: the lock is free
        await eventually(lambda: holds(standby.is_leader))
        later = await open_case(pool, jurisdiction="us", received_at=clock.now)
        clock.advance(timedelta(hours=9))
        await eventually(lambda: events(pool, later, "complaint.sla_breached"))
        assert len(await events(pool, case, "complaint.sla_breached")) == 1
    finally:
        for task in tasks.values():
            await _stop(task)


# --- the cn extension route -------------------------------------------------------------


@dataclass(frozen=True)
class FakeAgent:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    approver: bool


async def add_agent(pool: asyncpg.Pool, tenant_id: uuid.UUID, approver: bool) -> FakeAgent:
    agent = FakeAgent(uuid.uuid4(), tenant_id, "agent", approver)
    await pool.execute(
        "INSERT INTO agents (id, name, token_id, token_hash, approver, tenant_id) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        agent.id,
        agent.name,
        uuid.uuid4().hex,
        b"x",
        approver,
        tenant_id,
    )
    return agent


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[tuple[httpx.AsyncClient, dict, FakeClock]]:
    agents: dict[str, FakeAgent] = {}
    clock = FakeClock(T0 + timedelta(days=1))

    def current_agent(x_agent: str = Header()) -> FakeAgent:
        return agents[x_agent]

    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(build_clock_router(lambda: pool, current_agent, clock))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, agents, clock


def extend(client: httpx.AsyncClient, ticket: str, who: str) -> Any:
    return client.post(
        f"/v1/cases/{ticket}/clocks/legal_final/extend",
        json={"reason": "Bank records requested"},
        headers={"X-Agent": who},
    )


async def test_extension_ladder_for_an_approver_with_notice(
    pool: asyncpg.Pool, api: tuple[httpx.AsyncClient, dict, FakeClock]
) -> None:
    client, agents, _clock = api
    tenant = uuid.uuid4()
    agents["approver"] = await add_agent(pool, tenant, approver=True)
    agents["plain"] = await add_agent(pool, tenant, approver=False)
    agents["stranger"] = await add_agent(pool, uuid.uuid4(), approver=True)
    case = await open_case(pool, jurisdiction="cn", tenant_id=tenant)

    refused = await extend(client, case.ticket_no, "plain")
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await extend(client, case.ticket_no, "stranger")).status_code == 404
    assert (await extend(client, "WC-00000000-000000", "approver")).status_code == 404

    first = await extend(client, case.ticket_no, "approver")
    assert first.status_code == 200, first.text
    assert first.json()["days"] == 30
    assert first.json()["due_at"] == (T0 + timedelta(days=30)).isoformat()
    assert first.json()["clock"]["extensions"] == 1
    second = await extend(client, case.ticket_no, "approver")
    assert second.json()["due_at"] == (T0 + timedelta(days=60)).isoformat()
    third = await extend(client, case.ticket_no, "approver")
    assert third.status_code == 409
    assert "60 days" in third.json()["detail"]

    notices = await events(pool, case, "complaint.clock_extended")
    assert [(n["payload"]["previous_due_at"], n["payload"]["due_at"]) for n in notices] == [
        ((T0 + timedelta(days=15)).isoformat(), (T0 + timedelta(days=30)).isoformat()),
        ((T0 + timedelta(days=30)).isoformat(), (T0 + timedelta(days=60)).isoformat()),
    ]
    assert notices[0]["payload"]["approved_by"] == str(agents["approver"].id)
    rows = await clock_rows(pool, case)
    assert rows[("legal_final", 1)]["due_at"] == T0 + timedelta(days=60)
    # The notice is the first thing an agent told the customer: the first response is met,
    # and the queue now orders the case by its resolution clock.
    assert rows[("first_response", 1)]["state"] == "met"
    assert (await case_row(pool, case))["next_due_at"] == rows[("resolution", 1)]["due_at"]
    count = await pool.fetchval(
        "SELECT count(*) FROM clock_extensions WHERE complaint_id = $1", case.id
    )
    assert count == 2


async def test_extension_refused_outside_cn_and_after_the_deadline(
    pool: asyncpg.Pool, api: tuple[httpx.AsyncClient, dict, FakeClock], settings: ResolutionSettings
) -> None:
    client, agents, clock = api
    tenant = uuid.uuid4()
    agents["approver"] = await add_agent(pool, tenant, approver=True)
    eu = await open_case(pool, jurisdiction="eu", tenant_id=tenant)
    answer = await extend(client, eu.ticket_no, "approver")
    assert answer.status_code == 409 and "only a cn" in answer.json()["detail"]

    cn = await open_case(pool, jurisdiction="cn", tenant_id=tenant)
    clock.now = T0 + timedelta(days=16)
    await scheduler(pool, settings, clock, ServiceMetrics("resolution")).fire_due()
    answer = await extend(client, cn.ticket_no, "approver")
    assert answer.status_code == 409 and "breached" in answer.json()["detail"]

    empty = await client.post(
        f"/v1/cases/{cn.ticket_no}/clocks/legal_final/extend",
        json={},
        headers={"X-Agent": "approver"},
    )
    assert empty.status_code == 422
