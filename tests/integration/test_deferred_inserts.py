"""shared.deferred_inserts on a real database: inside the block rows wait for its end and
go in the order given, an exception inside writes none, and outside the block or on
another connection they are written at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.deferred_inserts import deferred_inserts, insert_many
from tests.support import Infra

INSERT = "INSERT INTO deferred_rows (label) VALUES ($1)"


@pytest.fixture
async def conn(infra: Infra) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(infra.database_url)
    await conn.execute(
        "DROP TABLE IF EXISTS deferred_rows; "
        "CREATE TABLE deferred_rows (id bigserial PRIMARY KEY, label text NOT NULL)"
    )
    try:
        yield conn
    finally:
        await conn.close()


async def _labels(conn: asyncpg.Connection) -> list[str]:
    return [r["label"] for r in await conn.fetch("SELECT label FROM deferred_rows ORDER BY id")]


async def test_rows_wait_for_the_end_of_the_block_and_keep_their_order(
    conn: asyncpg.Connection,
) -> None:
    async with conn.transaction():
        async with deferred_inserts(conn):
            await insert_many(conn, INSERT, [("a",), ("b",)])
            await insert_many(conn, INSERT, [])
            await insert_many(conn, INSERT, [("c",)])
            assert await _labels(conn) == []
        assert await _labels(conn) == ["a", "b", "c"]


async def test_an_exception_inside_the_block_writes_nothing(conn: asyncpg.Connection) -> None:
    with pytest.raises(RuntimeError):
        async with deferred_inserts(conn):
            await insert_many(conn, INSERT, [("lost",)])
            raise RuntimeError("a handler failed")
    assert await _labels(conn) == []


async def test_outside_the_block_or_on_another_connection_rows_go_at_once(
    conn: asyncpg.Connection, infra: Infra
) -> None:
    await insert_many(conn, INSERT, [("now",)])
    other = await asyncpg.connect(infra.database_url)
    try:
        async with deferred_inserts(conn):
            await insert_many(other, INSERT, [("other",)])
            assert await _labels(conn) == ["now", "other"]
    finally:
        await other.close()
