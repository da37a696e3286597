"""Consumer lag per group and partition: `kafka_consumer_lag{group,topic,partition}`.

Lag is the partition's end offset minus the group's committed offset (the beginning
offset when the group has committed nothing there yet: auto_offset_reset is earliest).
Every instance of a service reports its whole group, not only the partitions it owns, so
the gauge survives rebalances and a dead member; aggregate with max by (group, topic,
partition). Labels: the group is the service name, topics are the service's
subscriptions, partitions are numbers: closed vocabularies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.logging import get_logger
from shared.metrics import ServiceMetrics

log = get_logger(__name__)

REFRESH_EVERY_S = 5.0  # a scrape every 15 s sees a value at most one refresh old


def lag(end: int, committed: int | None, beginning: int) -> int:
    """Records the group has still to consume on one partition."""
    start = committed if committed is not None and committed >= 0 else beginning
    return max(end - start, 0)


class ConsumerLagMonitor:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group: str,
        topics: Iterable[str],
        metrics: ServiceMetrics,
        every_s: float | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group = group
        self._topics = sorted(topics)
        self._metrics = metrics
        self._every_s = every_s or REFRESH_EVERY_S
        self.refreshes = 0

    async def run_forever(self) -> None:
        """Refresh until cancelled. A failed refresh (broker away, or still starting) is
        logged once per streak and tried again with fresh clients: a monitoring loop must
        neither flip /readyz, which reports the broker itself, nor fill the log."""
        failing = False
        while True:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap, client_id=f"{self._group}-lag"
            )
            # No group: reads end offsets only, never joins or commits for the service's.
            offsets = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=f"{self._group}-lag",
                enable_auto_commit=False,
            )
            try:
                await admin.start()
                await offsets.start()
                while True:
                    await self.refresh(admin, offsets)
                    if failing:
                        log.info("consumer_lag_refresh_recovered", group=self._group)
                        failing = False
                    await asyncio.sleep(self._every_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                (log.debug if failing else log.warning)(
                    "consumer_lag_refresh_failed", group=self._group, error=repr(exc)
                )
                failing = True
            finally:
                with contextlib.suppress(Exception):
                    await offsets.stop()
                with contextlib.suppress(Exception):
                    await admin.close()
            await asyncio.sleep(self._every_s)

    async def refresh(self, admin: AIOKafkaAdminClient, offsets: AIOKafkaConsumer) -> None:
        partitions = [
            TopicPartition(d["topic"], p["partition"])
            for d in await admin.describe_topics(self._topics)
            if not d["error_code"]
            for p in d["partitions"]
        ]
        if not partitions:
            return
        committed = await admin.list_consumer_group_offsets(self._group, partitions=partitions)
        end = await offsets.end_offsets(partitions)
        beginning = await offsets.beginning_offsets(partitions)
        gauge = self._metrics.kafka_consumer_lag
        for tp in partitions:
            meta = committed.get(tp)
            value = lag(end[tp], meta.offset if meta is not None else None, beginning[tp])
            gauge.labels(self._group, tp.topic, str(tp.partition)).set(value)
        self.refreshes += 1
