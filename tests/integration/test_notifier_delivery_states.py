"""The notifier's delivery state machine on real PostgreSQL and real HTTP receivers.

No broker here: deliveries are inserted as notifier's consumers would insert them, and
DeliveryWorker instances run against the database directly, two at once where ownership
is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from deploy.local import stack
from services.notifier.app import MIGRATIONS, SCHEMA
from services.notifier.delivery import DeliveryWorker, Outcome
from services.notifier.settings import NotifierSettings
from services.notifier.webhook_client import WebhookClient
from shared.db import connect, create_pool
from shared.metrics import ServiceMetrics
from shared.runtime import migrate
from tests.support import eventually, holds

# ---------------------------------------------------------------------------- receivers


@dataclass
class Request:
    event_id: str
    worker: str
    started: float
    ended: float | None = None
    answered: int | None = None  # status, when a full answer went out


Behaviour = Callable[[str, int], str]  # (event_id, nth request for it) -> "ok" | "drip" ...


@dataclass
class Receiver:
    """A real HTTP/1.1 server on loopback with a scripted answer per request:
    "ok" answers 200; "drip" sends a status line, then a header byte every 0.2 s for ever,
    so no single read ever waits long enough for a per-phase (socket read) timeout; "slow"
    answers 200 after 1 s; "cut" sends half an answer and closes the connection."""

    behaviour: Behaviour = lambda _event_id, _nth: "ok"
    requests: list[Request] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hooks"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def for_event(self, event_id: str) -> list[Request]:
        return [r for r in self.requests if r.event_id == event_id]

    def delivered(self) -> list[Request]:
        return [r for r in self.requests if r.answered == 200]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
                )
                lower = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(lower.get("content-length", "0")))
                event_id = lower["x-complaints-event-id"]
                request = Request(event_id, lower.get("x-worker", "?"), time.monotonic())
                self.requests.append(request)
                self.in_flight[event_id] += 1
                self.most_in_flight[event_id] = max(
                    self.most_in_flight[event_id], self.in_flight[event_id]
                )
                try:
                    keep = await self._answer(
                        self.behaviour(event_id, len(self.for_event(event_id))),
                        request,
                        reader,
                        writer,
                    )
                finally:
                    request.ended = time.monotonic()
                    self.in_flight[event_id] -= 1
                if not keep:
                    break
        writer.close()

    @staticmethod
    async def _answer(
        how: str, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if how == "slow":
            await asyncio.sleep(1.0)
        if how in ("ok", "slow"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            request.answered = 200
            return True
        if how == "cut":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"par')
            await writer.drain()
            return False
        writer.write(b"HTTP/1.1 200 OK\r\n")  # "drip": until the client gives up
        while True:
            try:
                if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                    return False  # the client closed the connection
            except TimeoutError:
                writer.write(b"X")
                await writer.drain()


# ---------------------------------------------------------------------------- database


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


# What the templates need (they refuse a missing variable): as planning.py stores it.
TEMPLATE_DATA = {"category": "fraud", "priority": "P2"}


async def add_complaint(
    db: asyncpg.Connection,
    webhook_url: str,
    *,
    notifications: int = 2,
    tenant_id: uuid.UUID | None = None,
) -> list[int]:
    """A complaint's recipient and its `notifications` deliveries, in order: their ids."""
    complaint_id, tenant_id = uuid.uuid4(), tenant_id or uuid.uuid4()
    ticket_no = f"WC-20261123-{uuid.uuid4().int % 10**6:06d}"
    await db.execute(
        "INSERT INTO recipients (complaint_id, tenant_id, ticket_no, webhook_url, locale, "
        "received_at) VALUES ($1, $2, $3, $4, 'en', now())",
        complaint_id,
        tenant_id,
        ticket_no,
        webhook_url,
    )
    types = ["complaint.acknowledged", "complaint.triaged", "complaint.resolved"]
    return [
        await db.fetchval(
            "INSERT INTO deliveries (event_id, complaint_id, tenant_id, ticket_no, "
            "correlation_id, type, template, data, occurred_at) "
            "VALUES (gen_random_uuid(), $1, $2, $3, gen_random_uuid(), $4, $4, $5, now()) "
            "RETURNING id",
            complaint_id,
            tenant_id,
            ticket_no,
            kind,
            TEMPLATE_DATA,
        )
        for kind in types[:notifications]
    ]


