"""Inserts a consumer transaction's handlers make, written together at its end.

Every statement sent on its own costs a round trip, and on this machine a round trip
costs more CPU than the row it carries: an outbox row sent apart inside a transaction
took 0.13 ms of PostgreSQL's CPU and 0.14-0.15 ms of the client's, against 0.05-0.06 and
0.02-0.04 ms when a transaction's 10 or 30 rows went in one `executemany`
(`python -m bench.round_trips`; README, Figures).
A consumer's batch applies tens of events in one transaction, and each event's handler
wrote its outbox rows (and the notifier its deliveries) with a round trip of its own.

Inside `deferred_inserts(conn)` (EventConsumer opens it around the handlers of each
transaction), `insert_many(conn, sql, rows)` keeps the rows instead; they are written
when the block ends, before the commit, with one `executemany` per statement, in the
order the statements were first used and each statement's rows in the order given. An
exception inside the block writes nothing (the transaction rolls back anyway).

Only for rows that nothing in the same transaction reads back before the commit, and
whose constraints do not depend on when they are checked within it: the outbox, the
notifier's deliveries (without e-mail, whose twins read them), the customer's messages
to a case. Outside such a block, or on another connection, `insert_many` writes at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import asyncpg


class _Pending:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.rows: dict[str, list[Sequence[Any]]] = {}


_pending: ContextVar[_Pending | None] = ContextVar("deferred_inserts", default=None)


@asynccontextmanager
async def deferred_inserts(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Collect `insert_many(conn, ...)` rows while the block runs; write them at its end."""
    pending = _Pending(conn)
    token = _pending.set(pending)
    try:
        yield
    finally:
        _pending.reset(token)
    for sql, rows in pending.rows.items():
        await conn.executemany(sql, rows)


async def insert_many(conn: asyncpg.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """`conn.executemany(sql, rows)`, at the end of the enclosing `deferred_inserts`
    block of the same connection if there is one, else now."""
    if not rows:
        return
    pending = _pending.get()
    if pending is None or pending.conn is not conn:
        await conn.executemany(sql, rows)
        return
    pending.rows.setdefault(sql, []).extend(rows)
