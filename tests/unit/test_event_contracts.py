"""The payload contracts: one model per event type and version, each accepting what its
producer emits today and refusing a float amount, a missing required key and (on topics
read downstream) contact details; checked on write and on read; the AsyncAPI document
generated from them is the one committed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared import asyncapi
from shared.event_payloads import CONTRACTS, PAYLOAD_MODELS, EventPayload
from shared.events import (
    InvalidEventPayload,
    UnknownEventType,
    new_event,
    parse_envelope,
)
from shared.topics import ALL_TOPICS

AT = "2026-11-23T08:00:00+00:00"
ID = str(uuid.uuid4())

# What each producer puts on the wire today (services/*), one example per event type.
EXAMPLES: dict[str, dict[str, Any]] = {
    "complaint.received": {
        "customer": {"id": "u-1", "locale": "zh-CN", "email": "li@example.com"},
        "channel": "app",
        "description": "charged twice",
        "amount": "86.50",
        "currency": "CNY",
        "transaction_ref": "T-9",
        "merchant": None,
        "occurred_at": None,
        "category_hint": None,
        "evidence": [],
        "received_at": AT,
        "first_response_due": AT,
        "tenant": {"jurisdiction": "cn", "locale": "zh-CN", "webhook_url": "https://t/h"},
    },
    "complaint.message_added": {
        "message_id": ID,
        "text": "any news?",
        "evidence": [],
        "received_at": AT,
        "complaint_status": "triaged",
    },
    "complaint.feedback_received": {
        "feedback_id": ID,
        "score": 2,
        "comment": None,
        "reopen": True,
        "previous_status": "resolved",
        "received_at": AT,
    },
    "complaint.triaged": {
        "category": "duplicate_charge",
        "priority": "P2",
        "reasons": ["keyword"],
        "regulatory_issue": "Wrong amount charged or received",
        "actions": [],
        "first_response_due": AT,
        "resolution_due": AT,
        "duplicate_of": None,
        "incident_id": None,
        "customer": {"id": "u-1", "locale": "zh-CN"},
        "tenant": {"jurisdiction": "cn", "locale": "zh-CN"},
        "channel": "app",
        "amount": "86.50",
        "currency": "CNY",
        "transaction_ref": "T-9",
        "merchant": None,
        "received_at": AT,
    },
    "resolution.recorded": {
        "resolution_id": ID,
        "kind": "refund",
        "amount": "86.50",
        "currency": "CNY",
        "transaction_ref": "T-9",
        "reason": "duplicate charge",
        "decided_by": "auto",
        "approved_by": None,
        "status": "recorded",
    },
    "resolution.approved": {
        "resolution_id": ID,
        "kind": "compensation",
        "amount": "20",
        "currency": "CNY",
        "decided_by": "a-1",
        "approved_by": "a-2",
        "status": "approved",
    },
    "complaint.status_changed": {
        "status": "triaged",
        "previous_status": "received",
        "reason": "duplicate_linked",
        "note": "Linked to WC-1.",
        "category": "duplicate_charge",
        "priority": "P2",
        "first_response_due": AT,
        "resolution_due": AT,
        "actor": "system",
        "duplicate_of": ID,
        "duplicate_of_ticket_no": "WC-20261123-000001",
    },
    "complaint.sla_breached": {
        "clock": "resolution",
        "due_at": AT,
        "new_estimate": AT,
        "priority": "P2",
        "amount": "1.00",  # an extra key: allowed, and money all the same
    },
    "complaint.agent_message": {
        "message_id": ID,
        "text": "Could you send us the bank's receipt?",
        "request_information": True,
        "agent_id": ID,
        "clocks": [{"name": "resolution", "due_at": AT, "state": "paused"}],
    },
    "case.assigned": {"agent_id": ID, "assigned_by": ID},
    "complaint.clock_extended": {
        "clock": "legal_final",
        "previous_due_at": AT,
        "due_at": AT,
        "approved_by": ID,
        "reason": "The merchant's records are needed.",
    },
    "complaint.recategorised": {
        "category": "fraud",
        "priority": "P1",
        "previous_category": "payment_failure",
        "previous_priority": "P3",
        "corrected_by": ID,
        "note": "An account takeover, not a failed payment.",
    },
    "incident.opened": {
        "incident_id": ID,
        "kind": "merchant",
        "cause": "Example Mart",
        "category": "payment_failure",
        "opened_at": AT,
        "last_seen_at": AT,
        "complaint_count": 3,
        "window_minutes": 30,
        "complaint_ids": [ID],
        "ticket_nos": ["WC-20261123-000001"],
    },
    "incident.updated": {
        "incident_id": ID,
        "kind": "category",
        "cause": "payment_failure",
        "category": "payment_failure",
        "opened_at": AT,
        "last_seen_at": AT,
        "complaint_count": 4,
        "complaint_id": ID,
        "ticket_no": "WC-20261123-000002",
    },
    "notification.sent": {
        "notification_id": ID,
        "type": "complaint.acknowledged",
        "channel": "webhook",
        "attempts": 1,
        "status_code": 200,
        "error": None,
    },
    "notification.failed": {
        "notification_id": ID,
        "type": "complaint.triaged",
        "channel": "webhook",
        "attempts": 9,
        "status_code": 503,
        "error": "HTTP 503",
    },
}

# The key each model's consumers cannot do without.
REQUIRED = {
    "complaint.received": "received_at",
    "complaint.message_added": "message_id",
    "complaint.feedback_received": "score",
    "complaint.triaged": "received_at",
    "resolution.recorded": "resolution_id",
    "resolution.approved": "kind",
    "complaint.status_changed": "status",
    "complaint.sla_breached": "clock",
    "complaint.agent_message": "text",
    "case.assigned": "agent_id",
    "complaint.clock_extended": "due_at",
    "complaint.recategorised": "category",
    "incident.opened": "incident_id",
    "incident.updated": "complaint_count",
    "notification.sent": "type",
    "notification.failed": "type",
}
MONEY = {  # event type -> a money key its model knows
    "complaint.received": "amount",
    "complaint.triaged": "amount",
    "resolution.recorded": "amount",
    "resolution.approved": "amount",
}


def event(event_type: str, payload: Any) -> Any:
    return new_event(
        event_type,
        producer="test",
        tenant_id=uuid.uuid4(),
        complaint_id=uuid.uuid4(),
        ticket_no="WC-20261123-000001",
        correlation_id=uuid.uuid4(),
        payload=payload,
    )


def test_every_event_type_of_the_contract_has_a_model_and_an_example() -> None:
    assert set(EXAMPLES) == {t for t, _ in PAYLOAD_MODELS} == set(REQUIRED)
    assert all(v == 1 for _, v in PAYLOAD_MODELS)
    assert {c.topic for c in CONTRACTS} <= set(ALL_TOPICS)


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_a_real_example_is_accepted_and_kept_as_written(event_type: str) -> None:
    written = event(event_type, EXAMPLES[event_type])
    assert written.payload == EXAMPLES[event_type]  # validation reformats nothing
    read = parse_envelope(written.model_dump_json().encode())
    typed = read.typed()
    assert isinstance(typed.payload, PAYLOAD_MODELS[(event_type, 1)])
    assert typed.complaint_id == written.complaint_id


@pytest.mark.parametrize("event_type", sorted(REQUIRED))
def test_a_missing_required_key_is_refused_on_write_and_on_read(event_type: str) -> None:
    key = REQUIRED[event_type]
    payload = {k: v for k, v in EXAMPLES[event_type].items() if k != key}
    with pytest.raises(InvalidEventPayload, match=rf"{key}: Field required"):
        event(event_type, payload)
    raw = _raw(event_type, payload)
    with pytest.raises(InvalidEventPayload, match=key):
        parse_envelope(raw)


@pytest.mark.parametrize("event_type", sorted({*MONEY, "complaint.sla_breached"}))
@pytest.mark.parametrize("amount", [86.5, 86, "86.5e0", "-1"])
def test_money_is_a_decimal_string_never_a_number(event_type: str, amount: Any) -> None:
    payload = {**EXAMPLES[event_type], "amount": amount}
    if event_type == "complaint.sla_breached":
        event(event_type, payload)  # amount is no field of its: an extra, unchecked
        return
    with pytest.raises(InvalidEventPayload, match="amount"):
        event(event_type, payload)
    with pytest.raises(InvalidEventPayload, match="amount"):
        parse_envelope(_raw(event_type, payload))


def test_money_reaches_handlers_as_decimal() -> None:
    typed = event("complaint.triaged", EXAMPLES["complaint.triaged"]).typed()
    assert str(typed.payload.amount) == "86.50" and type(typed.payload.amount).__name__ == "Decimal"


@pytest.mark.parametrize(
    ("part", "key", "value"),
    [
        ("tenant", "webhook_url", "https://tenant.example/hooks"),
        ("customer", "email", "li@example.com"),
        ("customer", "phone", "+86 138 0000 0000"),
        (None, "email", "li@example.com"),
    ],
)
def test_triaged_refuses_the_tenant_webhook_and_the_customer_contact(
    part: str | None, key: str, value: str
) -> None:
    payload = dict(EXAMPLES["complaint.triaged"])
    if part is None:
        payload[key] = value
    else:
        payload[part] = {**payload[part], key: value}
    where = f"{part}.{key}" if part else key
    with pytest.raises(InvalidEventPayload, match=rf"contact details: {where}") as refused:
        event("complaint.triaged", payload)
    assert value not in str(refused.value)  # the reason ends up in DLQ headers and logs
    with pytest.raises(InvalidEventPayload, match=where):
        parse_envelope(_raw("complaint.triaged", payload))


@pytest.mark.parametrize(
    "event_type", sorted(c.event_type for c in CONTRACTS if c.topic == "complaints.resolution.v1")
)
def test_the_resolution_topic_carries_no_contact_either(event_type: str) -> None:
    payload = {**EXAMPLES[event_type], "customer": {"email": "li@example.com"}}
    with pytest.raises(InvalidEventPayload, match=r"customer\.email"):
        event(event_type, payload)


def test_an_unknown_event_type_is_refused_on_write_and_skipped_on_read() -> None:
    with pytest.raises(UnknownEventType):
        event("complaint.triagd", {})
    raw = _raw("complaint.escalated", {"anything": 1.5})
    assert parse_envelope(raw).event_type == "complaint.escalated"  # a newer producer's


def test_a_model_instance_is_written_as_json() -> None:
    model = PAYLOAD_MODELS[("complaint.status_changed", 1)]
    written = event("complaint.status_changed", model(status="reopened", actor="customer"))
    assert written.payload == {"status": "reopened", "actor": "customer"}
    with pytest.raises(InvalidEventPayload):
        event("complaint.triaged", written.typed().payload)


def test_every_model_allows_extra_keys_for_producers_ahead_of_their_consumers() -> None:
    for model in PAYLOAD_MODELS.values():
        assert issubclass(model, EventPayload) and model.model_config.get("extra") == "allow"


def _raw(event_type: str, payload: dict[str, Any]) -> bytes:
    """An envelope as a producer that skipped new_event would put it on the wire."""
    body = json.loads(event("complaint.status_changed", {"status": "x"}).model_dump_json())
    return json.dumps({**body, "event_type": event_type, "payload": payload}).encode()


COMMITTED = Path(__file__).parents[2] / "docs" / "asyncapi.json"


def test_the_committed_asyncapi_document_is_the_generated_one() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == asyncapi.render(), (
        "regenerate: python -m shared.asyncapi > docs/asyncapi.json"
    )


def test_the_asyncapi_document_has_a_message_for_every_registered_event_type() -> None:
    document = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert document["asyncapi"] == "3.0.0"
    messages = document["components"]["messages"]
    by_type = {m["name"]: m for m in messages.values()}
    assert set(by_type) == {t for t, _ in PAYLOAD_MODELS}
    for c in CONTRACTS:
        channel = document["channels"][c.topic.replace(".", "_")]
        assert channel["address"] == c.topic
        assert asyncapi.message_name(c) in channel["messages"]
        payload = by_type[c.event_type]["payload"]["properties"]["payload"]
        assert payload == {"$ref": f"#/components/schemas/{c.model.__name__}"}
        assert c.model.__name__ in document["components"]["schemas"]
