"""SQL statements per complaint, counted by PostgreSQL (`python -m bench.statements`).

CPU figures on this machine move by several milliseconds from one run to the next. The
number of statements per complaint moves too, with how the events batch: a stack that
keeps up more promptly takes smaller batches, so more transactions, inbox claims, relay
rounds and delivery-loop rounds per complaint (five runs of one version gave 32.9 to
41.2). A statement a change removes from every complaint's path still shows in the
statement list below the total. Needs pg_stat_statements loaded, which `make up` does on
request:

    make down && PG_STAT_STATEMENTS=1 make up && python -m bench.statements

Offers STATEMENTS_RATE complaints/s (default 80) for STATEMENTS_SECONDS (default 20), open
loop, waits for every acknowledgement and a little longer (the rest of each complaint's
work: the case, the second notification), then prints top-level statements and
transactions per complaint, PostgreSQL's CPU per complaint by the service whose
connection it served (its `application_name`; backends alive from start to end, read
from /proc, so the database must run on this machine) and the statements run most
often."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.run import (
    DEFAULT_DATABASE_URL,
    AckSink,
    create_tenants,
    offer_until_acknowledged,
    stack_env,
)

RATE = float(os.environ.get("STATEMENTS_RATE", "80"))
SECONDS = float(os.environ.get("STATEMENTS_SECONDS", "20"))
SETTLE_S = 5.0  # after the last acknowledgement: the work that follows it
TOP = 25

_TOP_QUERY = """
SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() AND toplevel
ORDER BY calls DESC LIMIT $1
"""


async def _counters(conn: asyncpg.Connection) -> tuple[int, int]:
    statements = await conn.fetchval(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
        "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() AND toplevel"
    )
    commits = await conn.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(statements), int(commits)


def _ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


async def _backend_ticks(conn: asyncpg.Connection) -> dict[int, tuple[str, int]]:
    """CPU ticks so far of each backend of this database, with its application_name."""
    rows = await conn.fetch(
        "SELECT pid, coalesce(nullif(application_name, ''), '?') AS app "
        "FROM pg_stat_activity WHERE datname = current_database()"
    )
    found = {}
    for row in rows:
        ticks = _ticks(row["pid"])
        if ticks is not None:
            found[row["pid"]] = (row["app"], ticks)
    return found


def _cpu_ms_by_app(
    before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], complaints: int
) -> dict[str, float]:
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    by_app: dict[str, float] = {}
    for pid, (app, ticks) in after.items():
        if pid in before:
            by_app[app] = by_app.get(app, 0.0) + (ticks - before[pid][1]) * tick_ms
    return {
        app: round(ms / complaints, 3)
        for app, ms in sorted(by_app.items(), key=lambda item: -item[1])
        if ms > 0
    }


async def main() -> dict[str, Any]:
    env = stack_env()
    conn = await asyncpg.connect(env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    try:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
        except asyncpg.PostgresError as error:
            raise SystemExit(
                f"pg_stat_statements is not loaded ({error}): "
                "`make down && PG_STAT_STATEMENTS=1 make up` first"
            ) from None
        sink = AckSink()
        keys = create_tenants(await sink.start(), env)
        await conn.execute("SELECT pg_stat_statements_reset()")
        statements_before, commits_before = await _counters(conn)
        backends_before = await _backend_ticks(conn)
        result, tickets, _ended = await offer_until_acknowledged(keys, sink, RATE, SECONDS)
        await asyncio.sleep(SETTLE_S)
        statements, commits = await _counters(conn)
        backends_after = await _backend_ticks(conn)
        top = await conn.fetch(_TOP_QUERY, TOP)
    finally:
        await conn.close()
    acknowledged = sum(t in sink.acked_at for t in tickets.by_request.values())
    per = max(acknowledged, 1)
    report = {
        "offered_per_s": RATE,
        "seconds": SECONDS,
        "accepted": result.accepted(),
        "acknowledged": acknowledged,
        "statements_per_complaint": round((statements - statements_before) / per, 1),
        "commits_per_complaint": round((commits - commits_before) / per, 2),
        "postgres_cpu_ms_per_complaint_by_connection": _cpu_ms_by_app(
            backends_before, backends_after, per
        ),
    }
    print(report)
    for row in top:
        print(f"{row['calls'] / per:6.2f}  {row['query'][:110]}")
    return report


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main())
    print(f"({time.perf_counter() - started:.0f} s)")
