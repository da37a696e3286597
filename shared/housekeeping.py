"""Keeps each service's tables at the size their retention needs, autovacuum on or off.

Two steps, by one instance of the service at a time: the holder of the session-level
advisory lock `<schema>.housekeeping`, kept on a dedicated connection while it leads.

- Retention: published outbox rows and old inbox rows are deleted, and whatever the
  service added with `add_retention` (the notifier's finished deliveries).
- VACUUM of the service's churning tables (CHURNING_TABLES: UPDATEd or DELETEd per
  event) every `housekeeping_vacuum_interval_s` (the record tables among them, RECORD_TABLES,
  only once autovacuum's own rule would take them), and right after a retention delete
  that removed rows. Some machines run PostgreSQL with autovacuum off; the dead tuples of
  those updates and deletes would then never be reclaimed and the tables and their
  indexes would grow for ever. A table changed enough since its last ANALYZE (autovacuum's
  own rule) is analyzed too: autoanalyze is off with autovacuum.

The inbox must remember an event for longer than the broker could ever redeliver it
(the topics' retention), so its retention is a setting to keep above that.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
from prometheus_client import Gauge

from shared.db import connect
from shared.logging import get_logger
from shared.metrics import ServiceMetrics
from shared.settings import CommonSettings

log = get_logger(__name__)

RELIABILITY_TABLES = ("outbox", "inbox")
# Per service schema. Kept here rather than by each service: the dead-tuples gauge's
# `table` label must come from one closed vocabulary.
CHURNING_TABLES: dict[str, tuple[str, ...]] = {
    "intake": (*RELIABILITY_TABLES, "complaints", "complaint_resolutions"),
    "triage": (*RELIABILITY_TABLES, "incident_counts", "incidents", "triaged_complaints"),
    "resolution": (*RELIABILITY_TABLES, "cases", "clocks", "pending_links"),
    "notifier": (
        *RELIABILITY_TABLES,
        "deliveries",
        "delivery_attempts",
        "circuits",
        "contact_retention",
        "recipients",
    ),
}
TABLE_VOCABULARY = frozenset(t for tables in CHURNING_TABLES.values() for t in tables)
# Churning tables that keep their rows (records, not queues): each row is updated a few
# times in its life, so their dead tuples are a small share of a growing table, and a
# VACUUM of one scans its indexes whole. The periodic round takes them only once
# autovacuum's own rule would (below); the queue tables, whose hot indexes fill with dead
# entries within minutes, go every round.
RECORD_TABLES = frozenset(
    {
        "complaints",
        "complaint_resolutions",
        "triaged_complaints",
        "incidents",
        "cases",
        "clocks",
        "recipients",
    }
)

# One retention step: deletes what is past its retention on the leader's connection and
# returns the rows deleted per table (tables of TABLE_VOCABULARY).
RetentionStep = Callable[[asyncpg.Connection], Awaitable[Mapping[str, int]]]

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_LOCK_TIMEOUT = "10s"  # a retention delete never waits long for a row another holds
# autovacuum's default analyze rule: 50 rows + 10 % of the table changed since the last one.
_ANALYZE_THRESHOLD, _ANALYZE_SCALE = 50, 0.1
# autovacuum's default vacuum rule: 50 dead tuples + 20 % of the live ones.
_VACUUM_THRESHOLD, _VACUUM_SCALE = 50, 0.2

_STATS = """
SELECT relname AS table, n_dead_tup AS dead, n_live_tup AS live,
       n_mod_since_analyze AS modified,
       coalesce(last_analyze, last_autoanalyze) IS NOT NULL AS analyzed
FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = ANY($2::text[])
"""


def churning_tables(schema: str) -> tuple[str, ...]:
    """A service's churning tables; any other schema (a test's) has the reliability ones."""
    return CHURNING_TABLES.get(schema, RELIABILITY_TABLES)


def qualified(schema: str, table: str) -> str:
    """ "schema"."table", for names that need no quoting rules (ours are plain)."""
    for name in (schema, table):
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{schema}"."{table}"'


def vacuum_statement(schema: str, table: str, *, analyze: bool) -> str:
    # SKIP_LOCKED: a table another VACUUM (autovacuum's) or a migration holds is skipped
    # this round instead of stalling the loop.
    options = "SKIP_LOCKED, ANALYZE" if analyze else "SKIP_LOCKED"
    return f"VACUUM ({options}) {qualified(schema, table)}"


def analyze_statement(schema: str, table: str) -> str:
    # For a record table the round does not vacuum but whose statistics are stale.
    return f"ANALYZE (SKIP_LOCKED) {qualified(schema, table)}"


@dataclass(frozen=True)
class TableStats:
    table: str
    dead: int
    live: int
    modified: int  # rows changed since the last ANALYZE
    analyzed: bool  # ever analyzed (by hand or by autovacuum)


def vacuum_now(stats: TableStats, deleted: Mapping[str, int]) -> bool:
    """Whether a table this round selected is vacuumed: a queue table always; a record
    table after a retention delete from it, or once autovacuum's rule would take it."""
    if stats.table not in RECORD_TABLES or deleted.get(stats.table, 0) > 0:
        return True
    return stats.dead > _VACUUM_THRESHOLD + _VACUUM_SCALE * stats.live


