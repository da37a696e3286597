"""The release of duplicates whose original never arrived (see domain.py): a loop in
the service, outside any consumer, since a consumer cannot wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

from services.resolution import handlers
from services.resolution.unit_of_work import ResolutionUnitOfWork
from shared.logging import get_logger

log = get_logger(__name__)


async def release_overdue(pool: asyncpg.Pool, grace: timedelta, limit: int = 100) -> int:
    """One pass: each duplicate group waited for longer than `grace`, in a transaction
    of its own. Returns how many groups were released."""
    async with pool.acquire() as conn:
        originals = await ResolutionUnitOfWork(conn).links.originals_waited_for(grace, limit)
    for original_id in originals:
        async with pool.acquire() as conn, conn.transaction():
            uow = ResolutionUnitOfWork(conn)
            await handlers.release_waiting(uow, original_id)
            await uow.flush()
        log.warning("duplicates_released", original_complaint_id=str(original_id))
    return len(originals)


def release_loop(
    pool: Callable[[], asyncpg.Pool], grace: timedelta, every: timedelta
) -> Callable[[], Awaitable[None]]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(every.total_seconds())
            try:
                await release_overdue(pool(), grace)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("duplicates_release_failed", error=repr(exc))

    return loop
