"""CPU per complaint, run after run (`python -m bench.cost`): for comparing two versions
of a service against the same `make up` stack.

`make bench`'s cost run (bench/run.py, `cpu_cost`) at COST_RATE complaints/s (default
100; a comma-separated list runs each rate in turn) for COST_SECONDS (default 20),
COST_RUNS times (default 3): each run meters every process of the stack from the first
send until the last acknowledgement and prints one JSON line (CPU ms per complaint per
process, acknowledged, the idle cores sampled just before, and `stack_cores`: the cores
the stack's processes used while metered), each after the stack has gone quiet
(bench/settle.py). Runs of the same code here differ by several
milliseconds, so compare versions in interleaved runs."""

from __future__ import annotations

import asyncio
import json
import os
import time

from bench import settle
from bench.cpu import stack_processes, stack_sum
from bench.run import DEFAULT_DATABASE_URL, AckSink, cpu_cost, create_tenants, stack_env

RATES = [float(rate) for rate in os.environ.get("COST_RATE", "100").split(",")]
SECONDS = float(os.environ.get("COST_SECONDS", "20"))
RUNS = int(os.environ.get("COST_RUNS", "3"))


async def main() -> None:
    env = stack_env()
    sink = AckSink()
    keys = create_tenants(await sink.start(), env)
    processes = await stack_processes(env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    for _ in range(RUNS):
        for rate in RATES:
            run = {"settled_before": await settle.settled(processes)}
            run |= await cpu_cost(keys, sink, processes, rate=rate, duration_s=SECONDS)
            run["stack_cores"] = round(stack_sum(run["cpu_cores"]), 2)
            print(json.dumps(run), flush=True)


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main())
    print(f"({time.perf_counter() - started:.0f} s)")
