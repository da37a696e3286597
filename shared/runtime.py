"""The infrastructure one service runs on: pool, producer, broker, outbox relay.

Each service's composition root builds one ServiceRuntime, registers its subscriptions,
and starts/stops it from the FastAPI lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.consumer import EventConsumer, Handler
from shared.db import create_pool
from shared.housekeeping import purge_loop
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
        self._relay: OutboxRelay | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: list[Callable[[], Awaitable[None]]] = []
        self.started = False

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

    def on(self, topic: str, handler: Handler) -> None:
        """Register a handler for `topic`; wired to the broker on start."""
        self._subscriptions[topic] = handler

    def add_background(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop` (a long-lived worker, e.g. webhook delivery) while the service runs."""
        self._background.append(loop)

    async def start(self) -> None:
        s = self.settings
        self._pool = await create_pool(s.database_url, self.schema, s.db_pool_min, s.db_pool_max)
        self._producer = make_producer(s, client_id=self.name)
        await self._producer.start()
        consumer = EventConsumer(
            service=self.name,
            pool=self._pool,
            producer=self.producer,
            metrics=self.metrics,
            max_attempts=s.consumer_max_attempts,
            retry_base_s=s.consumer_retry_base_s,
        )
        if self._subscriptions:
            subscribe(self.broker, s, consumer, self._subscriptions, group_id=self.name)
            await self.broker.start()
        self._relay = OutboxRelay(
            database_url=s.database_url,
            schema=self.schema,
            producer=self.producer,
            metrics=self.metrics,
            poll_interval_s=s.outbox_poll_interval_s,
            batch_size=s.outbox_batch_size,
        )
        self._tasks.append(asyncio.create_task(self._relay.run_forever(), name="outbox-relay"))
        self._tasks.append(
            asyncio.create_task(
                purge_loop(
                    lambda: self.pool,
                    every=timedelta(minutes=10),
                    outbox_retention=timedelta(days=s.outbox_retention_days),
                    inbox_retention=timedelta(days=s.inbox_retention_days),
                )(),
                name="housekeeping",
            )
        )
        for loop in self._background:
            self._tasks.append(asyncio.create_task(loop()))
        self.started = True
        log.info("service_started", service=self.name)

    async def stop(self) -> None:
        self.started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._subscriptions:
            await self.broker.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._pool is not None:
            await self._pool.close()
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
        return checks


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
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
