"""The shared library's pure parts: envelope, signatures, API keys, rate limits."""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import uuid

import pytest
from pydantic import ValidationError

from shared.event_payloads import EventPayload
from shared.events import UnknownEventType, UnsupportedSchemaVersion, new_event, parse_envelope
from shared.ratelimit import TokenBuckets
from shared.service_app import freeze_startup_objects
from shared.signing import (
    derive_webhook_secret,
    issue_api_key,
    secret_matches,
    sign_webhook,
    split_api_key,
    verify_webhook,
)
from shared.topics import ALL_TOPICS, dead_letter_topic
from tests.integration.events import uncontracted_event


def _event():
    return new_event(
        "complaint.received",
        producer="intake",
        tenant_id=uuid.uuid4(),
        complaint_id=uuid.uuid4(),
        ticket_no="WC-20261123-000001",
        correlation_id=uuid.uuid4(),
        payload={
            "customer": {"id": "u-1"},
            "channel": "app",
            "description": "charged twice",
            "amount": "86.50",
            "currency": "CNY",
            "received_at": "2026-11-23T08:00:00+00:00",
            "tenant": {"webhook_url": "https://tenant.example/hooks"},
        },
    )


def test_envelope_round_trips_and_is_keyed_by_complaint() -> None:
    event = _event()
    parsed = parse_envelope(event.model_dump_json().encode())
    assert parsed == event
    assert event.key == str(event.complaint_id).encode()
    assert event.occurred_at.utcoffset() is not None


def test_a_parsed_event_hands_over_the_payload_it_validated_once() -> None:
    parsed = parse_envelope(_event().model_dump_json().encode())
    first, second = parsed.typed(), parsed.typed()
    assert first.payload is second.payload  # validated by parse_envelope, not again
    assert str(first.payload.amount) == "86.50"
    built = _event()  # built here, never parsed: its typed payload is validated on demand
    assert built.typed().payload == first.payload.model_copy()


def test_an_event_without_a_contract_is_typed_only_by_a_model_given() -> None:
    class Happened(EventPayload):
        seq: int

    event = uncontracted_event(seq=3)
    assert event.typed(Happened).payload.seq == 3
    with pytest.raises(UnknownEventType):
        event.typed()


def test_the_typed_envelope_class_outlives_a_full_garbage_collection() -> None:
    # pydantic's own cache of parametrised classes is weak: without ours, the class
    # would be built again after every full collection.
    before = type(_event().typed())
    gc.collect()
    assert type(_event().typed()) is before


def test_a_served_process_freezes_what_start_up_built() -> None:
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the test process collects as usual


def test_every_event_gets_its_own_id() -> None:
    assert len({_event().event_id for _ in range(100)}) == 100


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'{"event_id": "x"}'],
)
def test_malformed_envelopes_are_rejected(raw: bytes) -> None:
    with pytest.raises((ValidationError, ValueError)):
        parse_envelope(raw)


def test_unknown_fields_and_versions_are_rejected() -> None:
    body = json.loads(_event().model_dump_json())
    with pytest.raises(ValidationError):
        parse_envelope(json.dumps({**body, "surprise": 1}).encode())
    with pytest.raises(UnsupportedSchemaVersion):
        parse_envelope(json.dumps({**body, "schema_version": 2}).encode())


def test_webhook_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"type": "complaint.acknowledged"}'
    expected = hmac.new(b"s3cret", b"1763870400." + body, hashlib.sha256).hexdigest()
    assert sign_webhook("s3cret", 1763870400, body) == f"sha256={expected}"


def test_receivers_reject_tampering_wrong_secrets_and_stale_timestamps() -> None:
    body = b'{"a": 1}'
    signature = sign_webhook("k", 1000, body)
    assert verify_webhook("k", 1000, body, signature, now=1010)
    assert not verify_webhook("k", 1000, b'{"a": 2}', signature, now=1010)
    assert not verify_webhook("other", 1000, body, signature, now=1010)
    assert not verify_webhook("k", 1000, body, signature, now=1000 + 301)


def test_webhook_secrets_differ_per_tenant_and_master_key() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert derive_webhook_secret("m", a) == derive_webhook_secret("m", a)
    assert derive_webhook_secret("m", a) != derive_webhook_secret("m", b)
    assert derive_webhook_secret("m", a) != derive_webhook_secret("n", a)


def test_api_keys_are_stored_as_hashes_and_checked_exactly() -> None:
    issued = issue_api_key()
    key_id, secret = split_api_key(issued.plaintext) or ("", "")
    assert key_id == issued.key_id
    assert secret.encode() not in issued.secret_hash
    assert secret_matches(secret, issued.secret_hash)
    assert not secret_matches(secret + "x", issued.secret_hash)
    for malformed in ("", "wck", "wck__x", "abc_def_ghi", "Bearer wck_a_b"):
        assert split_api_key(malformed) is None


def test_token_bucket_allows_a_burst_then_paces() -> None:
    buckets = TokenBuckets(rate_per_s=10, burst=3)
    assert [buckets.take("t", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("t", now=0.0)
    assert wait == pytest.approx(0.1)
    assert buckets.take("t", now=0.1) == 0.0
    assert buckets.take("other-tenant", now=0.0) == 0.0  # tenants never share a bucket


def test_every_topic_has_a_dead_letter_topic() -> None:
    for topic in ("complaints.received.v1", "notifications.v1"):
        assert dead_letter_topic(topic) in ALL_TOPICS
