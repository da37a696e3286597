"""Waiting for the stack to go quiet before a measurement.

A measurement that starts while the stack still works off the previous one (a consumer
group catching up, housekeeping purging a burst's rows, autovacuum on a table the burst
churned) measures both. `drained` in bench/run.py waits for the webhooks; this waits for
the CPU: until the stack's processes together use at most `quiet_cores` over a window,
or `timeout_s` has passed (then the record says it was not quiet).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from bench.cpu import CpuMeter, stack_sum

# Idle, the stack uses about 0.2-0.35 cores here (polling, heartbeats, the broker).
QUIET_CORES = 0.5
WINDOW_S = 5.0
TIMEOUT_S = 180.0


async def settled(
    processes: Mapping[str, int],
    *,
    quiet_cores: float = QUIET_CORES,
    window_s: float = WINDOW_S,
    timeout_s: float = TIMEOUT_S,
) -> dict[str, Any]:
    """Until one window of `window_s` in which the stack's processes used at most
    `quiet_cores` (the load generator, which is this process, not counted)."""
    began = time.perf_counter()
    while True:
        with CpuMeter(processes) as meter:
            await asyncio.sleep(window_s)
        used = stack_sum(meter.seconds())
        cores = used / window_s
        waited = time.perf_counter() - began
        if cores <= quiet_cores or waited >= timeout_s:
            return {
                "waited_s": round(waited, 1),
                "stack_cores_last_window": round(cores, 3),
                "quiet": cores <= quiet_cores,
            }
