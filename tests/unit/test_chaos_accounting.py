"""The chaos run's per-fault accounting (bench/chaos_accounting.py) on synthetic records."""

from __future__ import annotations

from bench.chaos_accounting import ACKNOWLEDGED, TRIAGED, Webhook, count_fault, refetched


def complete(ticket: str) -> list[Webhook]:
    """What one healthy ticket delivers: one acknowledgement, one triage update."""
    return [
        Webhook(ticket, ACKNOWLEDGED, f"{ticket}-ack"),
        Webhook(ticket, TRIAGED, f"{ticket}-tri"),
    ]


def test_every_ticket_once_counts_clean() -> None:
    tickets = ["WC-1", "WC-2", "WC-3"]
    hooks = [hook for ticket in tickets for hook in complete(ticket)]
    counts = count_fault(tickets, hooks, {ticket: 1 for ticket in tickets})
    assert (counts.accepted, counts.acknowledged_once, counts.triaged_once) == (3, 3, 3)
    assert (counts.lost, counts.duplicated, counts.resends) == (0, 0, 0)


def test_a_missing_acknowledgement_is_lost() -> None:
    hooks = [*complete("WC-1"), Webhook("WC-2", TRIAGED, "WC-2-tri")]
    counts = count_fault(["WC-1", "WC-2"], hooks, {"WC-1": 1, "WC-2": 1})
    assert counts.lost == 1 and counts.lost_tickets == ["WC-2"]
    assert counts.acknowledged == 1 and counts.acknowledged_once == 1


def test_a_missing_triage_row_is_lost() -> None:
    counts = count_fault(["WC-1"], complete("WC-1"), {})
    assert counts.lost == 1 and counts.triaged_once == 0


def test_two_event_ids_for_one_acknowledgement_are_a_duplicate() -> None:
    hooks = [*complete("WC-1"), Webhook("WC-1", ACKNOWLEDGED, "another-id")]
    counts = count_fault(["WC-1"], hooks, {"WC-1": 1})
    assert counts.duplicated == 1 and counts.duplicated_tickets == ["WC-1"]
    assert counts.acknowledged_once == 0 and counts.lost == 0 and counts.resends == 0


def test_the_same_event_id_again_is_a_resend_not_a_duplicate() -> None:
    hooks = [*complete("WC-1"), Webhook("WC-1", ACKNOWLEDGED, "WC-1-ack")]
    counts = count_fault(["WC-1"], hooks, {"WC-1": 1})
    assert counts.resends == 1
    assert counts.duplicated == 0 and counts.acknowledged_once == 1


def test_two_triage_rows_or_two_delivery_rows_are_a_duplicate() -> None:
    tickets = ["WC-1", "WC-2"]
    hooks = [*complete("WC-1"), *complete("WC-2")]
    counts = count_fault(
        tickets, hooks, {"WC-1": 2, "WC-2": 1}, delivery_rows={("WC-2", ACKNOWLEDGED): 2}
    )
    assert counts.duplicated_tickets == ["WC-1", "WC-2"]
    assert counts.triaged_once == 1  # WC-2's triage row is single


def test_webhooks_for_tickets_without_a_202_are_set_apart() -> None:
    counts = count_fault(["WC-1"], [*complete("WC-1"), *complete("WC-9")], {"WC-1": 1})
    assert counts.unexpected == 1 and counts.accepted == 1 and counts.duplicated == 0


def test_refetched_counts_what_was_taken_beyond_the_committed_offsets() -> None:
    taken = {("triage", "t", 0): 120, ("triage", "t", 1): 40, ("triage", "t", 2): 9}
    committed = {("triage", "t", 0): 100, ("triage", "t", 1): 40}
    # Partition 0: 20 taken and not committed; 1: nothing in flight; 2: no commit known.
    assert refetched(taken, committed) == 20


def test_refetched_ignores_a_stale_gauge_behind_the_committed_offset() -> None:
    # A partition another member took over and committed beyond what the victim once read.
    assert refetched({("g", "t", 0): 10}, {("g", "t", 0): 55}) == 0
