"""Applies a service's .sql migrations to its own schema with yoyo-migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
from yoyo import get_backend, read_migrations

from shared.db import ensure_database


def _yoyo_url(database_url: str, schema: str) -> str:
    # yoyo's PostgreSQL backend keeps its bookkeeping tables in the `schema` it is given.
    parts = urlsplit(database_url)
    scheme = "postgresql"  # yoyo drives it with psycopg2
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode({"schema": schema})))


async def _ensure_schema(database_url: str, schema: str) -> None:
    await ensure_database(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await conn.close()


def apply_migrations(database_url: str, schema: str, migrations_dirs: list[Path]) -> int:
    """Create the database and schema when missing, then apply what is pending.

    Returns the number of migrations applied. Safe to run concurrently: yoyo takes a lock.
    """
    asyncio.run(_ensure_schema(database_url, schema))
    backend = get_backend(_yoyo_url(database_url, schema))
    migrations = read_migrations(*(str(d) for d in migrations_dirs))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return len(pending)
