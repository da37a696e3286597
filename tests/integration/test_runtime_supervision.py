"""/readyz tells the truth about a service's background work and its database: a loop
that fails is restarted with backoff and reported not ready until it runs again; a real
PostgreSQL stop makes the service not ready, and it comes back by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.runtime import ServiceRuntime
from shared.service_app import build_app
from shared.settings import ServiceSettings
from tests.support import (
    ThrowawayPostgres,
    create_database,
    eventually,
    running,
    throwaway_postgres,
)

SCHEMA = "supervisiontest"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as own:
        yield own


class FailsOnce:
    """A background loop whose first run dies, as a loop with a bug on a rare path would."""

    def __init__(self) -> None:
        self.runs = 0
        self.failed = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs == 1:
            self.failed.set()
            raise RuntimeError("a bug in a background loop")
        await asyncio.Event().wait()  # runs until cancelled


async def test_a_failed_loop_is_restarted_and_readyz_follows_it_and_the_database(
    cluster: ThrowawayPostgres, kafka_bootstrap: str
) -> None:
    database_url = create_database(cluster.admin_url, "supervision")
    settings = ServiceSettings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        service_name=SCHEMA,
        log_format="console",
    )
    runtime = ServiceRuntime(settings, SCHEMA)
    loop = FailsOnce()
    runtime.add_background(loop, name="flaky_loop")
    async with running(build_app(runtime, title="supervision test")) as client:
        await asyncio.wait_for(loop.failed.wait(), 10)
        during = (await client.get("/readyz")).json()
        assert during["checks"]["flaky_loop"] is False and during["status"] == "not_ready"

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, within_s=10)
        assert loop.runs == 2  # restarted after its backoff, once

        assert await service_ready(client) == 1.0

        await asyncio.to_thread(cluster.stop, "fast")
        down = await client.get("/readyz")
        assert down.status_code == 503 and down.json()["checks"]["database"] is False
        assert await service_ready(client) == 0.0  # what the ServiceNotReady alert reads
        await asyncio.to_thread(cluster.start)
        await eventually(ready, within_s=30)
        assert await service_ready(client) == 1.0


async def service_ready(client: httpx.AsyncClient) -> float:
    """The service_ready gauge as Prometheus would scrape it."""
    text = (await client.get("/metrics")).text
    [value] = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "service_ready"
        for sample in family.samples
    ]
    return value
