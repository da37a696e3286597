"""One complaint's story in the logs: the four real service processes (JSON logs, one file
each), one `POST` with an `X-Correlation-Id`, and that id followed from intake to the
webhook. Every line names its service; the lines about the complaint carry its ticket
number, an event id and the correlation id, which travelled in the Kafka records'
`correlation_id` header and arrives at the receiver as `X-Correlation-Id`. No customer
contact data in any of the four logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.local.stack import free_port
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_TRIAGED
from tests.support import (
    Infra,
    ReceivedWebhook,
    ServiceProcess,
    WebhookSink,
    eventually,
    intake_cli,
    read_topic,
)

SERVICES = ("intake", "triage", "resolution", "notifier")
EMAIL, PHONE = "li.story@example.cn", "+8613900139000"


@dataclass
class Story:
    correlation_id: str
    ticket_no: str
    webhooks: list[ReceivedWebhook]
    logs: dict[str, str]
    received_headers: list[dict[str, bytes]]


def _env(infra: Infra) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "OUTBOX_POLL_INTERVAL_S": "0.2",
    }


def _types(sink: WebhookSink) -> list[str]:
    return [json.loads(hook.body)["type"] for hook in sink.delivered()]


@pytest.fixture(scope="module")
async def story(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Story]:
    env = _env(infra)
    logs_dir = tmp_path_factory.mktemp("story")
    sink = WebhookSink()
    await sink.start()
    correlation_id = str(uuid.uuid4())
    try:
        with ExitStack() as running:
            processes: dict[str, ServiceProcess] = {}
            for name in SERVICES:
                process = ServiceProcess(name, env, free_port(), logs_dir / f"{name}.log")
                running.callback(process.stop)  # SIGTERM: every line flushed
                await asyncio.to_thread(process.start)
                processes[name] = process
            tenant = json.loads(
                await asyncio.to_thread(
                    intake_cli, env, "create-tenant", "Story Wallet", "--webhook-url", sink.url
                )
            )
            async with httpx.AsyncClient(base_url=processes["intake"].base_url) as client:
                accepted = await client.post(
                    "/v1/complaints",
                    json={
                        "customer": {"id": "u-story", "email": EMAIL, "phone": PHONE},
                        "channel": "app",
                        "description": "我被重复扣款了两次，请退回一笔，谢谢",
                        "amount": "88.00",
                        "currency": "CNY",
                    },
                    headers={
                        "Authorization": f"Bearer {tenant['api_key']}",
                        "Idempotency-Key": "story-1",
                        "X-Correlation-Id": correlation_id,
                    },
                    timeout=10,
                )
            assert accepted.status_code == 202, accepted.text
            ticket_no = accepted.json()["ticket_no"]

            async def triaged() -> bool:
                return "complaint.triaged" in _types(sink)

            await eventually(triaged, within_s=90, interval=0.2)
            received = await read_topic(infra.kafka_bootstrap, COMPLAINTS_RECEIVED)
            triaged_records = await read_topic(infra.kafka_bootstrap, COMPLAINTS_TRIAGED)
        # All four stopped: their logs are complete.
        logs = {name: (logs_dir / f"{name}.log").read_text(errors="replace") for name in SERVICES}
        yield Story(
            correlation_id,
            ticket_no,
            sink.delivered(),
            logs,
            [m.headers for m in (*received, *triaged_records)],
        )
    finally:
        await sink.stop()


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("service", SERVICES)
async def test_every_line_names_its_service(story: Story, service: str) -> None:
    lines = _lines(story.logs[service])
    assert lines, f"{service} logged nothing"
    assert {line.get("service") for line in lines} == {service}, [
        line for line in lines if line.get("service") != service
    ][:5]


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_tells_its_part_of_the_story(story: Story, service: str) -> None:
    mine = [
        line
        for line in _lines(story.logs[service])
        if line.get("correlation_id") == story.correlation_id
    ]
    assert mine, f"no line of {service} carries the correlation id"
    for line in mine:
        assert line["service"] == service, line
        assert line.get("ticket_no") == story.ticket_no, line
        assert uuid.UUID(line["event_id"]), line
    events = {line["event"] for line in mine}
    # Each service consumed an event of the complaint and published one of its own.
    assert "event_handled" in events and "event_published" in events, events


async def test_the_correlation_id_travels_in_kafka_headers(story: Story) -> None:
    headers = story.received_headers
    assert headers, "nothing on complaints.received / complaints.triaged"
    mine = [h for h in headers if h.get("correlation_id") == story.correlation_id.encode()]
    # complaint.received (intake) and complaint.triaged (triage) at least.
    assert len(mine) >= 2, headers
    for record in mine:
        assert uuid.UUID(record["event_id"].decode())
        assert record["event_type"].decode().startswith("complaint.")


async def test_the_webhook_carries_the_same_correlation_id(story: Story) -> None:
    types = [json.loads(hook.body)["type"] for hook in story.webhooks]
    assert "complaint.triaged" in types, types
    for hook in story.webhooks:
        assert hook.headers.get("x-correlation-id") == story.correlation_id, hook.headers


async def test_no_customer_contact_data_in_any_log(story: Story) -> None:
    for service, text in story.logs.items():
        compact = re.sub(r"[\s-]", "", text)
        for value in (EMAIL, PHONE, PHONE.removeprefix("+")):
            assert value not in text and value not in compact, (service, value)
