"""A service started before its broker (as `make up` or a cluster may do) waits quietly:
its log has no error line while the broker comes up, nor while the broker has no topics
yet (before `create-topics` has run), and it is ready once both are there."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from deploy.local import stack
from services.triage.app import MIGRATIONS, SCHEMA
from services.triage.settings import TriageSettings
from shared.kafka_admin import ensure_topics
from shared.runtime import migrate
from tests.support import Infra, ServiceProcess, ThrowawayKafka

BROKER_LATE_S = 8
TOPICS_LATE_S = 4


async def test_a_service_started_before_its_broker_logs_no_error_while_waiting(
    infra: Infra, tmp_path: Path
) -> None:
    await asyncio.to_thread(
        migrate, TriageSettings(database_url=infra.database_url), SCHEMA, MIGRATIONS
    )
    broker = ThrowawayKafka(tmp_path / "kafka", stack.free_port())
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.port}",
        "LOG_FORMAT": "json",
    }
    triage = ServiceProcess("triage", env, stack.free_port(), tmp_path / "triage.log")
    starting = asyncio.create_task(asyncio.to_thread(triage.start))  # ready only with a broker
    try:
        await asyncio.sleep(BROKER_LATE_S)
        assert not starting.done()  # not ready without its broker
        await asyncio.to_thread(broker.start)  # a broker without topics
        await asyncio.sleep(TOPICS_LATE_S)
        assert not starting.done()  # not ready without its topics
        await ensure_topics(broker.bootstrap)  # what `make up` and the migrate Job do
        await asyncio.wait_for(starting, 120)
    finally:
        triage.stop()
        broker.stop()
    lines = [
        json.loads(line)
        for line in triage.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert lines, "the service wrote no JSON log"
    loud = [line for line in lines if line.get("level") in ("error", "critical")]
    assert not loud, loud
    said = [line["event"] for line in lines if line["event"].startswith("broker_")]
    assert said[0] == "broker_not_reachable_yet" and said[-1] == "broker_reachable"
    # Said once, then once per 30 s (a loaded machine may take that long to start Kafka),
    # not once per retry.
    waited_s = next(line["waited_s"] for line in lines if line["event"] == "broker_reachable")
    assert 1 <= said.count("broker_not_reachable_yet") <= 1 + int(waited_s // 30)
    topics_said = [line["event"] for line in lines if line["event"].startswith("topics_")]
    assert topics_said == ["topics_not_created_yet", "topics_present"], topics_said
