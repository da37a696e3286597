"""What a round trip to PostgreSQL costs here (`python -m bench.round_trips`), against the
`make up` stack's database: outbox rows inserted in
transactions of 10 and of 30 rows, each row its own `execute` (a round trip per row,
as a consumer's handlers wrote their events before shared.deferred_inserts) or all of a
transaction's rows in one `executemany`. Prints the CPU per row of the server backend
(from /proc, so the database must run on this machine) and of this process, the mean of
three rounds of 3,000 rows each way, interleaved. Works in a scratch schema it drops."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from statistics import mean

import asyncpg

from bench.cpu import PROC, TICKS_PER_S, parse_stat
from bench.run import DEFAULT_DATABASE_URL, stack_env

SCHEMA = "bench_round_trips"
ROWS = 3000
OUTBOX = (
    Path(__file__).resolve().parents[1] / "shared/migrations/0000_outbox_inbox.sql"
).read_text()
INSERT = "INSERT INTO outbox (event_id, topic, message_key, message) VALUES ($1, $2, $3, $4)"


def _backend_cpu_s(pid: int) -> float:
    stat = parse_stat((PROC / str(pid) / "stat").read_text())
    return (stat.utime + stat.stime) / TICKS_PER_S


async def _one_round(
    conn: asyncpg.Connection, pid: int, per_tx: int, batched: bool
) -> tuple[float, float]:
    message = os.urandom(900)  # about an envelope's size
    server, client = _backend_cpu_s(pid), time.process_time()
    for _ in range(ROWS // per_tx):
        rows = [(uuid.uuid4(), "complaints.triaged.v1", b"k" * 36, message) for _ in range(per_tx)]
        async with conn.transaction():
            if batched:
                await conn.executemany(INSERT, rows)
            else:
                for row in rows:
                    await conn.execute(INSERT, *row)
    return (
        (_backend_cpu_s(pid) - server) / ROWS * 1000,
        (time.process_time() - client) / ROWS * 1000,
    )


async def main() -> None:
    conn = await asyncpg.connect(stack_env().get("DATABASE_URL", DEFAULT_DATABASE_URL))
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
        await conn.execute(f"SET search_path TO {SCHEMA}")
        await conn.execute(OUTBOX)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        for per_tx in (10, 30):
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(3):
                for batched in (False, True):
                    runs[batched].append(await _one_round(conn, pid, per_tx, batched))
            for batched, label in ((False, "a round trip per row"), (True, "one executemany")):
                server = mean(r[0] for r in runs[batched])
                client = mean(r[1] for r in runs[batched])
                print(
                    f"{per_tx} rows per transaction, {label}: "
                    f"PostgreSQL {server:.3f} ms, client {client:.3f} ms CPU per row"
                )
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
