"""Waiting for the broker at start-up, quietly.

A service may start before its broker answers (`make up` on a slow machine, a cluster
whose broker restarts). Without this, aiokafka's producer start fails, the lifespan
fails and the process exits, after logging connection errors at ERROR level. Here the
service waits for a TCP answer from one of the bootstrap servers, saying so once at
WARNING and then every `remind_s`, and starts its Kafka clients only then.

The broker does not auto-create topics (a typo would make a one-partition topic), so a
broker may answer before `create-topics` has run. A consumer subscribed to a missing
topic makes aiokafka log an ERROR on every metadata refresh; the service waits for its
topics the same quiet way instead."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.logging import get_logger

log = get_logger(__name__)


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    found = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if host and port.isdigit():
            found.append((host.strip("[]"), int(port)))
    return found


async def _answers(host: str, port: int, timeout_s: float) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_for_broker(
    bootstrap_servers: str, *, every_s: float = 0.5, remind_s: float = 30.0
) -> float:
    """Returns once a bootstrap server accepts a connection; the seconds waited."""
    addresses = _addresses(bootstrap_servers)
    if not addresses:
        return 0.0  # nothing we can probe: let the client say what is wrong
    started = time.monotonic()
    said_at: float | None = None
    while True:
        for host, port in addresses:
            if await _answers(host, port, timeout_s=2.0):
                waited = time.monotonic() - started
                if said_at is not None:
                    log.info(
                        "broker_reachable",
                        bootstrap_servers=bootstrap_servers,
                        waited_s=round(waited, 1),
                    )
                return waited
        now = time.monotonic()
        if said_at is None or now - said_at >= remind_s:
            log.warning("broker_not_reachable_yet", bootstrap_servers=bootstrap_servers)
            said_at = now
        await asyncio.sleep(every_s)


async def _missing_topics(bootstrap_servers: str, topics: set[str]) -> set[str] | None:
    """The topics of `topics` the cluster does not have; None when it could not be asked."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        return topics - set(await admin.list_topics())
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def wait_for_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    every_s: float = 1.0,
    remind_s: float = 30.0,
) -> float:
    """Returns once every topic of `topics` exists; the seconds waited."""
    wanted = set(topics)
    if not wanted:
        return 0.0
    started = time.monotonic()
    said_at: float | None = None
    while True:
        missing = await _missing_topics(bootstrap_servers, wanted)
        waited = time.monotonic() - started
        if missing is not None and not missing:
            if said_at is not None:
                log.info("topics_present", waited_s=round(waited, 1))
            return waited
        now = time.monotonic()
        if said_at is None or now - said_at >= remind_s:
            log.warning(
                "topics_not_created_yet",
                missing=sorted(missing) if missing is not None else "unknown",
                hint="python -m shared.kafka_admin create-topics",
            )
            said_at = now
        await asyncio.sleep(every_s)
