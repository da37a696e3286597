"""Duplicate linking on real PostgreSQL and a real broker: whichever of the two triaged
events resolution handles first, one case, both tickets linked to it, each customer told
once. And a triaged event carrying contact details is dead-lettered, not handled."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.resolution.app import MIGRATIONS, SCHEMA, create_app
from services.resolution.settings import ResolutionSettings
from shared.db import connect
from shared.events import Envelope
from shared.runtime import migrate
from shared.topics import COMPLAINTS_RESOLUTION, COMPLAINTS_TRIAGED, dead_letter_topic
from tests.integration.events import as_bytes
from tests.integration.test_resolution_service import triaged_event
from tests.support import Infra, eventually, produce, read_topic, running


@pytest.fixture(scope="module")
async def resolution(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    settings = infra.settings(ResolutionSettings)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    async with running(create_app(settings)) as client:
        yield client


@pytest.fixture
async def db(infra: Infra, resolution: httpx.AsyncClient) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(infra.database_url, SCHEMA)
    try:
        yield conn
    finally:
        await conn.close()


async def publish(infra: Infra, event: Envelope) -> None:
    await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, as_bytes(event), event.key)


async def status_events(infra: Infra, complaint_id: uuid.UUID) -> list[dict]:
    return [
        json.loads(m.value or b"")
        for m in await read_topic(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION)
        if m.key == str(complaint_id).encode()
    ]


async def assert_one_case_both_linked(
    infra: Infra, db: asyncpg.Connection, original: Envelope, duplicate: Envelope
) -> None:
    ids = [original.complaint_id, duplicate.complaint_id]

    async def linked() -> bool:
        return bool(
            await db.fetchval(
                "SELECT count(*) FROM linked_complaints WHERE complaint_id = $1", ids[1]
            )
        )

    await eventually(linked)
    cases = await db.fetch("SELECT complaint_id FROM cases WHERE complaint_id = ANY($1)", ids)
    links = await db.fetch(
        "SELECT complaint_id, original_complaint_id FROM linked_complaints "
        "WHERE complaint_id = ANY($1)",
        ids,
    )
    waiting = await db.fetchval(
        "SELECT count(*) FROM pending_links WHERE original_complaint_id = $1", ids[0]
    )
    assert [r["complaint_id"] for r in cases] == [original.complaint_id]
    assert [tuple(r) for r in links] == [(duplicate.complaint_id, original.complaint_id)]
    assert waiting == 0

    [opened] = await eventually(lambda: status_events(infra, original.complaint_id))
    assert opened["payload"]["reason"] == "case_opened"
    [told] = await eventually(lambda: status_events(infra, duplicate.complaint_id))
    assert told["payload"]["reason"] == "duplicate_linked"
    assert told["payload"]["duplicate_of_ticket_no"] == original.ticket_no
    assert told["correlation_id"] == str(duplicate.correlation_id)


async def test_original_first(infra: Infra, db: asyncpg.Connection) -> None:
    original = triaged_event()
    duplicate = triaged_event(duplicate_of=original.complaint_id)
    await publish(infra, original)
    await eventually(
        lambda: db.fetchval("SELECT true FROM cases WHERE complaint_id = $1", original.complaint_id)
    )
    await publish(infra, duplicate)
    await assert_one_case_both_linked(infra, db, original, duplicate)


async def test_duplicate_first(infra: Infra, db: asyncpg.Connection) -> None:
    original = triaged_event()
    duplicate = triaged_event(duplicate_of=original.complaint_id)
    await publish(infra, duplicate)
    await eventually(
        lambda: db.fetchval(
            "SELECT true FROM pending_links WHERE complaint_id = $1", duplicate.complaint_id
        )
    )
    # Handled, and waiting: no case of its own and nothing said to its customer yet.
    assert not await db.fetchval(
        "SELECT count(*) FROM cases WHERE complaint_id = $1", duplicate.complaint_id
    )
    assert await status_events(infra, duplicate.complaint_id) == []

    await publish(infra, original)
    await assert_one_case_both_linked(infra, db, original, duplicate)


async def test_both_at_once_redelivered(infra: Infra, db: asyncpg.Connection) -> None:
    original = triaged_event()
    duplicate = triaged_event(duplicate_of=original.complaint_id)
    await asyncio.gather(*(publish(infra, e) for e in (duplicate, original, duplicate, original)))
    await assert_one_case_both_linked(infra, db, original, duplicate)


async def test_a_triaged_event_with_a_webhook_url_is_dead_lettered(
    infra: Infra, db: asyncpg.Connection
) -> None:
    valid = triaged_event()
    tenant = {"jurisdiction": "eu", "webhook_url": "https://tenant.example/hooks"}
    leaky = valid.model_copy(update={"payload": {**valid.payload, "tenant": tenant}})
    await publish(infra, leaky)

    async def dead() -> list | None:
        found = await read_topic(infra.kafka_bootstrap, dead_letter_topic(COMPLAINTS_TRIAGED))
        return [m for m in found if m.key == leaky.key] or None

    [message] = await eventually(dead)
    assert message.headers["x-dlq-consumer"] == b"resolution"
    assert message.headers["x-dlq-error"] == (
        b"invalid complaint.triaged payload: payload: "
        b"Value error, must not carry contact details: tenant.webhook_url"
    )
    assert not await db.fetchval(
        "SELECT count(*) FROM cases WHERE complaint_id = $1", leaky.complaint_id
    )
