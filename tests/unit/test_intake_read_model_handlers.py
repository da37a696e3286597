"""intake's read model on a fake unit of work: what each upstream event does to a
complaint's view and timeline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.intake import read_model
from services.intake.unit_of_work import ClockState, ResolutionView, ViewUpdate
from shared.events import TypedEnvelope, new_event

RECEIVED_AT = datetime(2026, 11, 23, 8, tzinfo=UTC)


@dataclass
class FakeReadModel:
    status: dict[uuid.UUID, str] = field(default_factory=dict)
    views: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    timeline: list[tuple[uuid.UUID, datetime, str, str]] = field(default_factory=list)
    resolutions: dict[uuid.UUID, ResolutionView] = field(default_factory=dict)
    outcomes: dict[uuid.UUID, tuple[str | None, str | None]] = field(default_factory=dict)
    clocks: dict[uuid.UUID, tuple[datetime, list[ClockState]]] = field(default_factory=dict)

    async def lock_status(self, complaint_id: uuid.UUID) -> str | None:
        return self.status.get(complaint_id)

    async def update(self, complaint_id: uuid.UUID, update: ViewUpdate) -> None:
        changed = update.changed()
        self.status[complaint_id] = changed["status"]
        self.views.setdefault(complaint_id, {}).update(changed)

    async def add_timeline(
        self, complaint_id: uuid.UUID, at: datetime, status: str, detail: str
    ) -> None:
        self.timeline.append((complaint_id, at, status, detail))

    async def record_resolution(self, resolution: ResolutionView) -> None:
        self.resolutions[resolution.resolution_id] = resolution

    async def set_outcome(
        self, complaint_id: uuid.UUID, outcome: str | None, company_response: str | None
    ) -> None:
        self.outcomes[complaint_id] = (outcome, company_response)

    async def set_clocks(
        self, complaint_id: uuid.UUID, clocks: list[ClockState], at: datetime
    ) -> bool:
        # The repository's rule (newest occurred_at wins), tested on PostgreSQL in
        # tests/integration/test_intake_read_model_resolution.py.
        stored = self.clocks.get(complaint_id)
        if stored is not None and stored[0] > at:
            return False
        self.clocks[complaint_id] = (at, clocks)
        return True


class FakeIntakeUnitOfWork:
    def __init__(self) -> None:
        self.complaints = FakeReadModel()

    def received(self) -> uuid.UUID:
        """A complaint intake has accepted."""
        complaint_id = uuid.uuid4()
        self.complaints.status[complaint_id] = "received"
        return complaint_id

    def details(self, complaint_id: uuid.UUID) -> list[tuple[str, str]]:
        return [(s, d) for c, _, s, d in self.complaints.timeline if c == complaint_id]


def event(
    complaint_id: uuid.UUID,
    event_type: str,
    producer: str,
    occurred_at: datetime | None = None,
    **payload: Any,
) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer=producer,
        tenant_id=uuid.uuid4(),
        complaint_id=complaint_id,
        ticket_no="WC-20261123-000001",
        correlation_id=uuid.uuid4(),
        occurred_at=occurred_at,
        payload=payload,
    ).typed()


def triaged(complaint_id: uuid.UUID) -> TypedEnvelope[Any]:
    due = RECEIVED_AT + timedelta(hours=4)
    return event(
        complaint_id,
        "complaint.triaged",
        "triage",
        category="duplicate_charge",
        priority="P2",
        first_response_due=due.isoformat(),
        resolution_due=(due + timedelta(days=3)).isoformat(),
        received_at=RECEIVED_AT.isoformat(),
    )


async def test_triaged_sets_category_priority_due_times_and_a_timeline_entry() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    news = triaged(complaint_id)
    await read_model.apply_triaged(news, uow)
    due = RECEIVED_AT + timedelta(hours=4)
    assert uow.complaints.views[complaint_id] == {
        "status": "triaged",
        "category": "duplicate_charge",
        "priority": "P2",
        "first_response_due": due,
        "resolution_due": due + timedelta(days=3),
    }
    assert uow.complaints.timeline == [
        (complaint_id, news.occurred_at, "triaged", "Triaged as duplicate_charge (P2).")
    ]


async def test_triage_arriving_late_does_not_move_the_status_back() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    uow.complaints.status[complaint_id] = "in_progress"
    await read_model.apply_triaged(triaged(complaint_id), uow)
    assert uow.complaints.views[complaint_id]["status"] == "in_progress"


async def test_a_status_change_moves_the_status_and_keeps_other_columns() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    await read_model.apply_resolution(
        event(complaint_id, "complaint.status_changed", "resolution", status="in_progress"), uow
    )
    assert uow.complaints.views[complaint_id] == {"status": "in_progress"}
    assert uow.details(complaint_id) == [("in_progress", "Status changed to in_progress.")]


async def test_a_resolution_is_recorded_at_the_current_status() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id, resolution_id = uow.received(), uuid.uuid4()
    recorded = event(
        complaint_id,
        "resolution.approved",
        "resolution",
        resolution_id=str(resolution_id),
        kind="refund",
        amount="86.50",
        currency="CNY",
    )
    await read_model.apply_resolution(recorded, uow)
    stored = uow.complaints.resolutions[resolution_id]
    assert (stored.amount, stored.currency, stored.kind) == (Decimal("86.50"), "CNY", "refund")
    # No status given reads "recorded", as before typed payloads.
    assert stored.status == "recorded"
    assert uow.details(complaint_id) == [("received", "Resolution refund recorded.")]
    assert uow.complaints.views == {}  # the status is untouched


async def test_a_delivered_notification_is_on_the_timeline_a_failed_one_is_not() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    for event_type in ("notification.sent", "notification.failed"):
        await read_model.apply_notification(
            event(complaint_id, event_type, "notifier", type="complaint.acknowledged"), uow
        )
    await read_model.apply_notification(
        event(complaint_id, "notification.sent", "notifier", type="complaint.unheard_of"), uow
    )
    assert uow.details(complaint_id) == [("received", "Acknowledgement delivered to the customer.")]


async def test_news_of_a_complaint_intake_never_had_is_refused() -> None:
    uow = FakeIntakeUnitOfWork()
    with pytest.raises(LookupError):  # the consumer dead-letters it
        await read_model.apply_triaged(triaged(uuid.uuid4()), uow)
    assert not uow.complaints.timeline


# ------------------------------------------------------------------ resolution (issue 10)

AGENT_ID = str(uuid.uuid4())


def clocks(state: str = "running", *, hours: int = 4) -> list[dict[str, str]]:
    due = RECEIVED_AT + timedelta(hours=hours)
    return [
        {"name": "first_response", "due_at": due.isoformat(), "state": state},
        {"name": "legal_final", "due_at": (due + timedelta(days=15)).isoformat(), "state": state},
    ]


async def test_a_ledger_entry_keeps_its_compensation_type_and_hides_the_agent() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id, resolution_id = uow.received(), uuid.uuid4()
    await read_model.apply_resolution(
        event(
            complaint_id,
            "resolution.recorded",
            "resolution",
            resolution_id=str(resolution_id),
            kind="compensation",
            amount="10.00",
            currency="CNY",
            compensation_type="coupon",
            decided_by=AGENT_ID,
            status="recorded",
        ),
        uow,
    )
    stored = uow.complaints.resolutions[resolution_id]
    assert (stored.compensation_type, stored.decided_by) == ("coupon", "agent")
    assert AGENT_ID not in repr(stored)


async def test_an_automatic_refund_reads_auto_and_a_reversal_names_what_it_reverses() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id, refund_id, reversal_id = uow.received(), uuid.uuid4(), uuid.uuid4()
    for resolution_id, kind, extra in (
        (refund_id, "refund", {"decided_by": "auto", "reasons": ["duplicate_charge"]}),
        (reversal_id, "reversal", {"decided_by": AGENT_ID, "reverses": str(refund_id)}),
    ):
        await read_model.apply_resolution(
            event(
                complaint_id,
                "resolution.recorded",
                "resolution",
                resolution_id=str(resolution_id),
                kind=kind,
                amount="20.00",
                currency="CNY",
                status="recorded",
                **extra,
            ),
            uow,
        )
    assert uow.complaints.resolutions[refund_id].decided_by == "auto"
    reversal = uow.complaints.resolutions[reversal_id]
    assert (reversal.kind, reversal.reverses, reversal.decided_by) == (
        "reversal",
        refund_id,
        "agent",
    )
    assert uow.details(complaint_id) == [
        ("received", "Resolution refund recorded."),
        ("received", "Resolution reversal recorded."),
    ]


async def test_a_pending_refund_reads_awaiting_approval_never_paid() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id, resolution_id = uow.received(), uuid.uuid4()
    await read_model.apply_resolution(
        event(
            complaint_id,
            "resolution.recorded",
            "resolution",
            resolution_id=str(resolution_id),
            kind="refund",
            amount="900.00",
            currency="CNY",
            status="pending_approval",
            decided_by=AGENT_ID,
        ),
        uow,
    )
    assert uow.complaints.resolutions[resolution_id].status == "pending_approval"
    assert uow.details(complaint_id) == [("received", "Resolution refund awaiting approval.")]


async def test_resolved_with_an_outcome_sets_it_and_the_clocks() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    resolved = event(
        complaint_id,
        "complaint.status_changed",
        "resolution",
        status="resolved",
        previous_status="in_progress",
        outcome="monetary_relief",
        company_response="Closed with monetary relief",
        actor=AGENT_ID,
        clocks=clocks("met"),
    )
    await read_model.apply_resolution(resolved, uow)
    assert uow.complaints.outcomes[complaint_id] == (
        "monetary_relief",
        "Closed with monetary relief",
    )
    at, stored = uow.complaints.clocks[complaint_id]
    assert at == resolved.occurred_at
    assert [(c.name, c.state) for c in stored] == [
        ("first_response", "met"),
        ("legal_final", "met"),
    ]
    assert stored[0].to_json()["due_at"] == clocks()[0]["due_at"]
    assert uow.details(complaint_id) == [("resolved", "Status changed to resolved.")]
    assert all(AGENT_ID not in d for _, d in uow.details(complaint_id))

    # Reopened: the outcome no longer holds.
    await read_model.apply_resolution(
        event(complaint_id, "complaint.status_changed", "resolution", status="reopened"), uow
    )
    assert uow.complaints.outcomes[complaint_id] == (None, None)


async def test_an_event_without_clocks_leaves_them_and_an_older_one_does_not_win() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    later = RECEIVED_AT + timedelta(hours=2)
    await read_model.apply_resolution(
        event(
            complaint_id,
            "complaint.status_changed",
            "resolution",
            occurred_at=later,
            status="in_progress",
            clocks=clocks("running"),
        ),
        uow,
    )
    # No clocks carried (the models' empty default): nothing replaced.
    await read_model.apply_resolution(
        event(complaint_id, "complaint.status_changed", "resolution", status="escalated"), uow
    )
    assert uow.complaints.clocks[complaint_id][0] == later
    # Older news, read late (another event type): the newer clocks stay.
    await read_model.apply_resolution(
        event(
            complaint_id,
            "complaint.sla_breached",
            "resolution",
            occurred_at=later - timedelta(minutes=5),
            clock="first_response",
            clocks=clocks("breached"),
        ),
        uow,
    )
    at, stored = uow.complaints.clocks[complaint_id]
    assert at == later and {c.state for c in stored} == {"running"}


async def test_clocks_carried_as_an_extra_key_of_a_resolution_are_read_too() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    await read_model.apply_resolution(
        event(
            complaint_id,
            "resolution.recorded",
            "resolution",
            resolution_id=str(uuid.uuid4()),
            kind="explanation",
            status="recorded",
            clocks=clocks("met"),
        ),
        uow,
    )
    assert {c.state for c in uow.complaints.clocks[complaint_id][1]} == {"met"}


async def test_an_agent_message_is_on_the_timeline_without_the_agent() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    for request_information, text in ((False, "We are looking into it."), (True, "Statement?")):
        await read_model.apply_resolution(
            event(
                complaint_id,
                "complaint.agent_message",
                "resolution",
                message_id=str(uuid.uuid4()),
                text=text,
                request_information=request_information,
                agent_id=AGENT_ID,
                clocks=clocks("paused"),
            ),
            uow,
        )
    assert uow.details(complaint_id) == [
        ("received", "The support team wrote to you: We are looking into it."),
        ("received", "The support team asked you for more information: Statement?"),
    ]
    assert {c.state for c in uow.complaints.clocks[complaint_id][1]} == {"paused"}


async def test_missed_and_extended_deadlines_are_on_the_timeline() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    due = RECEIVED_AT + timedelta(days=15)
    estimate = RECEIVED_AT + timedelta(days=16)
    await read_model.apply_resolution(
        event(
            complaint_id,
            "complaint.sla_breached",
            "resolution",
            clock="first_response",
            due_at=due.isoformat(),
            new_estimate=estimate.isoformat(),
            priority="P2",
        ),
        uow,
    )
    await read_model.apply_resolution(
        event(
            complaint_id,
            "complaint.clock_extended",
            "resolution",
            clock="legal_final",
            previous_due_at=due.isoformat(),
            due_at=(due + timedelta(days=15)).isoformat(),
            approved_by=AGENT_ID,
            reason="Needs the merchant's records.",
        ),
        uow,
    )
    assert uow.details(complaint_id) == [
        (
            "received",
            f"The first response deadline was missed. New estimate: {estimate.isoformat()}.",
        ),
        (
            "received",
            "The regulatory final answer deadline was extended to "
            f"{(due + timedelta(days=15)).isoformat()} (it was {due.isoformat()}).",
        ),
    ]
    assert all(AGENT_ID not in d for _, d in uow.details(complaint_id))


async def test_an_assignment_is_not_the_customers_business() -> None:
    uow = FakeIntakeUnitOfWork()
    complaint_id = uow.received()
    await read_model.apply_resolution(
        event(complaint_id, "case.assigned", "resolution", agent_id=AGENT_ID, assigned_by=AGENT_ID),
        uow,
    )
    assert uow.complaints.timeline == [] and uow.complaints.views == {}
