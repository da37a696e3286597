"""The infrastructure one service runs on: pool, producer, broker, outbox relay.

Each service's composition root builds one ServiceRuntime, registers its subscriptions,
and starts/stops it from the FastAPI lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.broker_wait import wait_for_broker, wait_for_topics
from shared.consumer import EventConsumer, Handler, TransactionScope, no_scope
from shared.consumer_health import dead_consumer_error
from shared.consumer_lag import ConsumerLagMonitor
from shared.db import create_pool
from shared.housekeeping import Housekeeping, Policy, RetentionStep
from shared.kafka import make_broker, make_producer, subscribe
from shared.logging import get_logger
from shared.metrics import ServiceMetrics
from shared.migrations import apply_migrations
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

log = get_logger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: ServiceSettings, schema: str, migrations_dir: Path) -> int:
    return apply_migrations(settings.database_url, schema, [SHARED_MIGRATIONS, migrations_dir])


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings, schema: str) -> None:
        self.settings = settings
        self.schema = schema
        self.name = settings.service_name
        self.metrics = ServiceMetrics(self.name)
        self._producer: AIOKafkaProducer | None = None  # needs the running loop: made in start()
        self.broker: KafkaBroker = make_broker(settings, client_id=self.name)
        self._pool: asyncpg.Pool | None = None
        self._subscriptions: dict[str, Handler] = {}
        self._event_types: dict[str, frozenset[str]] = {}
        self._scope: TransactionScope = no_scope
        self._relay: OutboxRelay | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._supervisors: list[Supervisor] = []
        self._readiness_checks: dict[str, Callable[[], bool]] = {}
        self.housekeeping = Housekeeping(
            database_url=settings.database_url,
            schema=schema,
            policy=Policy.from_settings(settings),
            metrics=self.metrics,
        )
        self.started = False
        self.consumer_restarts = 0

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("runtime not started")
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("runtime not started")
        return self._producer

    def on(self, topic: str, handler: Handler, *, event_types: Iterable[str] | None = None) -> None:
        """Register a handler for `topic`; wired to the broker on start. `event_types`:
        the only types it acts on; the topic's others are passed over by their
        `event_type` header, before any parsing, inbox row or transaction."""
        self._subscriptions[topic] = handler
        if event_types is not None:
            self._event_types[topic] = frozenset(event_types)

    def scope_transactions(self, scope: TransactionScope) -> None:
        """Open `scope` around the handlers of every consumer transaction (see
        shared.consumer.TransactionScope), e.g. to write a batch's changes at once."""
        self._scope = scope

    def add_background(self, loop: Callable[[], Awaitable[None]], name: str | None = None) -> None:
        """Run `loop` (a long-lived worker, e.g. webhook delivery) while the service runs,
        supervised: restarted with backoff when it fails, and reported by /readyz."""
        self._background.append((name or getattr(loop, "__qualname__", "background"), loop))

    def add_retention(self, step: RetentionStep) -> None:
        """A retention delete of the service's own (e.g. finished deliveries), run by the
        housekeeping leader beside the outbox's and the inbox's, its tables VACUUMed after."""
        self.housekeeping.add_retention(step)

    def add_readiness_check(self, name: str, check: Callable[[], bool]) -> None:
        """A check of the service's own (e.g. a worker's heartbeat) that /readyz reports."""
        self._readiness_checks[name] = check

    @property
    def relay(self) -> OutboxRelay:
        if self._relay is None:
            raise RuntimeError("runtime not started")
        return self._relay

    def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        supervisor = Supervisor(name, loop)
        self._supervisors.append(supervisor)
        self._tasks.append(asyncio.create_task(supervisor.run(), name=name))

    async def start(self) -> None:
        s = self.settings
        self._pool = await create_pool(s.database_url, self.schema, s.db_pool_min, s.db_pool_max)
        await wait_for_broker(s.kafka_bootstrap_servers)  # a late broker is waited for
        self._producer = make_producer(s, client_id=self.name)
        await self._producer.start()
        consumer = EventConsumer(
            service=self.name,
            pool=self._pool,
            producer=self.producer,
            metrics=self.metrics,
            max_attempts=s.consumer_max_attempts,
            retry_base_s=s.consumer_retry_base_s,
            scope=self._scope,
            event_types=self._event_types,
        )
        if self._subscriptions:
            await wait_for_topics(s.kafka_bootstrap_servers, self._subscriptions)
            subscribe(self.broker, s, consumer, self._subscriptions, group_id=self.name)
            await self.broker.start()
            self._supervise("consumer_watchdog", self._watch_consumers)
            lag = ConsumerLagMonitor(
                bootstrap_servers=s.kafka_bootstrap_servers,
                group=self.name,  # subscribe()'s group_id
                topics=self._subscriptions,
                metrics=self.metrics,
            )
            self._supervise("consumer_lag", lag.run_forever)
        self._relay = OutboxRelay(
            database_url=s.database_url,
            schema=self.schema,
            producer=self.producer,
            metrics=self.metrics,
            service=self.name,
            poll_interval_s=s.outbox_poll_interval_s,
            batch_size=s.outbox_batch_size,
            leader_timeout_s=s.outbox_leader_timeout_s,
        )
        self._supervise("outbox_relay", self._relay.run_forever)
        self._supervise("housekeeping", self.housekeeping.run_forever)
        for name, loop in self._background:
            self._supervise(name, loop)
        self.started = True
        log.info("service_started", service=self.name)

    async def _watch_consumers(self, every_s: float = 2.0) -> None:
        """Restarts a subscriber whose consumer died inside aiokafka (shared.consumer_health);
        its uncommitted records come again and the inbox absorbs what was applied."""
        while True:
            await asyncio.sleep(every_s)
            for subscriber in self.broker.subscribers:
                error = dead_consumer_error(subscriber)
                if error is None:
                    continue
                log.error("kafka_consumer_dead", error=repr(error))
                self.consumer_restarts += 1
                with contextlib.suppress(Exception):
                    await subscriber.stop()  # the dead consumer may raise its error again
                await subscriber.start()
                log.info("kafka_consumer_restarted", restarts=self.consumer_restarts)

    async def stop(self) -> None:
        """Each step bounded: a step that hangs (a connection a dead peer never closes)
        must not keep the process from exiting; what it left is logged and abandoned."""
        self.started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await _bounded(f"task {task.get_name()}", task)
        self._tasks.clear()
        self._supervisors.clear()
        if self._subscriptions:
            await _bounded("consumer", self.broker.stop())
        if self._producer is not None:
            await _bounded("producer", self._producer.stop())
            self._producer = None
        if self._pool is not None:
            if not await _bounded("database pool", self._pool.close()):
                self._pool.terminate()
            self._pool = None
        log.info("service_stopped", service=self.name)

    async def readiness(self) -> dict[str, bool]:
        checks = {"started": self.started, "database": False, "broker": False}
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    checks["database"] = await self._pool.fetchval("SELECT true")
        if self._producer is not None:
            checks["broker"] = bool(self._producer.client.cluster.brokers())
        if self._subscriptions:
            checks["consumer"] = bool(self.broker.running) and not any(
                dead_consumer_error(subscriber) for subscriber in self.broker.subscribers
            )
        for supervisor in self._supervisors:
            checks[supervisor.name] = supervisor.healthy
        for name, check in self._readiness_checks.items():
            checks[name] = _safe(check)
        return checks


