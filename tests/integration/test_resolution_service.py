"""resolution against real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.resolution.agents import create_agent
from services.resolution.app import MIGRATIONS, SCHEMA, create_app
from services.resolution.settings import ResolutionSettings
from shared.db import connect
from shared.events import Envelope, new_event
from shared.runtime import migrate
from shared.signing import hash_secret
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_RESOLUTION, COMPLAINTS_TRIAGED
from tests.integration.events import as_bytes
from tests.support import Infra, eventually, produce, read_topic, running


@pytest.fixture(scope="module")
async def resolution(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    settings = infra.settings(ResolutionSettings)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    async with running(create_app(settings)) as client:
        yield client


def triaged_event(duplicate_of: uuid.UUID | None = None) -> Envelope:
    now = datetime.now(UTC)
    return new_event(
        "complaint.triaged",
        producer="triage",
        tenant_id=uuid.uuid4(),
        complaint_id=uuid.uuid4(),
        ticket_no=f"WC-20261123-{uuid.uuid4().int % 10**6:06d}",
        correlation_id=uuid.uuid4(),
        payload={
            "category": "duplicate_charge",
            "priority": "P2",
            "reasons": ["keyword 'charged twice' -> duplicate_charge"],
            "regulatory_issue": "Wrong amount charged or received",
            "actions": [],
            "first_response_due": (now + timedelta(hours=8)).isoformat(),
            "resolution_due": (now + timedelta(hours=72)).isoformat(),
            "duplicate_of": str(duplicate_of) if duplicate_of else None,
            "incident_id": None,
            "customer": {"id": "u-5", "locale": "en"},
            "tenant": {"jurisdiction": "eu", "locale": "en"},
            "channel": "app",
            "amount": "86.50",
            "currency": "EUR",
            "transaction_ref": "T-9",
            "merchant": None,
            "received_at": now.isoformat(),
        },
    )


async def _status_events(infra: Infra, complaint_id: uuid.UUID) -> list[dict] | None:
    found = [
        json.loads(m.value or b"")
        for m in await read_topic(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION)
        if m.key == str(complaint_id).encode()
    ]
    return found or None


async def test_opens_a_case_once_and_announces_it(
    infra: Infra, resolution: httpx.AsyncClient
) -> None:
    event = triaged_event()
    for _ in range(2):  # a redelivery must not open a second case
        await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, as_bytes(event), event.key)

    [changed] = await eventually(lambda: _status_events(infra, event.complaint_id))
    p = changed["payload"]
    assert changed["event_type"] == "complaint.status_changed"
    assert (p["status"], p["reason"], p["priority"]) == ("triaged", "case_opened", "P2")
    assert p["resolution_due"] == event.payload["resolution_due"]

    conn = await connect(infra.database_url, SCHEMA)
    try:
        case = await conn.fetchrow(
            "SELECT * FROM cases WHERE complaint_id = $1", event.complaint_id
        )
    finally:
        await conn.close()
    assert case["jurisdiction"] == "eu" and str(case["amount"]) == "86.50"


async def test_a_duplicate_is_linked_to_the_original_case(
    infra: Infra, resolution: httpx.AsyncClient
) -> None:
    original = triaged_event()
    await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, as_bytes(original), original.key)
    await eventually(lambda: _status_events(infra, original.complaint_id))
    duplicate = triaged_event(duplicate_of=original.complaint_id)
    await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, as_bytes(duplicate), duplicate.key)

    [linked] = await eventually(lambda: _status_events(infra, duplicate.complaint_id))
    assert linked["payload"]["reason"] == "duplicate_linked"
    assert linked["payload"]["duplicate_of_ticket_no"] == original.ticket_no
    conn = await connect(infra.database_url, SCHEMA)
    try:
        opened = await conn.fetchval(
            "SELECT count(*) FROM cases WHERE complaint_id = $1", duplicate.complaint_id
        )
    finally:
        await conn.close()
    assert opened == 0


async def test_agent_tokens_are_stored_only_as_hashes(
    infra: Infra, resolution: httpx.AsyncClient
) -> None:
    conn = await connect(infra.database_url, SCHEMA)
    try:
        issued = await create_agent(conn, name="Li Lei", approver=True)
        row = await conn.fetchrow(
            "SELECT * FROM agents WHERE id = $1", uuid.UUID(issued["agent_id"])
        )
    finally:
        await conn.close()
    prefix, token_id, secret = issued["token"].split("_", 2)
    assert (prefix, row["token_id"], row["approver"]) == ("wca", token_id, True)
    assert bytes(row["token_hash"]) == hash_secret(secret)
    assert secret not in str(dict(row))


def _customer_event(triaged: Envelope, event_type: str, **payload: object) -> Envelope:
    return new_event(
        event_type,
        producer="intake",
        tenant_id=triaged.tenant_id,
        complaint_id=triaged.complaint_id,
        ticket_no=triaged.ticket_no,
        correlation_id=triaged.correlation_id,
        payload=payload,
    )


async def test_poor_feedback_reopens_the_case_and_says_so(
    infra: Infra, resolution: httpx.AsyncClient
) -> None:
    triaged = triaged_event()
    await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, as_bytes(triaged), triaged.key)
    await eventually(lambda: _status_events(infra, triaged.complaint_id))
    conn = await connect(infra.database_url, SCHEMA)
    try:  # as an agent's resolution would leave it: feedback comes after a resolution
        await conn.execute(
            "UPDATE cases SET status = 'resolved' WHERE complaint_id = $1", triaged.complaint_id
        )
    finally:
        await conn.close()
    now = datetime.now(UTC).isoformat()
    message = _customer_event(
        triaged,
        "complaint.message_added",
        message_id=str(uuid.uuid4()),
        text="any news?",
        received_at=now,
    )
    feedback = _customer_event(
        triaged,
        "complaint.feedback_received",
        feedback_id=str(uuid.uuid4()),
        score=1,
        reopen=True,
        received_at=now,
    )
    for event in (message, feedback):
        await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)

    async def reopened() -> list | None:
        events = await _status_events(infra, triaged.complaint_id) or []
        return [e for e in events if e["payload"]["status"] == "reopened"] or None

    [event] = await eventually(reopened)
    assert event["payload"]["previous_status"] == "resolved"
    assert event["payload"]["reason"] == "customer_feedback"
    conn = await connect(infra.database_url, SCHEMA)
    try:
        status = await conn.fetchval(
            "SELECT status FROM cases WHERE complaint_id = $1", triaged.complaint_id
        )
        notes = await conn.fetch(
            "SELECT note FROM case_history WHERE complaint_id = $1 ORDER BY id",
            triaged.complaint_id,
        )
    finally:
        await conn.close()
    assert status == "reopened"
    assert [n["note"] for n in notes][1:] == [
        "Customer sent a follow-up message.",
        "Customer rated the handling 1/5. Reopened.",
    ]
