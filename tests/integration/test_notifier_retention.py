"""The customer's address is kept while the complaint is open plus the retention period,
then purged: real PostgreSQL, the real handlers, ContactPurge on an injected clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notifier.app import MIGRATIONS, SCHEMA
from services.notifier.retention import ContactPurge
from services.notifier.settings import NotifierSettings
from shared.db import connect, create_pool
from shared.events import Envelope, new_event
from shared.runtime import migrate
from tests.integration.test_notifier_email import ADDRESS, handle, received_with

CLOSED_AT = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> str:
    await asyncio.to_thread(
        migrate, NotifierSettings(database_url=database_url), SCHEMA, MIGRATIONS
    )
    return database_url


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(migrated, SCHEMA)
    try:
        yield conn
    finally:
        await conn.close()


def status(received: Envelope, value: str, at: datetime) -> Envelope:
    return new_event(
        "complaint.status_changed",
        producer="resolution",
        tenant_id=received.tenant_id,
        complaint_id=received.complaint_id,
        ticket_no=received.ticket_no,
        correlation_id=received.correlation_id,
        occurred_at=at,
        payload={"status": value, "reason": "test"},
    )


async def address(db: asyncpg.Connection, complaint_id: uuid.UUID) -> str | None:
    return await db.fetchval("SELECT email FROM recipients WHERE complaint_id = $1", complaint_id)


async def test_the_address_is_purged_once_the_retention_after_closing_has_passed(
    migrated: str, db: asyncpg.Connection
) -> None:
    settings = NotifierSettings(database_url=migrated, contact_retention_days=30)
    now = CLOSED_AT
    pool = await create_pool(migrated, SCHEMA, 1, 2)
    purge = ContactPurge(lambda: pool, settings, clock=lambda: now)
    try:
        resolved = received_with("http://127.0.0.1:9/hooks", ADDRESS)
        reopened = received_with("http://127.0.0.1:9/hooks", ADDRESS)
        still_open = received_with("http://127.0.0.1:9/hooks", ADDRESS)
        early = received_with("http://127.0.0.1:9/hooks", ADDRESS)
        # `early`: resolved before complaint.received was handled (the topics race).
        await handle(db, status(early, "resolved", CLOSED_AT), email_on=True)
        for r in (resolved, reopened, still_open, early):
            await handle(db, r, email_on=True)
        await handle(db, status(resolved, "resolved", CLOSED_AT), email_on=True)
        # closed after resolved does not restart the period
        await handle(db, status(resolved, "closed", CLOSED_AT + timedelta(days=5)), email_on=True)
        await handle(db, status(reopened, "resolved", CLOSED_AT), email_on=True)
        await handle(db, status(reopened, "reopened", CLOSED_AT + timedelta(days=1)), email_on=True)
        await handle(db, status(still_open, "in_progress", CLOSED_AT), email_on=True)
        await db.execute(
            "UPDATE deliveries SET body = 'To: x' WHERE complaint_id = $1 AND channel = 'email'",
            resolved.complaint_id,
        )

        now = CLOSED_AT + timedelta(days=29, hours=23)
        assert await purge.purge_once() == 0  # within the period: kept
        assert await address(db, resolved.complaint_id) == ADDRESS

        now = CLOSED_AT + timedelta(days=30, minutes=1)
        assert await purge.purge_once() == 2  # resolved and early
        assert await purge.purge_once() == 0  # idempotent
        assert await address(db, resolved.complaint_id) is None
        assert await address(db, early.complaint_id) is None
        assert await address(db, reopened.complaint_id) == ADDRESS  # open again
        assert await address(db, still_open.complaint_id) == ADDRESS
        bodies = await db.fetch(
            "SELECT body FROM deliveries WHERE complaint_id = $1 AND channel = 'email'",
            resolved.complaint_id,
        )
        assert bodies and all(b["body"] is None for b in bodies)  # To: went with it
        purged_at = await db.fetchval(
            "SELECT contact_purged_at FROM recipients WHERE complaint_id = $1",
            resolved.complaint_id,
        )
        assert purged_at == now

        # The reopened case is resolved again: a fresh period from then.
        again = CLOSED_AT + timedelta(days=40)
        await handle(db, status(reopened, "resolved", again), email_on=True)
        now = again + timedelta(days=29)
        assert await purge.purge_once() == 0
        now = again + timedelta(days=31)
        assert await purge.purge_once() == 1
        assert await address(db, reopened.complaint_id) is None
    finally:
        await pool.close()
        await db.execute(
            "UPDATE deliveries SET state = 'failed' WHERE state IN ('pending', 'retrying')"
        )
