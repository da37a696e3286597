"""The bench's pure parts: /proc parsing and CPU accounting, acknowledgement percentiles,
the soak's minutes, the latency curve's knee, PostgreSQL's CPU by connection, the wait
for a quiet stack and the CPU summaries (bench/cpu.py, loadgen.py, soak.py, curve.py,
statements.py, settle.py, run.py)."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from array import array
from pathlib import Path

import pytest

from bench import cpu, curve, settle, soak, statements
from bench.loadgen import AckLatencies, LoadResult, Tickets, ack_latencies, rounded_ms
from bench.run import cpu_summary

# Real lines from /proc: a postmaster, one of its backends, and a command name holding
# spaces and parentheses (which a naive split would misread).
POSTMASTER = (
    "11005 (postgres) S 1 11005 11005 0 -1 4194304 5813 100952 0 3 0 17 525 180 20 0 1 0 "
    "2656837 222330880 7323 18446744073709551615 94097345630208 94097351043497 "
    "140725876583120 0 0 0 0 24129536 84487 1 0 0 17 0 0 0 0 0 0 94097353509040 "
    "94097353726346 94098004262912 140725876590989 140725876591098 140725876591098 "
    "140725876592596 0"
)
BACKEND = (
    "11006 (postgres) S 11005 11006 11006 0 -1 4194368 1417 0 0 0 1 6 0 0 20 0 1 0 "
    "2656844 222670848 18099 18446744073709551615 94097345630208 94097351043497 "
    "140725876583120 0 0 0 4194304 24145920 536873479 1 0 0 17 1 0 0 0 0 0 "
    "94097353509040 94097353726346 94098004262912 140725876590989 140725876591098 "
    "140725876591098 140725876592596 0"
)
ODD_NAME = (
    "4242 (my (odd) proc) R 4000 4242 4242 0 -1 4194304 10 0 0 0 250 40 7 3 20 0 4 0 "
    "99999 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
)
PROC_STAT_CPU = "cpu  2202011 1539 363252 2655773 30061 0 52700 63849 0 0"


def stat(
    pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0
) -> cpu.ProcStat:
    return cpu.ProcStat(pid, "p", ppid, utime, stime, cutime, cstime, starttime=pid * 10)


def test_a_stat_line_gives_its_cpu_ticks_and_parent() -> None:
    postmaster = cpu.parse_stat(POSTMASTER)
    assert (postmaster.pid, postmaster.comm, postmaster.ppid) == (11005, "postgres", 1)
    assert (postmaster.utime, postmaster.stime) == (0, 17)
    assert (postmaster.cutime, postmaster.cstime) == (525, 180)
    assert postmaster.starttime == 2656837
    assert cpu.parse_stat(BACKEND).ppid == 11005


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    odd = cpu.parse_stat(ODD_NAME)
    assert (odd.pid, odd.comm, odd.ppid) == (4242, "my (odd) proc", 4000)
    assert (odd.utime, odd.stime, odd.cutime, odd.cstime) == (250, 40, 7, 3)
    assert odd.starttime == 99999


def test_machine_busy_ticks_leave_out_idle_and_iowait() -> None:
    assert cpu.machine_busy_ticks(PROC_STAT_CPU) == 2202011 + 1539 + 363252 + 52700 + 63849
    with pytest.raises(ValueError):
        cpu.machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8 9 10")


def test_a_tree_is_the_root_its_live_children_and_its_reaped_ones() -> None:
    stats = {
        1: stat(1, 0, 100, 100),  # not a child: ignored
        10: stat(10, 1, 5, 5, cutime=30, cstime=10),
        11: stat(11, 10, 20, 2),
        12: stat(12, 10, 7, 1),
        13: stat(13, 11, 1000, 0),  # a grandchild: not PostgreSQL's shape, not counted
    }
    assert cpu.tree_ticks(10, stats) == 5 + 5 + 30 + 10 + 22 + 8


def test_a_child_that_exits_in_the_interval_is_counted_once() -> None:
    # Before: backend 11 has used 50 ticks. It then uses 20 more and exits (reaped: its
    # 70 land in the postmaster's cutime); backend 12 starts and uses 9.
    before = {10: stat(10, 1, 0, 0), 11: stat(11, 10, 40, 10)}
    after = {10: stat(10, 1, 0, 0, cutime=60, cstime=10), 12: stat(12, 10, 9, 0)}
    assert cpu.tree_ticks(10, after) - cpu.tree_ticks(10, before) == 20 + 9


def snapshot(
    ticks: dict[str, int], started: dict[str, int], loadgen_s: float = 0.0
) -> cpu.Snapshot:
    return cpu.Snapshot(ticks, started, loadgen_s, machine_ticks=0, wall_s=0.0)


def test_cpu_seconds_per_process_and_none_for_a_restarted_one() -> None:
    tick = cpu.TICKS_PER_S
    before = snapshot({"intake": 10 * tick, "kafka": 5 * tick}, {"intake": 1, "kafka": 2}, 1.0)
    after = snapshot({"intake": 12 * tick, "kafka": tick}, {"intake": 1, "kafka": 3}, 1.5)
    seconds = cpu.cpu_seconds(before, after)
    assert seconds == {"intake": 2.0, "kafka": None, "loadgen": 0.5}


def test_per_complaint_ms_sums_what_was_measured() -> None:
    result = cpu.per_complaint_ms({"intake": 2.0, "kafka": None, "loadgen": 0.5}, 1000)
    assert result == {"intake": 2.0, "loadgen": 0.5, "total": 2.5}
    assert cpu.per_complaint_ms({"intake": 2.0}, 0) == {}


def test_the_postmaster_pid_is_the_first_line_of_postmaster_pid() -> None:
    text = "11005\n/work/main/.run/pgdata\n1796187017\n55432\n/tmp\n127.0.0.1\n"
    assert cpu.postmaster_pid_from_file(text) == 11005


def test_no_local_postmaster_without_its_pid_file(tmp_path: Path) -> None:
    assert cpu.local_postmaster(tmp_path, backend_pid=1) is None


def test_a_meter_reads_this_process_at_both_ends() -> None:
    import os

    with cpu.CpuMeter({"self": os.getpid()}) as meter:
        sum(i * i for i in range(200_000))
    report = meter.report(100)
    assert report["cpu_s"]["self"] is not None and report["cpu_s"]["self"] >= 0
    assert report["cpu_ms_per_complaint"]["total"] >= report["cpu_ms_per_complaint"]["self"]


def test_tickets_keep_only_the_accepted_ones() -> None:
    tickets = Tickets()
    tickets(0, 202, b'{"complaint_id": "c", "ticket_no": "T-1"}')
    tickets(1, 503, b'{"title": "unavailable"}')
    assert tickets.by_request == {0: "T-1"}


def test_a_percentile_is_exact_when_every_complaint_was_acknowledged() -> None:
    latencies = AckLatencies(exact_ms=[float(v) for v in range(1, 101)])
    assert latencies.percentile(50) == (51.0, False)
    assert latencies.percentile(99) == (100.0, False)


def test_an_unacknowledged_complaint_makes_a_percentile_it_may_raise_a_lower_bound() -> None:
    latencies = AckLatencies(exact_ms=[float(v) for v in range(1, 100)], unacknowledged_ms=[5.0])
    # The one waited 5 ms so far could truly be anywhere above: p99 may be it.
    assert latencies.percentile(99) == (99.0, True)
    # One waited longer than every acknowledgement cannot move the median.
    latencies = AckLatencies(exact_ms=[float(v) for v in range(1, 100)], unacknowledged_ms=[1e6])
    assert latencies.percentile(50) == (51.0, False)
    assert latencies.percentile(99) == (1e6, True)


def test_ack_latencies_are_from_the_intended_send_time() -> None:
    sent_at = array("d", [10.0, 11.0, 12.0])
    latencies = ack_latencies(sent_at, {0: "a", 2: "c"}, {"a": 10.25}, gave_up_at=13.0)
    assert latencies.exact_ms == [250.0]
    assert latencies.unacknowledged_ms == [1000.0]
    assert (latencies.accepted, latencies.acknowledged) == (2, 1)


def test_no_latency_is_null_not_nan() -> None:
    assert rounded_ms(math.nan) is None
    assert rounded_ms(12.345) == 12.3


def soak_load(seconds: int, rate: int) -> LoadResult:
    result = LoadResult(sent=seconds * rate)
    result.sent_at.extend(100.0 + i / rate for i in range(seconds * rate))
    return result


def test_the_soak_buckets_by_minute_of_intended_send_time() -> None:
    result = soak_load(seconds=140, rate=2)  # minutes 0, 1 and a third of 2
    tickets = {i: f"T-{i}" for i in range(result.sent) if i % 10}  # every 10th refused
    # Acknowledged 0.1 s after the intended time in minute 0, 2 s after in minute 1;
    # minute 2 not at all.
    acked = {
        t: result.sent_at[i] + (0.1 if i < 120 else 2.0) for i, t in tickets.items() if i < 240
    }
    rows = soak.per_minute(result, tickets, acked, gave_up_at=result.sent_at[-1] + 1)
    assert [r["sent"] for r in rows] == [120, 120, 40]
    assert [r["accepted"] for r in rows] == [108, 108, 36]
    assert [r["acknowledged"] for r in rows] == [108, 108, 0]
    assert rows[0]["p50_ms"] == pytest.approx(100.0) and not rows[0]["p99_lower_bound"]
    assert rows[1]["p99_ms"] == pytest.approx(2000.0)
    assert rows[2]["p50_lower_bound"] and rows[2]["p99_lower_bound"]
    record = {"offered_per_s": 2, "minutes": 2.33, "per_minute": rows}
    # The third-of-a-minute sliver is not "the last minute"; minute 1 is.
    assert soak.summary(record) == {
        "offered_per_s": 2,
        "minutes": 2.33,
        "p50_first_ms": rows[0]["p50_ms"],
        "p50_last_ms": rows[1]["p50_ms"],
        "p99_first_ms": rows[0]["p99_ms"],
        "p99_last_ms": rows[1]["p99_ms"],
        "lower_bounds": [],
    }


def test_a_soak_that_sent_nothing_summarises_to_nulls() -> None:
    summary = soak.summary({"offered_per_s": 100, "minutes": 1, "per_minute": []})
    assert summary["p99_last_ms"] is None and summary["lower_bounds"] == []


def point(
    rate: float, p99: float | None, acked: int, accepted: int, bound: bool = False
) -> dict[str, object]:
    return {
        "offered_per_s": rate,
        "p50_ms": p99,
        "p99_ms": p99,
        "acknowledged": acked,
        "accepted": accepted,
        "sent": accepted,
        "p99_lower_bound": bound,
    }


def test_the_knee_is_the_highest_rate_under_the_limit_with_all_acknowledged() -> None:
    points = [
        point(25, 120, 375, 375),
        point(50, 250, 750, 750),
        point(100, 280, 1400, 1500),  # fast enough, but not all acknowledged
        point(200, 9000, 3000, 3000),
        point(300, 200, 4500, 4500, bound=True),  # a lower bound proves nothing
    ]
    assert curve.knee(points) == 50
    assert curve.knee([point(25, 400, 375, 375)]) is None
    assert curve.knee([]) is None


def test_curve_rates_come_from_the_environment_or_the_default() -> None:
    assert curve.rates_from("25, 50,") == (25.0, 50.0)
    assert curve.rates_from(None) == curve.DEFAULT_RATES
    assert curve.rates_from(" ") == curve.DEFAULT_RATES


def test_the_curve_is_plotted_to_a_png(tmp_path: Path) -> None:
    points = [point(25, 120, 375, 375), point(300, 40_000, 900, 4500, bound=True)]
    summary = {"latency_curve": curve.summary_points(points), "knee_per_s": 25}
    out = curve.plot(summary, {"cpus": 2}, tmp_path / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_the_open_loop_sends_its_whole_schedule_and_keeps_only_tickets() -> None:
    import asyncio

    from bench.loadgen import open_loop, post_request

    body = b'{"complaint_id": "c", "ticket_no": "T"}'
    answer = b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(answer)
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tickets = Tickets()
    try:
        result = await open_loop(
            "127.0.0.1",
            port,
            lambda i: post_request("127.0.0.1", "/", {}, b"{}"),
            rate_per_s=200,
            duration_s=0.5,
            connections=4,
            on_response=tickets,
        )
    finally:
        server.close()
    assert result.sent == 100 == result.accepted() == len(tickets.by_request)
    gaps = {round(b - a, 6) for a, b in zip(result.sent_at, result.sent_at[1:], strict=False)}
    assert gaps == {0.005}  # the schedule itself, however late the pacer woke
    assert result.bodies == {}


async def test_an_answer_slower_than_the_timeout_is_an_error_not_a_hang() -> None:
    import asyncio

    from bench.loadgen import open_loop, post_request

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads, never answers, until the client goes away
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await asyncio.wait_for(
            open_loop(
                "127.0.0.1",
                port,
                lambda i: post_request("127.0.0.1", "/", {}, b"{}"),
                rate_per_s=20,
                duration_s=0.2,
                connections=2,
                response_timeout_s=0.2,
            ),
            timeout=10,
        )
    finally:
        server.close()
    assert (result.sent, result.errors, result.accepted()) == (4, 4, 0)


def test_postgres_cpu_by_connection_counts_backends_alive_at_both_ends() -> None:
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    before = {10: ("intake", 100), 11: ("intake", 50), 12: ("triage", 7), 13: ("gone", 5)}
    after = {10: ("intake", 140), 11: ("intake", 60), 12: ("triage", 7), 14: ("new", 900)}
    by_app = statements._cpu_ms_by_app(before, after, complaints=10)
    # 50 ticks over intake's two backends; triage spent none; a backend that came or went
    # in between is not counted (its CPU is not all from the interval).
    assert by_app == {"intake": round(50 * tick_ms / 10, 3)}


async def test_a_busy_process_keeps_the_stack_from_settling_an_idle_one_does_not() -> None:
    spinning = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    sleeping = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    # A low bar for "quiet": a spinner on a machine busy with other work (a CI run beside
    # a training job) can get less than half a core, never as little as a tenth.
    try:
        busy = await settle.settled(
            {"spinner": spinning.pid}, quiet_cores=0.1, window_s=0.5, timeout_s=1.2
        )
        idle = await settle.settled(
            {"sleeper": sleeping.pid}, quiet_cores=0.1, window_s=0.5, timeout_s=1.2
        )
    finally:
        for process in (spinning, sleeping):
            process.kill()
            await process.wait()
    assert busy["quiet"] is False
    assert busy["stack_cores_last_window"] > 0.1
    assert busy["waited_s"] >= 1.2  # it kept trying until the timeout
    assert idle["quiet"] is True
    assert idle["waited_s"] < 1.0  # the first window was quiet


def test_the_cost_at_saturation_is_summarised_from_the_pipeline_runs_alone() -> None:
    def run(kind: str, intake: float, total: float) -> dict[str, object]:
        return {"kind": kind, "cpu_ms_per_complaint": {"intake": intake, "total": total}}

    runs = [
        run("cpu_cost", 3.0, 19.0),
        run("pipeline", 2.0, 11.0),
        run("cpu_cost", 3.2, 19.4),
        run("pipeline", 2.4, 13.0),
        run("pipeline", 2.2, 12.0),
        {"kind": "baseline"},
    ]
    saturated = cpu_summary(runs, kind="pipeline")
    assert (saturated["intake"], saturated["total"]) == (2.2, 12.0)
    assert saturated["postgres"] is None  # no run metered it
    assert cpu_summary(runs)["total"] == 19.2  # the fixed-rate runs, as before
