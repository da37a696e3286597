"""The pure parts of the scale-out run (bench/scaleout.py): log parsing, member
identification, the per-ticket accounting, on synthetic records."""

from __future__ import annotations

import json

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from bench.scaleout import (
    CountingAcks,
    Handling,
    LoggedAssignment,
    Member,
    account,
    assignments_in_log,
    decode_members,
    handlings_in_log,
    identify,
    join_leave_summary,
    records_seen_again,
    redelivery_kinds,
    settled,
    total_lag,
    triage_figures,
)

RECEIVED = "complaints.received.v1"
RESOLUTION = "complaints.resolution.v1"


def assigned_line(member_id: str, pairs: list[tuple[str, int]]) -> str:
    """A log line as faststream's rebalance listener writes it (JSON, one per line)."""
    parts = ", ".join(f"TopicPartition(topic='{t}', partition={p})" for t, p in pairs)
    event = f"Consumer {member_id} assigned to partitions: ({parts})"
    return json.dumps({"event": event, "level": "info", "logger": "faststream.kafka"})


def handled_line(topic: str, partition: int, offset: int, outcome: str = "processed") -> str:
    return json.dumps(
        {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "outcome": outcome,
            "event": "event_handled",
            "service": "notifier",
        }
    )


def test_the_last_assignment_line_names_the_member_and_its_partitions() -> None:
    log = "\n".join(
        [
            assigned_line("triage-aaa", [(RECEIVED, p) for p in (3, 1, 2, 0, 5, 4)]),
            '{"event": "service_started"}',
            assigned_line("triage-bbb", [(RECEIVED, 4), (RECEIVED, 0), (RECEIVED, 2)]),
        ]
    )
    found = assignments_in_log(log)
    assert [a.member_id for a in found] == ["triage-aaa", "triage-bbb"]
    assert found[0].partitions == {RECEIVED: [0, 1, 2, 3, 4, 5]}
    assert found[-1].partitions == {RECEIVED: [0, 2, 4]}


def test_an_empty_assignment_is_logged_as_no_partitions() -> None:
    [found] = assignments_in_log(assigned_line("notifier-ccc", []))
    assert found == LoggedAssignment("notifier-ccc", {})


def test_members_decode_their_assignment_per_topic() -> None:
    assignment = ConsumerProtocolMemberAssignment(
        0, [(RECEIVED, [5, 1, 3]), (RESOLUTION, [0, 2])], b""
    ).encode()
    [member] = decode_members([("notifier-x", "notifier", "/127.0.0.1", b"", assignment)])
    assert member.partitions == {RECEIVED: [1, 3, 5], RESOLUTION: [0, 2]}
    assert (member.client_id, member.client_host) == ("notifier", "/127.0.0.1")
    [joining] = decode_members([("notifier-y", "notifier", "/127.0.0.1", b"", b"")])
    assert joining.partitions == {}


def members() -> list[Member]:
    return [
        Member("triage-aaa", "triage", "/127.0.0.1", {RECEIVED: [0, 2, 4]}),
        Member("triage-bbb", "triage", "/127.0.0.1", {RECEIVED: [1, 3, 5]}),
    ]


def test_instances_are_told_apart_by_the_member_id_in_their_own_log() -> None:
    logged = {
        "instance-1": LoggedAssignment("triage-bbb", {RECEIVED: [1, 3, 5]}),
        "instance-2": LoggedAssignment("triage-aaa", {RECEIVED: [0, 2, 4]}),
    }
    found = identify(members(), logged)
    assert found["instance-1"].member.member_id == "triage-bbb"
    assert found["instance-2"].member.partitions == {RECEIVED: [0, 2, 4]}
    assert all(i.how == "own log" and i.log_confirms for i in found.values())
    assert settled("Stable", members(), found, instances=2)


def test_a_stale_log_is_identified_by_elimination_and_is_not_settled() -> None:
    logged = {
        "instance-1": LoggedAssignment("triage-old", {RECEIVED: [0, 1, 2, 3, 4, 5]}),
        "instance-2": LoggedAssignment("triage-aaa", {RECEIVED: [0, 2, 4]}),
    }
    found = identify(members(), logged)
    assert found["instance-1"].how == "elimination"
    assert found["instance-1"].member.member_id == "triage-bbb"
    assert not settled("Stable", members(), found, instances=2)


