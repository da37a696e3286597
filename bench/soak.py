"""The soak: a steady open-loop rate for minutes, to see whether latency, table sizes or
CPU drift as the run goes on.

Each complaint's acknowledgement latency is taken from its intended send time, as in the
short latency measurement, and bucketed by the minute of that intended time. After the
last send the soak waits `ack_timeout_s` for the acknowledgements; a complaint still
unacknowledged then counts with its wait so far, and a percentile it may have raised is
flagged as a lower bound (bench/loadgen.py AckLatencies). The table sizes of the
services' schemas are read at both ends, and the stack's CPU is metered over the whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg

from bench.cpu import CpuMeter
from bench.loadgen import (
    RESPONSE_TIMEOUT_S,
    AckLatencies,
    LoadResult,
    Tickets,
    open_loop,
    rounded_ms,
    wait_for_acks,
)

MINUTE_FIGURES = ("sent", "p50_ms", "p99_ms", "p50_lower_bound", "p99_lower_bound")
SCHEMAS = ("intake", "triage", "resolution", "notifier")
TABLE_SIZES = """
    SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[])
    ORDER BY 1
"""


async def table_bytes(database_url: str) -> dict[str, int]:
    """pg_total_relation_size (heap, indexes, TOAST) of every table of the services."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return {name: size for name, size in await conn.fetch(TABLE_SIZES, list(SCHEMAS))}
    finally:
        await conn.close()


def per_minute(
    result: LoadResult,
    tickets: Mapping[int, str],
    acked_at: Mapping[str, float],
    gave_up_at: float,
) -> list[dict[str, Any]]:
    """Sent, accepted, acknowledged and ack p50/p99 per minute of intended send time."""
    if not result.sent_at:
        return []
    start = result.sent_at[0]
    minutes = [AckLatencies() for _ in range(int((result.sent_at[-1] - start) // 60) + 1)]
    sent = [0] * len(minutes)
    for at in result.sent_at:
        sent[int((at - start) // 60)] += 1
    for i, ticket in tickets.items():
        minutes[int((result.sent_at[i] - start) // 60)].add(
            result.sent_at[i], acked_at.get(ticket), gave_up_at
        )
    rows = []
    for minute, latencies in enumerate(minutes):
        p50, p50_bound = latencies.percentile(50)
        p99, p99_bound = latencies.percentile(99)
        rows.append(
            {
                "minute": minute,
                "sent": sent[minute],
                "accepted": latencies.accepted,
                "acknowledged": latencies.acknowledged,
                "p50_ms": rounded_ms(p50),
                "p99_ms": rounded_ms(p99),
                "p50_lower_bound": p50_bound,
                "p99_lower_bound": p99_bound,
            }
        )
    return rows


def summary(run: Mapping[str, Any]) -> dict[str, Any]:
    """summary.soak: the first and the last whole minute (CONTRACT section 9). The last
    bucket is dropped when it is a sliver (under half the others' sends)."""
    rows = run["per_minute"] or [dict.fromkeys(MINUTE_FIGURES)]  # nothing sent: nulls
    if len(rows) > 1 and rows[-1]["sent"] < rows[0]["sent"] / 2:
        rows = rows[:-1]
    first, last = rows[0], rows[-1]
    bounds = [
        f"{key}_{end}_ms"
        for end, row in (("first", first), ("last", last))
        for key in ("p50", "p99")
        if row.get(f"{key}_lower_bound")
    ]
    return {
        "offered_per_s": run["offered_per_s"],
        "minutes": run["minutes"],
        "p50_first_ms": first["p50_ms"],
        "p50_last_ms": last["p50_ms"],
        "p99_first_ms": first["p99_ms"],
        "p99_last_ms": last["p99_ms"],
        "lower_bounds": bounds,  # the figures above that unacknowledged complaints cap
    }


async def soak(
    host: str,
    port: int,
    request_for: Callable[[int], bytes],
    acked_at: Mapping[str, float],
    *,
    rate: float,
    minutes: float,
    database_url: str,
    processes: Mapping[str, int],
    ack_timeout_s: float,
) -> dict[str, Any]:
    tables_before = await table_bytes(database_url)
    rss_before = _rss_mb()
    tickets = Tickets()
    began = time.perf_counter()
    with CpuMeter(processes) as meter:
        result = await open_loop(
            host,
            port,
            request_for,
            rate_per_s=rate,
            duration_s=minutes * 60,
            connections=32,
            response_timeout_s=RESPONSE_TIMEOUT_S,
            on_response=tickets,
        )
        gave_up_at = await wait_for_acks(acked_at, tickets.by_request.values(), ack_timeout_s)
    rows = per_minute(result, tickets.by_request, acked_at, gave_up_at)
    acknowledged = sum(row["acknowledged"] for row in rows)
    tables_after = await table_bytes(database_url)
    return {
        "kind": "soak",
        "offered_per_s": rate,
        "minutes": minutes,
        "sent": result.sent,
        "statuses": result.statuses,
        "errors": result.errors,
        "accepted": result.accepted(),
        "acknowledged": acknowledged,
        "ack_timeout_s": ack_timeout_s,
        "duration_s": round(gave_up_at - began, 1),
        "pacer_max_lag_ms": round(result.max_lag_s * 1000, 1),
        "http_latency_p99_ms": result.latency_ms.get_value_at_percentile(99),
        "per_minute": rows,
        "table_bytes": {
            "start": tables_before,
            "end": tables_after,
            "total_start": sum(tables_before.values()),
            "total_end": sum(tables_after.values()),
        },
        "loadgen_rss_mb": {"start": rss_before, "end": _rss_mb()},
        # CPU over the whole soak; per complaint only if every one was acknowledged
        # (otherwise the CPU holds work on complaints not counted).
        **meter.report(acknowledged if acknowledged == result.accepted() else 0),
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")
