"""Card numbers a customer types into a complaint are kept as their last four digits only;
other digit strings (phone numbers, transaction refs, dates, amounts) are left as typed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake.card_numbers import is_card_number, luhn_valid, redact_card_numbers
from services.intake.domain import ComplaintIn, FeedbackIn, MessageIn

# Luhn-valid test numbers: Visa, Mastercard, Amex (15), UnionPay (19), Diners (14).
CARDS = {
    "4111111111111111": "1111",
    "5555555555554444": "4444",
    "378282246310005": "0005",
    "6222021234567890128": "0128",
    "30569309025904": "5904",
}


@pytest.mark.parametrize(("card", "last4"), CARDS.items())
@pytest.mark.parametrize(
    "template",
    [
        "{}",
        "my card {} was charged twice",
        "卡号{}被扣了两次款",  # Chinese text straight against the digits
        "card: {}.",
        "({})",
        "card number {}, please refund",
    ],
)
def test_a_card_number_in_one_piece_is_redacted_to_its_last_four(
    card: str, last4: str, template: str
) -> None:
    redacted = redact_card_numbers(template.format(card))
    assert redacted == template.format(f"**** **** **** {last4}")
    assert card not in redacted


@pytest.mark.parametrize(
    "written",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111 1111-1111 1111",
        "3782 822463 10005",  # Amex grouping 4-6-5
        "6222 0212 3456 7890 128",
        "622202 1234567890128",
    ],
)
def test_a_card_number_written_in_groups_is_redacted(written: str) -> None:
    digits = written.replace(" ", "").replace("-", "")
    redacted = redact_card_numbers(f"扣款卡 {written} 请查")
    assert redacted == f"扣款卡 **** **** **** {digits[-4:]} 请查"


def test_several_card_numbers_and_a_phone_number_beside_one() -> None:
    text = "old card 4111 1111 1111 1111, new 5555555555554444, call 13800138000 4111111111111111"
    assert redact_card_numbers(text) == (
        "old card **** **** **** 1111, new **** **** **** 4444, "
        "call 13800138000 **** **** **** 1111"
    )


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn check fails: a mistyped number or any other reference
        "4111 1111 1111 1112",
        "+8613800138000",  # phone numbers
        "+86 138 0013 8000",
        "13800138000",
        "008613800138000",  # international prefix 00: no card starts with 0
        "+4111111111111111",  # after "+": a phone number, whatever the checksum says
        "T20261122-0001",  # transaction refs glued to letters
        "T4111111111111111",
        "4111111111111111X",
        "ref 20261122-0001, 86.50元 on 2026-11-22 10:15",
        "ID 11010519491231002X",
        "411111111111",  # 12 digits: too short
        "41111111111111111111",  # 20 digits: too long (an order number)
        "20 26 11 22 10 15 00 4444",  # short groups: dates and times, not a card
        "6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b20",
    ],
)
def test_what_is_not_a_card_number_is_left_as_typed(text: str) -> None:
    assert redact_card_numbers(text) == text


def test_luhn() -> None:
    assert all(luhn_valid(card) for card in CARDS)
    assert not luhn_valid("4111111111111112")
    assert is_card_number("4111111111111111") and not is_card_number("0111111111111116")


@given(st.text(alphabet="0123456789 -+abcT卡号", max_size=80))
def test_redaction_is_idempotent_so_no_card_number_is_left_behind(text: str) -> None:
    once = redact_card_numbers(text)
    assert redact_card_numbers(once) == once


BASE: dict[str, Any] = {"customer": {"id": "u-1"}, "channel": "app"}


def test_the_complaint_models_redact_what_the_customer_typed() -> None:
    complaint = ComplaintIn.model_validate(
        {
            **BASE,
            "description": "卡号 4111 1111 1111 1111 被扣两次",
            "transaction_ref": "4111111111111111",  # a reference field: kept as given
        }
    )
    assert complaint.description == "卡号 **** **** **** 1111 被扣两次"
    assert complaint.transaction_ref == "4111111111111111"
    message = MessageIn.model_validate({"text": "use 5555-5555-5555-4444 instead"})
    assert message.text == "use **** **** **** 4444 instead"
    feedback = FeedbackIn.model_validate({"score": 4, "comment": "refund to 4111111111111111"})
    assert feedback.comment == "refund to **** **** **** 1111"
