"""An agent's correction of triage's decision, the pure parts: the request body of
`POST /v1/cases/{ticket_no}/category`, what the correction decides and publishes
(`complaint.recategorised`), and how triage turns it into a labelled example shaped like
the labelled JSON Lines files."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.resolution.commands import recategorised_note, recategorised_payload
from services.resolution.requests import RecategoriseIn
from services.triage.corrections import (
    Classified,
    LabelledExample,
    correction_row,
    decimal_string,
    labelled_example,
)
from shared.api_vocabulary import CATEGORIES
from shared.event_payloads import PAYLOAD_MODELS, ComplaintRecategorised
from shared.events import InvalidEventPayload, TypedEnvelope, new_event, parse_envelope

AGENT = uuid.uuid4()
TENANT = uuid.uuid4()
COMPLAINT = uuid.uuid4()
AT = datetime(2026, 11, 23, 9, tzinfo=UTC)
TICKET = "WC-20261123-000042"


def case(category: str = "payment_failure", priority: str = "P3", *, review: bool = False):
    return {"category": category, "priority": priority, "needs_review": review}


# ------------------------------------------------------------------ the request


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_contract_category_is_accepted_and_priority_and_note_are_optional(
    category: str,
) -> None:
    body = RecategoriseIn.model_validate({"category": category})
    assert (body.category, body.priority, body.note) == (category, None, None)


def test_priority_and_note_are_taken_when_given() -> None:
    body = RecategoriseIn.model_validate_json(
        '{"category": "fraud", "priority": "P1", "note": "  account takeover  "}'
    )
    assert (body.category, body.priority, body.note) == ("fraud", "P1", "account takeover")


# ------------------------------------------------------------------ the decision


def test_a_new_category_keeps_the_priority_when_none_is_given() -> None:
    payload = recategorised_payload(case(), RecategoriseIn(category="fraud"), AGENT)
    assert payload == ComplaintRecategorised(
        category="fraud",
        priority="P3",
        previous_category="payment_failure",
        previous_priority="P3",
        corrected_by=str(AGENT),
        note=None,
    )


def test_a_new_priority_alone_is_a_correction_too() -> None:
    payload = recategorised_payload(
        case(), RecategoriseIn(category="payment_failure", priority="P2", note="VIP"), AGENT
    )
    assert payload is not None
    assert (payload.category, payload.priority, payload.previous_priority) == (
        "payment_failure",
        "P2",
        "P3",
    )
    assert recategorised_note(payload) == (
        "Recategorised from payment_failure P3 to payment_failure P2. VIP"
    )


def test_the_same_values_again_record_nothing() -> None:
    for body in (
        RecategoriseIn(category="payment_failure"),
        RecategoriseIn(category="payment_failure", priority="P3", note="again"),
    ):
        assert recategorised_payload(case(), body, AGENT) is None


def test_confirming_an_uncertain_decision_is_recorded_as_a_label() -> None:
    payload = recategorised_payload(
        case(review=True), RecategoriseIn(category="payment_failure"), AGENT
    )
    assert payload is not None
    assert (payload.category, payload.previous_category) == ("payment_failure", "payment_failure")
    assert recategorised_note(payload) == "Triage's decision confirmed: payment_failure P3."


# ------------------------------------------------------------------ the event


def _event(payload: ComplaintRecategorised | dict[str, Any]) -> Any:
    return new_event(
        "complaint.recategorised",
        producer="resolution",
        tenant_id=TENANT,
        complaint_id=COMPLAINT,
        ticket_no=TICKET,
        correlation_id=uuid.uuid4(),
        payload=payload,
        occurred_at=AT,
    )


def test_the_event_carries_the_labels_and_the_agent_never_customer_text_or_contact() -> None:
    payload = recategorised_payload(
        case(), RecategoriseIn(category="fraud", priority="P1", note="takeover"), AGENT
    )
    assert payload is not None
    written = _event(payload)
    assert PAYLOAD_MODELS[("complaint.recategorised", 1)] is ComplaintRecategorised
    assert (written.schema_version, written.producer) == (1, "resolution")
    assert written.payload == {
        "category": "fraud",
        "priority": "P1",
        "previous_category": "payment_failure",
        "previous_priority": "P3",
        "corrected_by": str(AGENT),
        "note": "takeover",
    }
    read = parse_envelope(written.model_dump_json().encode()).typed()
    assert read.payload == payload
    # Each correction is a fact of its own: a new event id every time.
    assert _event(payload).event_id != written.event_id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"priority": "P7"}, "priority"),
        ({"previous_priority": None}, "previous_priority"),
        ({"corrected_by": ""}, "corrected_by"),
        ({"customer": {"email": "li@example.com"}}, "customer.email"),
        ({"phone": "+86 138 0000 0000"}, "phone"),
    ],
)
def test_the_event_refuses_bad_labels_and_contact_details(
    change: dict[str, Any], field: str
) -> None:
    good = {
        "category": "fraud",
        "priority": "P1",
        "previous_category": "fees",
        "previous_priority": "P3",
        "corrected_by": str(AGENT),
    }
    with pytest.raises(InvalidEventPayload, match=field.split(".")[0]) as refused:
        _event({**good, **change})
    assert "li@example.com" not in str(refused.value)


# ------------------------------------------------------------------ triage's example


def classified(**change: Any) -> Classified:
    values: dict[str, Any] = {
        "complaint_id": COMPLAINT,
        "tenant_id": TENANT,
        "ticket_no": TICKET,
        "description": "钱包余额被转走了，不是我操作的",
        "channel": "app",
        "amount": Decimal("2300.0000"),
        "currency": "CNY",
        "category": "payment_failure",
        "priority": "P3",
        **change,
    }
    return Classified(**values)


def _typed(category: str = "fraud", priority: str = "P1") -> TypedEnvelope[Any]:
    return _event(
        ComplaintRecategorised(
            category=category,
            priority=priority,
            previous_category="transfer_delay",  # a first correction's label
            previous_priority="P2",
            corrected_by=str(AGENT),
        )
    ).typed()


def test_the_example_is_the_classified_text_with_the_agents_label_and_triages_decision() -> None:
    event = _typed()
    example = labelled_example(event, classified())
    assert example == LabelledExample(
        complaint_id=COMPLAINT,
        tenant_id=TENANT,
        ticket_no=TICKET,
        description="钱包余额被转走了，不是我操作的",
        channel="app",
        amount=Decimal("2300.0000"),
        currency="CNY",
        category="fraud",
        priority="P1",
        previous_category="payment_failure",
        previous_priority="P3",
        corrected_by=str(AGENT),
        event_id=event.event_id,
        recorded_at=AT,
    )


@pytest.mark.parametrize(
    "known",
    [None, classified(tenant_id=uuid.uuid4()), classified(description=None)],
    ids=["not triaged here", "another tenant's", "triaged before the text was kept"],
)
def test_no_example_without_the_text_triage_classified(known: Classified | None) -> None:
    assert labelled_example(_typed(), known) is None


def test_a_correction_row_is_shaped_like_the_labelled_json_lines() -> None:
    example = labelled_example(_typed(), classified())
    assert example is not None
    row = correction_row(example)
    assert row == {
        "id": str(COMPLAINT),
        "description": "钱包余额被转走了，不是我操作的",
        "channel": "app",
        "amount": "2300.00",
        "currency": "CNY",
        "expected_category": "fraud",
        "expected_priority": "P1",
    }
    assert json.loads(json.dumps(row, ensure_ascii=False)) == row
    bare = labelled_example(_typed(), classified(amount=None, currency=None, channel=None))
    assert bare is not None
    assert set(correction_row(bare)) == {
        "id",
        "description",
        "channel",
        "expected_category",
        "expected_priority",
    }


@pytest.mark.parametrize(
    ("amount", "text"),
    [("2300.0000", "2300.00"), ("86.5000", "86.50"), ("0.1234", "0.1234"), ("1E+3", "1000.00")],
)
def test_amounts_are_decimal_strings_never_exponents(amount: str, text: str) -> None:
    assert decimal_string(Decimal(amount)) == text
