"""Other Kafka clients read what the services write: Debian's kcat (librdkafka) and
confluent-kafka, on every topic of the stack, from the idempotent producer the relays use."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer

from shared.topics import ALL_TOPICS
from tests.integration.events import as_bytes, uncontracted_event


@pytest.fixture(scope="module")
async def written(kafka_bootstrap: str) -> dict[str, str]:
    """One envelope per topic, as the relays publish them; topic -> event id."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    await producer.start()
    ids: dict[str, str] = {}
    try:
        for topic in ALL_TOPICS:
            event = uncontracted_event("test.interop", topic=topic)
            await producer.send_and_wait(topic, as_bytes(event), key=event.key)
            ids[topic] = str(event.event_id)
    finally:
        await producer.stop()
    return ids


def test_kcat_reads_every_topic(kafka_bootstrap: str, written: dict[str, str]) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by make install (deploy/local/bootstrap.sh)"
    for topic, event_id in written.items():
        result = subprocess.run(
            [kcat, "-C", "-b", kafka_bootstrap, "-t", topic, "-o", "beginning", "-e", "-q"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        values = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert [v["event_id"] for v in values] == [event_id], topic


def test_a_confluent_kafka_group_gets_its_partitions_and_reads_every_topic(
    kafka_bootstrap: str, written: dict[str, str]
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"interop-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    started = time.monotonic()
    try:
        consumer.subscribe(list(ALL_TOPICS))
        seen: dict[str, str] = {}
        while len(seen) < len(written) and time.monotonic() - started < 60:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen[message.topic()] = json.loads(message.value())["event_id"]
        assigned_in_s = time.monotonic() - started
    finally:
        consumer.close()
    assert seen == written
    assert assigned_in_s < 30
    print(f"\nconfluent-kafka group: every topic read within {assigned_in_s:.1f} s")