async def deliveries(db: asyncpg.Connection, ids: list[int]) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, event_id::text, state, attempts, last_error, lease_id, next_attempt_at "
        "FROM deliveries WHERE id = ANY($1::bigint[]) ORDER BY id",
        ids,
    )


async def announced(db: asyncpg.Connection, ids: list[int]) -> list[dict[str, Any]]:
    """The notification events in the outbox for these deliveries."""
    event_ids = {r["event_id"] for r in await deliveries(db, ids)}
    messages = [json.loads(m) for m in await db.fetchval("SELECT array_agg(message) FROM outbox")]
    return [m for m in messages if m["payload"]["notification_id"] in event_ids]


def all_in(state: str, db: asyncpg.Connection, ids: list[int]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return all(r["state"] == state for r in await deliveries(db, ids))

    return probe


# ---------------------------------------------------------------------------- workers


def settings_for(url: str, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "database_url": url,
        "log_format": "console",
        "delivery_poll_interval_s": 0.05,
        "retry_first_s": 0.2,
        **overrides,
    }
    return NotifierSettings(**values)


@dataclass
class Running:
    worker: DeliveryWorker
    metrics: ServiceMetrics
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def workers(
    settings: NotifierSettings, count: int = 1, *, max_connections: int = 16
) -> AsyncIterator[list[Running]]:
    """`count` DeliveryWorkers, each with its own pool and HTTP client (as separate
    processes would have), tagging their requests with X-Worker."""
    async with contextlib.AsyncExitStack() as stack:
        running: list[Running] = []
        for n in range(count):
            pool = await create_pool(settings.database_url, SCHEMA, 1, 4)
            stack.push_async_callback(_close_pool, pool)
            client = WebhookClient(
                timeout_s=settings.webhook_timeout_s,
                pool_timeout_s=settings.webhook_pool_timeout_s,
                connections=max_connections,
                headers={"X-Worker": f"w{n}"},
            )
            stack.push_async_callback(client.close)
            metrics = ServiceMetrics("notifier")
            worker = DeliveryWorker(lambda pool=pool: pool, settings, metrics, client)
            task = asyncio.create_task(worker.run_forever())
            stack.push_async_callback(_cancel, task)
            running.append(Running(worker, metrics, task))
        yield running


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, 10)


async def _close_pool(pool: asyncpg.Pool) -> None:
    # Bounded: a graceful close waits for every connection to be released, and one the
    # stopped database broke may never be; a teardown must not hang the suite.
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()


def counted(metrics: ServiceMetrics, outcome: str) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "notifications_sent"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["outcome"] == outcome
    )


# ---------------------------------------------------------------------------- tests


async def test_a_dripping_endpoint_is_cut_at_the_deadline_and_never_sent_twice_at_once(
    migrated: str, db: asyncpg.Connection
) -> None:
    # Each notification's first two requests drip (only a total deadline stops them);
    # the third is answered. The lease is barely longer than the deadline: a request
    # that outlived it would be claimed and sent by the other worker at the same time.
    receiver = await Receiver(lambda _id, nth: "drip" if nth <= 2 else "ok").start()
    settings = settings_for(
        migrated,
        webhook_timeout_s=1.0,
        webhook_pool_timeout_s=0.5,
        delivery_lease_s=2.0,
        delivery_batch_size=3,
        # 12 cut requests to one endpoint: its circuit must not open in this test
        # (test_notifier_circuit.py is about that).
        circuit_failure_threshold=1000,
    )
    ids = [i for _ in range(6) for i in await add_complaint(db, receiver.url)]
    started = time.monotonic()
    try:
        async with workers(settings, count=2):
            await eventually(all_in("delivered", db, ids), within_s=30)
    finally:
        await receiver.stop()

    rows = await deliveries(db, ids)
    assert time.monotonic() - started < 20
    for row in rows:
        attempts = receiver.for_event(row["event_id"])
        # Retried with the same event_id, after the deadline cut each dripping request.
        assert [a.answered for a in attempts] == [None, None, 200]
        assert row["attempts"] == 3 and row["lease_id"] is None
        assert receiver.most_in_flight[row["event_id"]] == 1
        for cut in attempts[:2]:
            assert cut.ended is not None and cut.ended - cut.started < 1.0 + 0.2
    assert {r.worker for r in receiver.requests} == {"w0", "w1"}  # both took part
    sent = await announced(db, ids)
    assert Counter(m["payload"]["notification_id"] for m in sent) == Counter(
        {r["event_id"]: 1 for r in rows}
    )
    assert {m["event_type"] for m in sent} == {"notification.sent"}


