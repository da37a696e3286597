"""intake's read model: other services' events, produced to the real topics, keep the
complaint's view current; a redelivered event changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.intake import read_model
from services.intake.app import MIGRATIONS, SCHEMA, create_app
from services.intake.settings import IntakeSettings
from services.intake.tenants import create_tenant
from services.intake.view_batch import view_batch
from shared.db import connect
from shared.events import Envelope, new_event
from shared.runtime import migrate
from shared.topics import (
    COMPLAINTS_RESOLUTION,
    COMPLAINTS_TRIAGED,
    NOTIFICATIONS,
    dead_letter_topic,
)
from tests.integration.events import as_bytes
from tests.support import Infra, eventually, produce, read_topic, running

COMPLAINT: dict[str, Any] = {
    "customer": {"id": "u-77", "locale": "en"},
    "channel": "app",
    "description": "I was charged twice for one order.",
    "amount": "86.50",
    "currency": "CNY",
    "transaction_ref": "T-77",
}


@pytest.fixture(scope="module")
async def intake(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    settings = infra.settings(IntakeSettings, consumer_max_attempts=2, consumer_retry_base_s=0.05)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    async with running(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
async def tenant(infra: Infra, intake: httpx.AsyncClient) -> dict[str, str]:
    conn = await connect(infra.database_url, SCHEMA)
    try:
        return await create_tenant(
            conn,
            name="wallet-read-model",
            webhook_url="http://127.0.0.1:9/hooks",
            jurisdiction="cn",
            locale="en",
            webhook_master_key="test-master-key",
        )
    finally:
        await conn.close()


class Complaint:
    """One complaint filed over HTTP, and the events other services would publish about it."""

    def __init__(self, client: httpx.AsyncClient, tenant: dict[str, str], accepted: dict) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {tenant['api_key']}"}
        self.tenant_id = uuid.UUID(tenant["tenant_id"])
        self.complaint_id = uuid.UUID(accepted["complaint_id"])
        self.ticket_no: str = accepted["ticket_no"]
        self.received_at = datetime.fromisoformat(accepted["received_at"])
        self._step = 0

    def event(self, event_type: str, producer: str, payload: dict[str, Any]) -> Envelope:
        # Strictly later occurred_at per event: the timeline's order is deterministic.
        self._step += 1
        return new_event(
            event_type,
            producer=producer,
            tenant_id=self.tenant_id,
            complaint_id=self.complaint_id,
            ticket_no=self.ticket_no,
            correlation_id=uuid.uuid4(),
            occurred_at=self.received_at + timedelta(seconds=self._step),
            payload=payload,
        )

    async def view(self) -> dict[str, Any]:
        response = await self.client.get(f"/v1/complaints/{self.ticket_no}", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def until(self, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            view = await self.view()
            return view if condition(view) else None

        return await eventually(probe)


async def file_complaint(intake: httpx.AsyncClient, tenant: dict[str, str]) -> Complaint:
    response = await intake.post(
        "/v1/complaints",
        json=COMPLAINT,
        headers={"Authorization": f"Bearer {tenant['api_key']}", "Idempotency-Key": uuid4()},
    )
    assert response.status_code == 202, response.text
    return Complaint(intake, tenant, response.json())


@pytest.fixture
async def complaint(intake: httpx.AsyncClient, tenant: dict[str, str]) -> Complaint:
    return await file_complaint(intake, tenant)


def uuid4() -> str:
    return str(uuid.uuid4())


async def publish(infra: Infra, topic: str, event: Envelope) -> None:
    await produce(infra.kafka_bootstrap, topic, as_bytes(event), event.key)


def triaged(c: Complaint) -> Envelope:
    due = c.received_at + timedelta(hours=4)
    return c.event(
        "complaint.triaged",
        "triage",
        {
            "category": "duplicate_charge",
            "priority": "P2",
            "reasons": ["keyword: charged twice"],
            "first_response_due": due.isoformat(),
            "resolution_due": (due + timedelta(days=3)).isoformat(),
            "duplicate_of": None,
            "incident_id": None,
            "received_at": c.received_at.isoformat(),  # required by the triaged contract
        },
    )


def status_changed(c: Complaint, status: str, **extra: Any) -> Envelope:
    return c.event(
        "complaint.status_changed",
        "resolution",
        {"status": status, "note": f"Now {status}.", "actor": "a-1", **extra},
    )


def resolution(c: Complaint, resolution_id: uuid.UUID, status: str = "recorded") -> Envelope:
    return c.event(
        "resolution.recorded" if status == "recorded" else "resolution.approved",
        "resolution",
        {
            "resolution_id": str(resolution_id),
            "kind": "refund",
            "amount": "86.50",
            "currency": "CNY",
            "transaction_ref": "T-77",
            "reason": "duplicate charge",
            "decided_by": "a-1",
            "approved_by": None,
            "status": status,
        },
    )


def notification(c: Complaint, type_: str, event_type: str = "notification.sent") -> Envelope:
    return c.event(event_type, "notifier", {"type": type_, "channel": "webhook"})


async def test_triaged_sets_category_priority_and_due_times(
    infra: Infra, complaint: Complaint
) -> None:
    event = triaged(complaint)
    await publish(infra, COMPLAINTS_TRIAGED, event)

    view = await complaint.until(lambda v: v["status"] == "triaged")

    assert (view["category"], view["priority"]) == ("duplicate_charge", "P2")
    p = event.payload
    assert datetime.fromisoformat(view["first_response_due"]) == datetime.fromisoformat(
        p["first_response_due"]
    )
    assert datetime.fromisoformat(view["resolution_due"]) == datetime.fromisoformat(
        p["resolution_due"]
    )
    assert view["timeline"][-1] == {
        "at": event.occurred_at.isoformat(),
        "status": "triaged",
        "detail": "Triaged as duplicate_charge (P2).",
    }


async def test_the_whole_life_of_a_complaint_is_on_its_timeline(
    infra: Infra, complaint: Complaint
) -> None:
    resolution_id = uuid.uuid4()
    steps: list[tuple[str, Envelope]] = [
        (COMPLAINTS_TRIAGED, triaged(complaint)),
        (NOTIFICATIONS, notification(complaint, "complaint.acknowledged")),
        (COMPLAINTS_RESOLUTION, status_changed(complaint, "in_progress")),
        (COMPLAINTS_RESOLUTION, resolution(complaint, resolution_id, "recorded")),
        (COMPLAINTS_RESOLUTION, resolution(complaint, resolution_id, "approved")),
        (NOTIFICATIONS, notification(complaint, "complaint.resolution_recorded")),
        (
            COMPLAINTS_RESOLUTION,
            complaint.event(
                "complaint.sla_breached", "resolution", {"clock": "resolution", "priority": "P2"}
            ),
        ),
        (COMPLAINTS_RESOLUTION, status_changed(complaint, "resolved")),
        (NOTIFICATIONS, notification(complaint, "complaint.survey")),
        (NOTIFICATIONS, notification(complaint, "complaint.survey", "notification.failed")),
    ]
    for topic, event in steps:
        # One at a time: events of different topics have no order between them.
        await publish(infra, topic, event)
        await complaint.until(
            lambda v, e=event: (
                e.event_type == "notification.failed"
                or v["timeline"][-1]["at"] == e.occurred_at.isoformat()
            )
        )

    view = await complaint.view()
    assert view["status"] == "resolved"
    assert [(t["status"], t["detail"]) for t in view["timeline"]] == [
        ("received", "Complaint received."),
        ("triaged", "Triaged as duplicate_charge (P2)."),
        ("triaged", "Acknowledgement delivered to the customer."),
        ("in_progress", "Now in_progress."),
        ("in_progress", "Resolution refund recorded."),
        ("in_progress", "Resolution refund approved."),
        ("in_progress", "Customer informed of the resolution."),
        ("in_progress", "The resolution deadline was missed."),
        ("resolved", "Now resolved."),
        ("resolved", "Satisfaction survey sent."),
    ]
    at = [datetime.fromisoformat(t["at"]) for t in view["timeline"]]
    assert at == sorted(at)  # oldest first
    assert view["resolutions"] == [
        {
            "id": str(resolution_id),
            "kind": "refund",
            "amount": "86.50",  # a decimal string, never a float
            "currency": "CNY",
            "compensation_type": None,
            "status": "approved",
            "decided_by": "agent",  # never the agent's id
            "recorded_at": steps[3][1].occurred_at.isoformat(),
            "approved_at": steps[4][1].occurred_at.isoformat(),
            "reverses": None,
            "reversed": False,
            "reversed_by": None,
        }
    ]
    assert (view["outcome"], view["company_response"], view["clocks"]) == (None, None, [])


async def test_a_redelivered_event_changes_nothing(
    infra: Infra, intake: httpx.AsyncClient, complaint: Complaint
) -> None:
    resolution_id = uuid.uuid4()
    events = [
        (COMPLAINTS_TRIAGED, triaged(complaint)),
        (COMPLAINTS_RESOLUTION, resolution(complaint, resolution_id)),
        (COMPLAINTS_RESOLUTION, status_changed(complaint, "resolved")),
        (NOTIFICATIONS, notification(complaint, "complaint.resolved")),
    ]
    for topic, event in events:
        await publish(infra, topic, event)
    settled = await complaint.until(lambda v: len(v["timeline"]) == 5)
    duplicates_before = await duplicates_seen(intake)

    for topic, event in events:  # the same event_ids again, as after a consumer crash
        await publish(infra, topic, event)

    async def copies_handled() -> bool:
        return await duplicates_seen(intake) >= duplicates_before + len(events)

    await eventually(copies_handled)  # they really arrived, and the inbox ignored them
    # Later events behind the copies (same key, same partitions) still apply.
    await publish(infra, COMPLAINTS_RESOLUTION, status_changed(complaint, "closed"))
    await publish(infra, NOTIFICATIONS, notification(complaint, "complaint.survey"))
    view = await complaint.until(lambda v: len(v["timeline"]) == 7)

    assert view["timeline"][:5] == settled["timeline"]
    assert [t["detail"] for t in view["timeline"][5:]] == [
        "Now closed.",
        "Satisfaction survey sent.",
    ]
    assert view["status"] == "closed"
    assert view["resolutions"] == settled["resolutions"]
    assert await duplicates_seen(intake) == duplicates_before + len(events)


async def duplicates_seen(intake: httpx.AsyncClient) -> float:
    """events_consumed_total{outcome="duplicate"}: events the inbox recognised as seen."""
    metrics = (await intake.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("events_consumed_total{") and 'outcome="duplicate"' in line
    )


async def test_status_changed_can_move_the_resolution_due_time(
    infra: Infra, complaint: Complaint
) -> None:
    extended = (complaint.received_at + timedelta(days=30)).astimezone(UTC)
    event = status_changed(complaint, "escalated", resolution_due=extended.isoformat())
    await publish(infra, COMPLAINTS_RESOLUTION, event)

    view = await complaint.until(lambda v: v["status"] == "escalated")
    assert datetime.fromisoformat(view["resolution_due"]) == extended


async def test_an_event_for_an_unknown_complaint_is_dead_lettered_and_the_rest_goes_on(
    infra: Infra, complaint: Complaint
) -> None:
    orphan = new_event(
        "complaint.triaged",
        producer="triage",
        tenant_id=complaint.tenant_id,
        complaint_id=uuid.uuid4(),  # intake never received it
        ticket_no="WC-20261122-999999",
        correlation_id=uuid.uuid4(),
        payload=triaged(complaint).payload,
    )
    await publish(infra, COMPLAINTS_TRIAGED, orphan)
    await publish(infra, COMPLAINTS_TRIAGED, triaged(complaint))

    await complaint.until(lambda v: v["status"] == "triaged")

    async def dead_lettered() -> list | None:
        dlq = await read_topic(infra.kafka_bootstrap, dead_letter_topic(COMPLAINTS_TRIAGED))
        return [m for m in dlq if m.key == orphan.key] or None

    [dead] = await eventually(dead_lettered)
    assert dead.value == as_bytes(orphan)  # untouched
    assert dead.headers["x-dlq-consumer"] == b"intake"
    assert b"unknown complaint" in dead.headers["x-dlq-error"]


def _life(c: Complaint) -> list[tuple[str, Envelope]]:
    resolution_id = uuid.uuid4()
    extended = c.received_at + timedelta(days=20)
    return [
        (COMPLAINTS_TRIAGED, triaged(c)),
        (NOTIFICATIONS, notification(c, "complaint.acknowledged")),
        (COMPLAINTS_RESOLUTION, status_changed(c, "in_progress")),
        (COMPLAINTS_RESOLUTION, resolution(c, resolution_id, "recorded")),
        (NOTIFICATIONS, notification(c, "complaint.triaged")),
        (
            COMPLAINTS_RESOLUTION,
            status_changed(c, "escalated", resolution_due=extended.isoformat()),
        ),
        (COMPLAINTS_RESOLUTION, status_changed(c, "resolved", outcome="refunded")),
        (NOTIFICATIONS, notification(c, "complaint.survey", "notification.failed")),
        (NOTIFICATIONS, notification(c, "complaint.survey")),
    ]


def _relative(view: dict[str, Any], c: Complaint) -> dict[str, Any]:
    """The view with its times made relative to the complaint's receipt and its ids
    dropped, so that two complaints' views compare."""

    def since(at: str | None) -> float | None:
        return None if at is None else (datetime.fromisoformat(at) - c.received_at).total_seconds()

    return {
        "status": view["status"],
        "category": view["category"],
        "priority": view["priority"],
        "first_response_due": since(view["first_response_due"]),
        "resolution_due": since(view["resolution_due"]),
        "outcome": view["outcome"],
        "timeline": [(since(t["at"]), t["status"], t["detail"]) for t in view["timeline"]],
        "resolutions": [(r["kind"], r["amount"], r["status"]) for r in view["resolutions"]],
    }


async def test_a_batch_of_events_in_one_transaction_leaves_the_view_one_at_a_time_does(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    """The consumer's batch path (services.intake.view_batch: one locking read, one UPDATE
    and one timeline INSERT for the whole transaction) against one transaction per event,
    on two complaints given the same life; the handlers are called directly, so the
    batch is exactly these events."""
    handlers = {
        COMPLAINTS_TRIAGED: read_model.on_triaged,
        COMPLAINTS_RESOLUTION: read_model.on_resolution,
        NOTIFICATIONS: read_model.on_notification,
    }
    one_by_one = await file_complaint(intake, tenant)
    batched = await file_complaint(intake, tenant)
    conn = await connect(infra.database_url, SCHEMA)
    try:
        for topic, event in _life(one_by_one):
            async with conn.transaction():
                await handlers[topic](conn, event)
        steps = _life(batched)
        async with conn.transaction(), view_batch(conn, [event for _, event in steps]):
            for topic, event in steps:
                await handlers[topic](conn, event)
    finally:
        await conn.close()

    expected = _relative(await one_by_one.view(), one_by_one)
    assert expected["status"] == "resolved" and len(expected["timeline"]) == 9
    assert _relative(await batched.view(), batched) == expected
