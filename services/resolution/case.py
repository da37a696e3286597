"""The case aggregate's rules, pure (no I/O): the status machine, the outcome codes, the
money ledger and the automatic refund policy. commands.py loads the facts (under the
case's row lock), asks these functions, and persists what they allow.

The ledger is append-only. Its entries: `refund`, `compensation` (cash, coupon or points,
each with an amount and currency), `explanation` and `rejection` (a note, no amount), and
`reversal` (corrects one earlier entry, at most once; it carries the amount and currency
of the entry it reverses). A refund or cash compensation above the approval threshold of
its currency waits in `pending_approval` until an approver who is not its author approves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType


class Status(StrEnum):
    TRIAGED = "triaged"
    IN_PROGRESS = "in_progress"
    AWAITING_CUSTOMER = "awaiting_customer"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"


# Where a case may go from each status. An open case can be worked on, wait for the
# customer, be escalated or resolved; only a resolved case closes; a resolved or closed
# case can only be reopened. Staying in the same status is not a transition.
_OPEN = frozenset({Status.IN_PROGRESS, Status.AWAITING_CUSTOMER, Status.ESCALATED, Status.RESOLVED})
TRANSITIONS: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        Status.TRIAGED: _OPEN,
        Status.IN_PROGRESS: _OPEN - {Status.IN_PROGRESS},
        Status.AWAITING_CUSTOMER: _OPEN - {Status.AWAITING_CUSTOMER},
        Status.ESCALATED: _OPEN - {Status.ESCALATED},
        Status.RESOLVED: frozenset({Status.CLOSED, Status.REOPENED}),
        Status.CLOSED: frozenset({Status.REOPENED}),
        Status.REOPENED: _OPEN,
    }
)
# Statuses in which the case is still being worked on.
OPEN_STATUSES = frozenset(
    {
        Status.TRIAGED,
        Status.IN_PROGRESS,
        Status.AWAITING_CUSTOMER,
        Status.ESCALATED,
        Status.REOPENED,
    }
)


class TransitionRefused(Exception):
    """`requested` is not reachable from `current`; `allowed` lists what is (sorted)."""

    def __init__(self, current: str, requested: str, allowed: list[str]) -> None:
        self.current = current
        self.requested = requested
        self.allowed = allowed
        where = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"A case in status {current!r} cannot go to {requested!r}; allowed: {where}."
        )


def allowed_transitions(current: str) -> list[str]:
    try:
        return sorted(str(s) for s in TRANSITIONS[Status(current)])
    except ValueError:
        return []  # a status this code does not know: nothing is safe


def check_transition(current: str, requested: str) -> None:
    allowed = allowed_transitions(current)
    if requested not in allowed:
        raise TransitionRefused(current, requested, allowed)


# The outcome an agent gives when resolving, and its name in CFPB's company_response.
OUTCOMES: Mapping[str, str] = MappingProxyType(
    {
        "monetary_relief": "Closed with monetary relief",
        "non_monetary_relief": "Closed with non-monetary relief",
        "explanation": "Closed with explanation",
        "no_relief": "Closed",
    }
)


def company_response(outcome: str) -> str:
    """The CFPB company_response for an outcome code (KeyError for an unknown one)."""
    return OUTCOMES[outcome]


# ---------------------------------------------------------------------- the ledger

MONEY_KINDS = frozenset({"refund", "compensation"})
NOTE_KINDS = frozenset({"explanation", "rejection"})
KINDS = MONEY_KINDS | NOTE_KINDS | {"reversal"}
COMPENSATION_TYPES = frozenset({"cash", "coupon", "points"})

RECORDED = "recorded"
PENDING_APPROVAL = "pending_approval"
APPROVED = "approved"


class LedgerRefused(Exception):
    """A ledger rule refuses the entry or the approval. `status` is the HTTP answer it
    deserves (422: the request is wrong; 409: the ledger's state forbids it; 403: this
    agent may not); `field` names the body field at fault, when there is one."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


@dataclass(frozen=True)
class Entry:
    """One ledger row as the rules see it."""

    id: uuid.UUID
    kind: str
    amount: Decimal | None
    currency: str | None
    decided_by: str
    requires_approval: bool = False
    approved_by: str | None = None
    reverses: uuid.UUID | None = None
    compensation_type: str | None = None


@dataclass(frozen=True)
class Ledger:
    """A case's ledger: its disputed amount and currency, and its entries."""

    disputed_amount: Decimal | None
    disputed_currency: str | None
    entries: tuple[Entry, ...] = ()

    def reversed_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(e.reverses for e in self.entries if e.reverses is not None)

    def find(self, entry_id: uuid.UUID) -> Entry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def refunded(self) -> Decimal:
        """Refunds recorded, approved or pending approval, minus those reversed: what the
        customer has been or may yet be paid back."""
        gone = self.reversed_ids()
        return sum(
            (
                e.amount or Decimal(0)
                for e in self.entries
                if e.kind == "refund" and e.id not in gone
            ),
            Decimal(0),
        )

    def has_refund(self) -> bool:
        gone = self.reversed_ids()
        return any(e.kind == "refund" and e.id not in gone for e in self.entries)


