"""What the wallet app sees of the case's resolution (issue 10): resolution's events,
produced to complaints.resolution.v1 on a real Kafka, read by the real intake process into
PostgreSQL, and then GET /v1/complaints/{ticket_no}: the ledger entries (pending never as
paid, a reversal marking what it undoes), the outcome, the clocks, the agents' messages and
the deadlines, with no agent named; out-of-order and redelivered events change nothing
they should not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from services.intake.app import MIGRATIONS, SCHEMA, create_app
from services.intake.settings import IntakeSettings
from services.intake.tenants import create_tenant
from shared.db import connect
from shared.events import Envelope, new_event
from shared.runtime import migrate
from shared.topics import COMPLAINTS_RESOLUTION, COMPLAINTS_TRIAGED
from tests.integration.test_intake_read_model import (
    COMPLAINT,
    Complaint,
    duplicates_seen,
    publish,
    triaged,
)
from tests.support import Infra, eventually, running

AGENT = str(uuid.uuid4())
APPROVER = str(uuid.uuid4())


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
            name="wallet-resolution-view",
            webhook_url="http://127.0.0.1:9/hooks",
            jurisdiction="cn",
            locale="zh-CN",
            webhook_master_key="test-master-key",
        )
    finally:
        await conn.close()


@pytest.fixture
async def complaint(intake: httpx.AsyncClient, tenant: dict[str, str]) -> Complaint:
    response = await intake.post(
        "/v1/complaints",
        json=COMPLAINT,
        headers={
            "Authorization": f"Bearer {tenant['api_key']}",
            "Idempotency-Key": str(uuid.uuid4()),
        },
    )
    assert response.status_code == 202, response.text
    return Complaint(intake, tenant, response.json())


def clocks(c: Complaint, state: str, *, legal_days: int = 15) -> list[dict[str, str]]:
    return [
        {
            "name": "first_response",
            "due_at": (c.received_at + timedelta(hours=4)).isoformat(),
            "state": "met" if state != "running" else "running",
        },
        {
            "name": "resolution",
            "due_at": (c.received_at + timedelta(days=3)).isoformat(),
            "state": state,
        },
        {
            "name": "legal_final",
            "due_at": (c.received_at + timedelta(days=legal_days)).isoformat(),
            "state": "met" if state == "met" else "running",
        },
    ]


def ledger(
    c: Complaint,
    resolution_id: uuid.UUID,
    kind: str,
    status: str,
    *,
    event_type: str = "resolution.recorded",
    **extra: Any,
) -> Envelope:
    return c.event(
        event_type,
        "resolution",
        {
            "resolution_id": str(resolution_id),
            "kind": kind,
            "amount": "86.50",
            "currency": "CNY",
            "transaction_ref": "T-77",
            "reason": "duplicate charge",
            "decided_by": AGENT,
            "approved_by": APPROVER if status == "approved" else None,
            "status": status,
            **extra,
        },
    )


def status_changed(c: Complaint, status: str, previous: str, **extra: Any) -> Envelope:
    return c.event(
        "complaint.status_changed",
        "resolution",
        {"status": status, "previous_status": previous, "actor": AGENT, **extra},
    )


def agent_message(c: Complaint, text: str, *, request_information: bool, **extra: Any) -> Envelope:
    return c.event(
        "complaint.agent_message",
        "resolution",
        {
            "message_id": str(uuid.uuid4()),
            "text": text,
            "request_information": request_information,
            "agent_id": AGENT,
            **extra,
        },
    )


async def publish_in_turn(infra: Infra, c: Complaint, events: list[Envelope]) -> None:
    """One at a time, each seen on the timeline before the next (all make an entry)."""
    for event in events:
        await publish(infra, COMPLAINTS_RESOLUTION, event)
        await c.until(lambda v, e=event: v["timeline"][-1]["at"] == e.occurred_at.isoformat())


def no_agent_named(raw: str) -> None:
    assert AGENT not in raw and APPROVER not in raw


async def test_the_wallet_app_sees_the_ledger_the_outcome_the_clocks_and_the_messages(
    infra: Infra, complaint: Complaint
) -> None:
    c = complaint
    refund_id, coupon_id, reversal_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await publish(infra, COMPLAINTS_TRIAGED, triaged(c))
    await c.until(lambda v: v["status"] == "triaged")

    assigned = c.event("case.assigned", "resolution", {"agent_id": AGENT, "assigned_by": AGENT})
    await publish(infra, COMPLAINTS_RESOLUTION, assigned)  # nothing the customer sees
    opening = [
        status_changed(c, "in_progress", "triaged", clocks=clocks(c, "running")),
        agent_message(
            c, "请提供两笔扣款的银行对账单。", request_information=True, clocks=clocks(c, "paused")
        ),
        status_changed(c, "awaiting_customer", "in_progress"),
        status_changed(c, "in_progress", "awaiting_customer", clocks=clocks(c, "running")),
        ledger(c, refund_id, "refund", "pending_approval"),
    ]
    await publish_in_turn(infra, c, opening)

    pending = await c.view()
    [entry] = pending["resolutions"]
    # Waiting for an approver: shown as such, never as paid.
    assert (entry["status"], entry["approved_at"], entry["reversed"]) == (
        "pending_approval",
        None,
        False,
    )
    assert pending["timeline"][-1]["detail"] == "Resolution refund awaiting approval."
    assert pending["outcome"] is None

    extended_due = c.received_at + timedelta(days=30)
    rest = [
        ledger(c, refund_id, "refund", "approved", event_type="resolution.approved"),
        ledger(
            c,
            coupon_id,
            "compensation",
            "recorded",
            amount="10.00",
            compensation_type="coupon",
            decided_by="auto",
            reasons=["goodwill"],
        ),
        ledger(c, reversal_id, "reversal", "recorded", amount="10.00", reverses=str(coupon_id)),
        c.event(
            "complaint.sla_breached",
            "resolution",
            {
                "clock": "resolution",
                "due_at": (c.received_at + timedelta(days=3)).isoformat(),
                "new_estimate": (c.received_at + timedelta(days=5)).isoformat(),
                "priority": "P2",
                "clocks": clocks(c, "breached"),
            },
        ),
        c.event(
            "complaint.clock_extended",
            "resolution",
            {
                "clock": "legal_final",
                "previous_due_at": (c.received_at + timedelta(days=15)).isoformat(),
                "due_at": extended_due.isoformat(),
                "approved_by": APPROVER,
                "reason": "Waiting for the merchant's records.",
                "clocks": clocks(c, "breached", legal_days=30),
            },
        ),
        agent_message(c, "The refund is on its way.", request_information=False),
        status_changed(
            c,
            "resolved",
            "in_progress",
            outcome="monetary_relief",
            company_response="Closed with monetary relief",
            clocks=clocks(c, "met", legal_days=30),
        ),
    ]
    await publish_in_turn(infra, c, rest)

    response = await c.client.get(f"/v1/complaints/{c.ticket_no}", headers=c.headers)
    assert response.status_code == 200
    no_agent_named(response.text)
    view = response.json()
    assert view["status"] == "resolved"
    assert (view["outcome"], view["company_response"]) == (
        "monetary_relief",
        "Closed with monetary relief",
    )
    assert view["clocks"] == clocks(c, "met", legal_days=30)  # the newest event's list
    assert view["resolutions"] == [
        {
            "id": str(refund_id),
            "kind": "refund",
            "amount": "86.50",
            "currency": "CNY",
            "compensation_type": None,
            "status": "approved",
            "decided_by": "agent",
            "recorded_at": opening[-1].occurred_at.isoformat(),
            "approved_at": rest[0].occurred_at.isoformat(),
            "reverses": None,
            "reversed": False,
            "reversed_by": None,
        },
        {
            "id": str(coupon_id),
            "kind": "compensation",
            "amount": "10.00",
            "currency": "CNY",
            "compensation_type": "coupon",
            "status": "recorded",
            "decided_by": "auto",
            "recorded_at": rest[1].occurred_at.isoformat(),
            "approved_at": None,
            "reverses": None,
            "reversed": True,  # the reversal marks the entry it undoes
            "reversed_by": str(reversal_id),
        },
        {
            "id": str(reversal_id),
            "kind": "reversal",
            "amount": "10.00",
            "currency": "CNY",
            "compensation_type": None,
            "status": "recorded",
            "decided_by": "agent",
            "recorded_at": rest[2].occurred_at.isoformat(),
            "approved_at": None,
            "reverses": str(coupon_id),
            "reversed": False,
            "reversed_by": None,
        },
    ]
    new_estimate = (c.received_at + timedelta(days=5)).isoformat()
    legal_due = (c.received_at + timedelta(days=15)).isoformat()
    assert [(t["status"], t["detail"]) for t in view["timeline"]] == [
        ("received", "Complaint received."),
        ("triaged", "Triaged as duplicate_charge (P2)."),
        ("in_progress", "Status changed to in_progress."),
        (
            "in_progress",
            "The support team asked you for more information: 请提供两笔扣款的银行对账单。",
        ),
        ("awaiting_customer", "Status changed to awaiting_customer."),
        ("in_progress", "Status changed to in_progress."),
        ("in_progress", "Resolution refund awaiting approval."),
        ("in_progress", "Resolution refund approved."),
        ("in_progress", "Resolution compensation recorded."),
        ("in_progress", "Resolution reversal recorded."),
        ("in_progress", f"The resolution deadline was missed. New estimate: {new_estimate}."),
        (
            "in_progress",
            f"The regulatory final answer deadline was extended to {extended_due.isoformat()} "
            f"(it was {legal_due}).",
        ),
        ("in_progress", "The support team wrote to you: The refund is on its way."),
        ("resolved", "Status changed to resolved."),
    ]

    # The list shows the outcome too; reopening takes it away again.
    listed = await c.client.get("/v1/complaints", headers=c.headers)
    [summary] = [i for i in listed.json()["items"] if i["ticket_no"] == c.ticket_no]
    assert summary["outcome"] == "monetary_relief"
    await publish_in_turn(infra, c, [status_changed(c, "reopened", "resolved")])
    reopened = await c.view()
    assert (reopened["outcome"], reopened["company_response"]) == (None, None)
    assert reopened["clocks"] == view["clocks"]  # a change without clocks keeps them


def at_time(c: Complaint, event_type: str, occurred_at: datetime, payload: dict) -> Envelope:
    return new_event(
        event_type,
        producer="resolution",
        tenant_id=c.tenant_id,
        complaint_id=c.complaint_id,
        ticket_no=c.ticket_no,
        correlation_id=uuid.uuid4(),
        occurred_at=occurred_at,
        payload=payload,
    )


async def test_events_read_out_of_order_keep_the_newest_news(
    infra: Infra, complaint: Complaint
) -> None:
    c = complaint
    t0 = c.received_at + timedelta(minutes=1)
    refund_id, reversal_id = uuid.uuid4(), uuid.uuid4()
    refund = {
        "resolution_id": str(refund_id),
        "kind": "refund",
        "amount": "900.00",
        "currency": "CNY",
        "decided_by": AGENT,
    }
    newest_clocks = clocks(c, "running", legal_days=30)
    events = [
        # The approval before the entry it approves, the newest clocks before older ones.
        at_time(
            c,
            "resolution.approved",
            t0 + timedelta(minutes=2),
            {**refund, "status": "approved", "approved_by": APPROVER},
        ),
        at_time(c, "resolution.recorded", t0, {**refund, "status": "pending_approval"}),
        at_time(
            c,
            "complaint.status_changed",
            t0 + timedelta(minutes=5),
            {"status": "in_progress", "clocks": newest_clocks},
        ),
        at_time(
            c,
            "complaint.sla_breached",
            t0 + timedelta(minutes=3),
            {"clock": "first_response", "clocks": clocks(c, "breached")},
        ),
        # A reversal still waiting for approval does not undo the refund.
        at_time(
            c,
            "resolution.recorded",
            t0 + timedelta(minutes=6),
            {
                "resolution_id": str(reversal_id),
                "kind": "reversal",
                "amount": "900.00",
                "currency": "CNY",
                "reverses": str(refund_id),
                "status": "pending_approval",
                "decided_by": AGENT,
            },
        ),
    ]
    for event in events:
        await publish(infra, COMPLAINTS_RESOLUTION, event)
    view = await c.until(lambda v: len(v["timeline"]) == 1 + len(events))

    assert view["clocks"] == newest_clocks
    first, reversal = view["resolutions"]
    assert (first["id"], first["status"]) == (str(refund_id), "approved")
    assert first["recorded_at"] == t0.isoformat()  # the earliest news of it
    assert first["approved_at"] == (t0 + timedelta(minutes=2)).isoformat()
    assert (first["reversed"], reversal["status"]) == (False, "pending_approval")

    # Approved, the reversal is in effect and marks the refund.
    await publish(
        infra,
        COMPLAINTS_RESOLUTION,
        at_time(
            c,
            "resolution.approved",
            t0 + timedelta(minutes=7),
            {**events[-1].payload, "status": "approved", "approved_by": APPROVER},
        ),
    )
    view = await c.until(lambda v: v["resolutions"][0]["reversed"])
    assert view["resolutions"][0]["reversed_by"] == str(reversal_id)
    assert view["resolutions"][1]["status"] == "approved"


async def test_a_redelivered_resolution_event_doubles_nothing(
    infra: Infra, intake: httpx.AsyncClient, complaint: Complaint
) -> None:
    c = complaint
    refund_id = uuid.uuid4()
    events = [
        ledger(c, refund_id, "refund", "recorded", decided_by="auto", reasons=["duplicate_charge"]),
        agent_message(c, "Refunded.", request_information=False, clocks=clocks(c, "running")),
        status_changed(
            c,
            "resolved",
            "in_progress",
            outcome="monetary_relief",
            company_response="Closed with monetary relief",
            clocks=clocks(c, "met"),
        ),
    ]
    await publish_in_turn(infra, c, events)
    settled = await c.view()
    duplicates_before = await duplicates_seen(intake)

    for event in events:  # the same event_ids again, as after a consumer crash
        await publish(infra, COMPLAINTS_RESOLUTION, event)

    async def copies_handled() -> bool:
        return await duplicates_seen(intake) >= duplicates_before + len(events)

    await eventually(copies_handled)
    closed = status_changed(c, "closed", "resolved")
    await publish_in_turn(infra, c, [closed])  # behind the copies on the same partition
    view = await c.view()
    assert view["timeline"][:-1] == settled["timeline"]
    assert view["timeline"][-1]["detail"] == "Status changed to closed."
    assert view["resolutions"] == settled["resolutions"]
    assert len(view["resolutions"]) == 1 and view["resolutions"][0]["decided_by"] == "auto"
    assert view["clocks"] == settled["clocks"] == clocks(c, "met")
    assert view["outcome"] == "monetary_relief"  # closed keeps the outcome
    assert await duplicates_seen(intake) == duplicates_before + len(events)
