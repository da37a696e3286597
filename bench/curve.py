"""Acknowledgement latency versus offered load, and its plot.

`measure(...)`: for each offered rate, an open loop of `duration_s`, then up to
`ack_timeout_s` for the acknowledgements (p50/p99 from the intended send times over every
accepted complaint; an unacknowledged one counts with its wait so far, and a percentile
it may have raised is flagged as a lower bound), then up to `drain_timeout_s` more until
the rest are acknowledged too, so the next rate starts on empty queues.

The knee is the highest offered rate whose p99 is under KNEE_P99_MS (exact, not a lower
bound) with every accepted complaint acknowledged within the wait.

`python -m bench.curve` draws bench/latency_curve.png from bench/results.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import (
    RESPONSE_TIMEOUT_S,
    Tickets,
    ack_latencies,
    open_loop,
    rounded_ms,
    wait_for_acks,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
PLOT = ROOT / "bench" / "latency_curve.png"
DEFAULT_RATES = (25.0, 50.0, 100.0, 200.0, 300.0)
KNEE_P99_MS = 300.0


def rates_from(text: str | None) -> tuple[float, ...]:
    """BENCH_CURVE_RATES, e.g. "25,50,100"; the default rates when unset or empty."""
    if not text or not text.strip():
        return DEFAULT_RATES
    return tuple(float(part) for part in text.split(",") if part.strip())


async def curve_point(
    host: str,
    port: int,
    request_for: Callable[[int], bytes],
    acked_at: Mapping[str, float],
    rate: float,
    *,
    duration_s: float = 15,
    ack_timeout_s: float = 60,
    drain_timeout_s: float = 300,
    drained_by: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One rate's point; `drained_by`: a later webhook per ticket (the triage news) whose
    arrival for every complaint also ends the drain, with its latencies beside."""
    tickets = Tickets()
    result = await open_loop(
        host,
        port,
        request_for,
        rate_per_s=rate,
        duration_s=duration_s,
        connections=32,
        response_timeout_s=RESPONSE_TIMEOUT_S,
        on_response=tickets,
    )
    gave_up_at = await wait_for_acks(acked_at, tickets.by_request.values(), ack_timeout_s)
    latencies = ack_latencies(result.sent_at, tickets.by_request, acked_at, gave_up_at)
    p50, p50_bound = latencies.percentile(50)
    p99, p99_bound = latencies.percentile(99)
    # Drained before the next rate; how long that took says how far behind it fell.
    drained_at = await wait_for_acks(acked_at, tickets.by_request.values(), drain_timeout_s)
    later: dict[str, Any] = {}
    if drained_by is not None:
        drained_at = max(
            drained_at,
            await wait_for_acks(drained_by, tickets.by_request.values(), drain_timeout_s),
        )
        after = ack_latencies(result.sent_at, tickets.by_request, drained_by, drained_at)
        later = {
            "triaged_p50_ms": rounded_ms(after.percentile(50)[0]),
            "triaged_p99_ms": rounded_ms(after.percentile(99)[0]),
        }
    return {
        "kind": "latency_curve",
        "offered_per_s": rate,
        "sent": result.sent,
        "accepted": latencies.accepted,
        "acknowledged": latencies.acknowledged,
        "ack_timeout_s": ack_timeout_s,
        "p50_ms": rounded_ms(p50),
        "p99_ms": rounded_ms(p99),
        "p50_lower_bound": p50_bound,
        "p99_lower_bound": p99_bound,
        "http_latency_p99_ms": result.latency_ms.get_value_at_percentile(99),
        "statuses": result.statuses,
        "drain_s": round(drained_at - gave_up_at, 1),
        "drained": all(t in acked_at for t in tickets.by_request.values()),
        **later,
    }


def knee(points: Sequence[Mapping[str, Any]], p99_limit_ms: float = KNEE_P99_MS) -> float | None:
    """The highest offered rate that kept its p99 under the limit with every accepted
    complaint acknowledged; None when no rate did."""
    good = [
        p["offered_per_s"]
        for p in points
        if p["p99_ms"] is not None
        and not p.get("p99_lower_bound", False)
        and p["p99_ms"] < p99_limit_ms
        and p["acknowledged"] == p["accepted"]
    ]
    return max(good, default=None)


def summary_points(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """summary.latency_curve: the run records without their detail."""
    keys = ("offered_per_s", "p50_ms", "p99_ms", "acknowledged", "sent")
    extra = ("accepted", "p99_lower_bound")
    return [{k: p[k] for k in (*keys, *extra)} for p in points]


def plot(summary: Mapping[str, Any], machine: Mapping[str, Any], out: Path = PLOT) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display here; must precede pyplot
    import matplotlib.pyplot as plt

    points = [p for p in summary["latency_curve"] if p["p99_ms"] is not None]
    rates = [p["offered_per_s"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(rates, [p["p50_ms"] for p in points], "o-", label="p50")
    ax.plot(rates, [p["p99_ms"] for p in points], "s-", label="p99")
    for p in points:
        short = p["acknowledged"] < p.get("accepted", p["sent"])
        if p.get("p99_lower_bound") or short:
            # Not every complaint was acknowledged in the wait: the point is a floor.
            ax.annotate(
                f"≥ ({p['acknowledged']}/{p.get('accepted', p['sent'])} acked)",
                (p["offered_per_s"], p["p99_ms"]),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
            )
    limit = f"{KNEE_P99_MS:g} ms (the knee's p99 limit)"
    ax.axhline(KNEE_P99_MS, color="grey", linestyle=":", linewidth=1, label=limit)
    if (knee_rate := summary.get("knee_per_s")) is not None:
        ax.axvline(knee_rate, color="grey", linestyle="--", linewidth=1)
        label = f"knee {knee_rate:g}/s"
        ax.annotate(label, (knee_rate, KNEE_P99_MS), xytext=(4, -14), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (complaints/s, open loop)")
    ax.set_ylabel("acknowledgement latency (ms, from intended send)")
    cpus = machine.get("cpus", "?")
    ax.set_title(f"Acknowledgement latency vs load ({cpus} cores, all on one machine)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> int:
    results = json.loads(RESULTS.read_text())
    if not results.get("summary", {}).get("latency_curve"):
        print(f"no summary.latency_curve in {RESULTS}: run `make bench` first", file=sys.stderr)
        return 1
    print(f"written to {plot(results['summary'], results.get('machine', {}))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
