"""The testcontainers path (COMPLAINTS_TEST_BACKEND=testcontainers or auto, see
tests/conftest.py): PostgreSQL and Kafka in containers answer as the suite needs them. The
project's topics are created on the container's broker and one record goes through it;
one test database is created on the container's server and queried. Where no Docker
engine answers, skipped with the reason "no Docker engine"."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.topics import COMPLAINTS_RECEIVED
from tests.support import create_database, drop_database, produce, read_topic, recreate_topics

pytestmark = pytest.mark.docker


async def test_kafka_container_takes_one_record_and_gives_it_back(
    kafka_container_bootstrap: str,
) -> None:
    await recreate_topics(kafka_container_bootstrap, (COMPLAINTS_RECEIVED,))
    key, value = uuid.uuid4().hex.encode(), b'{"probe": "testcontainers"}'
    await produce(kafka_container_bootstrap, COMPLAINTS_RECEIVED, value, key)
    records = await read_topic(kafka_container_bootstrap, COMPLAINTS_RECEIVED)
    assert [(r.key, r.value) for r in records] == [(key, value)]


async def test_postgres_container_serves_a_test_database(postgres_container_url: str) -> None:
    name = f"complaints_tc_{uuid.uuid4().hex[:10]}"
    url = create_database(postgres_container_url, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            version = await conn.fetchval("SELECT current_setting('server_version_num')::int")
            # gen_random_uuid() is built in from 13 on: the migrations rely on it.
            assert version >= 130000
            assert isinstance(await conn.fetchval("SELECT gen_random_uuid()"), uuid.UUID)
        finally:
            await conn.close()
    finally:
        drop_database(postgres_container_url, name)