async def test_an_outcome_under_a_lease_that_is_no_longer_current_changes_nothing(
    migrated: str, db: asyncpg.Connection
) -> None:
    settings = settings_for(migrated)
    pool = await create_pool(migrated, SCHEMA, 1, 2)
    first = DeliveryWorker(lambda: pool, settings, ServiceMetrics("notifier"))
    second = DeliveryWorker(lambda: pool, settings, ServiceMetrics("notifier"))
    # Park whatever earlier tests left open: this test claims by hand.
    await db.execute(
        "UPDATE deliveries SET next_attempt_at = now() + interval '1 hour' "
        "WHERE state IN ('pending', 'retrying')"
    )
    [delivery_id] = await add_complaint(db, "http://127.0.0.1:9/hooks", notifications=1)
    try:
        [mine] = await first.claim(10)
        assert await second.claim(10) == []  # leased: nobody else gets it
        # The lease runs out (a paused process, say); the other worker claims it.
        await db.execute("UPDATE deliveries SET next_attempt_at = now() WHERE id = $1", delivery_id)
        [theirs] = await second.claim(10)
        assert theirs["lease_id"] != mine["lease_id"]

        # The first owner's late outcomes, whatever they are, change nothing.
        for outcome in (Outcome(True, 200, None), Outcome(False, 503, "HTTP 503")):
            assert await first.record([(mine, b"{}", outcome)]) == set()
        [row] = await deliveries(db, [delivery_id])
        assert (row["state"], row["last_error"], row["lease_id"]) == (
            "pending",
            None,
            theirs["lease_id"],
        )
        assert await announced(db, [delivery_id]) == []

        assert await second.record([(theirs, b"{}", Outcome(False, 503, "HTTP 503"))]) == {
            delivery_id
        }
        await db.execute("UPDATE deliveries SET next_attempt_at = now() WHERE id = $1", delivery_id)
        [last] = await first.claim(10)
        assert await first.record([(last, b"{}", Outcome(True, 200, None))]) == {delivery_id}
        # Delivered is final: the same outcome again, a give-up, a stale retry: nothing.
        await db.execute(
            "UPDATE deliveries SET created_at = now() - interval '49 hours' WHERE id = $1",
            delivery_id,
        )
        for stale in (last, theirs, mine):
            for outcome in (Outcome(True, 200, None), Outcome(False, 503, "HTTP 503")):
                assert await first.record([(stale, b"{}", outcome)]) == set()
    finally:
        await pool.close()

    [row] = await deliveries(db, [delivery_id])
    assert (row["state"], row["attempts"], row["lease_id"]) == ("delivered", 3, None)
    sent = await announced(db, [delivery_id])
    assert [m["event_type"] for m in sent] == ["notification.sent"]
    with pytest.raises(asyncpg.RaiseError, match="final state"):
        await db.execute("UPDATE deliveries SET state = 'retrying' WHERE id = $1", delivery_id)


@pytest.mark.parametrize(
    ("first_url", "error"),
    [
        # A port out of range: refused by the client before any connection.
        ("http://127.0.0.1:99999/hooks", "InvalidUrlClientError"),
        ("cut", "ClientPayloadError"),  # the receiver closes mid-answer
    ],
)
async def test_any_exception_is_recorded_and_retried_and_later_notifications_follow(
    migrated: str, db: asyncpg.Connection, first_url: str, error: str
) -> None:
    cut = first_url == "cut"
    receiver = await Receiver(lambda _id, nth: "cut" if cut and nth <= 3 else "ok").start()
    url = receiver.url if cut else first_url
    first, then = await add_complaint(db, url)
    try:
        async with workers(settings_for(migrated)) as [running]:

            async def failed_twice() -> bool:
                [row, _] = await deliveries(db, [first, then])
                return row["attempts"] >= 2

            await eventually(failed_twice)
            row, waiting = await deliveries(db, [first, then])
            assert (row["state"], row["last_error"]) == ("retrying", error)
            assert (waiting["state"], waiting["attempts"]) == ("pending", 0)  # in order
            assert running.worker.is_healthy() and not running.task.done()
            # The tenant fixes its webhook: the same notification goes, then the next.
            await db.execute(
                "UPDATE recipients SET webhook_url = $1 WHERE complaint_id = "
                "(SELECT complaint_id FROM deliveries WHERE id = $2)",
                receiver.url,
                first,
            )
            await eventually(all_in("delivered", db, [first, then]))
    finally:
        await receiver.stop()
    row, waiting = await deliveries(db, [first, then])
    assert [r.event_id for r in receiver.delivered()] == [row["event_id"], waiting["event_id"]]
    assert len(await announced(db, [first, then])) == 2


