"""The agent API (CONTRACT section 6) over HTTP against the real `python -m
services.resolution serve` process, on real PostgreSQL and Kafka.

Cases are put into the database the way the triage handler leaves them (a case row and
its clocks), each test on a tenant of its own, so the queue of one test is not another's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local.stack import free_port
from services.resolution import clock_store
from services.resolution.agents import create_agent
from services.resolution.app import MIGRATIONS, SCHEMA
from services.resolution.settings import ResolutionSettings
from shared.db import connect
from shared.runtime import migrate
from tests.support import REPO, Infra, serving

PROBLEM = "application/problem+json"


def _env(infra: Infra) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
    }


def cli(infra: Infra, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.resolution", *args],
        cwd=REPO,
        env=_env(infra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Service:
    base_url: str
    database_url: str
    log_path: Path


@pytest.fixture(scope="module")
def service(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    migrate(infra.settings(ResolutionSettings), SCHEMA, MIGRATIONS)
    log_path = tmp_path_factory.mktemp("resolution") / "resolution.log"
    with serving("resolution", _env(infra), free_port(), log_path) as process:
        yield Service(process.base_url, infra.database_url, log_path)
    # Whatever the tests sent, the service logged no unhandled error.
    assert "unhandled_error" not in log_path.read_text(errors="replace")


@pytest.fixture
async def db(service: Service) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(service.database_url, SCHEMA, purpose="test")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def http(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class AgentCred:
    id: str
    token: str
    tenant_id: uuid.UUID

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Tenant:
    """A tenant of one test: its agents and a way to open cases."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.id = uuid.uuid4()
        self._db = db

    async def agent(self, name: str = "agent", *, approver: bool = False) -> AgentCred:
        issued = await create_agent(self._db, name=name, approver=approver, tenant_id=self.id)
        return AgentCred(issued["agent_id"], issued["token"], self.id)

    async def case(
        self,
        *,
        first_response_in: timedelta = timedelta(hours=4),
        clocks: bool = True,
        **columns: Any,
    ) -> tuple[str, uuid.UUID]:
        """A triaged case (and its clocks, unless clocks=False): (ticket_no, complaint_id)."""
        return await open_case(
            self._db, self.id, first_response_in=first_response_in, clocks=clocks, **columns
        )


