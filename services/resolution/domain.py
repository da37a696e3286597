"""resolution's decisions, pure (no I/O): what a triaged complaint does to the cases,
and what each change tells the customer. Handlers persist them through the unit of work.

Duplicate linking is deterministic: one case per duplicate group (an original and the
complaints triage found to repeat it), whichever of them arrives first.
- The original opens the case; duplicates already waiting for it are linked in the same
  transaction.
- A duplicate whose original's case is open is linked to it.
- A duplicate whose original's case is not here yet waits (a pending link): nothing is
  opened and nothing is said until the original's case opens.
- The original may never arrive (triaged before this service existed, or dead-lettered
  here). A consumer cannot wait for it, so a background release (pending.py) gives it
  a grace period: past it, the first waiting duplicate opens a case that stands in for
  the original, the other waiting ones are linked to that case, and so is the original
  if it shows up after all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.event_payloads import ClockView, ComplaintStatusChanged, ComplaintTriaged
from shared.events import TypedEnvelope

DEFAULT_JURISDICTION = "cn"


@dataclass(frozen=True)
class CaseRef:
    complaint_id: uuid.UUID
    ticket_no: str


@dataclass(frozen=True)
class NewCase:
    complaint_id: uuid.UUID
    tenant_id: uuid.UUID
    ticket_no: str
    category: str
    priority: str
    jurisdiction: str
    locale: str | None
    channel: str | None
    amount: Decimal | None
    currency: str | None
    transaction_ref: str | None
    received_at: datetime
    first_response_due: datetime
    resolution_due: datetime
    stands_in_for: uuid.UUID | None = None
    customer_id: str | None = None
    needs_review: bool = False

    @property
    def ref(self) -> CaseRef:
        return CaseRef(self.complaint_id, self.ticket_no)


@dataclass(frozen=True)
class OpenCase:
    pass


@dataclass(frozen=True)
class LinkTo:
    case: CaseRef


@dataclass(frozen=True)
class AwaitOriginal:
    original_id: uuid.UUID


Decision = OpenCase | LinkTo | AwaitOriginal


def decide(
    triaged: ComplaintTriaged, *, original_case: CaseRef | None, stand_in: CaseRef | None
) -> Decision:
    """`original_case`: the case of the complaint this one repeats, if it is open here.
    `stand_in`: a case a duplicate of this complaint opened because it waited in vain."""
    if triaged.duplicate_of is not None:
        if original_case is not None:
            return LinkTo(original_case)
        return AwaitOriginal(triaged.duplicate_of)
    if stand_in is not None:
        return LinkTo(stand_in)
    return OpenCase()


def new_case(
    event: TypedEnvelope[ComplaintTriaged], *, stands_in_for: uuid.UUID | None = None
) -> NewCase:
    p = event.payload
    tenant, customer = p.tenant, p.customer
    return NewCase(
        complaint_id=event.complaint_id,
        tenant_id=event.tenant_id,
        ticket_no=event.ticket_no,
        category=p.category,
        priority=p.priority,
        jurisdiction=(tenant.jurisdiction if tenant else None) or DEFAULT_JURISDICTION,
        locale=(customer.locale if customer else None) or (tenant.locale if tenant else None),
        channel=p.channel,
        amount=p.amount,
        currency=p.currency,
        transaction_ref=p.transaction_ref,
        received_at=p.received_at,
        first_response_due=p.first_response_due,
        resolution_due=p.resolution_due,
        stands_in_for=stands_in_for,
        customer_id=customer.id if customer else None,
        needs_review=p.needs_review,
    )


def opened_note(p: ComplaintTriaged) -> str:
    return f"Case opened: {p.category}, {p.priority}."


def linked_note(case: CaseRef) -> str:
    return f"Linked to {case.ticket_no}, which is already being handled."


def case_opened(p: ComplaintTriaged) -> ComplaintStatusChanged:
    return _triaged_status(p, reason="case_opened", note=opened_note(p))


def duplicate_linked(p: ComplaintTriaged, case: CaseRef) -> ComplaintStatusChanged:
    return _triaged_status(
        p,
        reason="duplicate_linked",
        note=linked_note(case),
        duplicate_of=case.complaint_id,
        duplicate_of_ticket_no=case.ticket_no,
    )


def _triaged_status(
    p: ComplaintTriaged, *, reason: str, note: str, **duplicate: object
) -> ComplaintStatusChanged:
    return ComplaintStatusChanged(
        status="triaged",
        previous_status="received",
        reason=reason,
        note=note,
        category=p.category,
        priority=p.priority,
        first_response_due=p.first_response_due,
        resolution_due=p.resolution_due,
        actor="system",
        **duplicate,  # type: ignore[arg-type]
    )


def feedback_note(score: int, *, reopened: bool) -> str:
    note = f"Customer rated the handling {score}/5."
    return f"{note} Reopened." if reopened else note


def back_from_customer(clocks: list[ClockView]) -> ComplaintStatusChanged:
    """The customer answered a request for information: the case runs again."""
    return ComplaintStatusChanged(
        status="in_progress",
        previous_status="awaiting_customer",
        reason="customer_replied",
        note="The customer replied; the case is being handled again.",
        actor="customer",
        clocks=clocks,
    )


def reopened(
    previous_status: str, note: str, clocks: list[ClockView] | None = None
) -> ComplaintStatusChanged:
    return ComplaintStatusChanged(
        status="reopened",
        previous_status=previous_status,
        reason="customer_feedback",
        note=note,
        actor="customer",
        clocks=clocks or [],
    )
