"""asyncpg: one pool per service, its search_path pinned to the service's own schema."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared import jsonutil


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


async def ensure_database(url: str) -> None:
    """Create the database named in `url` when it does not exist yet."""
    name = database_name(url)
    conn = await asyncpg.connect(_with_database(url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another service created it at the same moment
    finally:
        await conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(
            json_type,
            encoder=jsonutil.dumps_str,
            decoder=jsonutil.loads,
            schema="pg_catalog",
        )


async def create_pool(url: str, schema: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": schema},
        init=_init_connection,
    )
    assert pool is not None
    return pool


async def connect(url: str, schema: str) -> asyncpg.Connection:
    """A dedicated connection (the relay's leader lock and LISTEN live on one)."""
    conn = await asyncpg.connect(
        url, server_settings={"search_path": schema, "application_name": f"{schema}-relay"}
    )
    await _init_connection(conn)
    return conn
