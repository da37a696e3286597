"""notifier's pure parts: what to send, how it reads, when to retry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.notifier import rendering
from services.notifier.delivery import backoff_s
from services.notifier.messages import render, supported_locale
from services.notifier.planning import plan
from shared.events import TypedEnvelope, new_event


def _event(event_type: str, **payload: object) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer="resolution",
        tenant_id=uuid.uuid4(),
        complaint_id=uuid.uuid4(),
        ticket_no="WC-20261123-000001",
        correlation_id=uuid.uuid4(),
        payload=payload,
    ).typed()


def test_an_opened_case_calls_for_triage_news_alone() -> None:
    # The acknowledgement went out from complaint.received (handlers.on_received).
    planned = plan(_event("complaint.status_changed", status="triaged", reason="case_opened"))
    assert [p.type for p in planned] == ["complaint.triaged"]


def test_a_linked_duplicate_is_told_its_original_ticket() -> None:
    [linked] = plan(
        _event(
            "complaint.status_changed",
            status="triaged",
            reason="duplicate_linked",
            duplicate_of_ticket_no="WC-20261120-000007",
        )
    )
    assert (linked.type, linked.template) == ("complaint.triaged", "complaint.triaged.duplicate")
    assert linked.data["duplicate_of_ticket_no"] == "WC-20261120-000007"


def test_resolution_news_waits_for_approval() -> None:
    resolution_id = str(uuid.uuid4())
    pending = _event(
        "resolution.recorded", resolution_id=resolution_id, kind="refund", status="pending_approval"
    )
    recorded = _event(
        "resolution.recorded",
        resolution_id=resolution_id,
        kind="refund",
        status="recorded",
        amount="86.50",
        currency="CNY",
    )
    assert plan(pending) == []
    assert [p.type for p in plan(recorded)] == ["complaint.resolution_recorded"]


def test_resolved_brings_the_survey_and_other_events_nothing() -> None:
    resolved = plan(_event("complaint.status_changed", status="resolved", reason="agent"))
    assert [p.type for p in resolved] == ["complaint.resolved", "complaint.survey"]
    assert plan(_event("complaint.status_changed", status="in_progress")) == []
    # A type with no contract yet never reaches plan: see test_notifier_handlers (bind).


def test_acknowledgement_names_ticket_and_due_time_in_the_customers_clock() -> None:
    data = {
        "ticket_no": "WC-20261123-000001",
        "first_response_due": "2026-11-23T02:00:00+00:00",
        "resolution_due": "2026-11-26T02:00:00+00:00",
    }
    zh = render("complaint.acknowledged", "zh-CN", data)
    en = render("complaint.acknowledged", "en", data)
    assert "工单号 WC-20261123-000001" in zh and "2026-11-23 10:00（北京时间）" in zh
    assert "ticket WC-20261123-000001" in en and "2026-11-23 02:00 UTC" in en


def test_categories_and_amounts_read_naturally() -> None:
    text = render(
        "complaint.resolution_recorded",
        "en",
        {"ticket_no": "WC-1", "kind": "refund", "amount": "86.50", "currency": "CNY"},
    )
    assert text == "Outcome of ticket WC-1: a refund of CN¥86.50."
    assert "重复扣款" in render(
        "complaint.triaged", "zh-CN", {"ticket_no": "WC-1", "category": "duplicate_charge"}
    )


@pytest.mark.parametrize(
    ("given", "used"),
    [("zh-CN", "zh-CN"), ("zh-TW", "zh-CN"), ("en-GB", "en"), (None, "zh-CN"), ("fr", "zh-CN")],
)
def test_unsupported_locales_fall_back(given: str | None, used: str) -> None:
    assert supported_locale(given) == used


def test_due_times_convert_zones() -> None:
    at = datetime(2026, 11, 23, 16, 30, tzinfo=UTC).isoformat()
    data = {"clock": "resolution", "previous_due_at": at, "due_at": at}
    text = rendering.render("complaint.clock_extended", "zh-CN", data, ticket_no="WC-1").text
    assert "2026-11-24 00:30（北京时间）" in text


def test_backoff_starts_within_five_seconds_doubles_and_is_capped() -> None:
    delays = [backoff_s(n, first_s=1.0, max_s=600.0) for n in range(1, 13)]
    assert delays[0] <= 5
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == 600.0
    # Enough attempts fit in 24 hours that a day-long outage is still covered.
    assert sum(backoff_s(n, 1.0, 600.0) for n in range(1, 200)) > 24 * 3600
