"""Every metric of CONTRACT section 8, and what on-call watches beside them, moved by the
real services (all four in this process, real PostgreSQL and Kafka) and read back from
their /metrics: each test reads before, does something, and reads the change it caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from services.intake.app import MIGRATIONS as INTAKE_MIGRATIONS
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.intake.tenants import create_tenant
from services.notifier.app import MIGRATIONS as NOTIFIER_MIGRATIONS
from services.notifier.app import create_app as create_notifier
from services.notifier.settings import NotifierSettings
from services.resolution import clock_metrics
from services.resolution.agents import create_agent
from services.resolution.app import MIGRATIONS as RESOLUTION_MIGRATIONS
from services.resolution.app import create_app as create_resolution
from services.resolution.settings import ResolutionSettings
from services.triage.app import MIGRATIONS as TRIAGE_MIGRATIONS
from services.triage.app import create_app as create_triage
from services.triage.settings import TriageSettings
from shared import consumer_lag
from shared.db import connect
from shared.runtime import migrate
from shared.topics import COMPLAINTS_RECEIVED
from tests.integration.events import as_bytes, received_event
from tests.support import Infra, WebhookSink, eventually, produce, running

SERVICES: tuple[tuple[type[Any], str, Any, Callable[[Any], FastAPI]], ...] = (
    (IntakeSettings, "intake", INTAKE_MIGRATIONS, create_intake),
    (TriageSettings, "triage", TRIAGE_MIGRATIONS, create_triage),
    (ResolutionSettings, "resolution", RESOLUTION_MIGRATIONS, create_resolution),
    (NotifierSettings, "notifier", NOTIFIER_MIGRATIONS, create_notifier),
)
# Short intervals so that a change shows within a second or two.
OVERRIDES: dict[str, dict[str, Any]] = {
    "resolution": {"clock_scan_every_s": 0.3},
    "notifier": {"retry_first_s": 0.3, "circuit_failure_threshold": 2},
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Stack:
    clients: dict[str, httpx.AsyncClient]
    apps: dict[str, FastAPI]


@pytest.fixture(scope="module")
async def stack(infra: Infra) -> AsyncIterator[Stack]:
    async with start_stack(infra) as running_stack:
        yield running_stack


@contextlib.asynccontextmanager
async def start_stack(infra: Infra) -> AsyncIterator[Stack]:
    """All four services in this process, with the metric loops refreshing fast."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(consumer_lag, "REFRESH_EVERY_S", 0.3)
        patch.setattr(clock_metrics, "REFRESH_EVERY_S", 0.3)
        async with AsyncExitStack() as exits:
            clients: dict[str, httpx.AsyncClient] = {}
            apps: dict[str, FastAPI] = {}
            for settings_cls, schema, migrations, create_app in SERVICES:
                settings = infra.settings(settings_cls, **OVERRIDES.get(schema, {}))
                await asyncio.to_thread(migrate, settings, schema, migrations)
                apps[schema] = create_app(settings)
                clients[schema] = await exits.enter_async_context(running(apps[schema]))
            yield Stack(clients, apps)


# --- reading /metrics ----------------------------------------------------------------


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def reaches(
    client: httpx.AsyncClient, read: Callable[[Samples], float], at_least: float
) -> float:
    """Waits until `read` of the service's /metrics is at least `at_least`; returns it."""

    async def probe() -> float | None:
        current = read(await scrape(client))
        return current if current >= at_least else None

    return await eventually(probe, within_s=30)


async def settles(
    client: httpx.AsyncClient, read: Callable[[Samples], float], at_most: float
) -> None:
    async def probe() -> bool:
        return read(await scrape(client)) <= at_most

    await eventually(probe, within_s=30)


# --- driving the services --------------------------------------------------------------


async def new_tenant(infra: Infra, webhook_url: str, name: str | None = None) -> dict[str, str]:
    conn = await connect(infra.database_url, "intake")
    try:
        return await create_tenant(
            conn,
            name=name or f"wallet-{uuid.uuid4().hex[:6]}",
            webhook_url=webhook_url,
            jurisdiction="cn",
            locale="en",
            webhook_master_key=IntakeSettings().webhook_master_key,
        )
    finally:
        await conn.close()


