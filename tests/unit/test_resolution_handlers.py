"""resolution's decisions on a fake unit of work: duplicate linking is deterministic
whichever of the two complaints arrives first, and what each customer is told."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.resolution import handlers
from services.resolution.domain import CaseRef, NewCase
from shared.event_payloads import ClockView, ComplaintTriaged
from shared.events import Envelope, TypedEnvelope, new_event
from shared.topics import COMPLAINTS_RESOLUTION


@dataclass
class FakeCases:
    rows: dict[uuid.UUID, NewCase] = field(default_factory=dict)
    status: dict[uuid.UUID, str] = field(default_factory=dict)
    locked: list[uuid.UUID] = field(default_factory=list)

    async def lock_group(self, original_id: uuid.UUID) -> None:
        self.locked.append(original_id)

    async def find(self, complaint_id: uuid.UUID) -> CaseRef | None:
        case = self.rows.get(complaint_id)
        return case.ref if case else None

    async def find_stand_in(self, original_id: uuid.UUID) -> CaseRef | None:
        return next((c.ref for c in self.rows.values() if c.stands_in_for == original_id), None)

    async def add(self, case: NewCase) -> bool:
        if case.complaint_id in self.rows:
            return False
        self.rows[case.complaint_id] = case
        self.status[case.complaint_id] = "triaged"
        return True

    async def reopen(self, complaint_id: uuid.UUID) -> str | None:
        previous = self.status.get(complaint_id)
        if previous not in ("resolved", "closed"):
            return None
        self.status[complaint_id] = "reopened"
        return previous

    async def resume_from_awaiting(self, complaint_id: uuid.UUID) -> bool:
        if self.status.get(complaint_id) != "awaiting_customer":
            return False
        self.status[complaint_id] = "in_progress"
        return True


@dataclass
class FakeClocks:
    calls: list[tuple[str, uuid.UUID, datetime]] = field(default_factory=list)

    async def start(self, case: NewCase, now: datetime) -> None:
        self.calls.append(("start", case.complaint_id, now))

    async def resume_internal(self, complaint_id: uuid.UUID, now: datetime) -> None:
        self.calls.append(("resume_internal", complaint_id, now))

    async def reopened(self, complaint_id: uuid.UUID, now: datetime) -> None:
        self.calls.append(("reopened", complaint_id, now))

    async def views(self, complaint_id: uuid.UUID) -> list[ClockView]:
        return [
            ClockView(name="resolution", due_at=datetime(2026, 11, 26, tzinfo=UTC), state="running")
        ]


@dataclass
class FakeMessages:
    rows: dict[uuid.UUID, tuple[uuid.UUID, str]] = field(default_factory=dict)

    async def from_customer(
        self,
        message_id: uuid.UUID,
        complaint_id: uuid.UUID,
        at: datetime,
        text: str,
        evidence: list[dict[str, Any]],
    ) -> None:
        self.rows.setdefault(message_id, (complaint_id, text))


@dataclass
class FakeRefunds:
    asked_for: list[uuid.UUID] = field(default_factory=list)

    async def auto_refund(self, case: NewCase, now: datetime, correlation_id: uuid.UUID) -> None:
        self.asked_for.append(case.complaint_id)


@dataclass
class FakeLinks:
    linked: dict[uuid.UUID, CaseRef] = field(default_factory=dict)
    waiting: dict[uuid.UUID, TypedEnvelope[ComplaintTriaged]] = field(default_factory=dict)

    async def link(self, complaint_id: uuid.UUID, ticket_no: str, case: CaseRef) -> None:
        assert complaint_id not in self.linked
        self.linked[complaint_id] = case

    async def wait_for_original(self, event: TypedEnvelope[ComplaintTriaged]) -> None:
        self.waiting.setdefault(event.complaint_id, event)

    async def take_waiting(self, original_id: uuid.UUID) -> list[TypedEnvelope[ComplaintTriaged]]:
        taken = [e for e in self.waiting.values() if e.payload.duplicate_of == original_id]
        for event in taken:
            del self.waiting[event.complaint_id]
        return taken

    async def originals_waited_for(self, longer_than: timedelta, limit: int) -> list[uuid.UUID]:
        return list({e.payload.duplicate_of for e in self.waiting.values()})[:limit]  # type: ignore[misc]


@dataclass
class FakeHistory:
    notes: list[tuple[uuid.UUID, str, str, str]] = field(default_factory=list)
    cases: FakeCases | None = None

    async def add(self, complaint_id: uuid.UUID, status: str, actor: str, note: str) -> None:
        self.notes.append((complaint_id, status, actor, note))

    async def add_to_case(
        self, complaint_id: uuid.UUID, actor: str, note: str, status: str | None = None
    ) -> None:
        assert self.cases is not None
        if complaint_id in self.cases.status:
            self.notes.append(
                (complaint_id, status or self.cases.status[complaint_id], actor, note)
            )


class FakeResolutionUnitOfWork:
    def __init__(self) -> None:
        self.cases = FakeCases()
        self.links = FakeLinks()
        self.history = FakeHistory(cases=self.cases)
        self.clocks = FakeClocks()
        self.messages = FakeMessages()
        self.refunds = FakeRefunds()
        self.emitted: list[tuple[str, Envelope]] = []

    def emit(self, event: Envelope, topic: str = COMPLAINTS_RESOLUTION) -> None:
        self.emitted.append((topic, event))

    def status_events(self, complaint_id: uuid.UUID) -> list[dict[str, Any]]:
        return [
            e.payload
            for topic, e in self.emitted
            if e.complaint_id == complaint_id and topic == COMPLAINTS_RESOLUTION
        ]


TENANT = uuid.uuid4()


def triaged(duplicate_of: uuid.UUID | None = None) -> TypedEnvelope[ComplaintTriaged]:
    now = datetime(2026, 11, 23, 8, tzinfo=UTC)
    return new_event(
        "complaint.triaged",
        producer="triage",
        tenant_id=TENANT,
        complaint_id=uuid.uuid4(),
        ticket_no=f"WC-20261123-{uuid.uuid4().int % 10**6:06d}",
        correlation_id=uuid.uuid4(),
        payload={
            "category": "duplicate_charge",
            "priority": "P2",
            "first_response_due": (now + timedelta(hours=8)).isoformat(),
            "resolution_due": (now + timedelta(hours=72)).isoformat(),
            "duplicate_of": str(duplicate_of) if duplicate_of else None,
            "customer": {"id": "u-5", "locale": "en"},
            "tenant": {"jurisdiction": "eu", "locale": "en"},
            "amount": "86.50",
            "currency": "EUR",
            "transaction_ref": "T-9",
            "received_at": now.isoformat(),
        },
    ).typed(ComplaintTriaged)


def pair() -> tuple[TypedEnvelope[ComplaintTriaged], TypedEnvelope[ComplaintTriaged]]:
    original = triaged()
    return original, triaged(duplicate_of=original.complaint_id)


def assert_one_case_both_linked(
    uow: FakeResolutionUnitOfWork,
    original: TypedEnvelope[ComplaintTriaged],
    duplicate: TypedEnvelope[ComplaintTriaged],
) -> None:
    assert list(uow.cases.rows) == [original.complaint_id]
    assert uow.links.linked == {
        duplicate.complaint_id: CaseRef(original.complaint_id, original.ticket_no)
    }
    assert not uow.links.waiting
    [opened] = uow.status_events(original.complaint_id)
    assert opened["reason"] == "case_opened"
    [linked] = uow.status_events(duplicate.complaint_id)  # once, when the link is made
    assert linked["reason"] == "duplicate_linked"
    assert linked["duplicate_of"] == str(original.complaint_id)
    assert linked["duplicate_of_ticket_no"] == original.ticket_no
    assert linked["resolution_due"] == duplicate.payload.resolution_due.isoformat()


async def test_original_first_then_duplicate_one_case() -> None:
    uow, (original, duplicate) = FakeResolutionUnitOfWork(), pair()
    await handlers.on_triaged(original, uow)
    await handlers.on_triaged(duplicate, uow)
    assert_one_case_both_linked(uow, original, duplicate)


async def test_duplicate_first_waits_and_is_linked_when_the_original_opens() -> None:
    uow, (original, duplicate) = FakeResolutionUnitOfWork(), pair()
    await handlers.on_triaged(duplicate, uow)
    assert not uow.cases.rows and not uow.emitted  # nothing opened, nothing said yet
    assert list(uow.links.waiting) == [duplicate.complaint_id]

    await handlers.on_triaged(original, uow)
    assert_one_case_both_linked(uow, original, duplicate)
    # The duplicate's news follows the original's: the case it points to exists.
    assert [e.complaint_id for _, e in uow.emitted] == [
        original.complaint_id,
        duplicate.complaint_id,
    ]


async def test_both_orders_lock_the_same_group() -> None:
    for order in ("original first", "duplicate first"):
        uow, (original, duplicate) = FakeResolutionUnitOfWork(), pair()
        events = [original, duplicate] if order == "original first" else [duplicate, original]
        for event in events:
            await handlers.on_triaged(event, uow)
        assert uow.cases.locked == [original.complaint_id] * 2, order


async def test_an_original_that_never_came_is_stood_in_for_then_joins_if_it_comes() -> None:
    uow, (original, duplicate) = FakeResolutionUnitOfWork(), pair()
    second = triaged(duplicate_of=original.complaint_id)
    await handlers.on_triaged(duplicate, uow)
    await handlers.on_triaged(second, uow)

    await handlers.release_waiting(uow, original.complaint_id)
    assert list(uow.cases.rows) == [duplicate.complaint_id]
    assert uow.cases.rows[duplicate.complaint_id].stands_in_for == original.complaint_id
    stand_in = CaseRef(duplicate.complaint_id, duplicate.ticket_no)
    assert uow.links.linked == {second.complaint_id: stand_in}
    assert uow.status_events(duplicate.complaint_id)[0]["reason"] == "case_opened"

    await handlers.on_triaged(original, uow)  # late after all: still one case
    assert list(uow.cases.rows) == [duplicate.complaint_id]
    assert uow.links.linked[original.complaint_id] == stand_in
    [late] = uow.status_events(original.complaint_id)
    assert (late["reason"], late["duplicate_of_ticket_no"]) == (
        "duplicate_linked",
        duplicate.ticket_no,
    )


async def test_release_after_the_original_arrived_does_nothing() -> None:
    uow, (original, duplicate) = FakeResolutionUnitOfWork(), pair()
    await handlers.on_triaged(duplicate, uow)
    await handlers.on_triaged(original, uow)
    emitted = list(uow.emitted)
    await handlers.release_waiting(uow, original.complaint_id)
    assert uow.emitted == emitted and list(uow.cases.rows) == [original.complaint_id]


async def test_the_same_complaint_triaged_twice_opens_one_case_and_says_so_once() -> None:
    uow, event = FakeResolutionUnitOfWork(), triaged()
    again = event.model_copy(update={"event_id": uuid.uuid4()})  # a new id, the same fact
    await handlers.on_triaged(event, uow)
    await handlers.on_triaged(again, uow)
    assert len(uow.cases.rows) == 1 and len(uow.status_events(event.complaint_id)) == 1


async def test_the_case_takes_jurisdiction_locale_and_money_from_the_triaged_event() -> None:
    uow, event = FakeResolutionUnitOfWork(), triaged()
    await handlers.on_triaged(event, uow)
    case = uow.cases.rows[event.complaint_id]
    assert (case.jurisdiction, case.locale, str(case.amount)) == ("eu", "en", "86.50")


def customer_event(
    cause: TypedEnvelope[Any], event_type: str, **payload: Any
) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer="intake",
        tenant_id=cause.tenant_id,
        complaint_id=cause.complaint_id,
        ticket_no=cause.ticket_no,
        correlation_id=cause.correlation_id,
        payload={"received_at": "2026-11-24T08:00:00+00:00", **payload},
    ).typed()


async def test_poor_feedback_reopens_the_case_and_a_message_is_noted() -> None:
    uow, event = FakeResolutionUnitOfWork(), triaged()
    await handlers.on_triaged(event, uow)
    message = customer_event(
        event, "complaint.message_added", message_id=str(uuid.uuid4()), text="any news?"
    )
    feedback = customer_event(
        event, "complaint.feedback_received", feedback_id=str(uuid.uuid4()), score=1, reopen=True
    )
    await handlers.on_customer_event(message, uow)
    uow.cases.status[event.complaint_id] = "resolved"
    await handlers.on_customer_event(feedback, uow)

    assert [n[3] for n in uow.history.notes][1:] == [
        "Customer sent a follow-up message.",
        "Customer rated the handling 1/5. Reopened.",
    ]
    reopened = uow.status_events(event.complaint_id)[-1]
    assert (reopened["status"], reopened["previous_status"]) == ("reopened", "resolved")


async def test_feedback_on_a_case_an_agent_moved_on_is_noted_and_reopens_nothing() -> None:
    uow, event = FakeResolutionUnitOfWork(), triaged()
    await handlers.on_triaged(event, uow)
    uow.cases.status[event.complaint_id] = "in_progress"  # reopened by an agent meanwhile
    feedback = customer_event(
        event, "complaint.feedback_received", feedback_id=str(uuid.uuid4()), score=2, reopen=True
    )
    await handlers.on_customer_event(feedback, uow)
    assert uow.cases.status[event.complaint_id] == "in_progress"
    assert [e["reason"] for e in uow.status_events(event.complaint_id)] == ["case_opened"]
    assert uow.history.notes[-1][3] == "Customer rated the handling 2/5."


async def test_feedback_on_a_linked_duplicate_reopens_nothing() -> None:
    uow, (original, duplicate) = FakeResolutionUnitOfWork(), pair()
    await handlers.on_triaged(original, uow)
    await handlers.on_triaged(duplicate, uow)
    before = list(uow.emitted)
    feedback = customer_event(
        duplicate,
        "complaint.feedback_received",
        feedback_id=str(uuid.uuid4()),
        score=2,
        reopen=True,
    )
    await handlers.on_customer_event(feedback, uow)
    assert uow.emitted == before


async def test_an_opened_case_starts_its_clocks_and_asks_for_an_automatic_refund() -> None:
    uow, (original, duplicate) = FakeResolutionUnitOfWork(), pair()
    await handlers.on_triaged(original, uow)
    await handlers.on_triaged(duplicate, uow)
    # Only the case that opened: a linked duplicate has no clocks and no money of its own.
    assert uow.clocks.calls == [("start", original.complaint_id, original.occurred_at)]
    assert uow.refunds.asked_for == [original.complaint_id]
    assert uow.cases.rows[original.complaint_id].customer_id == "u-5"


async def test_a_reply_to_a_request_for_information_resumes_the_case_and_its_clocks() -> None:
    uow, case = FakeResolutionUnitOfWork(), triaged()
    await handlers.on_triaged(case, uow)
    uow.cases.status[case.complaint_id] = "awaiting_customer"
    at = datetime(2026, 11, 24, 9, tzinfo=UTC)
    reply = customer_event(
        case,
        "complaint.message_added",
        message_id=str(uuid.uuid4()),
        text="Here is the receipt.",
        received_at=at.isoformat(),
    )
    await handlers.on_customer_event(reply, uow)
    await handlers.on_customer_event(reply, uow)

    assert uow.cases.status[case.complaint_id] == "in_progress"
    assert ("resume_internal", case.complaint_id, at) in uow.clocks.calls
    [back] = [e for e in uow.status_events(case.complaint_id) if e["status"] == "in_progress"]
    assert (back["previous_status"], back["reason"]) == ("awaiting_customer", "customer_replied")
    assert back["clocks"][0]["state"] == "running"
    assert len(uow.messages.rows) == 1  # the same message twice is kept once


async def test_a_follow_up_on_a_running_case_changes_no_status() -> None:
    uow, case = FakeResolutionUnitOfWork(), triaged()
    await handlers.on_triaged(case, uow)
    reply = customer_event(
        case, "complaint.message_added", message_id=str(uuid.uuid4()), text="Any news?"
    )
    await handlers.on_customer_event(reply, uow)
    assert uow.cases.status[case.complaint_id] == "triaged"
    assert [e["reason"] for e in uow.status_events(case.complaint_id)] == ["case_opened"]


async def test_poor_feedback_reopens_with_a_fresh_resolution_clock() -> None:
    uow, case = FakeResolutionUnitOfWork(), triaged()
    await handlers.on_triaged(case, uow)
    uow.cases.status[case.complaint_id] = "resolved"
    at = datetime(2026, 11, 30, tzinfo=UTC)
    feedback = customer_event(
        case,
        "complaint.feedback_received",
        feedback_id=str(uuid.uuid4()),
        score=1,
        reopen=True,
        received_at=at.isoformat(),
    )
    await handlers.on_customer_event(feedback, uow)
    assert ("reopened", case.complaint_id, at) in uow.clocks.calls
    reopened = uow.status_events(case.complaint_id)[-1]
    assert (reopened["status"], reopened["previous_status"]) == ("reopened", "resolved")
    assert reopened["clocks"]
