"""CPU per complaint, run after run (`python -m bench.cost`): for comparing two versions
of a service against the same `make up` stack.

`make bench`'s cost run (bench/run.py, `cpu_cost`) at COST_RATE complaints/s (default
100) for COST_SECONDS (default 20), COST_RUNS times (default 3): each run meters every
process of the stack from the first send until the last acknowledgement and prints one
JSON line (acknowledged, latency p50/p99 from the intended send time, CPU ms per
complaint per process, and the idle cores sampled just before). Runs of the same code
here differ by several milliseconds, so compare versions in interleaved runs."""

from __future__ import annotations

import asyncio
import json
import os
import time

from bench.cpu import CpuMeter, stack_processes
from bench.loadgen import RESPONSE_TIMEOUT_S, Tickets, open_loop, percentile, wait_for_acks
from bench.run import (
    DEFAULT_DATABASE_URL,
    HOST,
    IDLE_S,
    INTAKE_PORT,
    AckSink,
    complaint_requests,
    create_tenants,
    stack_env,
)

RATE = float(os.environ.get("COST_RATE", "100"))
SECONDS = float(os.environ.get("COST_SECONDS", "20"))
RUNS = int(os.environ.get("COST_RUNS", "3"))


async def one_run(keys: list[str], sink: AckSink, processes: dict[str, int]) -> dict:
    with CpuMeter(processes) as idle:
        await asyncio.sleep(IDLE_S)
    tickets = Tickets()
    with CpuMeter(processes) as meter:
        result = await open_loop(
            HOST,
            INTAKE_PORT,
            complaint_requests(keys),
            rate_per_s=RATE,
            duration_s=SECONDS,
            connections=32,
            response_timeout_s=RESPONSE_TIMEOUT_S,
            on_response=tickets,
        )
        await wait_for_acks(sink.acked_at, tickets.by_request.values(), timeout_s=300)
    acked = [(i, t) for i, t in tickets.by_request.items() if t in sink.acked_at]
    latencies = sorted((sink.acked_at[t] - result.sent_at[i]) * 1000 for i, t in acked)
    return {
        "offered_per_s": RATE,
        "accepted": result.accepted(),
        "acknowledged": len(acked),
        "p50_ms": round(percentile(latencies, 50)) if latencies else None,
        "p99_ms": round(percentile(latencies, 99)) if latencies else None,
        "cpu_ms_per_complaint": meter.ms_per_complaint(len(acked)),
        "idle_cores": {
            name: None if s is None else round(s / IDLE_S, 3) for name, s in idle.seconds().items()
        },
    }


async def main() -> None:
    env = stack_env()
    sink = AckSink()
    keys = create_tenants(await sink.start(), env)
    processes = await stack_processes(env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    for _ in range(RUNS):
        print(json.dumps(await one_run(keys, sink, processes)), flush=True)


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main())
    print(f"({time.perf_counter() - started:.0f} s)")
