"""triage's handler on a fake unit of work: what it records and emits for a complaint,
a duplicate and an incident, with the real classifier and incident policy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.triage.classifier import Classifier
from services.triage.corrections import Classified, LabelledExample, on_resolution_event
from services.triage.domain import (
    Cause,
    DuplicateKey,
    Incident,
    IncidentMember,
    TriagedComplaint,
)
from services.triage.handler import TriageHandler
from services.triage.incident_policy import IncidentPolicy
from services.triage.rules import load_rules
from services.triage.unit_of_work import ClassifiedText
from shared.event_payloads import ComplaintReceived
from shared.events import Envelope, TypedEnvelope, new_event
from shared.metrics import ServiceMetrics
from shared.topics import COMPLAINTS_TRIAGED, INCIDENTS

TENANT = uuid.uuid4()
NOW = datetime(2026, 11, 23, 8, tzinfo=UTC)
FRAUD = "Someone logged into my account and transferred money out, I never did it"


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


@dataclass
class FakeTriagedComplaints:
    rows: dict[uuid.UUID, TriagedComplaint] = field(default_factory=dict)
    incident_of: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    texts: dict[uuid.UUID, ClassifiedText | None] = field(default_factory=dict)

    async def add(self, complaint: TriagedComplaint, text: ClassifiedText | None = None) -> None:
        assert complaint.complaint_id not in self.rows  # the primary key
        self.rows[complaint.complaint_id] = complaint
        self.texts[complaint.complaint_id] = text

    async def classified(self, complaint_id: uuid.UUID) -> Classified | None:
        row, text = self.rows.get(complaint_id), self.texts.get(complaint_id)
        if row is None:
            return None
        return Classified(
            complaint_id=row.complaint_id,
            tenant_id=row.tenant_id,
            ticket_no=row.ticket_no,
            description=text.description if text else None,
            channel=(text.channel or None) if text else None,
            amount=text.amount if text else None,
            currency=text.currency if text else None,
            category=row.category,
            priority=row.priority,
        )

    async def not_in_incident(
        self, tenant_id: uuid.UUID, cause: Cause, received_after: datetime
    ) -> list[IncidentMember]:
        found = [
            c
            for c in self.rows.values()
            if c.tenant_id == tenant_id
            and (c.merchant_key if cause.kind == "merchant" else c.category) == cause.value
            and c.received_at > received_after
            and c.complaint_id not in self.incident_of
        ]
        found.sort(key=lambda c: c.received_at)
        return [IncidentMember(c.complaint_id, c.ticket_no) for c in found]

    async def join_incident(self, incident_id: uuid.UUID, complaint_ids: list[uuid.UUID]) -> None:
        for complaint_id in complaint_ids:
            self.incident_of[complaint_id] = incident_id


@dataclass
class FakeDuplicates:
    complaints: FakeTriagedComplaints
    locked: list[DuplicateKey] = field(default_factory=list)

    async def find_original(
        self, key: DuplicateKey, received_at: datetime, window: timedelta
    ) -> uuid.UUID | None:
        self.locked.append(key)
        originals = sorted(
            (c.received_at, c.complaint_id)
            for c in self.complaints.rows.values()
            if (c.tenant_id, c.customer_id, c.transaction_ref)
            == (key.tenant_id, key.customer_id, key.transaction_ref)
            and c.duplicate_of is None
            and abs(c.received_at - received_at) <= window
        )
        return originals[0][1] if originals else None


@dataclass
class FakeIncidentCounters:
    per_minute: dict[tuple[uuid.UUID, Cause, datetime], int] = field(default_factory=dict)
    locked: list[Cause] = field(default_factory=list)

    async def lock_and_add_one(
        self, tenant_id: uuid.UUID, cause: Cause, received_at: datetime
    ) -> None:
        self.locked.append(cause)
        key = (tenant_id, cause, _minute(received_at))
        self.per_minute[key] = self.per_minute.get(key, 0) + 1

    async def count(
        self, tenant_id: uuid.UUID, cause: Cause, since: datetime, until: datetime | None
    ) -> int:
        return sum(
            n
            for (tenant, counted, minute), n in self.per_minute.items()
            if (tenant, counted) == (tenant_id, cause)
            and minute >= _minute(since)
            and (until is None or minute < _minute(until))
        )


@dataclass
class FakeIncidents:
    complaints: FakeTriagedComplaints
    rows: dict[uuid.UUID, tuple[uuid.UUID, Incident]] = field(default_factory=dict)

    async def join_open(
        self,
        tenant_id: uuid.UUID,
        cause: Cause,
        seen_at: datetime,
        window: timedelta,
        member: uuid.UUID,
    ) -> Incident | None:
        open_ones = [
            incident
            for tenant, incident in self.rows.values()
            if tenant == tenant_id
            and (incident.kind, incident.cause) == (cause.kind, cause.value)
            and incident.last_seen_at >= seen_at - window
        ]
        if not open_ones:
            return None
        latest = max(open_ones, key=lambda i: i.last_seen_at)
        joined = replace(
            latest,
            complaint_count=latest.complaint_count + 1,
            last_seen_at=max(latest.last_seen_at, seen_at),
        )
        self.rows[joined.incident_id] = (tenant_id, joined)
        self.complaints.incident_of[member] = joined.incident_id
        return joined

    async def open(
        self,
        incident_id: uuid.UUID,
        tenant_id: uuid.UUID,
        cause: Cause,
        category: str,
        opened_at: datetime,
        complaint_count: int,
    ) -> Incident:
        incident = Incident(
            incident_id, cause.kind, cause.value, category, opened_at, opened_at, complaint_count
        )
        self.rows[incident_id] = (tenant_id, incident)
        return incident


@dataclass
class FakeLabelledExamples:
    rows: dict[uuid.UUID, LabelledExample] = field(default_factory=dict)

    async def record(self, example: LabelledExample) -> None:
        known = self.rows.get(example.complaint_id)
        if known is None:
            self.rows[example.complaint_id] = example
        elif known.recorded_at <= example.recorded_at:  # the table's upsert
            self.rows[example.complaint_id] = replace(
                known,
                category=example.category,
                priority=example.priority,
                corrected_by=example.corrected_by,
                event_id=example.event_id,
                recorded_at=example.recorded_at,
            )


class FakeTriageUnitOfWork:
    def __init__(self) -> None:
        self.complaints = FakeTriagedComplaints()
        self.duplicates = FakeDuplicates(self.complaints)
        self.incident_counters = FakeIncidentCounters()
        self.incidents = FakeIncidents(self.complaints)
        self.examples = FakeLabelledExamples()
        self.emitted: list[tuple[str, Envelope]] = []

    def emit(self, event: Envelope, topic: str = COMPLAINTS_TRIAGED) -> None:
        self.emitted.append((topic, event))

    def on(self, topic: str) -> list[Envelope]:
        return [event for t, event in self.emitted if t == topic]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_rules(None))


def handler(classifier: Classifier, policy: IncidentPolicy | None = None) -> TriageHandler:
    return TriageHandler(
        classifier,
        ServiceMetrics("triage"),
        duplicate_window=timedelta(days=30),
        incident_policy=policy or IncidentPolicy(),
    )


def received(
    description: str = FRAUD,
    *,
    customer_id: str = "u-1",
    received_at: datetime = NOW,
    **fields: Any,
) -> TypedEnvelope[ComplaintReceived]:
    return new_event(
        "complaint.received",
        producer="intake",
        tenant_id=TENANT,
        complaint_id=uuid.uuid4(),
        ticket_no=f"WC-20261123-{uuid.uuid4().int % 10**6:06d}",
        correlation_id=uuid.uuid4(),
        payload={
            "customer": {"id": customer_id, "locale": "en", "email": "li@example.com"},
            "channel": "app",
            "description": description,
            "received_at": received_at.isoformat(),
            "tenant": {"jurisdiction": "cn", "locale": "zh-CN", "webhook_url": "http://h/x"},
            **fields,
        },
    ).typed(ComplaintReceived)


async def test_a_fraud_complaint_is_recorded_and_emits_triaged_p1(classifier: Classifier) -> None:
    uow, event = FakeTriageUnitOfWork(), received(amount="50.00", currency="USD")
    await handler(classifier)(event, uow)

    [(topic, triaged)] = uow.emitted
    p = triaged.payload
    assert topic == COMPLAINTS_TRIAGED
    assert (triaged.event_type, triaged.producer) == ("complaint.triaged", "triage")
    assert (triaged.complaint_id, triaged.correlation_id) == (
        event.complaint_id,
        event.correlation_id,
    )
    assert (p["category"], p["priority"]) == ("fraud", "P1")
    assert p["first_response_due"] < p["resolution_due"]
    assert (p["amount"], p["currency"], p["received_at"]) == ("50.00", "USD", NOW.isoformat())
    assert p["duplicate_of"] is None and p["incident_id"] is None
    # No contact details on a topic read outside this system.
    assert p["customer"] == {"id": "u-1", "locale": "en"}
    assert p["tenant"] == {"jurisdiction": "cn", "locale": "zh-CN"}
    row = uow.complaints.rows[event.complaint_id]
    assert (row.category, row.priority, row.duplicate_of) == ("fraud", "P1", None)
    # Kept with the decision: what the classifier read (for a correction to learn from).
    text = uow.complaints.texts[event.complaint_id]
    assert text is not None
    assert (text.description, text.channel, str(text.amount), text.currency) == (
        FRAUD,
        "app",
        "50.00",
        "USD",
    )


async def test_the_same_transaction_again_is_linked_to_the_original(
    classifier: Classifier,
) -> None:
    uow, triage = FakeTriageUnitOfWork(), handler(classifier)
    first = received(transaction_ref="T-1", received_at=NOW)
    again = received(transaction_ref="T-1", received_at=NOW + timedelta(days=2))
    other_customer = received(transaction_ref="T-1", customer_id="u-2")
    for event in (first, again, other_customer):
        await triage(event, uow)

    duplicate_of = {e.complaint_id: e.payload["duplicate_of"] for e in uow.on(COMPLAINTS_TRIAGED)}
    assert duplicate_of == {
        first.complaint_id: None,
        again.complaint_id: str(first.complaint_id),
        other_customer.complaint_id: None,
    }
    assert uow.complaints.rows[again.complaint_id].duplicate_of == first.complaint_id


async def test_without_a_transaction_ref_no_duplicate_is_looked_for(
    classifier: Classifier,
) -> None:
    uow, triage = FakeTriageUnitOfWork(), handler(classifier)
    await triage(received(), uow)
    await triage(received(), uow)
    assert not uow.duplicates.locked
    assert [e.payload["duplicate_of"] for e in uow.on(COMPLAINTS_TRIAGED)] == [None, None]


async def test_a_merchant_threshold_opens_one_incident_later_ones_update_it(
    classifier: Classifier,
) -> None:
    uow = FakeTriageUnitOfWork()
    triage = handler(classifier, IncidentPolicy(merchant_min_complaints=3))
    burst = [
        received(merchant=" Example  MART ", received_at=NOW + timedelta(minutes=i))
        for i in range(4)
    ]
    for event in burst:
        await triage(event, uow)

    [opened] = [e for e in uow.on(INCIDENTS) if e.event_type == "incident.opened"]
    [updated] = [e for e in uow.on(INCIDENTS) if e.event_type == "incident.updated"]
    assert opened.complaint_id == burst[2].complaint_id  # the one that met the threshold
    incident_id = opened.payload["incident_id"]
    assert opened.payload["kind"] == "merchant"
    assert opened.payload["cause"] == "Example  MART"  # as written, not the key
    assert opened.payload["complaint_count"] == 3
    assert opened.payload["complaint_ids"] == [str(e.complaint_id) for e in burst[:3]]
    assert opened.payload["window_minutes"] == 30
    assert (updated.complaint_id, updated.payload["incident_id"]) == (
        burst[3].complaint_id,
        incident_id,
    )
    assert updated.payload["complaint_count"] == 4
    assert [e.payload["incident_id"] for e in uow.on(COMPLAINTS_TRIAGED)] == [
        None,
        None,
        incident_id,
        incident_id,
    ]
    assert set(uow.complaints.incident_of) == {e.complaint_id for e in burst}
    # The merchant is locked and counted before the category, every time.
    assert uow.incident_counters.locked[:2] == [
        Cause("merchant", "example mart"),
        Cause("category", "fraud"),
    ]


# ------------------------------------------------------------------ agents' corrections


def recategorised(
    of: TypedEnvelope[Any],
    category: str,
    priority: str,
    *,
    previous: tuple[str, str],
    at: datetime = NOW + timedelta(hours=1),
    event_type: str = "complaint.recategorised",
    tenant_id: uuid.UUID = TENANT,
) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer="resolution",
        tenant_id=tenant_id,
        complaint_id=of.complaint_id,
        ticket_no=of.ticket_no,
        correlation_id=uuid.uuid4(),
        occurred_at=at,
        payload={
            "category": category,
            "priority": priority,
            "previous_category": previous[0],
            "previous_priority": previous[1],
            "corrected_by": "agent-7",
            "note": None,
        },
    ).typed()


async def test_a_correction_records_the_classified_text_with_the_agents_label(
    classifier: Classifier,
) -> None:
    uow = FakeTriageUnitOfWork()
    complaint = received("My payment did not go through", amount="2300", currency="cny")
    await handler(classifier)(complaint, uow)
    decided = uow.complaints.rows[complaint.complaint_id]
    await on_resolution_event(
        recategorised(complaint, "fraud", "P1", previous=(decided.category, decided.priority)),
        uow,
    )

    example = uow.examples.rows[complaint.complaint_id]
    assert example.description == "My payment did not go through"
    assert (example.channel, str(example.amount), example.currency) == ("app", "2300", "CNY")
    assert (example.category, example.priority, example.corrected_by) == ("fraud", "P1", "agent-7")
    assert (example.previous_category, example.previous_priority) == (
        decided.category,
        decided.priority,
    )
    assert example.recorded_at == NOW + timedelta(hours=1)
    assert uow.emitted[1:] == []  # a correction emits nothing of triage's


async def test_a_second_correction_replaces_the_label_and_keeps_triages_decision(
    classifier: Classifier,
) -> None:
    uow = FakeTriageUnitOfWork()
    complaint = received("My payment did not go through")
    await handler(classifier)(complaint, uow)
    decided = uow.complaints.rows[complaint.complaint_id]
    first = recategorised(complaint, "fraud", "P1", previous=(decided.category, decided.priority))
    second = recategorised(
        complaint, "transfer_delay", "P2", previous=("fraud", "P1"), at=NOW + timedelta(hours=2)
    )
    for event in (first, second, first):  # the first redelivered late: older, ignored
        await on_resolution_event(event, uow)

    [example] = uow.examples.rows.values()
    assert (example.category, example.priority, example.event_id) == (
        "transfer_delay",
        "P2",
        second.event_id,
    )
    assert example.previous_category == decided.category  # triage's, not the first label


async def test_other_resolution_events_and_unknown_complaints_record_nothing(
    classifier: Classifier,
) -> None:
    uow = FakeTriageUnitOfWork()
    complaint = received()
    await handler(classifier)(complaint, uow)
    status = new_event(
        "complaint.status_changed",
        producer="resolution",
        tenant_id=TENANT,
        complaint_id=complaint.complaint_id,
        ticket_no=complaint.ticket_no,
        correlation_id=uuid.uuid4(),
        payload={"status": "in_progress", "category": "fees"},
    ).typed()
    stranger = received()  # never triaged here
    other_tenant = recategorised(
        complaint, "fees", "P3", previous=("fraud", "P1"), tenant_id=uuid.uuid4()
    )
    for event in (status, recategorised(stranger, "fees", "P3", previous=("fraud", "P1")),
                  other_tenant):  # fmt: skip
        await on_resolution_event(event, uow)
    assert uow.examples.rows == {}