async def open_case(
    db: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    first_response_in: timedelta = timedelta(hours=4),
    clocks: bool = True,
    **columns: Any,
) -> tuple[str, uuid.UUID]:
    now = datetime.now(UTC)
    complaint_id = uuid.uuid4()
    ticket_no = f"WC-{now:%Y%m%d}-{uuid.uuid4().int % 10**9:09d}"
    values: dict[str, Any] = {
        "complaint_id": complaint_id,
        "tenant_id": tenant_id,
        "ticket_no": ticket_no,
        "status": "triaged",
        "category": "duplicate_charge",
        "priority": "P2",
        "jurisdiction": "cn",
        "locale": "zh-CN",
        "channel": "app",
        "customer_id": "u-829",
        "amount": Decimal("100.00"),
        "currency": "CNY",
        "transaction_ref": "T-1",
        "received_at": now,
        "first_response_due": now + first_response_in,
        "resolution_due": now + first_response_in + timedelta(hours=72),
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    async with db.transaction():
        await db.execute(f"INSERT INTO cases ({names}) VALUES ({marks})", *values.values())
        await db.execute(
            "INSERT INTO case_history (complaint_id, status, actor, note) "
            "VALUES ($1, 'triaged', 'system', 'Case opened.')",
            complaint_id,
        )
        if clocks:
            await clock_store.start_clocks(
                db,
                clock_store.ClockCase(
                    complaint_id,
                    tenant_id,
                    values["jurisdiction"],
                    values["received_at"],
                    values["first_response_due"],
                    values["resolution_due"],
                ),
                now,
            )
    return ticket_no, complaint_id


@pytest.fixture
async def tenant(db: asyncpg.Connection) -> Tenant:
    return Tenant(db)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def record(
    http: httpx.AsyncClient, agent: AgentCred, ticket: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await http.post(
        f"/v1/cases/{ticket}/resolutions",
        json=body,
        headers={**agent.auth, **(headers or key())},
    )


def refund(amount: str, currency: str = "CNY") -> dict[str, Any]:
    return {"kind": "refund", "amount": amount, "currency": currency, "note": "Refunding."}


# ------------------------------------------------------------------ agents and tokens


def test_create_agent_needs_a_tenant_that_is_a_uuid(infra: Infra, service: Service) -> None:
    missing = cli(infra, "create-agent", "Li Lei")
    assert missing.returncode == 2 and "--tenant" in missing.stderr
    wrong = cli(infra, "create-agent", "Li Lei", "--tenant", "wallet-a")
    assert wrong.returncode == 2
    assert "--tenant must be a tenant id (a UUID" in wrong.stderr and "'wallet-a'" in wrong.stderr
    tenant_id = uuid.uuid4()
    made = cli(infra, "create-agent", "Li Lei", "--tenant", str(tenant_id), "--approver")
    assert made.returncode == 0, made.stderr
    issued = json.loads(made.stdout)
    assert set(issued) == {"agent_id", "token"} and issued["token"].startswith("wca_")

    # The token works at once against the running service, for its tenant.
    response = httpx.get(
        f"{service.base_url}/v1/cases",
        headers={"Authorization": f"Bearer {issued['token']}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json() == {"items": [], "next_cursor": None}


async def test_the_token_is_stored_as_a_hash_with_its_tenant(
    infra: Infra, db: asyncpg.Connection
) -> None:
    tenant_id = uuid.uuid4()
    made = await asyncio.to_thread(
        cli, infra, "create-agent", "Han Meimei", "--tenant", str(tenant_id)
    )
    issued = json.loads(made.stdout)
    row = await db.fetchrow("SELECT * FROM agents WHERE id = $1", uuid.UUID(issued["agent_id"]))
    assert row["tenant_id"] == tenant_id and row["approver"] is False
    secret = issued["token"].split("_", 2)[2]
    assert secret not in str(dict(row))


async def test_requests_without_a_valid_token_are_401(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, _ = await tenant.case()
    no_tenant = await create_agent(db, name="legacy", approver=True)  # before tenants existed
    forged = agent.token[:-4] + ("AAAA" if not agent.token.endswith("AAAA") else "BBBB")
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer wca_nope"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Bearer {no_tenant['token']}"},
    ):
        for method, path in (("GET", "/v1/cases"), ("GET", f"/v1/cases/{ticket}"),
                             ("POST", f"/v1/cases/{ticket}/claim")):  # fmt: skip
            response = await http.request(method, path, headers=headers)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await http.get("/v1/cases", headers=agent.auth)).status_code == 200


# ------------------------------------------------------------------ tenant isolation


async def test_another_tenants_case_is_the_same_404_as_a_missing_one_everywhere(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    mine, theirs = Tenant(db), Tenant(db)
    agent = await mine.agent("a", approver=True)
    other = await theirs.agent("b", approver=True)
    colleague = await mine.agent("c")
    their_ticket, _ = await theirs.case(amount=Decimal("5000"))
    pending = await record(http, await theirs.agent("b2"), their_ticket, refund("1000"))
    assert pending.status_code == 201 and pending.json()["status"] == "pending_approval"
    missing_ticket = "WC-20260101-999999999"

    def calls(ticket: str, resolution_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
        return [
            ("GET", f"/v1/cases/{ticket}", None),
            ("POST", f"/v1/cases/{ticket}/resolutions", refund("1.00")),
            ("POST", f"/v1/cases/{ticket}/status", {"status": "in_progress", "note": "x"}),
            ("POST", f"/v1/cases/{ticket}/messages", {"text": "hello"}),
            ("POST", f"/v1/cases/{ticket}/claim", None),
            ("POST", f"/v1/cases/{ticket}/assign", {"agent_id": colleague.id}),
            ("POST", f"/v1/cases/{ticket}/category", {"category": "fraud", "priority": "P1"}),
            ("POST", f"/v1/resolutions/{resolution_id}/approve", None),
            ("POST", f"/v1/cases/{ticket}/clocks/legal_final/extend", {"reason": "bank"}),
        ]

    theirs_calls = calls(their_ticket, pending.json()["id"])
    missing_calls = calls(missing_ticket, str(uuid.uuid4()))
    for (method, path, body), (_, missing_path, _) in zip(theirs_calls, missing_calls, strict=True):
        answers = [
            await http.request(method, p, json=body, headers={**agent.auth, **key()})
            for p in (path, missing_path)
        ]
        assert_problem(answers[0], 404)
        # A detail may echo the ticket asked for; nothing else may differ.
        echoed = answers[1].json() | {
            "detail": answers[1].json()["detail"].replace(missing_ticket, their_ticket)
        }
        assert answers[0].json() == echoed, path
        assert answers[0].headers["content-type"] == answers[1].headers["content-type"]
    queue = (await http.get("/v1/cases", headers=agent.auth)).json()
    assert queue["items"] == []
    # Nothing was done to the other tenant's case; its own agent sees it untouched.
    case = (await http.get(f"/v1/cases/{their_ticket}", headers=other.auth)).json()
    assert case["status"] == "triaged" and case["assigned_to"] is None
    assert (case["category"], case["priority"]) == ("duplicate_charge", "P2")
    assert [e["status"] for e in case["ledger"]] == ["pending_approval"]
    assert [m for m in case["messages"] if m["author"] == "agent"] == []


# ------------------------------------------------------------------ the work queue


async def test_the_queue_puts_review_first_then_the_most_urgent_clock(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    later, _ = await tenant.case(first_response_in=timedelta(hours=8))
    sooner, _ = await tenant.case(first_response_in=timedelta(hours=1))
    review, _ = await tenant.case(first_response_in=timedelta(hours=30), needs_review=True)
    no_clock, _ = await tenant.case(clocks=False)
    await tenant.case(status="closed")  # not in the default queue
    items = (await http.get("/v1/cases", headers=agent.auth)).json()["items"]
    assert [i["ticket_no"] for i in items] == [review, sooner, later, no_clock]
    assert items[0]["needs_review"] is True and items[-1]["next_due_at"] is None
    assert items[1]["next_due_at"] < items[2]["next_due_at"]
    assert items[1]["links"] == {"self": f"/v1/cases/{sooner}"}
    assert items[1]["amount"] == "100.00"


async def test_every_filter_of_the_queue(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    other = await tenant.agent("other")
    fraud, _ = await tenant.case(category="fraud", priority="P1")
    fees, _ = await tenant.case(category="fees", priority="P3", status="in_progress")
    breached, breached_id = await tenant.case(priority="P4")
    await db.execute("UPDATE cases SET breached = true WHERE complaint_id = $1", breached_id)
    mine, _ = await tenant.case(assigned_to=uuid.UUID(agent.id))
    theirs, _ = await tenant.case(assigned_to=uuid.UUID(other.id))
    resolved, _ = await tenant.case(status="resolved", outcome="no_relief")

    async def tickets(query: str) -> set[str]:
        response = await http.get(f"/v1/cases?{query}", headers=agent.auth)
        assert response.status_code == 200, response.text
        return {i["ticket_no"] for i in response.json()["items"]}

    everything_open = {fraud, fees, breached, mine, theirs}
    assert await tickets("") == everything_open
    assert await tickets("status=&priority=&category=&assigned_to=") == everything_open
    assert await tickets("status=in_progress") == {fees}
    assert await tickets("status=resolved") == {resolved}
    assert await tickets("priority=P1") == {fraud}
    assert await tickets("category=fees") == {fees}
    assert await tickets("breached=true") == {breached}
    assert await tickets("breached=false") == everything_open - {breached}
    assert await tickets("assigned_to=me") == {mine}
    assert await tickets(f"assigned_to={other.id}") == {theirs}
    assert await tickets("assigned_to=none") == {fraud, fees, breached}
    assert await tickets("priority=P2&assigned_to=none") == set()
    for bad in ("status=lost", "priority=P9", "category=spam", "breached=maybe",
                "assigned_to=someone", "limit=0", "limit=101"):  # fmt: skip
        assert_problem(await http.get(f"/v1/cases?{bad}", headers=agent.auth), 422)


async def test_the_cursor_pages_through_the_queue_and_refuses_tampering(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    for hours in (5, 1, 3, 2, 4):
        await tenant.case(first_response_in=timedelta(hours=hours))
    await tenant.case(needs_review=True)
    for _ in range(2):
        await tenant.case(clocks=False)  # no running clock: last, by complaint_id
    whole = (await http.get("/v1/cases?limit=100", headers=agent.auth)).json()
    assert len(whole["items"]) == 8 and whole["next_cursor"] is None

    pages: list[list[str]] = []
    cursor = None
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await http.get(f"/v1/cases?{query}", headers=agent.auth)).json()
        pages.append([i["ticket_no"] for i in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [t for page in pages for t in page] == [i["ticket_no"] for i in whole["items"]]

    first = (await http.get("/v1/cases?limit=3", headers=agent.auth)).json()["next_cursor"]
    body, signature = first.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (f"{flipped}.{signature}", "garbage", f"{body}.", "..", "%00", first + "x"):
        answer = await http.get("/v1/cases", params={"cursor": bad}, headers=agent.auth)
        assert assert_problem(answer, 422)["errors"][0]["field"] == "cursor"
    # A cursor pages the query it came from: with other filters, or another tenant, 422.
    assert_problem(
        await http.get("/v1/cases", params={"cursor": first, "priority": "P1"}, headers=agent.auth),
        422,
    )
    stranger = await Tenant(tenant._db).agent()
    assert_problem(
        await http.get("/v1/cases", params={"cursor": first}, headers=stranger.auth), 422
    )


# ------------------------------------------------------------------ the case


async def test_the_case_shows_history_clocks_ledger_duplicates_and_messages(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, complaint_id = await tenant.case(jurisdiction="eu", locale="en", currency="USD")
    duplicate_id = uuid.uuid4()
    duplicate_ticket = "WC-20261122-000777"
    await db.execute(
        "INSERT INTO linked_complaints (complaint_id, original_complaint_id, ticket_no) "
        "VALUES ($1, $2, $3)",
        duplicate_id,
        complaint_id,
        duplicate_ticket,
    )
    evidence = [{"kind": "screenshot", "uri": "https://files.example.com/e/1.png"}]
    for cid, text, ev in ((complaint_id, "Charged twice.", evidence),
                          (duplicate_id, "Again: charged twice!", [])):  # fmt: skip
        await db.execute(
            "INSERT INTO case_messages (id, complaint_id, author, text, evidence) "
            "VALUES ($1, $2, 'customer', $3, $4)",
            uuid.uuid4(),
            cid,
            text,
            ev,
        )
    recorded = await record(
        http, agent, ticket, {**refund("12.5", "USD"), "note": "Second charge refunded."}
    )
    assert recorded.status_code == 201, recorded.text

    response = await http.get(f"/v1/cases/{ticket}", headers=agent.auth)
    assert response.status_code == 200
    case = response.json()
    assert (case["ticket_no"], case["complaint_id"]) == (ticket, str(complaint_id))
    assert (case["jurisdiction"], case["amount"], case["currency"]) == ("eu", "100.00", "USD")
    assert case["history"][0]["note"] == "Case opened."
    assert {c["name"] for c in case["clocks"]} >= {"first_response", "resolution", "legal_final"}
    assert all(c["state"] in {"running", "paused", "met", "breached"} for c in case["clocks"])
    [entry] = case["ledger"]
    assert entry["id"] == recorded.json()["id"]
    assert (entry["kind"], entry["amount"], entry["currency"]) == ("refund", "12.50", "USD")
    assert (entry["status"], entry["decided_by"], entry["reversed_by"]) == (
        "recorded", agent.id, None,
    )  # fmt: skip
    assert case["linked_complaints"] == [
        {
            "complaint_id": str(duplicate_id),
            "ticket_no": duplicate_ticket,
            "linked_at": case["linked_complaints"][0]["linked_at"],
        }
    ]
    customer = [m for m in case["messages"] if m["author"] == "customer"]
    assert [(m["ticket_no"], m["text"]) for m in customer] == [
        (ticket, "Charged twice."),
        (duplicate_ticket, "Again: charged twice!"),
    ]
    assert customer[0]["evidence"] == evidence


async def test_claim_and_assign(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    colleague = await tenant.agent("colleague")
    stranger = await Tenant(db).agent()
    ticket, _ = await tenant.case()
    claimed = await http.post(f"/v1/cases/{ticket}/claim", headers=agent.auth)
    assert claimed.status_code == 200, claimed.text
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert case["assigned_to"] == agent.id
    mine = (await http.get("/v1/cases?assigned_to=me", headers=agent.auth)).json()["items"]
    assert [i["ticket_no"] for i in mine] == [ticket]

    assigned = await http.post(
        f"/v1/cases/{ticket}/assign", json={"agent_id": colleague.id}, headers=agent.auth
    )
    assert assigned.status_code == 200, assigned.text
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert case["assigned_to"] == colleague.id
    # An agent of another tenant cannot be given the case (nor found out about).
    refused = await http.post(
        f"/v1/cases/{ticket}/assign", json={"agent_id": stranger.id}, headers=agent.auth
    )
    assert refused.status_code in (404, 422), refused.text
    assert refused.headers["content-type"].startswith(PROBLEM)
    for body in ({}, {"agent_id": "nope"}, {"agent_id": colleague.id, "x": 1}, []):
        answer = await http.post(f"/v1/cases/{ticket}/assign", json=body, headers=agent.auth)
        assert_problem(answer, 422)
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert case["assigned_to"] == colleague.id


async def test_messages_and_requests_for_information(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, _ = await tenant.case()
    sent = await http.post(
        f"/v1/cases/{ticket}/messages", json={"text": "We are on it."}, headers=agent.auth
    )
    assert sent.status_code == 201, sent.text
    asked = await http.post(
        f"/v1/cases/{ticket}/messages",
        json={"text": "Please send the statement.", "request_information": True},
        headers=agent.auth,
    )
    assert asked.status_code == 201, asked.text
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert case["status"] == "awaiting_customer"
    written = [m for m in case["messages"] if m["author"] == "agent"]
    assert [(m["text"], m["request_information"], m["agent_id"]) for m in written] == [
        ("We are on it.", False, agent.id),
        ("Please send the statement.", True, agent.id),
    ]
    clocks = {c["name"]: c for c in case["clocks"]}
    assert clocks["first_response"]["state"] == "met"
    assert clocks["resolution"]["state"] == "paused"
    assert clocks["legal_final"]["state"] == "running"  # a legal clock never pauses
    waiting = (await http.get("/v1/cases?status=awaiting_customer", headers=agent.auth)).json()
    assert [i["ticket_no"] for i in waiting["items"]] == [ticket]
    for body in ({"text": ""}, {"text": "x", "request_information": "yes"}, {"txt": "x"}):
        answer = await http.post(f"/v1/cases/{ticket}/messages", json=body, headers=agent.auth)
        assert_problem(answer, 422)


async def test_status_changes_and_a_refused_transition_names_the_allowed_ones(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, _ = await tenant.case()
    path = f"/v1/cases/{ticket}/status"
    refused = await http.post(path, json={"status": "closed", "note": "x"}, headers=agent.auth)
    body = assert_problem(refused, 409)
    for allowed in ("in_progress", "awaiting_customer", "escalated", "resolved"):
        assert allowed in json.dumps(body)
    moved = await http.post(
        path, json={"status": "in_progress", "note": "On it."}, headers=agent.auth
    )
    assert moved.status_code == 200, moved.text
    no_outcome = await http.post(path, json={"status": "resolved", "note": "x"}, headers=agent.auth)
    assert_problem(no_outcome, 422)
    resolved = await http.post(
        path,
        json={"status": "resolved", "note": "Done.", "outcome": "explanation"},
        headers=agent.auth,
    )
    assert resolved.status_code == 200, resolved.text
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert (case["status"], case["outcome"]) == ("resolved", "explanation")
    assert case["resolved_at"] is not None
    assert [h["status"] for h in case["history"]][-2:] == ["in_progress", "resolved"]
    again = await http.post(path, json={"status": "in_progress", "note": "x"}, headers=agent.auth)
    body = assert_problem(again, 409)
    assert "closed" in json.dumps(body) and "reopened" in json.dumps(body)
    for bad in ({"status": "lost", "note": "x"}, {"status": "closed"},
                {"status": "resolved", "note": "x", "outcome": "happy"}):  # fmt: skip
        assert_problem(await http.post(path, json=bad, headers=agent.auth), 422)


async def test_an_agent_corrects_the_category_and_the_case_leaves_the_review_queue(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, complaint_id = await tenant.case(category="payment_failure", priority="P3",
                                             needs_review=True)  # fmt: skip
    before = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    path = f"/v1/cases/{ticket}/category"
    corrected = await http.post(
        path, json={"category": "fraud", "note": "Account takeover."}, headers=agent.auth
    )
    assert corrected.status_code == 200, corrected.text
    answer = corrected.json()
    assert (answer["category"], answer["priority"], answer["needs_review"]) == (
        "fraud", "P3", False,
    )  # fmt: skip
    assert (answer["previous_category"], answer["changed"]) == ("payment_failure", True)
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert (case["category"], case["priority"], case["needs_review"]) == ("fraud", "P3", False)
    assert case["status"] == "triaged"  # the status is left alone
    assert case["clocks"] == before["clocks"]  # and so are the clocks
    assert (case["history"][-1]["actor"], case["history"][-1]["note"]) == (
        agent.id,
        "Recategorised from payment_failure P3 to fraud P3. Account takeover.",
    )
    queue = (await http.get("/v1/cases?category=fraud", headers=agent.auth)).json()["items"]
    assert [(i["ticket_no"], i["needs_review"]) for i in queue] == [(ticket, False)]

    # The same values again: nothing recorded, nothing published.
    again = await http.post(path, json={"category": "fraud"}, headers=agent.auth)
    assert again.status_code == 200 and again.json()["changed"] is False
    # With an Idempotency-Key: the replay answers the first answer.
    same = {"Idempotency-Key": f"category-{uuid.uuid4()}"}
    body = {"category": "fraud", "priority": "P1"}
    first = await http.post(path, json=body, headers={**agent.auth, **same})
    replay = await http.post(path, json=body, headers={**agent.auth, **same})
    assert first.json()["changed"] is True and replay.json() == first.json()
    assert replay.headers.get("idempotent-replayed") == "true"
    reused = await http.post(path, json={"category": "fees"}, headers={**agent.auth, **same})
    assert_problem(reused, 409)
    rows = await db.fetch(
        "SELECT message FROM outbox WHERE message_key = $1 ORDER BY id", str(complaint_id).encode()
    )
    events = [json.loads(r["message"]) for r in rows]
    recategorised = [e for e in events if e["event_type"] == "complaint.recategorised"]
    assert [(e["payload"]["category"], e["payload"]["priority"]) for e in recategorised] == [
        ("fraud", "P3"),
        ("fraud", "P1"),
    ]
    assert recategorised[0]["payload"]["corrected_by"] == agent.id


async def test_a_correction_to_an_unknown_category_or_case_is_refused(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, _ = await tenant.case()
    path = f"/v1/cases/{ticket}/category"
    for bad, field in (({"category": "spam"}, "category"), ({}, "category"),
                       ({"category": "fraud", "priority": "P0"}, "priority"),
                       ({"category": "fraud", "note": ""}, "note"),
                       ({"category": "fraud", "by": "me"}, "by")):  # fmt: skip
        refused = assert_problem(await http.post(path, json=bad, headers=agent.auth), 422)
        assert [e["field"] for e in refused["errors"]] == [field], bad
    for missing in ("WC-20260101-999999999", "not-a-ticket"):
        answer = await http.post(
            f"/v1/cases/{missing}/category", json={"category": "fraud"}, headers=agent.auth
        )
        assert_problem(answer, 404)
    assert_problem(await http.post(path, json={"category": "fraud"}), 401)
    bad_key = {"Idempotency-Key": "with space"}
    answer = await http.post(path, json={"category": "fraud"}, headers={**agent.auth, **bad_key})
    assert_problem(answer, 400)
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert (case["category"], case["priority"]) == ("duplicate_charge", "P2")


# ------------------------------------------------------------------ the money


async def test_money_is_a_decimal_string_in_the_disputed_currency_and_never_above_it(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, _ = await tenant.case(amount=Decimal("100.00"), currency="CNY")
    as_float = await record(
        http, agent, ticket, {"kind": "refund", "amount": 10.5, "currency": "CNY", "note": "x"}
    )
    assert assert_problem(as_float, 422)["errors"][0]["field"] == "amount"
    as_int = await record(
        http, agent, ticket, {"kind": "refund", "amount": 10, "currency": "CNY", "note": "x"}
    )
    assert_problem(as_int, 422)
    assert_problem(await record(http, agent, ticket, refund("100.01")), 422)
    assert_problem(await record(http, agent, ticket, refund("10.00", "USD")), 422)
    assert_problem(await record(http, agent, ticket, refund("-1")), 422)
    first = await record(http, agent, ticket, refund("60.00"))
    assert first.status_code == 201, first.text
    answer = first.json()
    assert (answer["kind"], answer["amount"], answer["currency"]) == ("refund", "60.00", "CNY")
    assert (answer["status"], answer["decided_by"], answer["ticket_no"]) == (
        "recorded", agent.id, ticket,
    )  # fmt: skip
    # 60 refunded already: 40.01 more would take the refunds above the disputed amount.
    assert_problem(await record(http, agent, ticket, refund("40.01")), 422)
    assert (await record(http, agent, ticket, refund("40.00"))).status_code == 201


async def test_above_the_threshold_a_refund_waits_for_another_approver(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    author = await tenant.agent("author", approver=True)
    plain = await tenant.agent("plain")
    approver = await tenant.agent("approver", approver=True)
    ticket, _ = await tenant.case(amount=Decimal("2000"), currency="CNY")
    recorded = await record(http, author, ticket, refund("800.00"))
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["status"] == "pending_approval"
    path = f"/v1/resolutions/{recorded.json()['id']}/approve"
    assert_problem(await http.post(path, headers={**author.auth, **key()}), 403)
    assert_problem(await http.post(path, headers={**plain.auth, **key()}), 403)
    bad_key = {"Idempotency-Key": "x" * 129}
    assert_problem(await http.post(path, headers={**approver.auth, **bad_key}), 400)
    approve_key = key()
    approved = await http.post(path, headers={**approver.auth, **approve_key})
    assert approved.status_code == 200, approved.text
    replay = await http.post(path, headers={**approver.auth, **approve_key})
    assert replay.status_code == 200 and replay.json() == approved.json()
    assert replay.headers.get("idempotent-replayed") == "true"
    assert_problem(await http.post(path, headers={**approver.auth, **key()}), 409)
    for unknown in (uuid.uuid4(), "not-an-id"):
        answer = await http.post(
            f"/v1/resolutions/{unknown}/approve", headers={**approver.auth, **key()}
        )
        assert_problem(answer, 404)
    case = (await http.get(f"/v1/cases/{ticket}", headers=author.auth)).json()
    [entry] = case["ledger"]
    assert (entry["status"], entry["approved_by"]) == ("approved", approver.id)
    small = await record(http, author, ticket, refund("50.00"))
    assert small.json()["status"] == "recorded"


async def test_an_approval_without_an_idempotency_key_is_taken_once(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    author = await tenant.agent("author")
    approver = await tenant.agent("approver", approver=True)
    ticket, _ = await tenant.case(amount=Decimal("2000"), currency="CNY")
    recorded = await record(http, author, ticket, refund("900.00"))
    path = f"/v1/resolutions/{recorded.json()['id']}/approve"
    approved = await http.post(path, headers=approver.auth)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert "idempotent-replayed" not in approved.headers
    assert_problem(await http.post(path, headers=approver.auth), 409)  # not pending any more


async def test_idempotency_key_replays_the_answer_and_refuses_another_body(
    http: httpx.AsyncClient, tenant: Tenant, service: Service
) -> None:
    agent = await tenant.agent()
    ticket, _ = await tenant.case()
    metrics_before = _recorded_refunds(await http.get("/metrics"))
    same = {"Idempotency-Key": f"refund-{uuid.uuid4()}"}
    first = await record(http, agent, ticket, refund("10.00"), **same)
    assert first.status_code == 201
    # Another key order and whitespace: still the same body.
    again = await http.post(
        f"/v1/cases/{ticket}/resolutions",
        content=b'{"note": "Refunding.", "currency": "CNY",   "amount": "10.00", "kind": "refund"}',
        headers={**agent.auth, **same, "Content-Type": "application/json"},
    )
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert_problem(await record(http, agent, ticket, refund("11.00"), **same), 409)
    case = (await http.get(f"/v1/cases/{ticket}", headers=agent.auth)).json()
    assert len(case["ledger"]) == 1
    assert _recorded_refunds(await http.get("/metrics")) == metrics_before + 1
    for bad in ({}, {"Idempotency-Key": ""}, {"Idempotency-Key": "x" * 129},
                {"Idempotency-Key": "with space"}):  # fmt: skip
        answer = await http.post(
            f"/v1/cases/{ticket}/resolutions", json=refund("1.00"), headers={**agent.auth, **bad}
        )
        assert_problem(answer, 400)


def _recorded_refunds(response: httpx.Response) -> float:
    for line in response.text.splitlines():
        if line.startswith('resolutions_recorded_total{kind="refund"}'):
            return float(line.split()[-1])
    return 0.0


async def test_parallel_refunds_by_several_agents_never_exceed_the_disputed_amount(
    http: httpx.AsyncClient, db: asyncpg.Connection, tenant: Tenant
) -> None:
    agents = [await tenant.agent(f"agent-{i}") for i in range(4)]
    ticket, complaint_id = await tenant.case(amount=Decimal("100.00"), currency="CNY")
    answers = await asyncio.gather(
        *(record(http, agents[i % len(agents)], ticket, refund("30.00")) for i in range(12))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 3 + [422] * 9, [a.text for a in answers]
    total = await db.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries "
        "WHERE complaint_id = $1 AND kind = 'refund'",
        complaint_id,
    )
    assert total == Decimal("90.00")


async def test_malformed_bodies_are_problems_not_server_errors(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    agent = await tenant.agent()
    ticket, _ = await tenant.case()
    for path in (f"/v1/cases/{ticket}/resolutions", f"/v1/cases/{ticket}/status",
                 f"/v1/cases/{ticket}/messages", f"/v1/cases/{ticket}/assign",
                 f"/v1/cases/{ticket}/category"):  # fmt: skip
        headers = {**agent.auth, **key()}
        as_text = await http.post(
            path, content=b"{}", headers={**headers, "Content-Type": "text/plain"}
        )
        assert_problem(as_text, 415)
        broken = await http.post(
            path, content=b'{"kind":', headers={**headers, "Content-Type": "application/json"}
        )
        assert_problem(broken, 400)
        huge = await http.post(
            path,
            content=b'{"text": "' + b"x" * 70_000 + b'"}',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert_problem(huge, 413)
        nul = await http.post(path, json={"text": "a\x00b", "note": "a\x00b"}, headers=headers)
        assert_problem(nul, 422)
        not_object = await http.post(path, json=["a"], headers=headers)
        assert_problem(not_object, 422)


async def test_the_api_reads_now_from_the_injectable_clock(
    infra: Infra, service: Service, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """In-process, with app.state.clock replaced: what the commands record is at its time."""
    from services.resolution.app import create_app
    from tests.support import running

    agent = await tenant.agent()
    ticket, _ = await tenant.case()
    frozen = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    app = create_app(infra.settings(ResolutionSettings, service_name="resolution-clock-test"))
    app.state.clock = lambda: frozen
    async with running(app) as client:
        answer = await record(client, agent, ticket, refund("1.00"))
    assert answer.status_code == 201, answer.text
    assert datetime.fromisoformat(answer.json()["created_at"]) == frozen
