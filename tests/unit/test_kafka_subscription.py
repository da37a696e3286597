"""The consumer settings reach the subscriber faststream builds (its aiokafka consumer is
created from these arguments when the broker starts)."""

from __future__ import annotations

from typing import Any

from shared.kafka import make_broker, subscribe
from shared.settings import CommonSettings


def _consumer_arguments(**env: Any) -> dict[str, Any]:
    settings = CommonSettings(database_url="postgresql://u@127.0.0.1/db", **env)
    broker = make_broker(settings, "test")
    subscribe(broker, settings, consumer=None, handlers={"a.v1": None}, group_id="g")  # type: ignore[arg-type]
    # faststream keeps them on the subscriber until start; a private name, read here only.
    return dict(broker.subscribers[0]._connection_args)


def test_prefetch_per_partition_is_bounded_by_default() -> None:
    arguments = _consumer_arguments()
    assert arguments["max_partition_fetch_bytes"] == 262_144  # aiokafka's default: 1 MiB
    assert arguments["enable_auto_commit"] is False


def test_prefetch_per_partition_follows_its_setting() -> None:
    arguments = _consumer_arguments(KAFKA_MAX_PARTITION_FETCH_BYTES=1_048_576)
    assert arguments["max_partition_fetch_bytes"] == 1_048_576
