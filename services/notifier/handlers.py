"""Consumers of other services' events: where to send, and what to send. Each runs
inside EventConsumer's transaction (see unit_of_work.bind), after the inbox made it
idempotent."""

from __future__ import annotations

from typing import Any

from services.notifier.planning import acknowledgement, plan
from services.notifier.rendering import supported_locale
from services.notifier.unit_of_work import Recipient, UnitOfWork
from shared.event_payloads import ComplaintReceived, ComplaintStatusChanged
from shared.events import TypedEnvelope


async def on_received(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    """Remember the complaint's recipient (the tenant's webhook, the customer's locale)
    and queue its acknowledgement, in the same transaction: the acknowledgement goes out
    however long triage and resolution take."""
    p = event.payload
    if not isinstance(p, ComplaintReceived):
        return  # follow-up messages and feedback change no recipient
    added = await uow.recipients.add(
        Recipient(
            complaint_id=event.complaint_id,
            tenant_id=event.tenant_id,
            ticket_no=event.ticket_no,
            webhook_url=p.tenant.webhook_url,
            # A customer locale we do not write in falls back to the tenant's, not zh-CN.
            locale=supported_locale(p.customer.locale, p.tenant.locale),
            email=p.customer.email,
            received_at=p.received_at,
        )
    )
    if added:  # a second complaint.received for one complaint is not acknowledged twice
        await uow.deliveries.queue(event, [acknowledgement(p)])


async def on_resolution(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    """Queue the notifications this case event calls for, in order."""
    planned = plan(event)
    if planned:
        await uow.deliveries.queue(event, planned)


async def on_case_status(event: TypedEnvelope[Any], uow: Any) -> None:
    """The address's retention clock: resolved or closed starts it (a resolved case may
    stay resolved for good; "closed" need not follow), reopened or any other status stops
    it. `uow` is a NotifierUnitOfWork (its `contacts`)."""
    p = event.payload
    # "triaged" is a case's first status (nothing leads back to it): no clock to clear.
    if isinstance(p, ComplaintStatusChanged) and p.status != "triaged":
        await uow.contacts.case_status(event.complaint_id, p.status, event.occurred_at)


async def on_resolution_topic(event: TypedEnvelope[Any], uow: Any) -> None:
    """Everything notifier does with a complaints.resolution.v1 event, in one transaction."""
    await on_resolution(event, uow)
    await on_case_status(event, uow)
