"""Triage learns from agents, on real PostgreSQL and Kafka: a complaint goes intake ->
triage -> resolution, an agent corrects triage's category through the agent API, and
`complaint.recategorised` travels on complaints.resolution.v1 back to triage, which keeps
the complaint's text with the agent's label as a labelled example (`load_corrections`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.intake.app import MIGRATIONS as INTAKE_MIGRATIONS
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.intake.tenants import create_tenant
from services.resolution.agents import create_agent
from services.resolution.app import MIGRATIONS as RESOLUTION_MIGRATIONS
from services.resolution.app import create_app as create_resolution
from services.resolution.settings import ResolutionSettings
from services.triage.app import MIGRATIONS as TRIAGE_MIGRATIONS
from services.triage.app import create_app as create_triage
from services.triage.corrections import load_corrections
from services.triage.settings import TriageSettings
from shared.db import connect
from shared.runtime import migrate
from shared.topics import COMPLAINTS_RESOLUTION
from tests.support import Infra, eventually, produce, read_topic, running

SERVICES = (
    (IntakeSettings, "intake", INTAKE_MIGRATIONS, create_intake),
    (TriageSettings, "triage", TRIAGE_MIGRATIONS, create_triage),
    (ResolutionSettings, "resolution", RESOLUTION_MIGRATIONS, create_resolution),
)
DESCRIPTION = "我的钱包付款一直失败，商户说没收到钱，但是余额少了 86.50 元"


@pytest.fixture(scope="module")
async def stack(infra: Infra) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """intake, triage and resolution in this process, each with its schema and group."""
    async with AsyncExitStack() as exits:
        clients = {}
        for settings_cls, schema, migrations, create_app in SERVICES:
            settings = infra.settings(settings_cls)
            await asyncio.to_thread(migrate, settings, schema, migrations)
            clients[schema] = await exits.enter_async_context(running(create_app(settings)))
        yield clients


async def _fetch(infra: Infra, schema: str, query: str, *args: Any) -> list[dict[str, Any]]:
    conn = await connect(infra.database_url, schema, purpose="test")
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def _recategorised(infra: Infra, complaint_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(m.value or b"")
        for m in await read_topic(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION)
        if m.key == complaint_id.encode()
        and json.loads(m.value or b"")["event_type"] == "complaint.recategorised"
    ]


async def test_an_agents_correction_becomes_one_labelled_example_in_triage(
    infra: Infra, stack: dict[str, httpx.AsyncClient]
) -> None:
    conn = await connect(infra.database_url, "intake", purpose="test")
    try:
        tenant = await create_tenant(
            conn,
            name=f"wallet-{uuid.uuid4().hex[:6]}",
            webhook_url="http://127.0.0.1:9/hooks",  # no notifier here: never called
            jurisdiction="cn",
            locale="zh-CN",
            webhook_master_key=IntakeSettings().webhook_master_key,
        )
    finally:
        await conn.close()
    conn = await connect(infra.database_url, "resolution", purpose="test")
    try:
        agent = await create_agent(
            conn, name="Li Lei", approver=False, tenant_id=uuid.UUID(tenant["tenant_id"])
        )
    finally:
        await conn.close()
    auth = {"Authorization": f"Bearer {agent['token']}"}

    accepted = await stack["intake"].post(
        "/v1/complaints",
        json={
            "customer": {"id": "u-829", "locale": "zh-CN", "email": "li@example.com"},
            "channel": "app",
            "description": DESCRIPTION,
            "amount": "86.50",
            "currency": "CNY",
        },
        headers={
            "Authorization": f"Bearer {tenant['api_key']}",
            "Idempotency-Key": str(uuid.uuid4()),
        },
    )
    assert accepted.status_code == 202, accepted.text
    ticket, complaint_id = accepted.json()["ticket_no"], accepted.json()["complaint_id"]

    async def opened_case() -> dict[str, Any] | None:
        response = await stack["resolution"].get(f"/v1/cases/{ticket}", headers=auth)
        return response.json() if response.status_code == 200 else None

    case = await eventually(opened_case)
    triaged = (case["category"], case["priority"])
    # Triage kept what it classified with its decision.
    [row] = await _fetch(
        infra,
        "triage",
        "SELECT description, channel, amount, currency, category FROM triaged_complaints "
        "WHERE complaint_id = $1",
        uuid.UUID(complaint_id),
    )
    assert (row["description"], row["channel"], str(row["amount"]), row["currency"]) == (
        DESCRIPTION,
        "app",
        "86.5000",
        "CNY",
    )
    # As triage leaves a decision it is unsure of: at the top of the agents' queue.
    await _fetch(
        infra,
        "resolution",
        "UPDATE cases SET needs_review = true WHERE complaint_id = $1",
        uuid.UUID(complaint_id),
    )
    label = ("fraud", "P1") if triaged[0] != "fraud" else ("duplicate_charge", "P2")
    correction = {"category": label[0], "priority": label[1], "note": "Account takeover."}

    corrected = await stack["resolution"].post(
        f"/v1/cases/{ticket}/category", json=correction, headers=auth
    )
    assert corrected.status_code == 200, corrected.text
    answer = corrected.json()
    assert (answer["category"], answer["priority"], answer["needs_review"]) == (*label, False)
    assert (answer["previous_category"], answer["previous_priority"]) == triaged
    assert answer["changed"] is True
    case = (await stack["resolution"].get(f"/v1/cases/{ticket}", headers=auth)).json()
    assert (case["category"], case["priority"], case["needs_review"]) == (*label, False)
    assert case["history"][-1]["actor"] == agent["agent_id"]
    assert case["history"][-1]["note"].startswith(f"Recategorised from {triaged[0]}")

    [event] = await eventually(lambda: _recategorised(infra, complaint_id))
    assert (event["schema_version"], event["producer"], event["ticket_no"]) == (
        1,
        "resolution",
        ticket,
    )
    assert event["payload"] == {
        "category": label[0],
        "priority": label[1],
        "previous_category": triaged[0],
        "previous_priority": triaged[1],
        "corrected_by": agent["agent_id"],
        "note": "Account takeover.",
    }
    # Its own event id: no other event on the topic carries it.
    everything = await read_topic(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION)
    ids = [json.loads(m.value or b"")["event_id"] for m in everything]
    assert ids.count(event["event_id"]) == 1 and len(set(ids)) == len(ids)
    assert DESCRIPTION not in json.dumps(event) and "li@example.com" not in json.dumps(event)

    examples_query = "SELECT * FROM labelled_examples WHERE complaint_id = $1"

    async def example() -> list[dict[str, Any]]:
        return await _fetch(infra, "triage", examples_query, uuid.UUID(complaint_id))

    [stored] = await eventually(example)
    assert (stored["description"], stored["channel"], stored["currency"]) == (
        DESCRIPTION,
        "app",
        "CNY",
    )
    assert (stored["category"], stored["priority"]) == label
    assert (stored["previous_category"], stored["previous_priority"]) == triaged
    assert (stored["corrected_by"], str(stored["event_id"])) == (
        agent["agent_id"],
        event["event_id"],
    )
    mine = [c for c in await load_corrections(infra.database_url) if c["id"] == complaint_id]
    assert mine == [
        {
            "id": complaint_id,
            "description": DESCRIPTION,
            "channel": "app",
            "amount": "86.50",
            "currency": "CNY",
            "expected_category": label[0],
            "expected_priority": label[1],
        }
    ]

    # The same correction again: nothing changes, nothing is published.
    again = await stack["resolution"].post(
        f"/v1/cases/{ticket}/category", json=correction, headers=auth
    )
    assert again.status_code == 200 and again.json()["changed"] is False
    assert (again.json()["category"], again.json()["needs_review"]) == (label[0], False)
    # The event redelivered to triage: the inbox has it already.
    raw = json.dumps(event).encode()
    await produce(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION, raw, complaint_id.encode())
    # A marker behind both on the same partition: once triage has it, it saw the rest.
    marker = await stack["resolution"].post(
        f"/v1/cases/{ticket}/status", json={"status": "in_progress", "note": "x"}, headers=auth
    )
    assert marker.status_code == 200, marker.text

    # Triage passes the case's status changes over unread (no inbox row): the marker is
    # consumed once triage's group has committed past it.
    async def marker_published() -> list[dict[str, Any]] | None:
        changes = await _status_changes(infra, complaint_id)
        return changes if len(changes) >= 2 else None  # case opened + in_progress

    await eventually(marker_published)
    partition, end = await _end_of_partition(infra, complaint_id.encode())

    async def marker_consumed() -> bool:
        return await _committed(infra, "triage", partition) >= end

    await eventually(marker_consumed)
    # On the topic: the one event, and the copy this test put there; no second fact.
    copies = await _recategorised(infra, complaint_id)
    assert len(copies) == 2 and {e["event_id"] for e in copies} == {event["event_id"]}
    assert await example() == [stored]
    corrections = await load_corrections(infra.database_url)
    assert [c["id"] for c in corrections].count(complaint_id) == 1


async def _end_of_partition(infra: Infra, key: bytes) -> tuple[int, int]:
    """The partition of `key` on complaints.resolution.v1 and its end offset now."""
    [partition] = {
        m.partition
        for m in await read_topic(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION)
        if m.key == key
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(COMPLAINTS_RESOLUTION, partition)
        return partition, (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def _committed(infra: Infra, group: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    committed = offsets.get(TopicPartition(COMPLAINTS_RESOLUTION, partition))
    return committed.offset if committed is not None else -1


async def _status_changes(infra: Infra, complaint_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(m.value or b"")
        for m in await read_topic(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION)
        if m.key == complaint_id.encode()
        and json.loads(m.value or b"")["event_type"] == "complaint.status_changed"
    ]
