"""Test helpers: databases, running a service in-process, a webhook receiver, topic reads."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from deploy.local import stack
from deploy.local.kafka import start_kafka
from deploy.local.webhook_receiver import webhook_handler
from shared.settings import ServiceSettings
from shared.topics import ALL_TOPICS, DEFAULT_PARTITIONS

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


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own (initdb), which the test may stop and start."""

    data_dir: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        stack.start_local_postgres(self.data_dir, self.port, self.data_dir.parent / "pg.log")

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client and shuts down cleanly; `immediate` is a crash."""
        stack.stop_local_postgres(self.data_dir, mode)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    # Not under pytest's tmp folder: the cluster runs as the postgres account when we are
    # root, and that account cannot enter root's private folders.
    with tempfile.TemporaryDirectory(prefix="complaints-pg-") as work_dir:
        Path(work_dir).chmod(0o755)
        cluster = ThrowawayPostgres(Path(work_dir) / "data", stack.free_port())
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(SystemExit):
                cluster.stop("immediate")


@dataclass
class ThrowawayKafka:
    """Apache Kafka of the test's own on a free port; its log survives stop/start."""

    work_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_kafka(self.port, self.work_dir)
        stack.wait_for_kafka(self.bootstrap, timeout=120)

    def stop(self) -> None:
        if self.process is not None:
            stack.stop_process(self.process)
            self.process = None

    def kill(self) -> None:
        """kill -9 of the broker's JVM: no clean shutdown."""
        if self.process is not None:
            stack.signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None


@contextlib.contextmanager
def start_throwaway_kafka(work_dir: Path) -> Iterator[ThrowawayKafka]:
    broker = ThrowawayKafka(work_dir, stack.free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def recreate_topics(bootstrap: str, topics: tuple[str, ...] = ALL_TOPICS) -> None:
    """Deletes `topics` (and with them their consumer groups' offsets), then creates them
    again empty, six partitions each, and waits until every partition has a leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = [t for t in await admin.list_topics() if t in topics]
        if existing:
            await admin.delete_topics(existing)
        deadline = time.monotonic() + 60
        # Deletion is asynchronous: creating too early says "already exists".
        while set(topics) & set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise AssertionError("topics still there a minute after their deletion")
            await asyncio.sleep(0.2)
        while missing := [t for t in topics if t not in await admin.list_topics()]:
            try:
                await admin.create_topics([NewTopic(t, DEFAULT_PARTITIONS, 1) for t in missing])
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        while True:
            described = await admin.describe_topics(list(topics))
            ready = all(
                not d["error_code"]
                and len(d["partitions"]) == DEFAULT_PARTITIONS
                and all(p["leader"] >= 0 for p in d["partitions"])
                for d in described
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"topics without leaders: {described}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


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
    """Best effort and bounded: a database left behind in a test cluster harms nothing,
    a teardown that waits for ever stalls the whole suite."""
    try:
        conn = psycopg2.connect(_with_database(admin_url, "postgres"), connect_timeout=10)
    except psycopg2.Error as exc:
        warnings.warn(f"could not drop test database {name}: {exc}", stacklevel=2)
        return
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = '60s'")
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg2.Error as exc:
        warnings.warn(f"could not drop test database {name}: {exc}", stacklevel=2)
    finally:
        conn.close()


REPO = Path(__file__).resolve().parents[1]


def intake_cli(env: dict[str, str], *args: str) -> str:
    """`python -m services.intake <args>` with `env`; its stdout."""
    return subprocess.run(
        [sys.executable, "-m", "services.intake", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


@dataclass
class ServiceProcess:
    """A real `python -m services.<name> serve` process logging to `log_path`, which a
    test may kill -9 and start again (its log appended to)."""

    name: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Starts it; its base URL once `/readyz` answers 200."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}", "serve"],
                cwd=REPO,
                env={**self.env, f"{self.name.upper()}_HTTP_PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not _ready(self.base_url):
            log_text = self.log_path.read_text(errors="replace")
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {log_text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready: {log_text}")
            time.sleep(0.2)
        return self.base_url

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, in-flight work lost."""
        if self.process is not None:
            stack.signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """SIGTERM, every line flushed."""
        if self.process is not None:
            stack.stop_process(self.process)
            self.process = None


@contextlib.contextmanager
def serving(name: str, env: dict[str, str], port: int, log_path: Path) -> Iterator[ServiceProcess]:
    """A started ServiceProcess, stopped on the way out."""
    log_path.write_bytes(b"")
    service = ServiceProcess(name, env, port, log_path)
    try:
        service.start()
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def serving_intake(env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """The real `python -m services.intake serve` process; yields its base URL once
    `/readyz` answers 200, and stops it with SIGTERM (every line flushed) on the way out."""
    with serving("intake", env, port, log_path) as intake:
        yield intake.base_url


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start `app` with its lifespan (pool, consumers, relay) and give an HTTP client to it."""
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://service"
        ) as client,
    ):
        yield client


async def holds(value: bool) -> bool:
    """A plain condition as `eventually`'s probe: `eventually(lambda: holds(x.ready))`."""
    return value


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
    partition: int = -1


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str) -> list[Message]:
    """Everything on `topic` right now, all partitions, without joining a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        # Explicit offsets: seek_to_beginning races the fetcher's own reset on Kafka.
        for tp, first in (await consumer.beginning_offsets(partitions)).items():
            consumer.seek(tp, first)
        messages: list[Message] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(
                    Message(r.topic, r.key, r.value, dict(r.headers or ()), r.partition)
                    for r in records
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
