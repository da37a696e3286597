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


# The server probes an idle client socket after 5 s, every 2 s, 3 times: a client whose
# machine or network vanished loses its session (and its locks) within about 11 s.
_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}


class PoolConnection(asyncpg.Connection):
    """A pool connection released without asyncpg's reset query (advisory unlock, CLOSE
    ALL, UNLISTEN, RESET ALL), which costs a round trip per transaction. Pool connections
    carry no session state to reset: session advisory locks, LISTEN and SET are only
    used on connections of their own (`connect` below). An open transaction is still
    rolled back on release (asyncpg's Connection._reset)."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(url: str, schema: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        connection_class=PoolConnection,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": schema, **_KEEPALIVES},
        init=_init_connection,
    )
    assert pool is not None
    return pool


async def connect(
    url: str, schema: str, *, purpose: str = "relay", session_timeout_s: float | None = None
) -> asyncpg.Connection:
    """A dedicated connection (the relay's leader lock and LISTEN live on one).

    With `session_timeout_s`, the server ends the session once it sat idle, or one statement
    ran, that long, and the client gives up on a statement after it too: a holder that
    hangs (a paused process, a dead network) releases its advisory lock within that bound.
    """
    settings = {"search_path": schema, "application_name": f"{schema}-{purpose}", **_KEEPALIVES}
    if session_timeout_s is not None:
        millis = str(int(session_timeout_s * 1000))
        settings |= {
            "idle_session_timeout": millis,
            "statement_timeout": millis,
            "idle_in_transaction_session_timeout": millis,
        }
    conn = await asyncpg.connect(
        url, server_settings=settings, command_timeout=session_timeout_s, timeout=10
    )
    await _init_connection(conn)
    return conn
