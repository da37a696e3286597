"""The pure case core: transitions, outcomes, ledger rules, approvals, automatic refunds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.resolution.case import (
    OUTCOMES,
    TRANSITIONS,
    AutoRefundFacts,
    Entry,
    Ledger,
    LedgerRefused,
    Proposed,
    Status,
    TransitionRefused,
    check_approval,
    check_entry,
    check_transition,
    company_response,
    decide_auto_refund,
    entry_status,
    needs_approval,
)
from services.resolution.case import Approver as Who
from services.resolution.requests import (
    AssignIn,
    MessageIn,
    RecategoriseIn,
    ResolutionIn,
    StatusIn,
)
from services.resolution.settings import ResolutionSettings

D = Decimal
NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
THRESHOLDS = {"CNY": D("500"), "USD": D("75")}
EXPECTED: dict[str, set[str]] = {
    "triaged": {"in_progress", "awaiting_customer", "escalated", "resolved"},
    "in_progress": {"awaiting_customer", "escalated", "resolved"},
    "awaiting_customer": {"in_progress", "escalated", "resolved"},
    "escalated": {"in_progress", "awaiting_customer", "resolved"},
    "resolved": {"closed", "reopened"},
    "closed": {"reopened"},
    "reopened": {"in_progress", "awaiting_customer", "escalated", "resolved"},
}


# ------------------------------------------------------------------ transitions


@pytest.mark.parametrize("current", [s.value for s in Status])
@pytest.mark.parametrize("requested", [s.value for s in Status])
def test_every_transition_is_allowed_or_refused_naming_the_allowed_ones(
    current: str, requested: str
) -> None:
    if requested in EXPECTED[current]:
        check_transition(current, requested)
        return
    with pytest.raises(TransitionRefused) as refused:
        check_transition(current, requested)
    assert refused.value.current == current
    assert refused.value.requested == requested
    assert refused.value.allowed == sorted(EXPECTED[current])
    assert all(type(a) is str for a in refused.value.allowed)
    for allowed in EXPECTED[current]:
        assert allowed in str(refused.value)


def test_the_machine_covers_every_status_and_never_stays_put() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert all(status not in targets for status, targets in TRANSITIONS.items())
    # Every status can still reach "closed": no case is stuck forever.
    for start in Status:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert Status.CLOSED in seen or start == Status.CLOSED


def test_an_unknown_status_allows_nothing() -> None:
    with pytest.raises(TransitionRefused) as refused:
        check_transition("received", "in_progress")
    assert refused.value.allowed == []


def test_outcomes_map_to_cfpb_company_responses() -> None:
    assert dict(OUTCOMES) == {
        "monetary_relief": "Closed with monetary relief",
        "non_monetary_relief": "Closed with non-monetary relief",
        "explanation": "Closed with explanation",
        "no_relief": "Closed",
    }
    assert company_response("no_relief") == "Closed"
    with pytest.raises(KeyError):
        company_response("happy")


# ------------------------------------------------------------------ the ledger


def entry(kind: str = "refund", amount: str | None = "10", **kw: Any) -> Entry:
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "kind": kind,
        "amount": D(amount) if amount else None,
        "currency": "CNY" if amount else None,
        "decided_by": "agent-1",
    }
    return Entry(**(defaults | kw))


def ledger(*entries: Entry, amount: str | None = "100", currency: str | None = "CNY") -> Ledger:
    return Ledger(D(amount) if amount else None, currency, entries)


def refund(amount: str, currency: str = "CNY") -> Proposed:
    return Proposed("refund", "note", D(amount), currency)


def refused(led: Ledger, proposed: Proposed) -> LedgerRefused:
    with pytest.raises(LedgerRefused) as raised:
        check_entry(led, proposed, THRESHOLDS)
    return raised.value


def test_a_refund_within_the_disputed_amount_is_recorded() -> None:
    accepted = check_entry(ledger(), refund("100"), THRESHOLDS)
    assert (accepted.status, accepted.amount, accepted.currency) == ("recorded", D("100"), "CNY")


def test_a_refund_is_paid_in_the_disputed_currency() -> None:
    error = refused(ledger(), refund("10", "USD"))
    assert (error.status, error.field) == (422, "currency")
    # A case with no disputed currency takes any (and, with no amount, waits for approval).
    check_entry(ledger(amount=None, currency=None), refund("10", "USD"), THRESHOLDS)


def test_no_refund_above_the_disputed_amount() -> None:
    error = refused(ledger(), refund("100.01"))
    assert (error.status, error.field) == (422, "amount")
    # No disputed amount: no cap, so every refund waits for an approver, even a small one.
    for amount in ("5000", "1"):
        accepted = check_entry(ledger(amount=None), refund(amount), THRESHOLDS)
        assert accepted.status == "pending_approval"


def test_the_sum_of_refunds_counts_pending_ones_and_not_reversed_ones() -> None:
    pending = entry(amount="60", requires_approval=True)
    reversed_one = entry(amount="30")
    led = ledger(pending, reversed_one, entry("reversal", "30", reverses=reversed_one.id))
    assert led.refunded() == D("60")
    check_entry(led, refund("40"), THRESHOLDS)
    assert refused(led, refund("40.0001")).field == "amount"


def test_compensation_does_not_count_against_the_disputed_amount() -> None:
    led = ledger(entry("compensation", "90", compensation_type="cash"))
    assert led.refunded() == 0
    check_entry(led, refund("100"), THRESHOLDS)


@given(
    st.lists(
        st.tuples(
            st.decimals(min_value=D("0.01"), max_value=D("80"), places=2),
            st.booleans(),  # reverse it afterwards?
        ),
        max_size=12,
    ),
    st.decimals(min_value=D("1"), max_value=D("200"), places=2),
)
def test_whatever_agents_try_refunds_never_sum_above_the_disputed_amount(
    attempts: list[tuple[Decimal, bool]], disputed: Decimal
) -> None:
    led = Ledger(disputed, "CNY")
    for amount, reverse in attempts:
        try:
            accepted = check_entry(led, refund(str(amount)), THRESHOLDS)
        except LedgerRefused as error:
            assert error.status == 422
            assert led.refunded() + amount > disputed
            continue
        new = entry(amount=str(accepted.amount), requires_approval=accepted.requires_approval)
        led = Ledger(disputed, "CNY", (*led.entries, new))
        if reverse:
            rev = check_entry(led, Proposed("reversal", "undo", reverses=new.id), THRESHOLDS)
            led = Ledger(
                disputed,
                "CNY",
                (*led.entries, entry("reversal", str(rev.amount), reverses=new.id)),
            )
        assert led.refunded() <= disputed


@pytest.mark.parametrize("ctype", ["cash", "coupon", "points"])
def test_compensation_has_a_type_an_amount_and_a_currency(ctype: str) -> None:
    proposed = Proposed("compensation", "sorry", D("20"), "CNY", compensation_type=ctype)
    assert check_entry(ledger(), proposed, THRESHOLDS).compensation_type == ctype
    for missing, field in [
        ({"compensation_type": None}, "compensation_type"),
        ({"amount": None}, "amount"),
        ({"currency": None}, "currency"),
    ]:
        broken = Proposed(**{**proposed.__dict__, **missing})
        assert refused(ledger(), broken).field == field


def test_cash_compensation_above_the_threshold_needs_approval_coupons_do_not() -> None:
    cash = Proposed("compensation", "n", D("600"), "CNY", compensation_type="cash")
    coupon = Proposed("compensation", "n", D("600"), "CNY", compensation_type="coupon")
    assert check_entry(ledger(), cash, THRESHOLDS).status == "pending_approval"
    assert check_entry(ledger(), coupon, THRESHOLDS).status == "recorded"


@pytest.mark.parametrize("kind", ["explanation", "rejection"])
def test_explanation_and_rejection_carry_a_note_and_no_amount(kind: str) -> None:
    accepted = check_entry(ledger(), Proposed(kind, "because"), THRESHOLDS)
    assert (accepted.amount, accepted.currency, accepted.status) == (None, None, "recorded")
    assert refused(ledger(), Proposed(kind, "because", amount=D("1"))).field == "amount"
    assert refused(ledger(), Proposed(kind, "because", currency="CNY")).field == "currency"
    assert refused(ledger(), Proposed(kind, "  ")).field == "note"


def test_a_reversal_corrects_one_entry_once_and_carries_its_amount() -> None:
    original = entry("compensation", "20", compensation_type="coupon")
    led = ledger(original)
    rev = check_entry(led, Proposed("reversal", "wrong case", reverses=original.id), THRESHOLDS)
    assert (rev.amount, rev.currency, rev.compensation_type) == (D("20"), "CNY", "coupon")
    assert rev.status == "recorded"
    done = ledger(original, entry("reversal", "20", reverses=original.id))
    assert refused(done, Proposed("reversal", "again", reverses=original.id)).status == 409
    assert refused(led, Proposed("reversal", "what", reverses=uuid.uuid4())).field == "reverses"
    assert refused(led, Proposed("reversal", "no target")).field == "reverses"
    reversal = done.entries[1]
    assert refused(done, Proposed("reversal", "undo", reverses=reversal.id)).status == 422
    with_amount = Proposed("reversal", "x", amount=D("1"), reverses=original.id)
    assert refused(led, with_amount).field == "amount"
    assert refused(led, Proposed("refund", "x", D("1"), "CNY", reverses=original.id)).field == (
        "reverses"
    )


@pytest.mark.parametrize(
    ("amount", "currency", "needed"),
    [
        ("500", "CNY", False),
        ("500.01", "CNY", True),
        ("75", "USD", False),
        ("75.01", "USD", True),
        ("1", "EUR", True),  # no threshold for the currency: always an approver
    ],
)
def test_the_approval_threshold_per_currency(amount: str, currency: str, needed: bool) -> None:
    assert needs_approval("refund", D(amount), currency, THRESHOLDS) is needed
    led = ledger(amount=D("10000"), currency=currency)
    assert check_entry(led, refund(amount, currency), THRESHOLDS).requires_approval is needed


def test_settings_defaults_are_the_contracts() -> None:
    s = ResolutionSettings()
    assert s.approval_thresholds == {"CNY": D("500"), "USD": D("75")}
    assert s.auto_refund_limits == {"CNY": D("200"), "USD": D("30")}
    assert s.auto_refund_once_per_days == 30


# ------------------------------------------------------------------ approvals


def test_approval_by_a_different_approver_only() -> None:
    pending = entry(amount="600", requires_approval=True, decided_by="author")
    led = ledger(pending, amount="1000")
    assert entry_status(pending) == "pending_approval"
    check_approval(led, pending, Who("boss", approver=True))
    for who in (Who("author", approver=True), Who("clerk", approver=False)):
        with pytest.raises(LedgerRefused) as raised:
            check_approval(led, pending, who)
        assert raised.value.status == 403


@pytest.mark.parametrize("state", ["approved", "recorded", "reversed"])
def test_only_a_pending_entry_can_be_approved(state: str) -> None:
    target = entry(
        amount="600",
        requires_approval=state != "recorded",
        approved_by="boss" if state == "approved" else None,
    )
    entries = [target]
    if state == "reversed":
        entries.append(entry("reversal", "600", reverses=target.id))
    with pytest.raises(LedgerRefused) as raised:
        check_approval(ledger(*entries, amount="1000"), target, Who("other", approver=True))
    assert raised.value.status == 409


# ------------------------------------------------------------------ automatic refunds


def facts(**kw: Any) -> AutoRefundFacts:
    defaults: dict[str, Any] = {
        "category": "duplicate_charge",
        "amount": D("86.50"),
        "currency": "CNY",
        "transaction_ref": "T-1",
        "customer_id": "u-1",
        "last_auto_refund_at": None,
        "ledger": Ledger(D("86.50"), "CNY"),
    }
    return AutoRefundFacts(**(defaults | kw))


def decide(f: AutoRefundFacts, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "limits": {"CNY": D("200"), "USD": D("30")},
        "once_per_days": 30,
        "thresholds": THRESHOLDS,
        "now": NOW,
    }
    return decide_auto_refund(f, **(options | kw))


def test_a_small_duplicate_charge_with_a_transaction_is_refunded_in_full() -> None:
    decision = decide(facts())
    assert (decision.refund, decision.amount, decision.currency) == (True, D("86.50"), "CNY")
    assert len(decision.reasons) == 5
    assert any("duplicate_charge" in r for r in decision.reasons)
    assert any("T-1" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"category": "fraud"}, "not duplicate_charge"),
        ({"transaction_ref": None}, "no transaction_ref"),
        ({"amount": None}, "no disputed amount"),
        ({"amount": D("200.01"), "ledger": Ledger(D("200.01"), "CNY")}, "above the automatic"),
        ({"currency": "EUR", "ledger": Ledger(D("86.50"), "EUR")}, "no automatic refund limit"),
        ({"customer_id": None}, "no customer id"),
        ({"last_auto_refund_at": NOW - timedelta(days=29)}, "in the last 30 days"),
        ({"ledger": Ledger(D("86.50"), "CNY", (entry(amount="1"),))}, "already refunded"),
    ],
)
def test_no_automatic_refund_outside_the_policy(change: dict[str, Any], why: str) -> None:
    decision = decide(facts(**change))
    assert decision.refund is False
    assert len(decision.reasons) == 1 and why in decision.reasons[0], decision.reasons


def test_the_once_per_customer_window_ends() -> None:
    assert decide(facts(last_auto_refund_at=NOW - timedelta(days=30, seconds=1))).refund
    assert decide(facts(last_auto_refund_at=NOW - timedelta(days=3)), once_per_days=2).refund


def test_a_reversed_refund_does_not_block_an_automatic_one() -> None:
    old = entry(amount="1")
    led = Ledger(D("86.50"), "CNY", (old, entry("reversal", "1", reverses=old.id)))
    assert decide(facts(ledger=led)).refund


def test_never_an_automatic_refund_that_would_need_an_approver() -> None:
    decision = decide(facts(), thresholds={"CNY": D("50")})
    assert decision.refund is False and "approver" in decision.reasons[0]


# ------------------------------------------------------------------ request bodies


def test_money_in_a_request_is_a_decimal_string_never_a_json_number() -> None:
    body = ResolutionIn.model_validate_json(
        '{"kind": "refund", "amount": "86.50", "currency": "CNY", "note": "x"}'
    )
    assert body.amount == D("86.50")
    for raw in ("86.5", '"86.505555"', '"-1"', '"0"', '"1e3"', '"01"'):
        with pytest.raises(ValidationError) as raised:
            ResolutionIn.model_validate_json(
                f'{{"kind": "refund", "amount": {raw}, "currency": "CNY", "note": "x"}}'
            )
        assert [e["loc"] for e in raised.value.errors()] == [("amount",)]


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (ResolutionIn, {"kind": "refund", "note": "x", "extra": 1}, "extra"),
        (ResolutionIn, {"kind": "gift", "note": "x"}, "kind"),
        (ResolutionIn, {"kind": "refund", "note": ""}, "note"),
        (ResolutionIn, {"kind": "refund", "note": "x", "currency": "cny"}, "currency"),
        (StatusIn, {"status": "done", "note": "x"}, "status"),
        (StatusIn, {"status": "resolved", "note": "x", "outcome": "yay"}, "outcome"),
        (MessageIn, {"text": "x" * 5001}, "text"),
        (MessageIn, {"text": "   "}, "text"),
        (MessageIn, {"text": "a\x00b"}, "text"),
        (MessageIn, {"text": "x", "request_information": "yes"}, "request_information"),
        (AssignIn, {"agent_id": "nope"}, "agent_id"),
        (RecategoriseIn, {"category": "spam"}, "category"),
        (RecategoriseIn, {"category": "Fraud"}, "category"),
        (RecategoriseIn, {"priority": "P1"}, "category"),
        (RecategoriseIn, {"category": "fraud", "priority": "P5"}, "priority"),
        (RecategoriseIn, {"category": "fraud", "priority": 1}, "priority"),
        (RecategoriseIn, {"category": "fraud", "note": "  "}, "note"),
        (RecategoriseIn, {"category": "fraud", "confidence": 1}, "confidence"),
    ],
)
def test_request_bodies_refuse_what_they_do_not_know(
    model: type[Any], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(body)
    assert [e["loc"][0] for e in raised.value.errors()] == [field]


@pytest.mark.parametrize("model", [ResolutionIn, StatusIn, MessageIn, AssignIn, RecategoriseIn])
def test_every_request_model_has_valid_examples(model: type[Any]) -> None:
    examples = model.model_json_schema()["examples"]
    assert examples
    for example in examples:
        model.model_validate(example)
