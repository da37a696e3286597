"""resolution's event handlers: decide in the domain, persist through the unit of work.

Each runs inside EventConsumer's transaction (see unit_of_work.bind), after the inbox
made it idempotent."""

from __future__ import annotations

import uuid
from typing import Any

from services.resolution import domain
from services.resolution.domain import AwaitOriginal, CaseRef, LinkTo, OpenCase
from services.resolution.unit_of_work import UnitOfWork
from shared.event_payloads import (
    ComplaintFeedbackReceived,
    ComplaintMessageAdded,
    ComplaintReceived,
    ComplaintStatusChanged,
    ComplaintTriaged,
)
from shared.events import TypedEnvelope, follow_up

PRODUCER = "resolution"


async def on_triaged(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    if not isinstance(event.payload, ComplaintTriaged):
        return
    p = event.payload
    # The group is named by its original: the duplicate's duplicate_of, or itself.
    await uow.cases.lock_group(p.duplicate_of or event.complaint_id)
    original_case = await uow.cases.find(p.duplicate_of) if p.duplicate_of else None
    stand_in = None if p.duplicate_of else await uow.cases.find_stand_in(event.complaint_id)
    match domain.decide(p, original_case=original_case, stand_in=stand_in):
        case OpenCase():
            if await _open(uow, event):
                await _link_waiting(
                    uow, event.complaint_id, CaseRef(event.complaint_id, event.ticket_no)
                )
        case LinkTo(case=case):
            await _link(uow, event, case)
            if p.duplicate_of is None:  # an original late after its stand-in opened
                await _link_waiting(uow, event.complaint_id, case)
        case AwaitOriginal():
            # Nothing opened, nothing said yet: the original's case answers it (or the
            # release in pending.py, if the original never comes).
            await uow.links.wait_for_original(event)


async def release_waiting(uow: UnitOfWork, original_id: uuid.UUID) -> None:
    """The original was waited for too long: the first waiting duplicate opens a case
    standing in for it, the others are linked to that case."""
    await uow.cases.lock_group(original_id)
    waiting = await uow.links.take_waiting(original_id)
    if not waiting:
        return  # the original arrived meanwhile, or another instance released them
    case = await uow.cases.find(original_id) or await uow.cases.find_stand_in(original_id)
    if case is None:
        first, waiting = waiting[0], waiting[1:]
        await _open(uow, first, stands_in_for=original_id)
        case = CaseRef(first.complaint_id, first.ticket_no)
    for duplicate in waiting:
        await _link(uow, duplicate, case)


async def _open(
    uow: UnitOfWork,
    event: TypedEnvelope[ComplaintTriaged],
    *,
    stands_in_for: uuid.UUID | None = None,
) -> bool:
    case = domain.new_case(event, stands_in_for=stands_in_for)
    if not await uow.cases.add(case):
        return False  # this complaint's case is open already
    p = event.payload
    await uow.clocks.start(case, event.occurred_at)
    await uow.history.add(event.complaint_id, "triaged", "system", domain.opened_note(p))
    _emit_status(uow, event, domain.case_opened(p))
    # After "opened", in the same transaction: the events stay in order.
    await uow.refunds.auto_refund(case, event.occurred_at, event.correlation_id)
    return True


async def _link(uow: UnitOfWork, event: TypedEnvelope[ComplaintTriaged], case: CaseRef) -> None:
    await uow.links.link(event.complaint_id, event.ticket_no, case)
    await uow.history.add(event.complaint_id, "triaged", "system", domain.linked_note(case))
    _emit_status(uow, event, domain.duplicate_linked(event.payload, case))


async def _link_waiting(uow: UnitOfWork, original_id: uuid.UUID, case: CaseRef) -> None:
    """Duplicates that arrived before their original join its group's case now, in the
    transaction that opened (or found) it."""
    for duplicate in await uow.links.take_waiting(original_id):
        await _link(uow, duplicate, case)


def _emit_status(
    uow: UnitOfWork, cause: TypedEnvelope[Any], status: ComplaintStatusChanged
) -> None:
    uow.emit(follow_up(cause, "complaint.status_changed", producer=PRODUCER, payload=status))


async def on_customer_event(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    """Follow-up messages go into the case history; poor feedback reopens the case.
    complaint.received opens nothing here: a case opens once triage has spoken."""
    p = event.payload
    if isinstance(p, ComplaintReceived):
        # The complaint's own words and evidence, for the agent (never contact details).
        await uow.messages.from_customer(
            event.complaint_id, event.complaint_id, p.received_at, p.description, p.evidence
        )
    elif isinstance(p, ComplaintMessageAdded):
        await _on_message(event, p, uow)
    elif isinstance(p, ComplaintFeedbackReceived):
        await _on_feedback(event, p, uow)


async def _on_message(event: TypedEnvelope[Any], p: ComplaintMessageAdded, uow: UnitOfWork) -> None:
    await uow.messages.from_customer(
        p.message_id, event.complaint_id, p.received_at, p.text, p.evidence
    )
    await uow.history.add_to_case(
        event.complaint_id, "customer", "Customer sent a follow-up message."
    )
    if await uow.cases.resume_from_awaiting(event.complaint_id):
        # The answer to a request for information: the internal clocks run again.
        await uow.clocks.resume_internal(event.complaint_id, p.received_at)
        status = domain.back_from_customer(await uow.clocks.views(event.complaint_id))
        await uow.history.add_to_case(
            event.complaint_id, "customer", status.note or "", status="in_progress"
        )
        _emit_status(uow, event, status)


async def _on_feedback(
    event: TypedEnvelope[Any], p: ComplaintFeedbackReceived, uow: UnitOfWork
) -> None:
    if not p.reopen:
        note = domain.feedback_note(p.score, reopened=False)
        await uow.history.add_to_case(event.complaint_id, "customer", note)
        return
    previous = await uow.cases.reopen(event.complaint_id)
    if previous is None:
        # No case of its own (a linked duplicate: its original's case carries on), or the
        # case is no longer resolved (an agent moved it on): noted, nothing reopened.
        note = domain.feedback_note(p.score, reopened=False)
        await uow.history.add_to_case(event.complaint_id, "customer", note)
        return
    note = domain.feedback_note(p.score, reopened=True)
    await uow.clocks.reopened(event.complaint_id, p.received_at)  # a fresh resolution clock
    await uow.history.add_to_case(event.complaint_id, "customer", note, status="reopened")
    clocks = await uow.clocks.views(event.complaint_id)
    _emit_status(uow, event, domain.reopened(previous, note, clocks))
