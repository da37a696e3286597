"""An idempotent replay of POST /v1/complaints answers exactly what the first request was
answered (CONTRACT section 3), also after triage has moved the complaint's due time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest

from services.intake.app import MIGRATIONS, SCHEMA, create_app
from services.intake.settings import IntakeSettings
from services.intake.tenants import create_tenant
from shared.db import connect
from shared.events import new_event
from shared.runtime import migrate
from shared.topics import COMPLAINTS_TRIAGED
from tests.integration.events import as_bytes
from tests.support import Infra, eventually, produce, running

COMPLAINT = {
    "customer": {"id": "u-replay", "locale": "zh-CN", "phone": "+8613800138000"},
    "channel": "app",
    "description": "同一笔订单被扣了两次款。",
    "amount": "86.50",
    "currency": "CNY",
}


@pytest.fixture(scope="module")
async def intake(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    settings = infra.settings(IntakeSettings)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    async with running(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
async def tenant(infra: Infra, intake: httpx.AsyncClient) -> dict[str, str]:
    conn = await connect(infra.database_url, SCHEMA)
    try:
        return await create_tenant(
            conn,
            name="wallet-replay",
            webhook_url="http://127.0.0.1:9/hooks",
            jurisdiction="cn",
            locale="zh-CN",
            webhook_master_key="test-master-key",
        )
    finally:
        await conn.close()


async def triage(infra: Infra, tenant: dict[str, str], accepted: dict[str, str]) -> str:
    """What triage publishes: the real due times, here 2 h instead of the provisional 24 h.
    Returns the due time the complaint shows once intake's read model has applied it."""
    received_at = datetime.fromisoformat(accepted["received_at"])
    due = (received_at + timedelta(hours=2)).isoformat()
    event = new_event(
        "complaint.triaged",
        producer="triage",
        tenant_id=uuid.UUID(tenant["tenant_id"]),
        complaint_id=uuid.UUID(accepted["complaint_id"]),
        ticket_no=accepted["ticket_no"],
        correlation_id=uuid.uuid4(),
        payload={
            "category": "duplicate_charge",
            "priority": "P1",
            "first_response_due": due,
            "resolution_due": (received_at + timedelta(days=1)).isoformat(),
            "received_at": accepted["received_at"],
        },
    )
    await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, as_bytes(event), event.key)
    return due


async def test_a_replay_after_triage_answers_the_first_answer_byte_for_byte(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    key = {**headers, "Idempotency-Key": f"replay-{uuid.uuid4()}"}
    first = await intake.post("/v1/complaints", json=COMPLAINT, headers=key)
    assert first.status_code == 202, first.text
    answer = first.json()

    triaged_due = await triage(infra, tenant, answer)

    async def triaged() -> dict[str, str] | None:
        view = (await intake.get(answer["links"]["self"], headers=headers)).json()
        return view if view["status"] == "triaged" else None

    view = await eventually(triaged)
    assert datetime.fromisoformat(view["first_response_due"]) == datetime.fromisoformat(triaged_due)
    assert view["first_response_due"] != answer["first_response_due"]  # triage moved it

    replay = await intake.post("/v1/complaints", json=COMPLAINT, headers=key)
    assert replay.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content  # the same bytes, due time included
    assert replay.headers["content-type"] == first.headers["content-type"]
