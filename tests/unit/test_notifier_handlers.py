"""notifier's event handlers on a fake unit of work: whom to notify, and which
deliveries a case event queues, in order, with the template data as it travelled."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.notifier import handlers
from services.notifier.planning import PlannedNotification
from services.notifier.unit_of_work import Recipient, bind
from shared.event_payloads import ComplaintStatusChanged
from shared.events import Envelope, EnvelopeHeader, TypedEnvelope, new_event
from shared.topics import NOTIFICATIONS

TENANT = uuid.uuid4()
RECEIVED_AT = datetime(2026, 11, 23, 8, tzinfo=UTC)
FIRST_RESPONSE_DUE = "2026-11-24T08:00:00+00:00"  # intake's provisional promise


@dataclass
class FakeRecipients:
    rows: dict[uuid.UUID, Recipient] = field(default_factory=dict)

    async def add(self, recipient: Recipient) -> bool:
        if recipient.complaint_id in self.rows:
            return False
        self.rows[recipient.complaint_id] = recipient
        return True


@dataclass
class FakeDeliveries:
    queued: list[tuple[uuid.UUID, PlannedNotification]] = field(default_factory=list)

    async def queue(self, cause: EnvelopeHeader, planned: list[PlannedNotification]) -> None:
        self.queued.extend((cause.complaint_id, n) for n in planned)


class FakeNotifierUnitOfWork:
    def __init__(self) -> None:
        self.recipients = FakeRecipients()
        self.deliveries = FakeDeliveries()
        self.emitted: list[tuple[str, Envelope]] = []

    def emit(self, event: Envelope, topic: str = NOTIFICATIONS) -> None:
        self.emitted.append((topic, event))


def _envelope(event_type: str, producer: str, payload: dict[str, Any]) -> Envelope:
    return new_event(
        event_type,
        producer=producer,
        tenant_id=TENANT,
        complaint_id=uuid.uuid4(),
        ticket_no="WC-20261123-000001",
        correlation_id=uuid.uuid4(),
        payload=payload,
    )


def received(customer: dict[str, Any], tenant_locale: str | None = "en") -> TypedEnvelope[Any]:
    return _envelope(
        "complaint.received",
        "intake",
        {
            "customer": customer,
            "channel": "app",
            "description": "charged twice",
            "received_at": RECEIVED_AT.isoformat(),
            "first_response_due": FIRST_RESPONSE_DUE,
            "tenant": {"webhook_url": "https://tenant.example/hooks", "locale": tenant_locale},
        },
    ).typed()


def resolution_event(event_type: str, **payload: Any) -> TypedEnvelope[Any]:
    return _envelope(event_type, "resolution", payload).typed()


async def test_a_received_complaint_remembers_its_recipient_and_is_acknowledged_at_once() -> None:
    uow = FakeNotifierUnitOfWork()
    event = received({"id": "u-1", "locale": "zh-TW", "email": "li@example.com"})
    await handlers.on_received(event, uow)
    assert uow.recipients.rows[event.complaint_id] == Recipient(
        complaint_id=event.complaint_id,
        tenant_id=TENANT,
        ticket_no=event.ticket_no,
        webhook_url="https://tenant.example/hooks",
        locale="zh-CN",  # zh-TW is read as zh-CN: the locale we write in
        email="li@example.com",
        received_at=RECEIVED_AT,
    )
    ack = PlannedNotification(
        "complaint.acknowledged",
        "complaint.acknowledged",
        {"first_response_due": FIRST_RESPONSE_DUE},
    )
    assert uow.deliveries.queued == [(event.complaint_id, ack)]
    assert not uow.emitted  # notification.sent comes from the delivery worker


async def test_a_complaint_received_twice_is_acknowledged_once() -> None:
    uow = FakeNotifierUnitOfWork()
    first = received({"id": "u-1"})
    again = first.model_copy(update={"event_id": uuid.uuid4()})  # re-published, a new id
    await handlers.on_received(first, uow)
    await handlers.on_received(again, uow)
    assert [n.type for _, n in uow.deliveries.queued] == ["complaint.acknowledged"]


async def test_the_locale_falls_back_to_the_tenants_then_chinese() -> None:
    uow = FakeNotifierUnitOfWork()
    tenants = received({"id": "u-1"}, tenant_locale="en")
    nobodys = received({"id": "u-2"}, tenant_locale=None)
    for event in (tenants, nobodys):
        await handlers.on_received(event, uow)
    assert uow.recipients.rows[tenants.complaint_id].locale == "en"
    assert uow.recipients.rows[nobodys.complaint_id].locale == "zh-CN"
    assert uow.recipients.rows[nobodys.complaint_id].email is None


async def test_a_customer_locale_we_do_not_write_in_falls_back_to_the_tenants() -> None:
    uow = FakeNotifierUnitOfWork()
    event = received({"id": "u-3", "locale": "fr-FR"}, tenant_locale="en")
    await handlers.on_received(event, uow)
    assert uow.recipients.rows[event.complaint_id].locale == "en"


async def test_a_follow_up_message_changes_no_recipient() -> None:
    uow = FakeNotifierUnitOfWork()
    message = _envelope(
        "complaint.message_added",
        "intake",
        {
            "message_id": str(uuid.uuid4()),
            "text": "any news?",
            "received_at": "2026-11-23T09:00:00+00:00",
        },
    ).typed()
    await handlers.on_received(message, uow)
    assert not uow.recipients.rows


async def test_an_opened_case_queues_triage_news_with_its_due_times() -> None:
    uow = FakeNotifierUnitOfWork()
    opened = resolution_event(
        "complaint.status_changed",
        status="triaged",
        reason="case_opened",
        category="duplicate_charge",
        priority="P2",
        first_response_due="2026-11-23T16:00:00+00:00",
        resolution_due="2026-11-26T08:00:00+00:00",
    )
    await handlers.on_resolution(opened, uow)
    dues = {
        "first_response_due": "2026-11-23T16:00:00+00:00",
        "resolution_due": "2026-11-26T08:00:00+00:00",
        "category": "duplicate_charge",
        "priority": "P2",
    }
    assert uow.deliveries.queued == [
        (opened.complaint_id, PlannedNotification("complaint.triaged", "complaint.triaged", dues)),
    ]


async def test_a_recorded_refund_is_announced_with_its_amount_as_text() -> None:
    uow = FakeNotifierUnitOfWork()
    resolution_id = str(uuid.uuid4())
    pending = resolution_event(
        "resolution.recorded", resolution_id=resolution_id, kind="refund", status="pending_approval"
    )
    approved = resolution_event(
        "resolution.approved",
        resolution_id=resolution_id,
        kind="refund",
        amount="86.50",
        currency="CNY",
        status="approved",
    )
    await handlers.on_resolution(pending, uow)
    assert not uow.deliveries.queued  # news waits for the approval
    await handlers.on_resolution(approved, uow)
    [(_, announced)] = uow.deliveries.queued
    assert announced.type == "complaint.resolution_recorded"
    assert announced.data == {
        "resolution_id": resolution_id,
        "kind": "refund",
        "amount": "86.50",
        "currency": "CNY",
        "refund_working_days": {"min": 3, "max": 7},  # the default: no tenant override
    }


async def test_an_event_with_nothing_to_say_queues_nothing() -> None:
    uow = FakeNotifierUnitOfWork()
    await handlers.on_resolution(
        resolution_event("complaint.status_changed", status="in_progress"), uow
    )
    assert not uow.deliveries.queued


async def test_bind_hands_over_the_typed_model_and_skips_types_without_a_contract() -> None:
    seen: list[TypedEnvelope[Any]] = []

    async def record(event: TypedEnvelope[Any], uow: Any) -> None:
        seen.append(event)

    bound = bind(record)
    changed = _envelope("complaint.status_changed", "resolution", {"status": "resolved"})
    # A type with no contract yet (a newer producer's): new_event would refuse to build it.
    unknown = changed.model_copy(update={"event_type": "something.else"})
    # No statement is run, so no connection is needed.
    await bound(None, unknown)  # type: ignore[arg-type]
    await bound(None, changed)  # type: ignore[arg-type]
    [typed] = seen
    assert isinstance(typed.payload, ComplaintStatusChanged)
    assert typed.payload.status == "resolved" and typed.event_id == changed.event_id
