"""End to end over real PostgreSQL and a real broker: HTTP in, signed webhooks out."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime

import httpx
import pytest

from services.intake.app import MIGRATIONS as INTAKE_MIGRATIONS
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.intake.tenants import create_tenant
from services.notifier.app import MIGRATIONS as NOTIFIER_MIGRATIONS
from services.notifier.app import create_app as create_notifier
from services.notifier.settings import NotifierSettings
from services.resolution.agents import create_agent
from services.resolution.app import MIGRATIONS as RESOLUTION_MIGRATIONS
from services.resolution.app import create_app as create_resolution
from services.resolution.settings import ResolutionSettings
from services.triage.app import MIGRATIONS as TRIAGE_MIGRATIONS
from services.triage.app import create_app as create_triage
from services.triage.settings import TriageSettings
from shared.db import connect
from shared.runtime import migrate
from shared.signing import verify_webhook
from tests.support import Infra, WebhookSink, eventually, running

SERVICES = (
    (IntakeSettings, "intake", INTAKE_MIGRATIONS, create_intake),
    (TriageSettings, "triage", TRIAGE_MIGRATIONS, create_triage),
    (ResolutionSettings, "resolution", RESOLUTION_MIGRATIONS, create_resolution),
    (NotifierSettings, "notifier", NOTIFIER_MIGRATIONS, create_notifier),
)


@pytest.fixture(scope="module")
async def stack(infra: Infra) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """All four services running in this process, each with its own schema and group."""
    async with AsyncExitStack() as exits:
        clients = {}
        for settings_cls, schema, migrations, create_app in SERVICES:
            settings = infra.settings(settings_cls)
            await asyncio.to_thread(migrate, settings, schema, migrations)
            clients[schema] = await exits.enter_async_context(running(create_app(settings)))
        yield clients


async def _tenant(infra: Infra, webhook_url: str, locale: str = "zh-CN") -> dict[str, str]:
    conn = await connect(infra.database_url, "intake")
    try:
        return await create_tenant(
            conn,
            name=f"wallet-{uuid.uuid4().hex[:6]}",
            webhook_url=webhook_url,
            jurisdiction="cn",
            locale=locale,
            webhook_master_key=IntakeSettings().webhook_master_key,
        )
    finally:
        await conn.close()


async def _post(intake: httpx.AsyncClient, api_key: str, body: dict[str, object]) -> dict:
    response = await intake.post(
        "/v1/complaints",
        json=body,
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 202, response.text
    return response.json()


async def test_complaint_in_signed_acknowledgement_out_status_triaged(
    infra: Infra, stack: dict[str, httpx.AsyncClient], webhook_sink: WebhookSink
) -> None:
    tenant = await _tenant(infra, webhook_sink.url)
    accepted = await _post(
        stack["intake"],
        tenant["api_key"],
        {
            "customer": {"id": "u-829", "locale": "zh-CN", "email": "a@example.com"},
            "channel": "app",
            "description": "我的账户被盗刷了，有三笔不是我操作的消费，共 2999 元",
            "amount": "2999.00",
            "currency": "CNY",
        },
    )
    ticket_no = accepted["ticket_no"]

    webhooks = await eventually(lambda: _when(len(webhook_sink.delivered()) >= 2, webhook_sink))
    first, second = (json.loads(w.body) for w in webhooks.delivered()[:2])
    assert [first["type"], second["type"]] == ["complaint.acknowledged", "complaint.triaged"]
    assert first["ticket_no"] == ticket_no and first["complaint_id"] == accepted["complaint_id"]
    assert ticket_no in first["message"] and first["locale"] == "zh-CN"
    # The acknowledgement carries the promise of the 202; triage's due times follow.
    assert list(first["data"]) == ["first_response_due"]
    promised = datetime.fromisoformat(accepted["first_response_due"])
    assert datetime.fromisoformat(first["data"]["first_response_due"]) == promised
    assert second["data"]["first_response_due"] and second["data"]["resolution_due"]
    assert second["data"]["category"] == "fraud" and second["data"]["priority"] == "P1"
    for hook in webhook_sink.delivered()[:2]:
        assert hook.headers["x-complaints-event-id"] == json.loads(hook.body)["event_id"]
        assert verify_webhook(
            tenant["webhook_secret"],
            int(hook.headers["x-complaints-timestamp"]),
            hook.body,
            hook.headers["x-complaints-signature"],
            now=int(time.time()),
        )

    async def triaged_view() -> dict | None:
        response = await stack["intake"].get(
            f"/v1/complaints/{ticket_no}",
            headers={"Authorization": f"Bearer {tenant['api_key']}"},
        )
        body = response.json()
        acknowledged = any("Acknowledgement" in t["detail"] for t in body["timeline"])
        return body if body["status"] == "triaged" and acknowledged else None

    view = await eventually(triaged_view)
    assert (view["category"], view["priority"]) == ("fraud", "P1")
    assert view["resolution_due"] is not None
    assert view["timeline"][0]["status"] == "received"


async def test_failed_webhook_is_retried_with_the_same_event_id(
    infra: Infra, stack: dict[str, httpx.AsyncClient], webhook_sink: WebhookSink
) -> None:
    tenant = await _tenant(infra, webhook_sink.url, locale="en")
    webhook_sink.fail_next = 2
    accepted = await _post(
        stack["intake"],
        tenant["api_key"],
        {
            "customer": {"id": "c-77", "locale": "en"},
            "channel": "web",
            "description": "I was charged twice for the same order, please refund one of them.",
            "amount": "12.00",
            "currency": "USD",
            "transaction_ref": "T-1",
        },
    )

    await eventually(lambda: _when(len(webhook_sink.delivered()) >= 2, webhook_sink))
    attempts = [json.loads(w.body) for w in webhook_sink.received]
    assert attempts[0]["type"] == "complaint.acknowledged"
    assert attempts[0]["ticket_no"] == accepted["ticket_no"]
    # Two refusals, then the same acknowledgement again: same id, same bytes.
    assert [w.status for w in webhook_sink.received[:3]] == [503, 503, 200]
    assert len({a["event_id"] for a in attempts[:3]}) == 1
    assert len({w.body for w in webhook_sink.received[:3]}) == 1
    assert attempts[3]["type"] == "complaint.triaged"
    assert "We have received your complaint" in attempts[0]["message"]


async def _when(condition: bool, value: WebhookSink) -> WebhookSink | None:
    return value if condition else None


async def test_an_agent_asks_refunds_and_resolves_and_the_customer_hears_each_step(
    infra: Infra, stack: dict[str, httpx.AsyncClient], webhook_sink: WebhookSink
) -> None:
    tenant = await _tenant(infra, webhook_sink.url, locale="en")
    accepted = await _post(
        stack["intake"],
        tenant["api_key"],
        {
            "customer": {"id": "c-91", "locale": "en"},
            "channel": "app",
            "description": "The merchant promised a refund for my cancelled order two weeks ago.",
            "amount": "300.00",
            "currency": "CNY",
            "transaction_ref": "T-20261202-7",
        },
    )
    ticket_no = accepted["ticket_no"]
    conn = await connect(infra.database_url, "resolution")
    try:
        agent = await create_agent(
            conn, name="e2e-agent", approver=False, tenant_id=uuid.UUID(tenant["tenant_id"])
        )
    finally:
        await conn.close()
    resolution, intake = stack["resolution"], stack["intake"]
    as_agent = {"Authorization": f"Bearer {agent['token']}"}
    as_tenant = {"Authorization": f"Bearer {tenant['api_key']}"}

    async def case() -> dict | None:
        answer = await resolution.get(f"/v1/cases/{ticket_no}", headers=as_agent)
        return answer.json() if answer.status_code == 200 else None

    opened = await eventually(case)
    assert {c["name"] for c in opened["clocks"]} >= {"first_response", "resolution", "legal_final"}

    async def types() -> list[str]:
        return [json.loads(w.body)["type"] for w in webhook_sink.delivered()]

    # A request for information pauses the case; the customer's answer resumes it.
    asked = await resolution.post(
        f"/v1/cases/{ticket_no}/messages",
        json={
            "text": "Please send the merchant's refund confirmation.",
            "request_information": True,
        },
        headers=as_agent,
    )
    assert asked.status_code == 201, asked.text
    assert (await case() or {})["status"] == "awaiting_customer"

    async def told_of_the_request() -> bool:
        return "complaint.agent_message" in await types()

    await eventually(told_of_the_request)
    replied = await intake.post(
        f"/v1/complaints/{ticket_no}/messages",
        json={"text": "Attached is the merchant's e-mail."},
        headers={**as_tenant, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert replied.status_code in (201, 202), replied.text

    async def resumed() -> dict | None:
        current = await case()
        return current if current and current["status"] == "in_progress" else None

    await eventually(resumed)

    refund = await resolution.post(
        f"/v1/cases/{ticket_no}/resolutions",
        json={
            "kind": "refund",
            "amount": "300.00",
            "currency": "CNY",
            "note": "Merchant confirmed.",
        },
        headers={**as_agent, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert refund.status_code == 201 and refund.json()["status"] == "recorded", refund.text
    resolved = await resolution.post(
        f"/v1/cases/{ticket_no}/status",
        json={"status": "resolved", "note": "Refunded.", "outcome": "monetary_relief"},
        headers=as_agent,
    )
    assert resolved.status_code == 200, resolved.text

    async def told_everything() -> list[str] | None:
        seen = await types()
        return seen if "complaint.survey" in seen else None

    seen = await eventually(told_everything)
    assert seen.index("complaint.agent_message") < seen.index("complaint.resolution_recorded")
    assert seen.index("complaint.resolution_recorded") < seen.index("complaint.resolved")

    async def wallet_view() -> dict | None:
        body = (await intake.get(f"/v1/complaints/{ticket_no}", headers=as_tenant)).json()
        return body if body["status"] == "resolved" and body.get("outcome") else None

    view = await eventually(wallet_view)
    assert view["outcome"] == "monetary_relief"
    assert [(r["kind"], r["amount"], r["status"]) for r in view["resolutions"]] == [
        ("refund", "300.00", "recorded")
    ]
    assert {c["name"]: c["state"] for c in view["clocks"]}["resolution"] == "met"
