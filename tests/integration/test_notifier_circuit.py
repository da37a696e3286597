"""Per-endpoint circuit breakers on real PostgreSQL with real HTTP receivers: an endpoint
that hangs opens its circuit after N failures, is probed half-open, keeps its deliveries
and delivers them in order when it comes back; another tenant's endpoint never waits;
what waited past the give-up time fails with the reason (an injected clock, no sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notifier.app import MIGRATIONS, SCHEMA
from services.notifier.delivery import DeliveryWorker
from services.notifier.settings import NotifierSettings
from services.notifier.webhook_client import WebhookClient
from shared.db import connect, create_pool
from shared.metrics import ServiceMetrics
from shared.runtime import migrate
from tests.integration.test_notifier_delivery_states import (
    Receiver,
    add_complaint,
    all_in,
    deliveries,
    settings_for,
    workers,
)
from tests.support import eventually


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


async def circuit_of(db: asyncpg.Connection, url: str) -> asyncpg.Record | None:
    endpoint = url.rsplit("/", 1)[0]  # http://127.0.0.1:port
    return await db.fetchrow("SELECT * FROM circuits WHERE endpoint = $1", endpoint)


async def test_a_hanging_endpoint_opens_its_circuit_is_probed_and_delivers_in_order(
    migrated: str, db: asyncpg.Connection
) -> None:
    dead = True
    hanging = await Receiver(lambda _id, _nth: "drip" if dead else "ok").start()
    healthy = await Receiver().start()
    url = hanging.url
    threshold = 3
    settings = settings_for(
        migrated,
        webhook_timeout_s=1.0,
        webhook_pool_timeout_s=0.5,
        delivery_lease_s=3.0,
        circuit_failure_threshold=threshold,
        circuit_cooldown_s=1.5,
    )
    try:
        async with workers(settings) as [running]:
            # Two complaints of one tenant on the hanging endpoint: 3 + 2 notifications.
            x = await add_complaint(db, url, notifications=3)
            y = await add_complaint(db, url, notifications=2)

            async def opened() -> bool:
                c = await circuit_of(db, url)
                return c is not None and c["state"] == "open"

            await eventually(opened, within_s=15)
            at_open = len(hanging.requests)
            # N failures, plus at most the other complaint's request already in flight.
            assert threshold <= at_open <= threshold + 1

            # Meanwhile another tenant's endpoint is served at once.
            started = time.monotonic()
            other = await add_complaint(db, healthy.url, notifications=3)
            await eventually(all_in("delivered", db, other), within_s=5)
            assert time.monotonic() - started < 3

            # Open: nothing attempted until the cool-down is over; then one probe at a
            # time, which fails (still hanging) and reopens with a longer cool-down.
            async def reopened() -> bool:
                c = await circuit_of(db, url)
                return c is not None and c["opened"] >= 2 and c["state"] == "open"

            await eventually(reopened, within_s=15)
            probes = len(hanging.requests) - at_open
            circuit = await circuit_of(db, url)
            assert circuit is not None
            assert probes == circuit["opened"] - 1  # one request per half-open
            assert circuit["open_until"] - circuit["updated_at"] > timedelta(seconds=2.5)
            assert hanging.most_in_flight.most_common(1)[0][1] == 1

            # Kept out of the due set meanwhile: the claim does not read them each round.
            async def parked() -> list[asyncpg.Record]:
                rows = await db.fetch(
                    "SELECT parked, next_attempt_at > now() AS later FROM deliveries "
                    "WHERE id = ANY($1::bigint[]) AND lease_id IS NULL",
                    x + y,
                )
                return [r for r in rows if r["parked"] and r["later"]]

            assert await eventually(parked, within_s=5)

            dead = False  # the endpoint comes back: the next probe closes the circuit
            await eventually(all_in("delivered", db, x + y), within_s=20)
            assert running.worker.is_healthy()
    finally:
        await hanging.stop()
        await healthy.stop()

    rows = await deliveries(db, x + y)
    # Every request the receiver saw was one counted attempt; none while open.
    assert sum(r["attempts"] for r in rows) == len(hanging.requests)
    delivered = [r.event_id for r in hanging.delivered()]
    for complaint in (x, y):
        ids = [r["event_id"] for r in rows if r["id"] in complaint]
        assert [e for e in delivered if e in ids] == ids  # in order, each once
    circuit = await circuit_of(db, url)
    assert circuit is not None and (circuit["state"], circuit["failures"]) == ("closed", 0)
    log = await db.fetch(
        "SELECT delivery_id, attempt, endpoint, error, status_code, latency_ms "
        "FROM delivery_attempts WHERE delivery_id = ANY($1::bigint[]) ORDER BY id",
        x + y,
    )
    assert len(log) == len(hanging.requests)
    assert {r["endpoint"] for r in log} == {url.rsplit("/", 1)[0]}  # no path
    failed = [r for r in log if r["error"] is not None]
    assert {r["error"] for r in failed} == {"DeadlineExceeded"}
    assert all(900 <= r["latency_ms"] < 2000 for r in failed)  # cut at the 1 s deadline
    assert {r["status_code"] for r in log if r["error"] is None} == {200}
    sent = [json.loads(m) for (m,) in await db.fetch("SELECT message FROM outbox")]
    ids = {r["event_id"] for r in rows}
    assert (
        sorted(m["event_type"] for m in sent if m["payload"]["notification_id"] in ids)
        == ["notification.sent"] * 5
    )


async def test_deliveries_kept_behind_an_open_circuit_fail_after_the_give_up_time(
    migrated: str, db: asyncpg.Connection
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/hooks"
    assert NotifierSettings().retry_give_up_hours >= 24  # CONTRACT section 7
    settings = settings_for(
        migrated,
        retry_give_up_hours=24,
        circuit_failure_threshold=2,
        # No probe in this test, even a day later: only the give-up.
        circuit_cooldown_s=2 * 86400,
        circuit_max_cooldown_s=2 * 86400,
    )
    offset = timedelta(0)
    pool = await create_pool(migrated, SCHEMA, 1, 4)
    client = WebhookClient(timeout_s=1.0, pool_timeout_s=0.5, connections=16)
    worker = DeliveryWorker(
        lambda: pool,
        settings,
        ServiceMetrics("notifier"),
        client,
        clock=lambda: datetime.now(UTC) + offset,
    )
    task = asyncio.create_task(worker.run_forever())
    try:
        ids = await add_complaint(db, url, notifications=3)
        more = await add_complaint(db, url, notifications=1)

        async def opened() -> bool:
            c = await circuit_of(db, url)
            return c is not None and c["state"] == "open"

        await eventually(opened, within_s=10)
        before = {r["id"]: r["attempts"] for r in await deliveries(db, ids + more)}
        assert sum(before.values()) >= 2  # the two failures that opened it
        [first] = await deliveries(db, ids[:1])
        assert first["state"] == "retrying"

        offset = timedelta(hours=24, minutes=1)  # a day later, still open
        await eventually(all_in("failed", db, ids + more), within_s=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
        await pool.close()

    rows = await deliveries(db, ids + more)
    assert {r["id"]: r["attempts"] for r in rows} == before  # given up, not attempted
    assert {r["last_error"] for r in rows} == {"CircuitOpen (ClientConnectorError)"}
    sent = [json.loads(m) for (m,) in await db.fetch("SELECT message FROM outbox")]
    event_ids = {r["event_id"] for r in rows}
    failed = [m for m in sent if m["payload"]["notification_id"] in event_ids]
    assert sorted(m["event_type"] for m in failed) == ["notification.failed"] * 4
    assert {m["payload"]["error"] for m in failed} == {"CircuitOpen (ClientConnectorError)"}
