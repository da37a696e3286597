"""Kafka adapters: the producer, the faststream broker with an explicit ack policy,
and the subscription helper that routes every message through EventConsumer."""

from __future__ import annotations

import logging
from collections import defaultdict

from aiokafka import AIOKafkaProducer, ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from shared.consumer import EventConsumer, Handler
from shared.settings import CommonSettings


def make_producer(settings: CommonSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=2,
    )


def make_broker(settings: CommonSettings, client_id: str) -> KafkaBroker:
    # NACK_ON_ERROR: the offset is committed only after the handler returned; an exception
    # (a transient failure, see EventConsumer) seeks back so the message is redelivered.
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        # The one subscriber takes the fetched records as its only argument: without
        # dependency injection, which resolved a message parameter in a worker thread
        # for every batch.
        apply_types=False,
        enable_idempotence=settings.kafka_enable_idempotence,
        # Per-message "Received/Processed" lines at DEBUG; failures still surface as warnings.
        log_level=logging.DEBUG,
        # A plain stdlib logger: faststream then attaches no handler of its own, and its
        # lines go through the one masked root handler (shared.logging).
        logger=logging.getLogger("faststream.kafka"),
    )


def subscribe(
    broker: KafkaBroker,
    settings: CommonSettings,
    consumer: EventConsumer,
    handlers: dict[str, Handler],
    *,
    group_id: str,
) -> None:
    """One consumer in group `group_id` for all of a service's topics, dispatched by topic.

    One member per service process (not one per topic) keeps rebalances rare and short.
    Records arrive in batches: each partition's records are handled in order, the whole
    batch in one transaction when it commits (EventConsumer.handle_batch), and the offsets
    are committed once the whole batch is done. If any record fails transiently, the batch
    is nacked: every partition in it rewinds to its first record of the batch, and the
    inbox turns the records already applied into no-ops.
    """

    @broker.subscriber(
        *handlers,
        group_id=group_id,
        auto_offset_reset="earliest",
        batch=True,
        max_records=settings.kafka_max_batch,
        batch_timeout_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.kafka_max_partition_fetch_bytes,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        decoder=_raw_records,
    )
    async def on_batch(records: tuple[ConsumerRecord[bytes, bytes], ...]) -> None:
        by_partition: dict[tuple[str, int], list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        for record in records:
            by_partition[(record.topic, record.partition)].append(record)

        partitions = list(by_partition.values())
        consumer.note_taken(group_id, partitions)
        # An exception out of here nacks the batch (NACK_ON_ERROR): rewind, redeliver.
        await consumer.handle_batch(partitions, handlers.__getitem__)


async def _raw_records(message: KafkaMessage) -> object:
    # The envelope is parsed (and a poison message dead-lettered) by EventConsumer,
    # so faststream must not try to decode the body itself: the handler gets the
    # fetched ConsumerRecords (topic, partition, offset and headers with each body).
    return message.raw_message
