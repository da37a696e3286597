"""`clocks_due_soon{clock,priority}`: running clocks due within the next hour, so that
on-call sees a breach coming, not only the breach (sla_breaches_total).

Every instance reports it (a read, no leadership); each refresh sets every combination of
the closed vocabularies, so a count that fell to zero reads 0 instead of going stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import get_args

import asyncpg

from services.resolution.clocks import ClockName
from shared.event_payloads import Priority
from shared.logging import get_logger
from shared.metrics import ServiceMetrics

log = get_logger(__name__)

HORIZON = timedelta(hours=1)
REFRESH_EVERY_S = 15.0
PRIORITIES: tuple[str, ...] = get_args(Priority)
CLOCKS: tuple[str, ...] = tuple(name.value for name in ClockName)

_DUE_SOON = """
SELECT c.name, k.priority, count(*) AS n
FROM clocks c JOIN cases k ON k.complaint_id = c.complaint_id
WHERE c.state = 'running' AND c.due_at > $1 AND c.due_at <= $2
GROUP BY c.name, k.priority
"""


async def refresh(pool: asyncpg.Pool, metrics: ServiceMetrics, now: datetime) -> None:
    counts = {
        (r["name"], r["priority"]): r["n"] for r in await pool.fetch(_DUE_SOON, now, now + HORIZON)
    }
    # Only known values become labels: a case without a priority yet is not counted.
    for clock in CLOCKS:
        for priority in PRIORITIES:
            metrics.clocks_due_soon.labels(clock, priority).set(counts.get((clock, priority), 0))


def due_soon_loop(
    pool_getter: Callable[[], asyncpg.Pool],
    metrics: ServiceMetrics,
    now: Callable[[], datetime],
    every_s: float | None = None,
) -> Callable[[], Awaitable[None]]:
    """A loop for runtime.add_background; `now` is the app's clock (tests move it)."""

    async def loop() -> None:
        while True:
            try:
                await refresh(pool_getter(), metrics, now())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("clocks_due_soon_refresh_failed", error=repr(exc))
            await asyncio.sleep(every_s or REFRESH_EVERY_S)

    return loop