def entry_status(entry: Entry) -> str:
    if not entry.requires_approval:
        return RECORDED
    return APPROVED if entry.approved_by is not None else PENDING_APPROVAL


@dataclass(frozen=True)
class Proposed:
    """An entry an agent (or the automatic policy) wants to record."""

    kind: str
    note: str
    amount: Decimal | None = None
    currency: str | None = None
    compensation_type: str | None = None
    reverses: uuid.UUID | None = None


@dataclass(frozen=True)
class Accepted:
    """What the ledger will store for a Proposed entry."""

    kind: str
    note: str
    amount: Decimal | None
    currency: str | None
    compensation_type: str | None
    reverses: uuid.UUID | None
    requires_approval: bool

    @property
    def status(self) -> str:
        return PENDING_APPROVAL if self.requires_approval else RECORDED


def needs_approval(
    kind: str,
    amount: Decimal | None,
    currency: str | None,
    thresholds: Mapping[str, Decimal],
    compensation_type: str | None = None,
) -> bool:
    """A refund (or cash compensation: money leaves just the same) above the threshold
    of its currency; a currency without a threshold always needs approval."""
    pays_out = kind == "refund" or (kind == "compensation" and compensation_type == "cash")
    if not pays_out or amount is None or currency is None:
        return False
    threshold = thresholds.get(currency)
    return threshold is None or amount > threshold


def check_entry(ledger: Ledger, proposed: Proposed, thresholds: Mapping[str, Decimal]) -> Accepted:
    """The entry as it will be stored, or LedgerRefused."""
    kind = proposed.kind
    if kind not in KINDS:
        raise LedgerRefused(422, f"Unknown resolution kind {kind!r}.", "kind")
    if not proposed.note.strip():
        raise LedgerRefused(422, "A resolution needs a note.", "note")
    if kind != "compensation" and proposed.compensation_type is not None:
        raise LedgerRefused(
            422, "compensation_type is only for kind compensation.", "compensation_type"
        )
    if kind != "reversal" and proposed.reverses is not None:
        raise LedgerRefused(422, "reverses is only for kind reversal.", "reverses")
    if kind in NOTE_KINDS or kind == "reversal":
        for name in ("amount", "currency"):
            if getattr(proposed, name) is not None:
                what = "the entry it reverses" if kind == "reversal" else "no amount"
                raise LedgerRefused(422, f"A {kind} carries {what}: no {name}.", name)
    if kind == "reversal":
        return _check_reversal(ledger, proposed)
    if kind in NOTE_KINDS:
        return _accepted(proposed, requires_approval=False)
    return _check_money(ledger, proposed, thresholds)


def _accepted(proposed: Proposed, *, requires_approval: bool, **override: object) -> Accepted:
    values = {
        "kind": proposed.kind,
        "note": proposed.note,
        "amount": proposed.amount,
        "currency": proposed.currency,
        "compensation_type": proposed.compensation_type,
        "reverses": proposed.reverses,
        "requires_approval": requires_approval,
    }
    values.update(override)
    return Accepted(**values)  # type: ignore[arg-type]


def _check_money(ledger: Ledger, proposed: Proposed, thresholds: Mapping[str, Decimal]) -> Accepted:
    amount, currency = proposed.amount, proposed.currency
    if amount is None:
        raise LedgerRefused(422, f"A {proposed.kind} needs an amount.", "amount")
    if amount <= 0:
        raise LedgerRefused(422, "The amount must be greater than zero.", "amount")
    if currency is None:
        raise LedgerRefused(422, f"A {proposed.kind} needs a currency.", "currency")
    if proposed.kind == "compensation":
        if proposed.compensation_type not in COMPENSATION_TYPES:
            raise LedgerRefused(
                422,
                "A compensation needs a compensation_type: cash, coupon or points.",
                "compensation_type",
            )
    else:  # refund
        if ledger.disputed_currency is not None and currency != ledger.disputed_currency:
            raise LedgerRefused(
                422,
                f"A refund is paid in the disputed currency {ledger.disputed_currency}, "
                f"not {currency}.",
                "currency",
            )
        cap = ledger.disputed_amount
        if cap is not None:
            if amount > cap:
                raise LedgerRefused(
                    422, f"A refund cannot exceed the disputed amount {cap} {currency}.", "amount"
                )
            already = ledger.refunded()
            if already + amount > cap:
                raise LedgerRefused(
                    422,
                    f"Refunds would total {already + amount} {currency}, above the disputed "
                    f"amount {cap} (already refunded or pending: {already}).",
                    "amount",
                )
    # No disputed amount means no cap to check a refund against: a second pair of eyes
    # (an approver) stands in for it, whatever the amount.
    uncapped_refund = proposed.kind == "refund" and ledger.disputed_amount is None
    return _accepted(
        proposed,
        requires_approval=uncapped_refund
        or needs_approval(proposed.kind, amount, currency, thresholds, proposed.compensation_type),
    )