def test_a_log_disagreeing_with_the_broker_or_a_rebalance_in_progress_is_not_settled() -> None:
    logged = {
        "instance-1": LoggedAssignment("triage-bbb", {RECEIVED: [0, 1, 2, 3, 4, 5]}),
        "instance-2": LoggedAssignment("triage-aaa", {RECEIVED: [0, 2, 4]}),
    }
    found = identify(members(), logged)
    assert not found["instance-1"].log_confirms
    assert not settled("Stable", members(), found, instances=2)
    agreeing = identify(
        members(),
        {
            "instance-1": LoggedAssignment("triage-bbb", {RECEIVED: [1, 3, 5]}),
            "instance-2": LoggedAssignment("triage-aaa", {RECEIVED: [0, 2, 4]}),
        },
    )
    assert not settled("PreparingRebalance", members(), agreeing, instances=2)
    assert not settled("Stable", members(), agreeing, instances=1)  # one more than expected


def test_a_record_handled_twice_or_absorbed_by_the_inbox_counts_as_seen_again() -> None:
    log = "\n".join(
        [
            handled_line(RECEIVED, 0, 10),
            handled_line(RECEIVED, 0, 11),
            "not json at all, but event_handled",
            handled_line(RECEIVED, 0, 11),  # the other instance, after the rebalance
            handled_line(RESOLUTION, 2, 7, outcome="duplicate"),  # already applied
        ]
    )
    handled = handlings_in_log(log)
    assert len(handled) == 4
    assert records_seen_again(handled) == 2


def test_no_record_seen_again_in_a_clean_run() -> None:
    handled = [Handling(RECEIVED, p, o, "processed") for p in range(6) for o in range(5)]
    assert records_seen_again(handled) == 0


def test_counting_acks_counts_every_arrival_and_keeps_the_first_time() -> None:
    acks = CountingAcks({"WC-0": 0.5})
    acks.setdefault("WC-1", 1.0)
    acks.setdefault("WC-1", 2.0)
    assert acks["WC-1"] == 1.0 and acks["WC-0"] == 0.5
    assert acks.received == {"WC-1": 2}


def test_every_ticket_acknowledged_once_is_clean() -> None:
    tickets = ["WC-1", "WC-2"]
    once = dict.fromkeys(tickets, 1)
    counts = account(tickets, once, once, once)
    assert (counts.accepted, counts.acknowledged_once) == (2, 2)
    assert (counts.lost, counts.duplicated, counts.resends) == (0, 0, 0)


def test_an_acknowledgement_never_received_is_lost() -> None:
    counts = account(["WC-1", "WC-2"], {"WC-1": 1}, {"WC-1": 1, "WC-2": 1}, {"WC-1": 1, "WC-2": 1})
    assert counts.lost == 1 and counts.lost_tickets == ["WC-2"]


def test_a_missing_delivery_or_triage_row_is_lost() -> None:
    counts = account(["WC-1", "WC-2"], {"WC-1": 1, "WC-2": 1}, {"WC-2": 1}, {"WC-1": 1})
    assert counts.lost == 2 and counts.acknowledged_once == 0


def test_two_acknowledgement_rows_are_a_duplicate() -> None:
    counts = account(["WC-1"], {"WC-1": 2}, {"WC-1": 2}, {"WC-1": 1})
    assert counts.duplicated == 1 and counts.duplicated_delivery_rows == 1
    assert counts.resends == 0  # two events, not one sent again


def test_one_delivery_received_twice_is_a_duplicated_webhook_and_a_resend() -> None:
    counts = account(["WC-1"], {"WC-1": 2}, {"WC-1": 1}, {"WC-1": 1})
    assert counts.duplicated == 1 and counts.duplicated_webhooks == 1
    assert counts.resends == 1 and counts.duplicated_delivery_rows == 0


