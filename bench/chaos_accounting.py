"""The pure accounting of one chaos fault (bench/chaos.py): what the tenant's webhook saw
and what the services stored, per ticket, for the complaints intake accepted with a 202.

No I/O here, so tests/unit/test_chaos_accounting.py feeds it synthetic records.

- acknowledged once: exactly one `complaint.acknowledged` event id arrived for the ticket;
- a resend is the same event id delivered again (at-least-once delivery, legitimate);
- duplicated: two *different* event ids for one notification type of one ticket (the
  customer was told the same thing twice), or more than one triage row or notifier
  delivery row for it;
- lost: an accepted ticket without its acknowledgement, its triage row or its
  `complaint.triaged` webhook once the wait is over.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ACKNOWLEDGED = "complaint.acknowledged"
TRIAGED = "complaint.triaged"


@dataclass(frozen=True)
class Webhook:
    """One delivery the receiver answered 2xx: the ticket, the type, X-Complaints-Event-Id."""

    ticket_no: str
    type: str
    event_id: str


@dataclass
class FaultCounts:
    accepted: int = 0
    acknowledged: int = 0  # tickets with at least one acknowledgement
    acknowledged_once: int = 0
    triaged_once: int = 0  # one triage row and one `complaint.triaged` event id
    lost: int = 0
    duplicated: int = 0
    resends: int = 0  # same event id delivered again, any type
    lost_tickets: list[str] = field(default_factory=list)
    duplicated_tickets: list[str] = field(default_factory=list)
    unexpected: int = 0  # webhooks for tickets never answered 202 (e.g. the 202 was cut off)


def count_fault(
    accepted: Iterable[str],
    webhooks: Iterable[Webhook],
    triage_rows: Mapping[str, int],
    delivery_rows: Mapping[tuple[str, str], int] | None = None,
) -> FaultCounts:
    """Counts one fault. `triage_rows`: ticket -> rows in triage.triaged_complaints;
    `delivery_rows`: (ticket, type) -> webhook rows in notifier.deliveries."""
    tickets = set(accepted)
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    deliveries: dict[tuple[str, str, str], int] = defaultdict(int)
    unexpected: set[str] = set()
    for hook in webhooks:
        if hook.ticket_no not in tickets:
            unexpected.add(hook.ticket_no)
            continue
        ids[(hook.ticket_no, hook.type)].add(hook.event_id)
        deliveries[(hook.ticket_no, hook.type, hook.event_id)] += 1

    counts = FaultCounts(accepted=len(tickets), unexpected=len(unexpected))
    counts.resends = sum(n - 1 for n in deliveries.values())
    doubled = _duplicated_tickets(ids, triage_rows, delivery_rows or {})
    for ticket in sorted(tickets):
        acks = len(ids.get((ticket, ACKNOWLEDGED), ()))
        triaged = len(ids.get((ticket, TRIAGED), ()))
        rows = triage_rows.get(ticket, 0)
        counts.acknowledged += acks >= 1
        counts.acknowledged_once += acks == 1
        counts.triaged_once += rows == 1 and triaged == 1
        if acks == 0 or triaged == 0 or rows == 0:
            counts.lost += 1
            counts.lost_tickets.append(ticket)
        if ticket in doubled:
            counts.duplicated += 1
            counts.duplicated_tickets.append(ticket)
    return counts


def _duplicated_tickets(
    ids: Mapping[tuple[str, str], set[str]],
    triage_rows: Mapping[str, int],
    delivery_rows: Mapping[tuple[str, str], int],
) -> set[str]:
    """Tickets with one fact told or stored twice."""
    doubled = {ticket for ticket, rows in triage_rows.items() if rows > 1}
    doubled |= {ticket for (ticket, _), event_ids in ids.items() if len(event_ids) > 1}
    doubled |= {ticket for (ticket, _), rows in delivery_rows.items() if rows > 1}
    return doubled


# A partition of a consumer group: (group, topic, partition).
GroupPartition = tuple[str, str, int]


def refetched(taken: Mapping[GroupPartition, int], committed: Mapping[GroupPartition, int]) -> int:
    """Records a killed consumer had taken but not committed: its group delivers them again
    after the restart (whether the killed process's transaction had committed them, and an
    inbox absorbs them, or had not, and they are applied for the first time).

    `taken` is the victim's kafka_consumer_fetched_offset as last scraped before the kill,
    a lower bound of how far it had read; `committed` is the group's offsets read after the
    kill. A partition with no committed offset counts nothing: a lower bound again.
    """
    return sum(
        max(0, offset - committed[partition])
        for partition, offset in taken.items()
        if partition in committed
    )
