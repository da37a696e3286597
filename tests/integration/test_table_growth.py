"""With autovacuum off, the churning tables stop growing once retention applies, because
housekeeping VACUUMs them; the same churn without that step makes them grow (the control:
it proves the test can see the effect).

Real PostgreSQL. Autovacuum is turned off on the test's tables (`autovacuum_enabled =
false`, for their TOAST tables too), which for those tables is what `autovacuum = off` on
the server is. Two schemas with the notifier's tables: one churned and maintained by
Housekeeping.maintain_once (retention zero), one churned and only purged (the same
retention deletes, no VACUUM). Each cycle inserts a batch, takes the previous batch
through the relay's or the delivery worker's updates, then purges.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from services.notifier.app import MIGRATIONS
from services.notifier.retention import DeliveryRetention
from services.notifier.settings import NotifierSettings
from shared.db import create_pool
from shared.housekeeping import CHURNING_TABLES, Housekeeping, Policy, purge_once, qualified
from shared.migrations import apply_migrations
from shared.runtime import SHARED_MIGRATIONS

KEPT, BLOATED = "growth_kept", "growth_bloated"
TABLES = CHURNING_TABLES["notifier"]
CYCLES = 10
ROWS = 1000  # per cycle, in the outbox and in deliveries
EMAIL_EVERY = 4  # one webhook delivery in four has an e-mail twin
ENDPOINTS = 20
RECORD_BATCH = 500  # outcomes per recorded batch (the worker records up to 500), each
# touching every endpoint's circuit
# Cycles 6-10 may exceed cycles 1-5 by this much: a page here and there (an index page
# split before a deleted one could be recycled, the free-space and visibility maps).
TOLERANCE = 0.10

OUTBOX_TABLES = ("outbox", "inbox")
DELIVERY_TABLES = ("deliveries", "delivery_attempts", "circuits")
ZERO = timedelta(0)


@pytest.fixture(scope="module")
async def pools(database_url: str) -> AsyncIterator[dict[str, asyncpg.Pool]]:
    made: dict[str, asyncpg.Pool] = {}
    try:
        for schema in (KEPT, BLOATED):
            await asyncio.to_thread(
                apply_migrations, database_url, schema, [SHARED_MIGRATIONS, MIGRATIONS]
            )
            made[schema] = pool = await create_pool(database_url, schema, 1, 2)
            for table in TABLES:
                await pool.execute(
                    f"ALTER TABLE {qualified(schema, table)} "
                    "SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
                )
        yield made
    finally:
        for pool in made.values():
            await pool.close()


def maintained(database_url: str) -> Callable[[asyncpg.Pool], Awaitable[None]]:
    housekeeping = Housekeeping(
        database_url=database_url,
        schema=KEPT,
        policy=Policy(ZERO, ZERO, purge_every_s=600, vacuum_every_s=60),
        tables=TABLES,
    )
    housekeeping.add_retention(
        DeliveryRetention(NotifierSettings(delivery_retention_days=0)).purge_once
    )

    async def step(_pool: asyncpg.Pool) -> None:
        done = await housekeeping.maintain_once()
        assert done is not None, "no other instance holds the lock"
        assert {"outbox", "deliveries", "delivery_attempts"} <= set(done.vacuumed)

    return step


async def purged_only(pool: asyncpg.Pool) -> None:
    """The same retention deletes, and no VACUUM."""
    async with pool.acquire() as conn:
        await purge_once(conn, outbox_retention=ZERO, inbox_retention=ZERO)
        await DeliveryRetention(NotifierSettings(delivery_retention_days=0)).purge_once(conn)


# -- the churn ---------------------------------------------------------------------------


async def churn_outbox(pool: asyncpg.Pool) -> None:
    """A batch in; the previous batch published as the relay marks it (500 ids at a
    time); a batch of events recorded in the inbox."""
    pending = [
        r["id"] for r in await pool.fetch("SELECT id FROM outbox WHERE published_at IS NULL")
    ]
    await pool.execute(
        """
        INSERT INTO outbox (event_id, topic, message_key, message)
        SELECT gen_random_uuid(), 'complaints.lifecycle.v1',
               convert_to(gen_random_uuid()::text, 'UTF8'),
               convert_to(repeat(md5(random()::text), 12), 'UTF8')
        FROM generate_series(1, $1)
        """,
        ROWS,
    )
    for start in range(0, len(pending), 500):
        await pool.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
            pending[start : start + 500],
        )
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id) "
        "SELECT 'notifier', gen_random_uuid() FROM generate_series(1, $1)",
        ROWS,
    )


async def churn_deliveries(pool: asyncpg.Pool) -> None:
    """A batch of deliveries queued (with e-mail twins); the previous batch claimed, failed
    once, claimed again and delivered, as the worker does, each attempt logged and its
    endpoint's circuit updated per recorded batch."""
    open_ids = [
        r["id"]
        for r in await pool.fetch(
            "SELECT id FROM deliveries WHERE state IN ('pending', 'retrying') ORDER BY id"
        )
    ]
    await queue_deliveries(pool)
    for attempt in (1, 2):
        await pool.execute(
            "UPDATE deliveries SET attempts = attempts + 1, lease_id = gen_random_uuid(), "
            "next_attempt_at = now() + interval '15 seconds' WHERE id = ANY($1::bigint[])",
            open_ids,
        )
        outcome = (
            "state = 'retrying', last_error = 'HTTP 503', lease_id = NULL, "
            "next_attempt_at = now() + interval '1 second', "
            "body = convert_to(repeat(md5(random()::text), 20), 'UTF8')"
            if attempt == 1
            else "state = 'delivered', last_error = NULL, lease_id = NULL, delivered_at = now()"
        )
        for start in range(0, len(open_ids), RECORD_BATCH):
            batch = open_ids[start : start + RECORD_BATCH]
            await pool.execute(
                f"UPDATE deliveries SET {outcome} WHERE id = ANY($1::bigint[])", batch
            )
            await pool.execute(
                """
                INSERT INTO delivery_attempts (delivery_id, attempt, at, channel, endpoint,
                    status_code, error, latency_ms)
                SELECT id, $2, now(), 'webhook', 'https://hooks.example', 503, 'HTTP 503', 12
                FROM unnest($1::bigint[]) AS id
                """,
                batch,
                attempt,
            )
            await pool.execute(
                """
                INSERT INTO circuits (endpoint, channel, failures, updated_at)
                SELECT 'https://e' || i || '.example', 'webhook', 1, now()
                FROM generate_series(1, $1) AS i
                ON CONFLICT (endpoint) DO UPDATE SET
                    failures = CASE WHEN $2 = 1 THEN circuits.failures + 1 ELSE 0 END,
                    last_error = 'HTTP 503', updated_at = now()
                """,
                ENDPOINTS,
                attempt,
            )