def _check_reversal(ledger: Ledger, proposed: Proposed) -> Accepted:
    if proposed.reverses is None:
        raise LedgerRefused(422, "A reversal names the entry it reverses.", "reverses")
    target = ledger.find(proposed.reverses)
    if target is None:
        raise LedgerRefused(422, "reverses: no such entry on this case.", "reverses")
    if target.kind == "reversal":
        raise LedgerRefused(422, "A reversal cannot itself be reversed.", "reverses")
    if target.id in ledger.reversed_ids():
        raise LedgerRefused(409, "This entry was already reversed.", "reverses")
    # The reversal carries what it takes back, so a payments system can undo it.
    return _accepted(
        proposed,
        requires_approval=False,
        amount=target.amount,
        currency=target.currency,
        compensation_type=target.compensation_type,
    )


@dataclass(frozen=True)
class Approver:
    id: str
    approver: bool


def check_approval(ledger: Ledger, entry: Entry, agent: Approver) -> None:
    """An entry waiting for approval may be approved by an approver who did not record
    it. LedgerRefused 403 (who) or 409 (the entry is not waiting)."""
    if not agent.approver:
        raise LedgerRefused(403, "Only an agent with the approver role can approve.")
    if entry.decided_by == agent.id:
        raise LedgerRefused(403, "An agent cannot approve a resolution they recorded.")
    if entry.id in ledger.reversed_ids():
        raise LedgerRefused(409, "This resolution was reversed; there is nothing to approve.")
    if entry_status(entry) != PENDING_APPROVAL:
        raise LedgerRefused(409, f"This resolution is {entry_status(entry)}, not pending approval.")


# ---------------------------------------------------------- automatic refunds

AUTO = "auto"
AUTO_CATEGORY = "duplicate_charge"


@dataclass(frozen=True)
class AutoRefundFacts:
    category: str
    amount: Decimal | None
    currency: str | None
    transaction_ref: str | None
    customer_id: str | None
    # The last automatic refund of the same tenant and customer, if any.
    last_auto_refund_at: datetime | None
    ledger: Ledger


@dataclass(frozen=True)
class AutoRefundDecision:
    refund: bool
    amount: Decimal | None
    currency: str | None
    # Why: on a refund, every rule it passed; otherwise the first rule that stopped it.
    reasons: list[str] = field(default_factory=list)


def decide_auto_refund(
    facts: AutoRefundFacts,
    *,
    limits: Mapping[str, Decimal],
    once_per_days: int,
    thresholds: Mapping[str, Decimal],
    now: datetime,
) -> AutoRefundDecision:
    """CONTRACT section 6: a duplicate_charge naming a transaction_ref and an amount
    within the automatic limit of its currency is refunded in full at once, unless the
    customer had an automatic refund within `once_per_days`, or the complaint was
    already refunded. Never one that would need an approver."""
    reasons: list[str] = []

    def no(reason: str) -> AutoRefundDecision:
        return AutoRefundDecision(False, None, None, [reason])

    if facts.category != AUTO_CATEGORY:
        return no(f"category {facts.category} is not {AUTO_CATEGORY}")
    reasons.append(f"category {AUTO_CATEGORY}")
    if not facts.transaction_ref:
        return no("no transaction_ref")
    reasons.append(f"transaction_ref {facts.transaction_ref} given")
    amount, currency = facts.amount, facts.currency
    if amount is None or currency is None or amount <= 0:
        return no("no disputed amount and currency")
    limit = limits.get(currency)
    if limit is None:
        return no(f"no automatic refund limit for {currency}")
    if amount > limit:
        return no(f"amount {amount} {currency} above the automatic limit {limit}")
    reasons.append(f"amount {amount} {currency} within the automatic limit {limit}")
    if needs_approval("refund", amount, currency, thresholds):
        return no(f"amount {amount} {currency} needs an approver")
    if not facts.customer_id:
        return no("no customer id to apply the once-per-customer rule")
    window = timedelta(days=once_per_days)
    if facts.last_auto_refund_at is not None and facts.last_auto_refund_at > now - window:
        return no(f"customer already had an automatic refund in the last {once_per_days} days")
    reasons.append(f"no automatic refund for this customer in the last {once_per_days} days")
    if facts.ledger.has_refund():
        return no("complaint already refunded")
    reasons.append("complaint not refunded yet")
    # The disputed amount itself: never above it, and the sum rule still holds.
    try:
        check_entry(facts.ledger, Proposed("refund", "auto", amount, currency), thresholds)
    except LedgerRefused as refused:
        return no(refused.detail)
    return AutoRefundDecision(True, amount, currency, reasons)


def ledger_of(
    disputed_amount: Decimal | None, disputed_currency: str | None, entries: Iterable[Entry]
) -> Ledger:
    return Ledger(disputed_amount, disputed_currency, tuple(entries))
