"""Test helpers: databases, running a service in-process, a webhook receiver, topic reads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from deploy.local.webhook_receiver import webhook_handler
from shared.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")


@dataclass(frozen=True)
class Infra:
    database_url: str
    kafka_bootstrap: str

    def settings(self, cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "kafka_bootstrap_servers": self.kafka_bootstrap,
            "log_format": "console",
            "outbox_poll_interval_s": 0.2,
            **overrides,
        }
        return cls(**values)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def create_database(admin_url: str, name: str) -> str:
    conn = psycopg2.connect(_with_database(admin_url, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return _with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    conn = psycopg2.connect(_with_database(admin_url, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start `app` with its lifespan (pool, consumers, relay) and give an HTTP client to it."""
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://service"
        ) as client,
    ):
        yield client


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within_s: float = 30, interval: float = 0.1
) -> T:
    """Poll `probe` until it returns something truthy; fail after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(interval)


@dataclass
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def read_topic(bootstrap: str, topic: str) -> list[Message]:
    """Everything on `topic` right now, all partitions, without joining a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.client.force_metadata_update()  # type: ignore[no-untyped-call]
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        messages: list[Message] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(
                    Message(r.topic, r.key, r.value, dict(r.headers or ())) for r in records
                )
        return messages
    finally:
        await consumer.stop()


async def produce(bootstrap: str, topic: str, value: bytes, key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class WebhookSink:
    """A real HTTP server on a free loopback port that records what it receives.

    `fail_next` answers that many requests with 503 first, to exercise retries.
    """

    fail_next: int = 0
    received: list[ReceivedWebhook] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks"

    async def start(self) -> None:
        self._server = await asyncio.start_server(webhook_handler(self._on_webhook), "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def delivered(self) -> list[ReceivedWebhook]:
        return [w for w in self.received if w.status == 200]

    def _on_webhook(self, headers: dict[str, str], body: bytes) -> int:
        status = 200
        if self.fail_next > 0:
            self.fail_next -= 1
            status = 503
        self.received.append(ReceivedWebhook(headers, body, status))
        return status