def test_triage_figures_run_from_the_intended_send_to_the_triage_row() -> None:
    sent = {"WC-1": 100.0, "WC-2": 100.5, "WC-3": 101.0}
    triaged = {"WC-1": 100.2, "WC-2": 101.5}  # WC-3 not triaged yet
    figures = triage_figures(sent, triaged)
    assert figures["triaged"] == 2
    assert figures["triage_latency_p50_ms"] == 1000.0  # nearest rank of [200, 1000]
    assert figures["triaged_per_s"] == round(2 / 1.5, 1)


def test_no_triage_rows_give_null_figures() -> None:
    figures = triage_figures({"WC-1": 1.0}, {})
    assert figures == {
        "triaged": 0,
        "triaged_per_s": None,
        "triage_latency_p50_ms": None,
        "triage_latency_p99_ms": None,
    }


def test_total_lag_sums_the_lag_gauge_over_partitions() -> None:
    text = "\n".join(
        [
            "# HELP kafka_consumer_lag Records behind",
            "# TYPE kafka_consumer_lag gauge",
            'kafka_consumer_lag{group="triage",partition="0",topic="t"} 7.0',
            'kafka_consumer_lag{group="triage",partition="1",topic="t"} 3.0',
            "# TYPE events_consumed_total counter",
            'events_consumed_total{outcome="processed",service="triage",topic="t"} 50.0',
        ]
    )
    assert total_lag(text + "\n") == 10


def handled(instance: str, at: str, offset: int, outcome: str = "processed") -> Handling:
    return Handling(RECEIVED, 0, offset, outcome, instance, f"2026-12-02T05:18:{at}Z")


def test_redeliveries_are_told_apart_by_who_applied_the_record_and_who_got_it_again() -> None:
    handlings = [
        handled("instance-1", "01", 10),
        handled("instance-1", "05", 10, "duplicate"),  # its commit lost in a rebalance
        handled("instance-2", "02", 11),
        handled("instance-1", "06", 11, "duplicate"),  # the partition moved
        handled("instance-1", "07", 12, "duplicate"),  # applied by a killed instance, unlogged
        handled("instance-1", "03", 13),  # seen once: not a redelivery
    ]
    kinds = redelivery_kinds(handlings)
    assert kinds == {"same_instance": 1, "moved": 1, "first_unlogged": 1}
    assert records_seen_again(handlings) == sum(kinds.values())


def test_the_logged_timestamps_order_handlings_across_logs() -> None:
    text = "\n".join(
        [
            json.dumps({**json.loads(handled_line(RECEIVED, 0, 5, "duplicate")), "timestamp": "b"}),
        ]
    )
    [late] = handlings_in_log(text, "instance-1")
    early = Handling(RECEIVED, 0, 5, "processed", "instance-2", "a")
    assert late.instance == "instance-1" and late.at == "b"
    assert redelivery_kinds([late, early]) == {"same_instance": 0, "moved": 1, "first_unlogged": 0}


def phase(kind: str, moved: int, same: int, resends: int = 0) -> dict[str, object]:
    kinds = {"records": moved + same, "same_instance": same, "moved": moved, "first_unlogged": 0}
    return {
        "kind": kind,
        "accepted": 10,
        "acknowledged_once": 10 - resends,
        "lost": 0,
        "duplicated": resends,
        "duplicated_delivery_rows": 0,
        "duplicated_webhooks": resends,
        "resends": resends,
        "redeliveries": moved + same + resends,
        "rebalances": {"triage": 1, "notifier": 1},
        "redelivered_records": {"triage": kinds, "notifier": dict(kinds, moved=0, records=same)},
    }


def test_the_kill_hit_its_window_only_where_the_victims_work_came_again() -> None:
    phases = [
        phase("sigterm_leave_then_join", moved=5, same=3),
        phase("kill_9_under_load", moved=0, same=4, resends=2),
    ]
    summary = join_leave_summary(phases)
    # triage: only its survivor's own batch came again; notifier: a webhook was resent.
    assert summary["kill_hit_window"] == {"triage": False, "notifier": True}
    assert (summary["accepted"], summary["rebalances"], summary["redeliveries"]) == (20, 4, 14)
    assert summary["duplicated"] == 2 and summary["duplicated_delivery_rows"] == 0
