"""The inbox: remembers which events a consumer has applied, so redelivery is harmless."""

from __future__ import annotations

import uuid

import asyncpg


async def claim(conn: asyncpg.Connection, consumer: str, event_id: uuid.UUID) -> bool:
    """Record the event inside the caller's transaction; False when it was already applied."""
    return event_id in await claim_many(conn, consumer, [event_id])


async def claim_many(
    conn: asyncpg.Connection, consumer: str, event_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Record every event in one round trip; the ones not applied before (a batch may
    repeat an id: the first occurrence claims it)."""
    rows = await conn.fetch(
        "INSERT INTO inbox (consumer, event_id) SELECT $1, id FROM unnest($2::uuid[]) AS id "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        event_ids,
    )
    return {row["event_id"] for row in rows}