async def queue_deliveries(pool: asyncpg.Pool) -> None:
    webhooks = await pool.fetch(
        """
        INSERT INTO deliveries (event_id, complaint_id, tenant_id, ticket_no, correlation_id,
            type, template, data, occurred_at)
        SELECT gen_random_uuid(), gen_random_uuid(), $2, 'WC-' || i, gen_random_uuid(),
               'complaint.triaged', 'complaint_triaged',
               jsonb_build_object('category', 'duplicate_charge', 'note', md5(i::text)), now()
        FROM generate_series(1, $1) AS i
        RETURNING id
        """,
        ROWS,
        uuid.uuid4(),
    )
    await pool.execute(
        """
        INSERT INTO deliveries (event_id, complaint_id, tenant_id, ticket_no, correlation_id,
            type, template, data, occurred_at, channel, source_id)
        SELECT gen_random_uuid(), w.complaint_id, w.tenant_id, w.ticket_no, w.correlation_id,
               w.type, w.template, w.data, w.occurred_at, 'email', w.id
        FROM deliveries w WHERE w.id = ANY($1::bigint[])
        """,
        [r["id"] for r in webhooks[::EMAIL_EVERY]],
    )


async def total_size(pool: asyncpg.Pool, tables: tuple[str, ...]) -> int:
    """Heap, indexes, TOAST and the free-space and visibility maps, summed."""
    return await pool.fetchval(
        "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[])",
        list(tables),
    )


async def sizes_over_cycles(
    pool: asyncpg.Pool, maintain: Callable[[asyncpg.Pool], Awaitable[None]]
) -> tuple[list[int], list[int]]:
    outbox: list[int] = []
    deliveries: list[int] = []
    for _cycle in range(CYCLES):
        await churn_outbox(pool)
        await churn_deliveries(pool)
        await maintain(pool)
        outbox.append(await total_size(pool, OUTBOX_TABLES))
        deliveries.append(await total_size(pool, DELIVERY_TABLES))
    return outbox, deliveries


def kb(sizes: list[int]) -> list[int]:
    return [size // 1024 for size in sizes]


def stopped_growing(sizes: list[int]) -> bool:
    """Cycles 6-10 never larger than the largest of cycles 1-5 (plus the tolerance). Not
    cycle 5 alone: VACUUM truncates the empty pages at a table's end, so a maintained
    table swings between two sizes from one cycle to the next."""
    return max(sizes[5:]) <= max(sizes[:5]) * (1 + TOLERANCE)


async def test_autovacuum_is_off_on_the_test_tables(pools: dict[str, asyncpg.Pool]) -> None:
    for schema, pool in pools.items():
        off = await pool.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) "
            "AND 'autovacuum_enabled=false' = ANY(c.reloptions)",
            schema,
            list(TABLES),
        )
        assert off == len(TABLES), schema


async def test_housekeeping_keeps_the_churning_tables_from_growing_and_without_it_they_grow(
    database_url: str, pools: dict[str, asyncpg.Pool]
) -> None:
    started = time.monotonic()
    kept = await sizes_over_cycles(pools[KEPT], maintained(database_url))
    bloated = await sizes_over_cycles(pools[BLOATED], purged_only)
    report = (
        f"kB per cycle ({time.monotonic() - started:.1f} s)\n"
        f"  outbox+inbox, maintained: {kb(kept[0])}\n"
        f"  outbox+inbox, no VACUUM:  {kb(bloated[0])}\n"
        f"  deliveries+attempts+circuits, maintained: {kb(kept[1])}\n"
        f"  deliveries+attempts+circuits, no VACUUM:  {kb(bloated[1])}"
    )
    print(report)  # the measured sizes, for `pytest -s`

    for sizes in kept:
        assert stopped_growing(sizes), report
    for sizes in bloated:  # the control: the same churn and deletes grow without VACUUM
        assert not stopped_growing(sizes), report
        assert sizes[-1] > max(sizes[:5]) * 1.5, report
    for maintained_sizes, bloated_sizes in zip(kept, bloated, strict=True):
        assert bloated_sizes[-1] > 2 * maintained_sizes[-1], report
    # Retention applied in both: only the batch queued last is left.
    for pool in pools.values():
        assert (
            await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 0
        )
        assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 0
