"""notifier against real PostgreSQL, a real broker and a real HTTP webhook receiver."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from services.notifier.app import MIGRATIONS, SCHEMA, create_app
from services.notifier.settings import NotifierSettings
from shared.db import connect
from shared.events import Envelope, new_event
from shared.runtime import migrate
from shared.signing import derive_webhook_secret, verify_webhook
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_RESOLUTION, NOTIFICATIONS
from tests.integration.events import as_bytes, received_event
from tests.support import Infra, WebhookSink, eventually, produce, read_topic, running


@pytest.fixture(scope="module")
async def notifier(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    settings = infra.settings(NotifierSettings, retry_first_s=0.5)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    async with running(create_app(settings)) as client:
        yield client


def case_opened(received: Envelope) -> Envelope:
    return new_event(
        "complaint.status_changed",
        producer="resolution",
        tenant_id=received.tenant_id,
        complaint_id=received.complaint_id,
        ticket_no=received.ticket_no,
        correlation_id=received.correlation_id,
        payload={
            "status": "triaged",
            "reason": "case_opened",
            "category": "fraud",
            "priority": "P1",
            "first_response_due": "2026-11-23T12:00:00+00:00",
            "resolution_due": "2026-11-25T12:00:00+00:00",
        },
    )


async def _send(infra: Infra, *events: Envelope) -> None:
    for event, topic in zip(events, (COMPLAINTS_RECEIVED, COMPLAINTS_RESOLUTION), strict=False):
        await produce(infra.kafka_bootstrap, topic, as_bytes(event), event.key)


async def test_acknowledgement_then_progress_signed_and_announced(
    infra: Infra, notifier: httpx.AsyncClient, webhook_sink: WebhookSink
) -> None:
    received = received_event(webhook_url=webhook_sink.url)
    opened = case_opened(received)
    await _send(infra, received, opened)
    await _send(infra, received, opened)  # redelivered: no second notification

    async def two_delivered() -> list | None:
        return webhook_sink.delivered() if len(webhook_sink.delivered()) >= 2 else None

    hooks = await eventually(two_delivered)
    bodies = [json.loads(h.body) for h in hooks]
    assert [b["type"] for b in bodies] == ["complaint.acknowledged", "complaint.triaged"]
    assert "工单号 " + received.ticket_no in bodies[0]["message"]
    assert "北京时间" in bodies[0]["message"]
    secret = derive_webhook_secret(NotifierSettings().webhook_master_key, str(received.tenant_id))
    for hook in hooks:
        assert verify_webhook(
            secret,
            int(hook.headers["x-complaints-timestamp"]),
            hook.body,
            hook.headers["x-complaints-signature"],
            now=int(time.time()),
        )

    async def announced() -> list | None:
        sent = [
            json.loads(m.value or b"")
            for m in await read_topic(infra.kafka_bootstrap, NOTIFICATIONS)
            if m.key == received.key
        ]
        return sent if len(sent) >= 2 else None

    sent = await announced() or await eventually(announced)
    assert [s["payload"]["type"] for s in sent] == ["complaint.acknowledged", "complaint.triaged"]
    assert {s["event_type"] for s in sent} == {"notification.sent"}
    assert len(webhook_sink.delivered()) == 2
    metrics = (await notifier.get("/metrics")).text
    assert "complaint_acknowledgement_seconds_count 1.0" in metrics


def _bodies_for(sink: WebhookSink, ticket_no: str) -> list[dict]:
    """The webhook bodies delivered for one ticket, in the order they came."""
    bodies = [json.loads(h.body) for h in sink.delivered()]
    return [b for b in bodies if b["ticket_no"] == ticket_no]


async def test_the_acknowledgement_needs_no_case_event(
    infra: Infra, notifier: httpx.AsyncClient, webhook_sink: WebhookSink
) -> None:
    # Triage and resolution down, or slow: the complaint is acknowledged all the same,
    # with the first response due time intake promised.
    received = received_event(webhook_url=webhook_sink.url)
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(received), received.key)

    async def acknowledged() -> list | None:
        return _bodies_for(webhook_sink, received.ticket_no) or None

    [ack] = await eventually(acknowledged)
    assert ack["type"] == "complaint.acknowledged"
    promised = datetime.fromisoformat(received.payload["first_response_due"])
    assert datetime.fromisoformat(ack["data"]["first_response_due"]) == promised


async def test_the_acknowledgement_goes_first_when_the_case_event_was_handled_first(
    infra: Infra, notifier: httpx.AsyncClient, webhook_sink: WebhookSink
) -> None:
    # The two topics are consumed apart: the case's news is queued before the complaint
    # it is about is known (no recipient yet), and still leaves after its acknowledgement.
    received = received_event(webhook_url=webhook_sink.url)
    await produce(
        infra.kafka_bootstrap, COMPLAINTS_RESOLUTION, as_bytes(case_opened(received)), received.key
    )
    conn = await connect(infra.database_url, SCHEMA)
    try:

        async def triage_news_queued() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE complaint_id = $1",
                    received.complaint_id,
                )
            )

        await eventually(triage_news_queued)
        await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(received), received.key)

        async def both_delivered() -> list | None:
            mine = _bodies_for(webhook_sink, received.ticket_no)
            return mine if len(mine) >= 2 else None

        bodies = await eventually(both_delivered)
        ids = await conn.fetch(
            "SELECT type, id FROM deliveries WHERE complaint_id = $1 ORDER BY id",
            received.complaint_id,
        )
    finally:
        await conn.close()
    # Written in the other order, sent in the customer's.
    assert [r["type"] for r in ids] == ["complaint.triaged", "complaint.acknowledged"]
    assert [b["type"] for b in bodies] == ["complaint.acknowledged", "complaint.triaged"]


async def test_retries_keep_the_event_id_and_the_order(
    infra: Infra, notifier: httpx.AsyncClient, webhook_sink: WebhookSink
) -> None:
    webhook_sink.fail_next = 3
    received = received_event(webhook_url=webhook_sink.url)
    await _send(infra, received, case_opened(received))

    async def two_delivered() -> list | None:
        return webhook_sink.delivered() if len(webhook_sink.delivered()) >= 2 else None

    await eventually(two_delivered, within_s=20)
    attempts = webhook_sink.received
    assert [a.status for a in attempts] == [503, 503, 503, 200, 200]
    ids = [json.loads(a.body)["event_id"] for a in attempts]
    assert len(set(ids[:4])) == 1 and ids[4] != ids[0]
    assert json.loads(attempts[4].body)["type"] == "complaint.triaged"


async def test_unreachable_webhook_is_retried_not_lost(
    infra: Infra, notifier: httpx.AsyncClient
) -> None:
    received = received_event(webhook_url="http://127.0.0.1:9/hooks")  # nothing listens
    await _send(infra, received, case_opened(received))

    async def retried() -> str | None:
        metrics = (await notifier.get("/metrics")).text
        line = (
            'notifications_sent_total{channel="webhook",outcome="retrying",'
            'type="complaint.acknowledged"}'
        )
        return metrics if line in metrics else None

    await eventually(retried)
    sent = [
        m for m in await read_topic(infra.kafka_bootstrap, NOTIFICATIONS) if m.key == received.key
    ]
    assert sent == []  # not delivered, not given up: still pending


async def test_an_unreachable_webhook_opens_its_endpoints_circuit(
    infra: Infra, notifier: httpx.AsyncClient
) -> None:
    # The endpoint's later notifications wait behind the first (in order), and once the
    # circuit opens nothing more is attempted there: the tenant back-off's successor.
    received = received_event(webhook_url="http://127.0.0.1:9/other-path?x=1")
    await _send(infra, received, case_opened(received))
    conn = await connect(infra.database_url, SCHEMA)
    try:

        async def opened() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT state = 'open' FROM circuits WHERE endpoint = 'http://127.0.0.1:9'"
                )
            )

        await eventually(opened, within_s=30)
        waiting = await conn.fetchrow(
            "SELECT attempts FROM deliveries "
            "WHERE complaint_id = $1 AND type = 'complaint.triaged'",
            received.complaint_id,
        )
        logged = await conn.fetch(
            "SELECT a.endpoint, a.error FROM delivery_attempts a JOIN deliveries d "
            "ON d.id = a.delivery_id WHERE d.complaint_id = $1",
            received.complaint_id,
        )
    finally:
        await conn.close()
    assert waiting["attempts"] == 0
    assert logged and {r["endpoint"] for r in logged} == {"http://127.0.0.1:9"}

    async def gauged() -> bool:  # refreshed by the worker's housekeeping, every second
        metrics = (await notifier.get("/metrics")).text
        return 'notifier_circuits_open{channel="webhook"} 1.0' in metrics

    await eventually(gauged, within_s=5)