def needs_analyze(stats: TableStats) -> bool:
    if not stats.analyzed:
        return True
    return stats.modified > _ANALYZE_THRESHOLD + _ANALYZE_SCALE * stats.live


@dataclass(frozen=True)
class Policy:
    outbox_retention: timedelta
    inbox_retention: timedelta
    purge_every_s: float
    vacuum_every_s: float  # 0: VACUUM only right after a delete that removed rows

    @classmethod
    def from_settings(cls, s: CommonSettings) -> Policy:
        return cls(
            outbox_retention=timedelta(days=s.outbox_retention_days),
            inbox_retention=timedelta(days=s.inbox_retention_days),
            purge_every_s=s.housekeeping_purge_interval_s,
            vacuum_every_s=s.housekeeping_vacuum_interval_s,
        )

    @property
    def tick_s(self) -> float:
        """How often the leader looks whether a step is due."""
        if self.vacuum_every_s > 0:
            return min(self.purge_every_s, self.vacuum_every_s)
        return self.purge_every_s

    @property
    def idle_timeout_s(self) -> float:
        """The leader's session idles a tick between rounds; past this the server ends it
        (a paused leader gives the lock up), so it must outlast a tick."""
        return 2 * self.tick_s + 30


@dataclass
class Schedule:
    """When the leader's next purge and periodic VACUUM are due (monotonic seconds). A new
    leader does both at its first round."""

    policy: Policy
    last_purge: float = -math.inf
    last_vacuum: float = -math.inf

    def purge_due(self, now: float) -> bool:
        return now - self.last_purge >= self.policy.purge_every_s

    def vacuum_due(self, now: float) -> bool:
        every = self.policy.vacuum_every_s
        return every > 0 and now - self.last_vacuum >= every


def to_vacuum(tables: tuple[str, ...], deleted: Mapping[str, int], periodic: bool) -> list[str]:
    """Every churning table when the periodic VACUUM is due, else those a retention
    delete just removed rows from."""
    if periodic:
        return list(tables)
    return [t for t in tables if deleted.get(t, 0) > 0]


@dataclass(frozen=True)
class Round:
    deleted: dict[str, int] = field(default_factory=dict)
    vacuumed: tuple[str, ...] = ()
    analyzed: tuple[str, ...] = ()


async def _close(conn: asyncpg.Connection) -> None:
    """Bounded: a database that went away must not keep a stopping service waiting."""
    try:
        await asyncio.wait_for(conn.close(), 2)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:
        conn.terminate()


async def purge_once(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    outbox_retention: timedelta,
    inbox_retention: timedelta,
) -> tuple[int, int]:
    """Delete what is past retention; returns (outbox rows, inbox rows) deleted."""
    outbox = await conn.execute(
        "DELETE FROM outbox WHERE published_at < now() - $1::interval", outbox_retention
    )
    inbox = await conn.execute(
        "DELETE FROM inbox WHERE processed_at < now() - $1::interval", inbox_retention
    )
    return int(outbox.split()[-1]), int(inbox.split()[-1])