async def new_agent(infra: Infra, tenant: dict[str, str]) -> dict[str, str]:
    conn = await connect(infra.database_url, "resolution")
    try:
        return await create_agent(
            conn,
            name=f"agent-{uuid.uuid4().hex[:6]}",
            approver=True,
            tenant_id=uuid.UUID(tenant["tenant_id"]),
        )
    finally:
        await conn.close()


async def post_complaint(
    intake: httpx.AsyncClient, tenant: dict[str, str], **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {"id": f"c-{uuid.uuid4().hex[:6]}", "locale": "en"},
        "channel": "app",
        "description": "I was charged twice for the same order, please refund one of them.",
        **fields,
    }
    response = await intake.post(
        "/v1/complaints",
        json=body,
        headers={
            "Authorization": f"Bearer {tenant['api_key']}",
            "Idempotency-Key": str(uuid.uuid4()),
        },
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def opened_case(
    resolution: httpx.AsyncClient, agent: dict[str, str], ticket_no: str
) -> dict[str, Any]:
    async def case() -> dict[str, Any] | None:
        answer = await resolution.get(
            f"/v1/cases/{ticket_no}", headers={"Authorization": f"Bearer {agent['token']}"}
        )
        return dict(answer.json()) if answer.status_code == 200 else None

    return await eventually(case)


def grows(name: str, **labels: str) -> Callable[[Samples], float]:
    return lambda samples: value(samples, name, **labels)


# --- CONTRACT section 8 ----------------------------------------------------------------


async def test_complaints_received_counts_the_channel(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    intake = stack.clients["intake"]
    tenant = await new_tenant(infra, webhook_sink.url)
    before = await scrape(intake)
    await post_complaint(intake, tenant, channel="phone")
    await post_complaint(intake, tenant, channel="phone")
    read = grows("complaints_received_total", channel="phone")
    assert await reaches(intake, read, read(before) + 2) == read(before) + 2


async def test_complaints_triaged_counts_category_and_priority(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    intake, triage = stack.clients["intake"], stack.clients["triage"]
    tenant = await new_tenant(infra, webhook_sink.url)
    before = await scrape(triage)
    accepted = await post_complaint(intake, tenant)

    async def triaged() -> dict[str, Any] | None:
        view = (
            await intake.get(
                f"/v1/complaints/{accepted['ticket_no']}",
                headers={"Authorization": f"Bearer {tenant['api_key']}"},
            )
        ).json()
        return view if view.get("category") and view.get("priority") else None

    view = await eventually(triaged)
    read = grows("complaints_triaged_total", category=view["category"], priority=view["priority"])
    await reaches(triage, read, read(before) + 1)


async def test_events_consumed_processed_and_duplicate_with_handling_time(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    triage = stack.clients["triage"]
    labels = {"service": "triage", "topic": COMPLAINTS_RECEIVED}
    before = await scrape(triage)
    event = received_event(webhook_url=webhook_sink.url)
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)
    processed = grows("events_consumed_total", **labels, outcome="processed")
    await reaches(triage, processed, processed(before) + 1)
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)
    duplicate = grows("events_consumed_total", **labels, outcome="duplicate")
    await reaches(triage, duplicate, duplicate(before) + 1)
    handled = grows("event_handling_seconds_count", **labels)
    after = await scrape(triage)
    assert handled(after) >= handled(before) + 2
    assert value(after, "event_handling_seconds_sum", **labels) > value(
        before, "event_handling_seconds_sum", **labels
    )


async def test_events_dead_lettered_by_every_consumer_of_the_topic(
    stack: Stack, infra: Infra
) -> None:
    consumers = ("triage", "resolution", "notifier")  # the subscribers of complaints.received
    before = {name: await scrape(stack.clients[name]) for name in consumers}
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, b"{not json", b"poison")
    for name in consumers:
        labels = {"service": name, "topic": COMPLAINTS_RECEIVED}
        dead = grows("events_dead_lettered_total", **labels)
        await reaches(stack.clients[name], dead, dead(before[name]) + 1)
        counted = grows("events_consumed_total", **labels, outcome="dead_lettered")
        await reaches(stack.clients[name], counted, counted(before[name]) + 1)


async def test_resolutions_recorded_counts_the_kind(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    resolution = stack.clients["resolution"]
    tenant = await new_tenant(infra, webhook_sink.url)
    agent = await new_agent(infra, tenant)
    accepted = await post_complaint(stack.clients["intake"], tenant)
    await opened_case(resolution, agent, accepted["ticket_no"])
    before = await scrape(resolution)
    answer = await resolution.post(
        f"/v1/cases/{accepted['ticket_no']}/resolutions",
        json={"kind": "explanation", "note": "The second charge is a pre-authorisation."},
        headers={"Authorization": f"Bearer {agent['token']}", "Idempotency-Key": "k-1"},
    )
    assert answer.status_code == 201, answer.text
    read = grows("resolutions_recorded_total", kind="explanation")
    assert await reaches(resolution, read, read(before) + 1) == read(before) + 1


async def test_notifications_sent_by_outcome_acknowledgement_time_and_delivery_time(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    notifier = stack.clients["notifier"]
    tenant = await new_tenant(infra, webhook_sink.url)
    webhook_sink.fail_next = 1  # the acknowledgement is refused once, then delivered
    before = await scrape(notifier)
    await post_complaint(stack.clients["intake"], tenant)
    ack = {"type": "complaint.acknowledged", "channel": "webhook"}
    delivered = grows("notifications_sent_total", **ack, outcome="delivered")
    await reaches(notifier, delivered, delivered(before) + 1)
    after = await scrape(notifier)
    retrying = grows("notifications_sent_total", **ack, outcome="retrying")
    assert retrying(after) >= retrying(before) + 1
    acknowledged = grows("complaint_acknowledgement_seconds_count")
    assert acknowledged(after) >= acknowledged(before) + 1
    attempts = grows("notification_delivery_seconds_count", channel="webhook")
    assert attempts(after) >= attempts(before) + 2  # the refused attempt and the delivered one
    outcomes = {
        dict(labels)["outcome"] for name, labels in after if name == "notifications_sent_total"
    }
    assert outcomes <= {"delivered", "retrying", "failed", "deferred", "stale"}


async def test_outbox_backlog_and_its_age_reported_by_leader_and_standby(
    infra: Infra, stack: Stack
) -> None:
    triage = stack.clients["triage"]
    pending = grows("outbox_pending_events", service="triage")
    age = grows("outbox_oldest_pending_age_seconds", service="triage")
    before = await scrape(triage)
    conn = await connect(infra.database_url, "triage")
    try:
        # Larger than the producer's max request: the broker never takes it, so it stays
        # pending (and five minutes old) until this test removes it.
        row_id = await conn.fetchval(
            "INSERT INTO outbox (event_id, topic, message_key, message, created_at) "
            "VALUES ($1, 'incidents.v1', 'metrics-test', $2, now() - interval '5 minutes') "
            "RETURNING id",
            uuid.uuid4(),
            b"x" * 2_000_000,
        )
        try:
            assert await reaches(triage, pending, pending(before) + 1) >= 1
            assert await reaches(triage, age, 300) < 3600
            # A second instance is a standby (the leader holds the lock): it reports too.
            settings = infra.settings(TriageSettings)
            async with running(create_triage(settings)) as standby:
                await reaches(standby, pending, 1)
                await reaches(standby, age, 300)
        finally:
            await conn.execute("DELETE FROM outbox WHERE id = $1", row_id)
        await settles(triage, age, 60)
    finally:
        await conn.close()


async def test_sla_breaches_and_clocks_due_soon(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    resolution = stack.clients["resolution"]
    app = stack.apps["resolution"]
    tenant = await new_tenant(infra, webhook_sink.url)
    agent = await new_agent(infra, tenant)
    accepted = await post_complaint(stack.clients["intake"], tenant)
    case = await opened_case(resolution, agent, accepted["ticket_no"])
    running_clocks = [c for c in case["clocks"] if c["state"] == "running"]
    first = min(running_clocks, key=lambda c: c["due_at"])
    due_at = datetime.fromisoformat(first["due_at"])
    priority = case["priority"]
    soon = grows("clocks_due_soon", clock=first["name"], priority=priority)
    breaches = grows("sla_breaches_total", priority=priority)
    before = await scrape(resolution)
    original = app.state.clock
    try:
        # Half an hour before the first clock is due: it is about to breach.
        app.state.clock = lambda: due_at - timedelta(minutes=30)
        await reaches(resolution, soon, soon(before) + 1)
        # A second past it: breached once, counted under the case's priority.
        app.state.clock = lambda: due_at + timedelta(seconds=1)
        await reaches(resolution, breaches, breaches(before) + 1)
        await settles(resolution, soon, soon(before))
    finally:
        app.state.clock = original


# --- what on-call needs beside section 8 ------------------------------------------------


async def test_consumer_lag_per_partition_grows_while_the_group_is_stuck(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    triage = stack.clients["triage"]
    lag: Callable[[Samples], float] = lambda s: total(  # noqa: E731
        s, "kafka_consumer_lag", group="triage", topic=COMPLAINTS_RECEIVED
    )
    await settles(triage, lag, 0)
    conn = await connect(infra.database_url, "triage")
    try:
        # triage claims every event in its inbox first: with the table locked it can
        # commit nothing, so what arrives meanwhile is lag.
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        try:
            for _ in range(3):
                event = received_event(webhook_url=webhook_sink.url)
                await produce(
                    infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key
                )
            assert await reaches(triage, lag, 3) >= 3
            samples = await scrape(triage)
            partitions = {
                dict(labels)["partition"]
                for name, labels in samples
                if name == "kafka_consumer_lag" and ("topic", COMPLAINTS_RECEIVED) in labels
            }
            assert partitions == {str(p) for p in range(6)}
        finally:
            await transaction.rollback()
        await settles(triage, lag, 0)
    finally:
        await conn.close()


async def committed_total(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset >= 0)


async def test_fetched_offset_runs_ahead_of_the_commit_while_a_batch_is_in_flight(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    """kafka_consumer_fetched_offset: what this process has taken; beyond the group's
    committed offset while the batch is not done, equal to it once it is."""
    triage = stack.clients["triage"]
    taken: Callable[[Samples], float] = lambda s: total(  # noqa: E731
        s, "kafka_consumer_fetched_offset", group="triage", topic=COMPLAINTS_RECEIVED
    )

    async def committed_up_to(offset: float) -> bool:
        done = await committed_total(infra.kafka_bootstrap, "triage", COMPLAINTS_RECEIVED)
        return done == offset

    async def caught_up() -> tuple[float] | None:  # a tuple: 0 taken is an answer too
        now = taken(await scrape(triage))
        return (now,) if await committed_up_to(now) else None

    (before,) = await eventually(caught_up, within_s=30)
    conn = await connect(infra.database_url, "triage")
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        try:
            event = received_event(webhook_url=webhook_sink.url)
            await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)
            in_flight = await reaches(triage, taken, before + 1)
            assert await committed_up_to(before)  # taken, blocked on the inbox, not committed
        finally:
            await transaction.rollback()
        await eventually(lambda: committed_up_to(in_flight), within_s=30)
        assert taken(await scrape(triage)) == in_flight
    finally:
        await conn.close()


async def test_open_circuits_per_channel(infra: Infra, stack: Stack) -> None:
    notifier = stack.clients["notifier"]
    circuits = grows("notifier_circuits_open", channel="webhook")
    retrying = grows(
        "notifications_sent_total",
        type="complaint.acknowledged",
        channel="webhook",
        outcome="retrying",
    )
    before = await scrape(notifier)
    # Nothing listens on port 9. (Earlier tests' sinks are gone by now too, so other
    # circuits may open meanwhile: the gauge is checked against the table as well.)
    tenant = await new_tenant(infra, f"http://127.0.0.1:9/{uuid.uuid4().hex[:4]}")
    await post_complaint(stack.clients["intake"], tenant)
    conn = await connect(infra.database_url, "notifier")
    try:

        async def opened() -> bool:
            state = await conn.fetchval(
                "SELECT state FROM circuits WHERE endpoint = 'http://127.0.0.1:9'"
            )
            return state is not None and state != "closed"

        # circuit_failure_threshold is 2 here: the acknowledgement's second failure opens it.
        await eventually(opened)
        await reaches(notifier, circuits, circuits(before) + 1)

        async def matches_the_table() -> bool:
            shown = circuits(await scrape(notifier))
            stored = await conn.fetchval(
                "SELECT count(*) FROM circuits WHERE state <> 'closed' AND channel = 'webhook'"
            )
            return shown == stored

        await eventually(matches_the_table)
    finally:
        await conn.close()
    assert retrying(await scrape(notifier)) >= retrying(before) + 2
