"""Real infrastructure for the tests: a PostgreSQL server and an Apache Kafka broker.

One of each per test session; each test module gets its own database and freshly
recreated topics, so consumer groups, offsets and inbox state never leak between modules.

- PostgreSQL: `DATABASE_URL` when set (the server databases are created on), else the
  server on 127.0.0.1:5432 when it answers, else a throwaway cluster (initdb) on a free
  port, stopped at the end.
- Kafka: `KAFKA_BOOTSTRAP_SERVERS` when set (run such a suite on a throwaway broker: its
  topics are deleted and recreated), else Apache Kafka started on a free port.

`COMPLAINTS_TEST_BACKEND` chooses where both come from:

- `local` (the default): as above.
- `testcontainers`: PostgreSQL and Kafka (KRaft) in throwaway containers of testcontainers
  (`DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS` are then ignored); where no Docker engine
  answers, every test that needs them is skipped with the reason "no Docker engine".
- `auto`: the containers when a Docker engine answers, else the local stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import (
    Infra,
    WebhookSink,
    create_database,
    drop_database,
    recreate_topics,
    start_throwaway_kafka,
    throwaway_postgres,
)

SYSTEM_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKEND_ENV = "COMPLAINTS_TEST_BACKEND"
NO_DOCKER = "no Docker engine"
# The images of the compose stack's major versions where they matter.
POSTGRES_IMAGE = "postgres:15"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"  # what testcontainers' KafkaContainer drives


@functools.cache
def docker_engine_answers() -> bool:
    """A Docker engine answers a ping (DOCKER_HOST or the default socket)."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def use_testcontainers() -> bool:
    """Whether this session runs on testcontainers (skips it when asked for without Docker)."""
    backend = os.environ.get(BACKEND_ENV, "local").strip().lower()
    if backend not in ("local", "testcontainers", "auto"):
        raise pytest.UsageError(f"{BACKEND_ENV}={backend!r}: local, testcontainers or auto")
    if backend == "local":
        return False
    if docker_engine_answers():
        return True
    if backend == "testcontainers":
        pytest.skip(f"{NO_DOCKER} ({BACKEND_ENV}=testcontainers)")
    return False


@contextlib.contextmanager
def postgres_container() -> Iterator[str]:
    """PostgreSQL in a container; yields the admin URL (database `postgres`)."""
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres", driver=None
    )
    with container:
        yield container.get_connection_url()


@contextlib.contextmanager
def kafka_container() -> Iterator[str]:
    """One KRaft Kafka node in a container; yields its bootstrap address."""
    from testcontainers.community.kafka import KafkaContainer

    container = (
        KafkaContainer(KAFKA_IMAGE)
        .with_kraft()
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_HEAP_OPTS", "-Xmx512m -Xms256m")
    )
    container.start(timeout=180)
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skips the test where no Docker engine answers."""
    if not docker_engine_answers():
        pytest.skip(NO_DOCKER)


@pytest.fixture(scope="session")
def postgres_container_url(docker_engine: None) -> Iterator[str]:
    """The admin URL of the session's PostgreSQL container."""
    with postgres_container() as url:
        yield url


@pytest.fixture(scope="session")
def kafka_container_bootstrap(docker_engine: None) -> Iterator[str]:
    """The bootstrap address of the session's Kafka container."""
    with kafka_container() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> Iterator[str]:
    from deploy.local.stack import postgres_answers

    if use_testcontainers():
        yield request.getfixturevalue("postgres_container_url")
    elif os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif postgres_answers(SYSTEM_POSTGRES):
        yield SYSTEM_POSTGRES
    else:
        with throwaway_postgres() as cluster:
            yield cluster.admin_url


@pytest.fixture(scope="session")
def kafka_session_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if use_testcontainers():
        yield request.getfixturevalue("kafka_container_bootstrap")
        return
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    with start_throwaway_kafka(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="module")
def kafka_bootstrap(kafka_session_bootstrap: str) -> str:
    """The session's broker with the project's topics deleted and created again."""
    asyncio.run(recreate_topics(kafka_session_bootstrap))
    return kafka_session_bootstrap


@pytest.fixture(scope="module")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    name = f"complaints_test_{uuid.uuid4().hex[:10]}"
    url = create_database(postgres_admin_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, name)


@pytest.fixture(scope="module")
def infra(database_url: str, kafka_bootstrap: str) -> Infra:
    return Infra(database_url=database_url, kafka_bootstrap=kafka_bootstrap)


@pytest.fixture
async def webhook_sink() -> AsyncIterator[WebhookSink]:
    sink = WebhookSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Infra-heavy modules last, so a quick unit failure shows first.
    items.sort(key=lambda item: 0 if Path(str(item.fspath)).parent.name == "unit" else 1)
