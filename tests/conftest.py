"""Real infrastructure for the tests: a PostgreSQL database and a Kafka-protocol broker.

Each test module gets its own database and its own broker (Tansu, in memory, on a free
port), so consumer groups, topics and inbox state never leak between modules.
`DATABASE_URL` names the server to create databases on (default 127.0.0.1:5432);
`KAFKA_BOOTSTRAP_SERVERS`, when set, replaces the per-module broker (topics then get a
unique suffix-free name and modules share it, so run such a suite on a throwaway broker).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.kafka_admin import ensure_topics
from tests.support import Infra, WebhookSink, create_database, drop_database

ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    from deploy.local.stack import free_port, start_tansu, stop_process, wait_for_kafka

    port = free_port()
    process = start_tansu(port, tmp_path_factory.mktemp("tansu"))
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_for_kafka(bootstrap, timeout=30)
        asyncio.run(ensure_topics(bootstrap))
        yield bootstrap
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    name = f"complaints_test_{uuid.uuid4().hex[:10]}"
    url = create_database(ADMIN_URL, name)
    try:
        yield url
    finally:
        drop_database(ADMIN_URL, name)


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
