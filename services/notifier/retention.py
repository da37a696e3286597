"""Retention in the notifier: the customer's address (ContactPurge) and finished
deliveries (DeliveryRetention).

The customer's e-mail address is kept while the complaint is open and
`contact_retention_days` after it was resolved or closed; then it is purged.

Rule (contact_retention, written by handlers.on_case_status): the period starts at the
first `resolved` or `closed` status and stops when any other status follows (a reopened
case is open again; its next resolution starts a fresh period). Purging sets
recipients.email to NULL and drops the rendered e-mails (their bytes carry the address in
To:); an e-mail still open then fails for want of an address. Idempotent: a purged
recipient has no address left to match.

A delivery that ended (delivered or failed) is kept `delivery_retention_days` after it
ended (finished_at, migration 0006), then deleted with its attempts (the delivery log) by
the housekeeping leader, which VACUUMs the tables after (shared/housekeeping.py). Nothing
else needs it by then: a complaint's order only waits on its open deliveries, and an
e-mail twin is made only of an open webhook row. A webhook row stays while its twin does
(the twin's source_id names it); they go together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier.settings import NotifierSettings
from shared.logging import get_logger

log = get_logger(__name__)

_PURGE = """
WITH due AS (
    SELECT r.complaint_id FROM recipients r
    JOIN contact_retention c ON c.complaint_id = r.complaint_id
    WHERE r.email IS NOT NULL AND c.closed_at IS NOT NULL AND c.closed_at <= $1
    ORDER BY c.closed_at
    LIMIT $3
    FOR UPDATE OF r SKIP LOCKED),
purged AS (
    UPDATE recipients r SET email = NULL, contact_purged_at = $2
    FROM due WHERE r.complaint_id = due.complaint_id
    RETURNING r.complaint_id),
bodies AS (
    UPDATE deliveries d SET body = NULL
    FROM purged WHERE d.complaint_id = purged.complaint_id AND d.channel = 'email'
      AND d.body IS NOT NULL)
SELECT count(*) FROM purged
"""


class ContactPurge:
    """The supervised `contact_purge` loop; `purge_once` is what a test calls, with its
    own clock."""

    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        settings: NotifierSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool_getter = pool_getter
        self._settings = settings
        self._clock = clock

    async def purge_once(self, batch: int = 1000) -> int:
        """Purge every address whose retention has run out; how many were purged."""
        now = self._clock()
        cutoff = now - timedelta(days=self._settings.contact_retention_days)
        total = 0
        while True:
            purged = await self._pool_getter().fetchval(_PURGE, cutoff, now, batch)
            total += purged
            if purged < batch:
                return total

    async def run_forever(self) -> None:
        while True:
            try:
                purged = await self.purge_once()
                if purged:
                    log.info("contacts_purged", count=purged)
            except Exception as exc:  # the database blinked: the next round catches up
                log.warning("contact_purge_failed", error=repr(exc))
            await asyncio.sleep(self._settings.contact_purge_interval_s)


# $1 the retention, $2 the batch. Oldest first (index deliveries_finished).
_FINISHED = "coalesce({t}.finished_at, {t}.delivered_at, {t}.next_attempt_at)"
_DELETE_FINISHED = f"""
WITH old AS (
    SELECT d.id FROM deliveries d
    WHERE d.state IN ('delivered', 'failed') AND {_FINISHED.format(t="d")} < now() - $1::interval
      AND NOT EXISTS (  -- an e-mail twin that stays keeps its webhook row
          SELECT 1 FROM deliveries t
          WHERE t.source_id = d.id AND t.channel = 'email'
            AND NOT (t.state IN ('delivered', 'failed')
                     AND {_FINISHED.format(t="t")} < now() - $1::interval))
    ORDER BY {_FINISHED.format(t="d")}
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED),
doomed AS (  -- with the twins of the webhook rows going (past retention too, see above)
    SELECT id FROM old
    UNION
    SELECT t.id FROM deliveries t JOIN old ON t.source_id = old.id AND t.channel = 'email'),
attempts AS (
    DELETE FROM delivery_attempts a USING doomed WHERE a.delivery_id = doomed.id
    RETURNING a.id),
gone AS (
    DELETE FROM deliveries d USING doomed WHERE d.id = doomed.id RETURNING d.id)
SELECT (SELECT count(*) FROM old) AS taken, (SELECT count(*) FROM gone) AS deliveries,
    (SELECT count(*) FROM attempts) AS attempts
"""


class DeliveryRetention:
    """A retention step of the housekeeping leader (ServiceRuntime.add_retention): deletes
    the deliveries that ended more than `delivery_retention_days` ago, with their attempts."""

    def __init__(self, settings: NotifierSettings, batch: int = 1000) -> None:
        self._retention = timedelta(days=settings.delivery_retention_days)
        self._batch = batch

    async def purge_once(self, conn: asyncpg.Connection) -> dict[str, int]:
        """Rows deleted per table. In batches, each its own transaction: locks stay short."""
        deleted = {"deliveries": 0, "delivery_attempts": 0}
        while True:
            row = await conn.fetchrow(_DELETE_FINISHED, self._retention, self._batch)
            deleted["deliveries"] += row["deliveries"]
            deleted["delivery_attempts"] += row["attempts"]
            if row["taken"] < self._batch:
                return deleted