STOP_STEP_TIMEOUT_S = 15.0


async def _bounded(step: str, awaitable: Awaitable[object]) -> bool:
    """Await one shutdown step for at most STOP_STEP_TIMEOUT_S; False if it overran."""
    async with asyncio.timeout(STOP_STEP_TIMEOUT_S) as deadline:
        # A cancelled task, or a step that failed: shutting down all the same.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await awaitable
    if deadline.expired():
        log.warning("shutdown_step_overran", step=step, timeout_s=STOP_STEP_TIMEOUT_S)
        return False
    return True


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


class Supervisor:
    """Runs a long-lived loop; when it fails, logs why, waits (1, 2, 4 ... 30 s) and starts
    it again. `healthy` is False from a failure until the restart."""

    def __init__(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._loop = loop
        self.restarts = 0
        self.healthy = True

    async def run(self) -> None:
        backoff = 1.0
        while True:
            started = time.monotonic()
            try:
                await self._loop()
                log.warning("background_task_returned", task=self.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("background_task_failed", task=self.name, error=repr(exc))
            self.healthy = False
            if time.monotonic() - started > 60:
                backoff = 1.0  # it ran a good while: a fresh failure, not a crash loop
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            self.restarts += 1
            self.healthy = True


def add_ops_routes(app: FastAPI, runtime: ServiceRuntime) -> None:
    """GET /healthz (process alive), /readyz (dependencies reachable), /metrics."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        checks = await runtime.readiness()
        runtime.metrics.service_ready.set(1 if all(checks.values()) else 0)
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
