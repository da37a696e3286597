"""complaints.resolution.v1 as a payments system reads it: in a consumer group of its own,
deduplicating by event_id, executing every refund that is recorded (or approved) and
none that waits for approval, while agents work in parallel and the resolution process
is killed with -9 and started again.

What it proves: every executable refund reaches the topic once as a fact (one event id
per fact, however many copies the at-least-once relay sends), no pending refund is ever
executable, and per complaint the executed sum equals the case ledger and stays within
the disputed amount.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from deploy.local import stack
from services.resolution.app import MIGRATIONS, SCHEMA
from services.resolution.settings import ResolutionSettings
from shared.db import connect
from shared.events import Envelope, new_event
from shared.runtime import migrate
from shared.topics import COMPLAINTS_RESOLUTION, COMPLAINTS_TRIAGED
from tests.integration.events import as_bytes
from tests.support import REPO, Infra, ServiceProcess, eventually, produce

TENANT = uuid.uuid4()
DISPUTED = Decimal("1000.00")
CASES = 12
AUTO_REFUNDED = 3  # small duplicate charges: refunded by the service itself


def triaged(category: str, amount: Decimal, customer: str) -> Envelope:
    now = datetime.now(UTC)
    return new_event(
        "complaint.triaged",
        producer="triage",
        tenant_id=TENANT,
        complaint_id=uuid.uuid4(),
        ticket_no=f"WC-20261202-{uuid.uuid4().int % 10**6:06d}",
        correlation_id=uuid.uuid4(),
        payload={
            "category": category,
            "priority": "P2",
            "first_response_due": (now + timedelta(hours=8)).isoformat(),
            "resolution_due": (now + timedelta(hours=72)).isoformat(),
            "customer": {"id": customer, "locale": "zh-CN"},
            "tenant": {"jurisdiction": "cn", "locale": "zh-CN"},
            "channel": "app",
            "amount": str(amount),
            "currency": "CNY",
            "transaction_ref": f"T-{uuid.uuid4().hex[:8]}",
            "received_at": now.isoformat(),
        },
    )


def create_agent(env: dict[str, str], name: str, *, approver: bool = False) -> str:
    args = ["create-agent", name, "--tenant", str(TENANT)] + (["--approver"] if approver else [])
    out = subprocess.run(
        [sys.executable, "-m", "services.resolution", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out)["token"]


@dataclass
class Downstream:
    """A payments system's view: facts by event id, refunds executed by resolution id."""

    copies: Counter[str] = field(default_factory=Counter)  # event_id -> copies seen
    executed: dict[str, tuple[str, Decimal]] = field(
        default_factory=dict
    )  # id -> (complaint, amount)
    executed_twice: list[str] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)
    facts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (resolution_id, status)

    def apply(self, event: dict[str, Any]) -> None:
        self.copies[event["event_id"]] += 1
        if self.copies[event["event_id"]] > 1:
            return  # the same fact again: a consumer ignores it
        if event["event_type"] not in ("resolution.recorded", "resolution.approved"):
            return
        p = event["payload"]
        self.facts[(p["resolution_id"], p["status"])] += 1
        if p["kind"] != "refund":
            return
        if p["status"] == "pending_approval":
            self.pending.add(p["resolution_id"])
            return
        if p["resolution_id"] in self.executed:
            self.executed_twice.append(p["resolution_id"])
        self.executed[p["resolution_id"]] = (event["complaint_id"], Decimal(p["amount"]))


@contextlib.asynccontextmanager
async def consuming(bootstrap: str, group: str, downstream: Downstream) -> AsyncIterator[None]:
    consumer = AIOKafkaConsumer(
        COMPLAINTS_RESOLUTION,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()

    async def loop() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for message in messages:
                    downstream.apply(json.loads(message.value or b"{}"))
            if batch:
                await consumer.commit()  # after applying: at-least-once, deduplicated

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


RETRIES: Counter[str] = Counter()  # "transport" (the service was down), "replayed"


async def post_until_answered(
    client: httpx.AsyncClient, url: str, token: str, body: dict[str, Any], key: str
) -> httpx.Response:
    """An agent's client: on a connection error (the service was killed) the same request
    again with the same Idempotency-Key, as a careful client does."""
    for _ in range(120):
        try:
            response = await client.post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            )
        except httpx.TransportError:
            RETRIES["transport"] += 1
            await asyncio.sleep(0.5)
            continue
        if response.status_code != 503:
            if response.headers.get("Idempotent-Replayed") == "true":
                RETRIES["replayed"] += 1
            return response
        RETRIES["unavailable"] += 1
        await asyncio.sleep(0.5)
    raise AssertionError(f"no answer from {url}")


async def ledger(db: asyncpg.Connection) -> dict[str, tuple[str, Decimal, bool]]:
    """Executable refunds by id in the case ledger: (complaint, amount, approved_or_free)."""
    rows = await db.fetch(
        "SELECT e.id::text, e.complaint_id::text, e.amount, "
        "(NOT e.requires_approval OR a.entry_id IS NOT NULL) AS executable "
        "FROM ledger_entries e LEFT JOIN ledger_approvals a ON a.entry_id = e.id "
        "WHERE e.kind = 'refund' "
        "AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses = e.id)"
    )
    return {r["id"]: (r["complaint_id"], r["amount"], r["executable"]) for r in rows}


