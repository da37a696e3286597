"""intake's pure code: what a valid complaint, message and feedback are, and the rules
derived from them. No I/O."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake.accept import TicketNumbers
from services.intake.api import decode_cursor, encode_cursor
from services.intake.domain import (
    ComplaintIn,
    FeedbackIn,
    FeedbackNotAccepted,
    MessageIn,
    Status,
    apply_triaged_status,
    feedback_detail,
    format_ticket_no,
    is_ticket_no,
    message_detail,
    nul_errors,
    reopens,
    request_fingerprint,
    status_after_feedback,
    valid_idempotency_key,
)
from shared.problems import Problem

NOW = datetime(2026, 11, 22, 2, 16, tzinfo=UTC)
MINIMAL: dict[str, Any] = {"customer": {"id": "u-1"}, "channel": "app", "description": "x"}


def fields_in_error(model: type, data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


# ------------------------------------------------------------------ complaints


def test_only_customer_id_channel_and_description_are_required() -> None:
    complaint = ComplaintIn.model_validate(MINIMAL)
    assert complaint.amount is None and complaint.evidence == []
    assert complaint.semantic_errors(NOW) == []
    assert fields_in_error(ComplaintIn, {}) == {"customer", "channel", "description"}


def test_a_full_complaint_keeps_money_exact() -> None:
    complaint = ComplaintIn.model_validate(
        {
            **MINIMAL,
            "customer": {"id": "u-1", "locale": "zh-CN", "email": "a@example.com"},
            "amount": "86.50",
            "currency": "CNY",
            "occurred_at": "2026-11-22T10:15:00+08:00",
            "evidence": [{"kind": "screenshot", "uri": "https://x.example/1.png"}],
        }
    )
    assert complaint.amount == "86.50"
    assert complaint.amount_decimal == Decimal("86.50")
    assert complaint.occurred_at == datetime(2026, 11, 22, 2, 15, tzinfo=UTC)
    assert complaint.semantic_errors(NOW) == []


@pytest.mark.parametrize("amount", [86.5, 86, True, "86,50", "1e3", "-1", ".5", "01.00", "1.12345"])
def test_money_is_a_plain_decimal_string(amount: Any) -> None:
    data = {**MINIMAL, "amount": amount, "currency": "CNY"}
    assert fields_in_error(ComplaintIn, data) == {"amount"}


@pytest.mark.parametrize("amount", ["0.01", "86.50", "10000", "999999999999999.9999"])
def test_valid_amounts(amount: str) -> None:
    complaint = ComplaintIn.model_validate({**MINIMAL, "amount": amount, "currency": "USD"})
    assert complaint.semantic_errors(NOW) == []
    assert str(complaint.amount_decimal) == amount


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"amount": "0", "currency": "CNY"}, "amount", "greater than zero"),
        ({"amount": "1.00"}, "currency", "required when amount is given"),
        ({"currency": "ABC"}, "currency", "ISO 4217"),
        ({"occurred_at": "1969-12-31T23:59:59+00:00"}, "occurred_at", "after 1970"),
        ({"occurred_at": "2026-11-23T03:00:00+00:00"}, "occurred_at", "future"),
        ({"occurred_at": "0001-01-01T00:00:00+14:00"}, "occurred_at", "after 1970"),
    ],
)
def test_rules_across_fields(extra: dict[str, Any], field: str, message: str) -> None:
    errors = ComplaintIn.model_validate({**MINIMAL, **extra}).semantic_errors(NOW)
    assert [e["field"] for e in errors] == [field]
    assert message in errors[0]["message"]


def test_a_small_clock_skew_is_tolerated() -> None:
    ahead = (NOW + timedelta(hours=3)).isoformat()
    assert ComplaintIn.model_validate({**MINIMAL, "occurred_at": ahead}).semantic_errors(NOW) == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"nickname": "x"}, "nickname"),
        ({"customer": {"id": "u-1", "vip": True}}, "customer.vip"),
        ({"channel": "fax"}, "channel"),
        ({"channel": 1}, "channel"),
        ({"description": ""}, "description"),
        ({"description": " \t\n"}, "description"),
        ({"description": "x" * 5001}, "description"),
        ({"description": ["x"]}, "description"),
        ({"customer": {"id": ""}}, "customer.id"),
        ({"customer": {"id": "u", "phone": "call me"}}, "customer.phone"),
        ({"customer": {"id": "u", "locale": "chinese"}}, "customer.locale"),
        ({"occurred_at": "2026-11-22T10:15:00"}, "occurred_at"),
        ({"occurred_at": 1763777700}, "occurred_at"),
        ({"evidence": [{"kind": "photo", "uri": "javascript:alert(1)"}]}, "evidence.0.uri"),
        (
            {"evidence": [{"kind": "photo", "uri": "https://x", "sha256": "abc"}]},
            "evidence.0.sha256",
        ),
        ({"evidence": [{"kind": "p", "uri": "https://x"}] * 21}, "evidence"),
    ],
)
def test_invalid_complaints_name_the_field(patch: dict[str, Any], field: str) -> None:
    assert field in fields_in_error(ComplaintIn, {**MINIMAL, **patch})


def test_text_is_trimmed() -> None:
    complaint = ComplaintIn.model_validate({**MINIMAL, "description": "  charged twice \n"})
    assert complaint.description == "charged twice"


# ------------------------------------------------------------------ messages and feedback


def test_message_needs_text_and_may_carry_evidence() -> None:
    message = MessageIn.model_validate(
        {"text": "statement attached", "evidence": [{"kind": "pdf", "uri": "https://x/1.pdf"}]}
    )
    assert message.evidence[0].kind == "pdf"
    assert fields_in_error(MessageIn, {}) == {"text"}
    assert fields_in_error(MessageIn, {"text": "   "}) == {"text"}
    assert fields_in_error(MessageIn, {"text": "x" * 5001}) == {"text"}
    assert fields_in_error(MessageIn, {"text": "hi", "to": "agent"}) == {"to"}


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_scores_one_to_five(score: int) -> None:
    assert FeedbackIn.model_validate({"score": score}).score == score


@pytest.mark.parametrize("score", [0, 6, -1, 4.0, 4.5, "4", True, None])
def test_a_score_is_an_integer_from_one_to_five(score: Any) -> None:
    assert fields_in_error(FeedbackIn, {"score": score}) == {"score"}


def test_feedback_comment_is_optional_and_bounded() -> None:
    assert FeedbackIn.model_validate({"score": 3}).comment is None
    assert fields_in_error(FeedbackIn, {"score": 3, "comment": ""}) == {"comment"}
    assert fields_in_error(FeedbackIn, {"score": 3, "comment": "x" * 2001}) == {"comment"}


@pytest.mark.parametrize(
    ("status", "score", "after"),
    [
        ("resolved", 1, "reopened"),
        ("resolved", 2, "reopened"),
        ("resolved", 3, "resolved"),
        ("resolved", 5, "resolved"),
        ("closed", 2, "reopened"),
        ("closed", 4, "closed"),
    ],
)
def test_a_score_of_one_or_two_reopens(status: str, score: int, after: str) -> None:
    assert status_after_feedback(status, score) == after
    assert reopens(score) is (after == "reopened")


@pytest.mark.parametrize("status", [s for s in Status if s not in (Status.RESOLVED, Status.CLOSED)])
def test_feedback_before_a_resolution_is_not_accepted(status: Status) -> None:
    with pytest.raises(FeedbackNotAccepted):
        status_after_feedback(status.value, 5)


def test_timeline_details_carry_no_customer_text() -> None:
    assert feedback_detail(2) == "Customer rated the resolution 2/5; the complaint is reopened."
    assert feedback_detail(4) == "Customer rated the resolution 4/5."
    assert message_detail(0) == "Customer sent a follow-up message."
    assert message_detail(2) == "Customer sent a follow-up message with 2 attachment(s)."


def test_triage_never_moves_a_later_status_back() -> None:
    assert apply_triaged_status("received") == "triaged"
    for later in ("in_progress", "resolved", "reopened"):
        assert apply_triaged_status(later) == later


# ------------------------------------------------------------------ request plumbing


def test_nul_characters_are_found_wherever_they_hide() -> None:
    data = {"text": "a\x00", "evidence": [{"kind": "ok"}, {"uri": "\x00"}], "n": 1}
    assert [e["field"] for e in nul_errors(data)] == ["text", "evidence.1.uri"]
    assert nul_errors({"text": "fine", "list": ["x"], "none": None}) == []
    assert nul_errors("\x00") == [
        {"field": "body", "message": "must not contain the NUL character"}
    ]


@pytest.mark.parametrize("key", ["a", "3f1c2a8e-5b7d-4c39-9a61-0e2f4b8d7c15", "x" * 128, "a b~"])
def test_valid_idempotency_keys(key: str) -> None:
    assert valid_idempotency_key(key)


@pytest.mark.parametrize("key", ["", "x" * 129, "naïve", "tab\there", "nul\x00", "line\n"])
def test_invalid_idempotency_keys(key: str) -> None:
    assert not valid_idempotency_key(key)


def test_ticket_numbers() -> None:
    assert format_ticket_no(NOW, 42) == "WC-20261122-000042"
    assert format_ticket_no(NOW, 12_345_678) == "WC-20261122-12345678"  # grows, never wraps
    assert is_ticket_no("WC-20261122-000042") and is_ticket_no("WC-20261122-12345678")
    for bad in (
        "",
        "WC-2026112-000042",
        "wc-20261122-000042",
        "WC-20261122-42",
        "WC-20261122-000042\n",
    ):
        assert not is_ticket_no(bad)


# What orjson hands over as int (larger JSON integers arrive as floats).
JSON_INTEGERS = st.integers(min_value=-(2**63), max_value=2**64 - 1)


@given(st.dictionaries(st.text(max_size=5), JSON_INTEGERS | st.text(max_size=5), max_size=6))
def test_fingerprint_ignores_key_order(body: dict[str, Any]) -> None:
    reordered = dict(reversed(list(body.items())))
    assert request_fingerprint(body) == request_fingerprint(reordered)


def test_fingerprint_tells_bodies_and_scopes_apart() -> None:
    body = {"text": "hi"}
    assert request_fingerprint(body) != request_fingerprint({"text": "hi!"})
    assert request_fingerprint(body, scope="WC-20261122-000001") != request_fingerprint(
        body, scope="WC-20261122-000002"
    )
    assert request_fingerprint(body, scope="WC-1") != request_fingerprint(body)


@given(st.datetimes(timezones=st.just(UTC)), st.uuids())
def test_cursor_round_trip(at: datetime, complaint_id: uuid.UUID) -> None:
    assert decode_cursor(encode_cursor(at, complaint_id)) == (at, complaint_id)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "ünï",
        _b64("not a cursor"),
        _b64(f"2026-11-22T10:15:00+00:00|{uuid.UUID(int=1)}|extra"),
        _b64("2026-11-22T10:15:00+00:00|not-a-uuid"),
        _b64(f"0001-01-01T00:00:00+14:00|{uuid.UUID(int=1)}"),  # before year 1 in UTC
        _b64(f"yesterday|{uuid.UUID(int=1)}"),
    ],
)
def test_a_forged_cursor_is_a_422(cursor: str) -> None:
    with pytest.raises(Problem) as caught:
        decode_cursor(cursor)
    assert caught.value.status == 422


# ------------------------------------------------------------------ ticket blocks


class FakeSequence:
    """Stands in for Postgres' ticket_seq with INCREMENT BY `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.last = 0
        self.calls = 0

    async def fetchrow(self, _sql: str) -> dict[str, int]:
        self.calls += 1
        await asyncio.sleep(0)  # a real round trip lets other requests run meanwhile
        self.last += self.size
        return {"first": self.last - self.size + 1, "size": self.size}


async def test_ticket_numbers_come_from_reserved_blocks_without_duplicates() -> None:
    sequence = FakeSequence(size=100)
    numbers = TicketNumbers()

    taken = await asyncio.gather(*(numbers.take(sequence) for _ in range(250)))  # type: ignore[arg-type]

    assert sorted(taken) == list(range(1, 251))
    assert sequence.calls == 3  # one round trip per 100 complaints, not per complaint


async def test_two_processes_never_share_a_ticket_number() -> None:
    sequence = FakeSequence(size=10)
    first, second = TicketNumbers(), TicketNumbers()

    taken = [await tickets.take(sequence) for _ in range(15) for tickets in (first, second)]  # type: ignore[arg-type]

    assert len(set(taken)) == len(taken) == 30
