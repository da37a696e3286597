"""Keeps the reliability tables small: published outbox rows and old inbox rows go.

The inbox must remember an event for longer than the broker could ever redeliver it
(the topics' retention), so its retention is a setting to keep above that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

from shared.logging import get_logger

log = get_logger(__name__)


async def purge_once(
    pool: asyncpg.Pool, *, outbox_retention: timedelta, inbox_retention: timedelta
) -> tuple[int, int]:
    """Delete what is past retention; returns (outbox rows, inbox rows) deleted."""
    outbox = await pool.execute(
        "DELETE FROM outbox WHERE published_at < now() - $1::interval", outbox_retention
    )
    inbox = await pool.execute(
        "DELETE FROM inbox WHERE processed_at < now() - $1::interval", inbox_retention
    )
    return int(outbox.split()[-1]), int(inbox.split()[-1])


def purge_loop(
    pool_getter: Callable[[], asyncpg.Pool],
    *,
    every: timedelta,
    outbox_retention: timedelta,
    inbox_retention: timedelta,
) -> Callable[[], Awaitable[None]]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(every.total_seconds())
            try:
                deleted = await purge_once(
                    pool_getter(),
                    outbox_retention=outbox_retention,
                    inbox_retention=inbox_retention,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("housekeeping_failed", error=repr(exc))
            else:
                if any(deleted):
                    log.info("housekeeping", outbox_deleted=deleted[0], inbox_deleted=deleted[1])

    return loop