@pytest.mark.timeout(600)
async def test_a_downstream_ledger_executes_every_refund_once_through_kills(
    infra: Infra, tmp_path: Path
) -> None:
    settings = ResolutionSettings(database_url=infra.database_url)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "LOG_FORMAT": "console",
        "OUTBOX_POLL_INTERVAL_S": "0.2",
    }
    agents = [create_agent(env, f"agent-{n}") for n in range(3)]
    approver = create_agent(env, "approver", approver=True)

    complaints = [triaged("refund", DISPUTED, f"u-{n}") for n in range(CASES)]
    small = [triaged("duplicate_charge", Decimal("50.00"), f"s-{n}") for n in range(AUTO_REFUNDED)]
    service = ServiceProcess("resolution", env, stack.free_port(), tmp_path / "resolution.log")
    downstream = Downstream()
    rng = random.Random(7)
    db = await connect(infra.database_url, SCHEMA)
    try:
        await asyncio.to_thread(service.start)
        async with (
            consuming(infra.kafka_bootstrap, "downstream-ledger", downstream),
            httpx.AsyncClient(base_url=service.base_url, timeout=10) as client,
        ):
            for event in complaints + small:
                await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, as_bytes(event), event.key)

            async def opened() -> bool:
                return await db.fetchval("SELECT count(*) FROM cases") == CASES + AUTO_REFUNDED

            await eventually(opened, within_s=60)

            # Each agent offers refunds on every case at once; some are above the approval
            # threshold (CNY 500), and together they ask for more than was disputed.
            async def agent_works(token: str) -> list[httpx.Response]:
                answers = []
                for event in rng.sample(complaints, len(complaints)):
                    amount = rng.choice(["120.00", "300.00", "450.50", "620.00"])
                    body = {
                        "kind": "refund",
                        "amount": amount,
                        "currency": "CNY",
                        "note": "goodwill",
                    }
                    url = f"/v1/cases/{event.ticket_no}/resolutions"
                    answers.append(
                        await post_until_answered(client, url, token, body, str(uuid.uuid4()))
                    )
                return answers

            work = asyncio.gather(*(agent_works(token) for token in agents))

            async def some_answered() -> bool:
                return await db.fetchval("SELECT count(*) FROM ledger_entries") >= AUTO_REFUNDED + 6

            await eventually(some_answered, within_s=30, interval=0.01)
            service.kill()  # in the middle of the agents' work: their requests fail
            await asyncio.sleep(1.0)
            await asyncio.to_thread(service.start)  # the loop runs on: agents keep retrying
            answers = [a for per_agent in await work for a in per_agent]
            assert {a.status_code for a in answers} <= {201, 422}, [a.text for a in answers]
            assert any(
                a.json()["status"] == "pending_approval" for a in answers if a.status_code == 201
            )

            # The approver approves what waits, across another kill.
            pending = [
                r["id"]
                for r in await db.fetch(
                    "SELECT e.id::text FROM ledger_entries e LEFT JOIN ledger_approvals a "
                    "ON a.entry_id = e.id WHERE e.requires_approval AND a.entry_id IS NULL"
                )
            ]
            half = len(pending) // 2
            for entry_id in pending[:half]:
                answer = await post_until_answered(
                    client, f"/v1/resolutions/{entry_id}/approve", approver, {}, str(uuid.uuid4())
                )
                assert answer.status_code == 200, answer.text
            service.kill()
            await asyncio.to_thread(service.start)

            in_ledger = await ledger(db)
            executable = {k: v for k, v in in_ledger.items() if v[2]}

            async def caught_up() -> bool:
                return set(downstream.executed) >= set(executable) and set(
                    downstream.pending
                ) >= set(pending)

            await eventually(caught_up, within_s=60)
    finally:
        service.stop()
        await db.close()

    print(
        f"retries {dict(RETRIES)}, {sum(downstream.copies.values())} messages for "
        f"{len(downstream.copies)} events, {len(downstream.executed)} refunds executed, "
        f"{len(pending)} waited for approval"
    )
    assert RETRIES["transport"] >= 1  # the kills did hit agents' requests in flight
    assert not downstream.executed_twice
    assert set(downstream.executed) == set(executable)  # nothing pending ever executed
    never_approved = set(pending[half:])
    assert never_approved and not never_approved & set(downstream.executed)
    assert all(n == 1 for n in downstream.facts.values()), downstream.facts  # one id per fact
    per_complaint: dict[str, Decimal] = defaultdict(Decimal)
    for complaint_id, amount in downstream.executed.values():
        per_complaint[complaint_id] += amount
    in_db: dict[str, Decimal] = defaultdict(Decimal)
    for complaint_id, amount, _ in executable.values():
        in_db[complaint_id] += amount
    assert per_complaint == in_db
    for event in complaints:
        asked = sum(
            (
                amount
                for complaint_id, amount, _ in in_ledger.values()
                if complaint_id == str(event.complaint_id)
            ),
            Decimal(0),
        )
        assert asked <= DISPUTED  # recorded and pending together never above it
    auto = {str(e.complaint_id) for e in small}
    assert auto <= set(per_complaint)  # the small duplicate charges were refunded, once each