async def test_a_full_connection_pool_is_not_blamed_on_the_next_tenant(
    migrated: str, db: asyncpg.Connection
) -> None:
    # One pooled connection, taken by tenant A's dripping endpoint until the deadline.
    # Tenant B's requests wait for it, time out on our pool and give their claim back:
    # no attempt counted, no error recorded, no back-off for B (a counted failure would
    # wait retry_first_s = 30 s, as would a tenant postponement).
    dripping = await Receiver(lambda _id, _nth: "drip").start()
    healthy = await Receiver().start()
    settings = settings_for(
        migrated, webhook_timeout_s=2.0, webhook_pool_timeout_s=0.3, retry_first_s=30
    )
    try:
        async with workers(settings, max_connections=1) as [running]:
            [a] = await add_complaint(db, dripping.url, notifications=1)
            await eventually(lambda: holds(dripping.in_flight.total() > 0))
            b_ids = await add_complaint(db, healthy.url)
            await eventually(all_in("delivered", db, b_ids), within_s=10)
            [a_row] = await deliveries(db, [a])
    finally:
        await dripping.stop()
        await healthy.stop()
    assert counted(running.metrics, "deferred") >= 1  # the pool really was full
    for row in await deliveries(db, b_ids):
        assert (row["attempts"], row["last_error"]) == (1, None)
    assert (a_row["state"], a_row["last_error"]) == ("retrying", "DeadlineExceeded")
    assert len(await announced(db, b_ids)) == 2


# ---------------------------------------------------------------------------- outage

OUTAGE_S = 20  # as in the issue: longer than any in-process retry


@contextlib.contextmanager
def own_postgres() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A PostgreSQL cluster of this test's own: (database url, stop, start)."""
    with tempfile.TemporaryDirectory(prefix="notifier-pg-") as work_dir:
        Path(work_dir).chmod(0o755)  # the cluster may run as the postgres account
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        data_dir = Path(work_dir) / "data"

        def start() -> None:
            stack.start_local_postgres(data_dir, port, Path(work_dir) / "pg.log")

        start()
        try:
            yield (
                f"postgresql://postgres@127.0.0.1:{port}/complaints",
                lambda: stack.stop_local_postgres(data_dir, "fast"),
                start,
            )
        finally:
            with contextlib.suppress(SystemExit):
                stack.stop_local_postgres(data_dir, "immediate")


async def test_the_worker_survives_a_database_stop_and_listens_again() -> None:
    receiver = await Receiver(lambda _id, _nth: "slow").start()
    with own_postgres() as (url, stop, start):
        settings = settings_for(
            # A long poll: a delivery that goes within seconds was woken by NOTIFY.
            url,
            delivery_poll_interval_s=60,
            webhook_timeout_s=3,
            delivery_lease_s=OUTAGE_S + 20,  # the in-flight request's lease outlives the stop
        )
        await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
        db = await connect(url, SCHEMA)
        try:
            async with workers(settings) as [running]:
                before = await add_complaint(db, receiver.url, notifications=1)
                await eventually(all_in("delivered", db, before), within_s=5)

                # A request in flight when the database stops: its outcome waits for it.
                in_flight = await add_complaint(db, receiver.url, notifications=1)
                await eventually(lambda: holds(receiver.in_flight.total() > 0))
                await db.close()
                await asyncio.to_thread(stop)
                errors_before = running.worker.errors
                for _ in range(OUTAGE_S):
                    await asyncio.sleep(1)
                    assert not running.task.done()
                    assert running.worker.health()["loop_iterating"]
                assert running.worker.errors > errors_before  # the stop hit the worker
                await asyncio.to_thread(start)

                db = await connect(url, SCHEMA)
                await eventually(all_in("delivered", db, in_flight), within_s=15)
                # Inserted after the restart: only a re-established LISTEN wakes it so soon.
                after = await add_complaint(db, receiver.url, notifications=1)
                await eventually(all_in("delivered", db, after), within_s=5)
                assert running.worker.is_healthy()
            assert not running.worker.is_healthy()  # stopped
            ids = before + in_flight + after
            sent = Counter(m["event_type"] for m in await announced(db, ids))
        finally:
            await db.close()
            await receiver.stop()
    assert len(receiver.delivered()) == 3
    assert sent == {"notification.sent": 3}
