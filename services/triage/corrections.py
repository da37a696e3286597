"""Triage learning from agents: an agent's correction of triage's decision
(`complaint.recategorised` on `complaints.resolution.v1`) becomes a labelled example.

- `on_resolution_event`, the consumer of `complaints.resolution.v1` (services/triage/app.py
  wires it), records the example in `labelled_examples` from what triage classified
  (`triaged_complaints`: the description, channel, amount and currency it read) and the
  agent's label. Every other event type on that topic is ignored. It runs inside
  EventConsumer's transaction after the inbox claimed the event, so a redelivery does
  nothing; the table's primary key is the complaint, so a second correction updates the
  example (the agent's latest word is the label) rather than adding one.
- `load_corrections` reads them back for the trainer, shaped like a line of the labelled
  JSON Lines files (tests/data/triage_labelled.jsonl).

The pure parts (`labelled_example`, `correction_row`) take and give plain values.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from shared.db import connect
from shared.event_payloads import ComplaintRecategorised
from shared.events import TypedEnvelope
from shared.logging import get_logger
from shared.money import money_string as decimal_string

if TYPE_CHECKING:
    from services.triage.unit_of_work import UnitOfWork

log = get_logger(__name__)


@dataclass(frozen=True)
class Classified:
    """What triage classified for one complaint and what it decided (triaged_complaints).
    `description` is None for a complaint triaged before the text was kept."""

    complaint_id: uuid.UUID
    tenant_id: uuid.UUID
    ticket_no: str
    description: str | None
    channel: str | None
    amount: Decimal | None
    currency: str | None
    category: str
    priority: str


@dataclass(frozen=True)
class LabelledExample:
    """One row of labelled_examples: the complaint's text and facts, the agent's label,
    and triage's own decision it corrects."""

    complaint_id: uuid.UUID
    tenant_id: uuid.UUID
    ticket_no: str
    description: str
    channel: str | None
    amount: Decimal | None
    currency: str | None
    category: str
    priority: str
    previous_category: str
    previous_priority: str
    corrected_by: str
    event_id: uuid.UUID
    recorded_at: datetime


def labelled_example(
    event: TypedEnvelope[ComplaintRecategorised], classified: Classified | None
) -> LabelledExample | None:
    """The example a correction makes, or None when triage has nothing to learn it from:
    no complaint of this id and tenant classified here, or one triaged before the text
    was kept. `previous_*` is triage's decision, not the case's value before this
    correction (the two differ after a second correction)."""
    if classified is None or classified.tenant_id != event.tenant_id:
        return None
    if not classified.description:
        return None
    p = event.payload
    return LabelledExample(
        complaint_id=event.complaint_id,
        tenant_id=event.tenant_id,
        ticket_no=event.ticket_no,
        description=classified.description,
        channel=classified.channel,
        amount=classified.amount,
        currency=classified.currency,
        category=p.category,
        priority=p.priority,
        previous_category=classified.category,
        previous_priority=classified.priority,
        corrected_by=p.corrected_by,
        event_id=event.event_id,
        recorded_at=event.occurred_at,
    )


async def on_resolution_event(event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
    """complaints.resolution.v1 in triage: only complaint.recategorised matters."""
    if not isinstance(event.payload, ComplaintRecategorised):
        return
    classified = await uow.complaints.classified(event.complaint_id)
    example = labelled_example(event, classified)
    if example is None:
        # Nothing to learn from: logged (ids only, never text) and acknowledged.
        log.info(
            "correction_not_recorded",
            complaint_id=str(event.complaint_id),
            reason="not triaged here" if classified is None else "no text kept",
        )
        return
    await uow.examples.record(example)


def correction_row(example: LabelledExample) -> dict[str, Any]:
    """One example as a line of the labelled JSON Lines files: `id` (the complaint id),
    `description`, `channel`, `amount` and `currency` when known, `expected_category`,
    `expected_priority`."""
    row: dict[str, Any] = {
        "id": str(example.complaint_id),
        "description": example.description,
        "channel": example.channel or "",
    }
    if example.amount is not None:
        row["amount"] = decimal_string(example.amount)
    if example.currency:
        row["currency"] = example.currency
    row["expected_category"] = example.category
    row["expected_priority"] = example.priority
    return row


_EXAMPLE_COLUMNS = (
    "complaint_id, tenant_id, ticket_no, description, channel, amount, currency, category, "
    "priority, previous_category, previous_priority, corrected_by, event_id, recorded_at"
)


async def load_corrections(dsn: str, schema: str = "triage") -> list[dict[str, Any]]:
    """Every labelled example, oldest correction first, as JSON Lines rows (see
    correction_row) for the trainer. Reads triage's schema on a connection of its own."""
    conn = await connect(dsn, schema, purpose="corrections")
    try:
        rows = await conn.fetch(
            f"SELECT {_EXAMPLE_COLUMNS} FROM labelled_examples ORDER BY recorded_at, complaint_id"
        )
    finally:
        await conn.close()
    return [correction_row(LabelledExample(**dict(r))) for r in rows]