class Housekeeping:
    """The supervised `housekeeping` loop of one service (`run_forever`); `maintain_once`
    is one round on a session of its own, what a test calls."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        policy: Policy,
        metrics: ServiceMetrics | None = None,
        tables: tuple[str, ...] | None = None,
    ) -> None:
        self._database_url = database_url
        self._schema = schema
        self._policy = policy
        self._tables = tables or churning_tables(schema)
        self._steps: list[RetentionStep] = [self._purge_reliability_tables]
        self._dead: Gauge | None = None
        self._service = metrics.service if metrics else schema
        if metrics is not None:
            self._dead = Gauge(
                "table_dead_tuples",
                "Dead tuples of a churning table before housekeeping's VACUUM "
                "(pg_stat_user_tables.n_dead_tup; set by the instance that leads)",
                ["service", "table"],
                registry=metrics.registry,
            )
        self.is_leader = False

    def add_retention(self, step: RetentionStep) -> None:
        self._steps.append(step)

    # -- the loop ----------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Compete for the lock every tick; lead (a round per tick) while holding it."""
        while True:
            try:
                await self._lead()
            except _DB_ERRORS as exc:  # the database blinked: compete again next tick
                log.warning("housekeeping_failed", schema=self._schema, error=repr(exc))
            finally:
                self._set_leader(False)
            await asyncio.sleep(self._policy.tick_s)

    async def _lead(self) -> None:
        conn = await self._session()
        try:
            if not await self._try_lock(conn):
                return
            self._set_leader(True)
            schedule = Schedule(self._policy)
            while True:
                # A tick first: a service that starts does not add its round to the start.
                await asyncio.sleep(self._policy.tick_s)
                now = time.monotonic()
                purge, periodic = schedule.purge_due(now), schedule.vacuum_due(now)
                if purge:
                    schedule.last_purge = now
                if periodic:
                    schedule.last_vacuum = now
                if purge or periodic:
                    self._log(await self.round(conn, purge=purge, periodic_vacuum=periodic))
        finally:
            await _close(conn)

    async def maintain_once(self) -> Round | None:
        """Purge and VACUUM now, if no other instance holds the lock (None if one does)."""
        conn = await self._session()
        try:
            if not await self._try_lock(conn):
                return None
            return await self.round(conn, purge=True, periodic_vacuum=True)
        finally:
            await _close(conn)  # ends the session: the lock goes with it

    async def _session(self) -> asyncpg.Connection:
        # Its own connection, not the pool's: the lock is the session's, and VACUUM cannot
        # run inside a transaction block (each statement here is its own transaction).
        conn = await connect(self._database_url, self._schema, purpose="housekeeping")
        try:
            await conn.execute(f"SET lock_timeout = '{_LOCK_TIMEOUT}'")
            idle_ms = int(self._policy.idle_timeout_s * 1000)
            await conn.execute(f"SET idle_session_timeout = {idle_ms}")
            conn.add_log_listener(self._server_message)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _try_lock(self, conn: asyncpg.Connection) -> bool:
        return bool(
            await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"{self._schema}.housekeeping"
            )
        )

    def _server_message(
        self, _conn: asyncpg.Connection, message: asyncpg.PostgresLogMessage
    ) -> None:
        # VACUUM's warnings: a table skipped as locked, an old snapshot keeping dead rows.
        if message.severity == "WARNING":
            log.warning("housekeeping_server_warning", message=message.message)

    # -- one round ---------------------------------------------------------------------

    async def round(self, conn: asyncpg.Connection, *, purge: bool, periodic_vacuum: bool) -> Round:
        """Retention (when `purge`), then VACUUM: every churning table when
        `periodic_vacuum`, else those the retention just removed rows from."""
        deleted = await self._purge(conn) if purge else {}
        tables = to_vacuum(self._tables, deleted, periodic_vacuum)
        vacuumed, analyzed = await self._vacuum(conn, tables, deleted) if tables else ((), ())
        return Round(deleted, vacuumed, analyzed)

    async def _purge(self, conn: asyncpg.Connection) -> dict[str, int]:
        deleted: dict[str, int] = {}
        for step in self._steps:
            try:
                counts = await step(conn)
            except asyncpg.PostgresError as exc:  # one failing step must not stop the rest
                log.warning("retention_failed", schema=self._schema, error=repr(exc))
                continue
            for table, count in counts.items():
                deleted[table] = deleted.get(table, 0) + count
        return deleted

    async def _purge_reliability_tables(self, conn: asyncpg.Connection) -> dict[str, int]:
        outbox, inbox = await purge_once(
            conn,
            outbox_retention=self._policy.outbox_retention,
            inbox_retention=self._policy.inbox_retention,
        )
        return {"outbox": outbox, "inbox": inbox}

    async def _vacuum(
        self, conn: asyncpg.Connection, tables: list[str], deleted: Mapping[str, int]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """VACUUM each table that exists (a table not migrated yet has no stats row) and
        is due (`vacuum_now`), ANALYZE those whose statistics are stale (with the VACUUM,
        or alone); returns (vacuumed, analyzed)."""
        stats = [TableStats(**dict(r)) for r in await conn.fetch(_STATS, self._schema, tables)]
        vacuumed: list[str] = []
        analyzed: list[str] = []
        for table in stats:
            if self._dead is not None:
                self._dead.labels(self._service, table.table).set(table.dead)
            vacuum, analyze = vacuum_now(table, deleted), needs_analyze(table)
            if not (vacuum or analyze):
                continue
            statement = (
                vacuum_statement(self._schema, table.table, analyze=analyze)
                if vacuum
                else analyze_statement(self._schema, table.table)
            )
            try:
                await conn.execute(statement)
            except asyncpg.PostgresError as exc:
                log.warning(
                    "vacuum_failed", schema=self._schema, table=table.table, error=repr(exc)
                )
                continue
            if vacuum:
                vacuumed.append(table.table)
            if analyze:
                analyzed.append(table.table)
        return tuple(vacuumed), tuple(analyzed)

    # -- reporting ---------------------------------------------------------------------

    def _set_leader(self, leader: bool) -> None:
        if self.is_leader and not leader and self._dead is not None:
            self._dead.clear()  # another instance reports them now
        self.is_leader = leader

    def _log(self, done: Round) -> None:
        removed = {t: n for t, n in done.deleted.items() if n}
        if removed:
            log.info("housekeeping", schema=self._schema, deleted=removed, vacuumed=done.vacuumed)
        else:
            log.debug("housekeeping", schema=self._schema, vacuumed=done.vacuumed)
