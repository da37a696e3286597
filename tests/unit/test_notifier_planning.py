"""notifier planning, step by step through one complaint: what each event tells the
customer, in which order, with which data; the refund's working days per tenant."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from services.notifier import refund_timing
from services.notifier.planning import acknowledgement, plan
from services.notifier.refund_timing import RefundTimingSettings, WorkingDays, parse
from shared.event_payloads import ComplaintReceived
from shared.events import TypedEnvelope, new_event

TICKET = "WC-20261123-000042"
AGENT = str(uuid.uuid4())
FAST_TENANT = uuid.uuid4()
OTHER_TENANT = uuid.uuid4()
REFUNDS = RefundTimingSettings(
    refund_working_days="3-7", refund_working_days_by_tenant={FAST_TENANT: "1-2"}
)


def _event(
    event_type: str, tenant_id: uuid.UUID = OTHER_TENANT, **payload: object
) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer="resolution",
        tenant_id=tenant_id,
        complaint_id=uuid.uuid4(),
        ticket_no=TICKET,
        correlation_id=uuid.uuid4(),
        payload=payload,
    ).typed()


def _types(*events: TypedEnvelope[Any]) -> list[str]:
    return [n.type for e in events for n in plan(e, refunds=REFUNDS)]


def test_a_complaints_steps_reach_the_customer_in_order() -> None:
    steps = [
        _event(
            "complaint.status_changed",
            status="triaged",
            reason="case_opened",
            category="fraud",
            priority="P1",
            first_response_due="2026-11-23T02:00:00+00:00",
            resolution_due="2026-11-26T02:00:00+00:00",
        ),
        _event(
            "complaint.agent_message",
            message_id=str(uuid.uuid4()),
            text="Please send the bank statement.",
            request_information=True,
            agent_id=AGENT,
        ),
        _event("complaint.status_changed", status="awaiting_customer"),
        _event("complaint.status_changed", status="in_progress", reason="customer_replied"),
        _event(
            "complaint.sla_breached",
            clock="resolution",
            due_at="2026-11-26T02:00:00+00:00",
            new_estimate="2026-11-27T02:00:00+00:00",
        ),
        _event(
            "complaint.clock_extended",
            clock="legal_final",
            previous_due_at="2026-12-08T02:00:00+00:00",
            due_at="2026-12-23T02:00:00+00:00",
            approved_by=AGENT,
            reason="internal",
        ),
        _event(
            "resolution.recorded",
            resolution_id=str(uuid.uuid4()),
            kind="refund",
            amount="86.50",
            currency="CNY",
        ),
        _event("complaint.status_changed", status="resolved", outcome="monetary_relief"),
        _event("complaint.status_changed", status="reopened", reason="customer_feedback"),
        _event("complaint.status_changed", status="closed"),
    ]
    assert _types(*steps) == [
        "complaint.triaged",
        "complaint.agent_message",
        "complaint.sla_breached",
        "complaint.clock_extended",
        "complaint.resolution_recorded",
        "complaint.resolved",
        "complaint.survey",
        "complaint.reopened",
    ]


def test_the_acknowledgement_promises_what_intakes_answer_did() -> None:
    received = ComplaintReceived.model_validate(
        {
            "customer": {"id": "u-1", "email": "li@example.com"},
            "channel": "app",
            "description": "charged twice",
            "received_at": "2026-11-23T02:00:00+00:00",
            "first_response_due": "2026-11-24T02:00:00+00:00",
            "tenant": {"webhook_url": "https://tenant.example/hooks"},
        }
    )
    ack = acknowledgement(received)
    assert (ack.type, ack.template) == ("complaint.acknowledged", "complaint.acknowledged")
    # Only the promise: nothing of the customer's (the address, the text) is kept with it.
    assert ack.data == {"first_response_due": "2026-11-24T02:00:00+00:00"}


def test_triage_news_carries_the_due_times_and_category() -> None:
    [triaged] = plan(
        _event(
            "complaint.status_changed",
            status="triaged",
            reason="case_opened",
            category="fraud",
            priority="P1",
            first_response_due="2026-11-23T02:00:00+00:00",
            resolution_due="2026-11-26T02:00:00+00:00",
            note="internal note",
            actor="system",
        )
    )
    expected = {
        "first_response_due": "2026-11-23T02:00:00+00:00",
        "resolution_due": "2026-11-26T02:00:00+00:00",
        "category": "fraud",
        "priority": "P1",
    }
    assert (triaged.template, triaged.data) == ("complaint.triaged", expected)


def test_resolved_tells_the_outcome_then_asks_for_a_rating_in_the_app() -> None:
    resolved, survey = plan(
        _event(
            "complaint.status_changed",
            status="resolved",
            reason="agent",
            outcome="non_monetary_relief",
            company_response="Closed with non-monetary relief",
            note="internal note",
            actor=AGENT,
        )
    )
    assert (resolved.type, resolved.data) == (
        "complaint.resolved",
        {"outcome": "non_monetary_relief"},
    )
    assert (survey.type, survey.template) == ("complaint.survey", "complaint.survey")
    assert survey.data == {
        "scale": [1, 5],
        "feedback_path": f"/v1/complaints/{TICKET}/feedback",
        "reopen_max_score": 2,
    }
    # Without an outcome (an older event) the news goes out all the same.
    bare, _ = plan(_event("complaint.status_changed", status="resolved"))
    assert bare.data == {}


def test_reopened_has_its_own_type_and_the_fresh_resolution_due() -> None:
    [note] = plan(
        _event(
            "complaint.status_changed",
            status="reopened",
            previous_status="resolved",
            reason="customer_feedback",
            note="Customer rated the handling 1/5. Reopened.",
            actor="customer",
            clocks=[
                {"name": "first_response", "due_at": "2026-11-23T02:00:00+00:00", "state": "met"},
                {"name": "resolution", "due_at": "2026-12-01T02:00:00+00:00", "state": "running"},
            ],
        )
    )
    assert (note.type, note.template) == ("complaint.reopened", "complaint.reopened")
    assert note.data == {
        "previous_status": "resolved",
        "reason": "customer_feedback",
        "resolution_due": "2026-12-01T02:00:00+00:00",
    }
    assert "1/5" not in repr(note)  # the internal note stays out
    # No running resolution clock: no promise made.
    [bare] = plan(_event("complaint.status_changed", status="reopened"))
    assert bare.data == {}


def test_a_refund_says_when_the_money_arrives_per_tenant() -> None:
    def refund(tenant: uuid.UUID, kind: str = "refund") -> dict[str, Any]:
        extra = {"compensation_type": "cash"} if kind == "compensation" else {}
        [note] = plan(
            _event(
                "resolution.recorded",
                tenant,
                resolution_id=str(uuid.uuid4()),
                kind=kind,
                amount="86.50",
                currency="CNY",
                **extra,
            ),
            refunds=REFUNDS,
        )
        return note.data

    assert refund(FAST_TENANT)["refund_working_days"] == {"min": 1, "max": 2}
    assert refund(OTHER_TENANT)["refund_working_days"] == {"min": 3, "max": 7}
    assert "refund_working_days" not in refund(FAST_TENANT, "compensation")


def test_refund_timing_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_REFUND_WORKING_DAYS", "2-5")
    monkeypatch.setenv(
        "NOTIFIER_REFUND_WORKING_DAYS_BY_TENANT",
        f'{{"{FAST_TENANT}": "1", "{OTHER_TENANT}": "4-10"}}',
    )
    settings = RefundTimingSettings()
    assert settings.for_tenant(FAST_TENANT) == WorkingDays(1, 1)
    assert settings.for_tenant(OTHER_TENANT) == WorkingDays(4, 10)
    assert settings.for_tenant(uuid.uuid4()) == WorkingDays(2, 5)
    assert settings.for_tenant(None) == WorkingDays(2, 5)


def test_the_default_is_three_to_seven_working_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFIER_REFUND_WORKING_DAYS", raising=False)
    monkeypatch.delenv("NOTIFIER_REFUND_WORKING_DAYS_BY_TENANT", raising=False)
    assert RefundTimingSettings().for_tenant(uuid.uuid4()) == WorkingDays(3, 7)
    assert refund_timing.default() is refund_timing.default()  # read once


@pytest.mark.parametrize("value", ["7-3", "0-2", "three", "3-", "-3", "3-7-9", ""])
def test_a_malformed_working_days_value_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError):
        parse(value)
    monkeypatch.setenv("NOTIFIER_REFUND_WORKING_DAYS", value)
    with pytest.raises(ValidationError):
        RefundTimingSettings()


def test_a_malformed_tenant_override_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_REFUND_WORKING_DAYS_BY_TENANT", '{"not-a-uuid": "2-5"}')
    with pytest.raises(ValidationError):
        RefundTimingSettings()
    monkeypatch.setenv("NOTIFIER_REFUND_WORKING_DAYS_BY_TENANT", f'{{"{FAST_TENANT}": "5-2"}}')
    with pytest.raises(ValidationError):
        RefundTimingSettings()
