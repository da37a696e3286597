"""The consumer's batch path, on a real broker and database: the records of one fetch,
across partitions, are applied in one transaction and in partition order; a poison
record in a batch rolls the batch back, and the one-record-at-a-time path then applies
every good record once and dead-letters the poison; an event twice in a batch is
applied once; a service's transaction scope sees each transaction's new events and
writes inside it, and a failure on its way out is a failed batch like any other; the
outbox rows a batch's handlers add are written together before its commit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from shared import outbox
from shared.consumer import TransactionScope
from shared.events import Envelope
from shared.kafka_admin import ensure_topics
from shared.migrations import apply_migrations
from shared.runtime import SHARED_MIGRATIONS, ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import dead_letter_topic
from tests.integration.events import as_bytes, uncontracted_event
from tests.support import Infra, eventually, read_topic

SCHEMA = "batchtest"
PARTITIONS = 3


@dataclass
class RecordingHandler:
    """Writes one effect row per call with its transaction id; `calls` counts every try."""

    calls: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        self.calls[envelope.event_id] += 1
        if envelope.payload.get("poison"):
            raise ValueError("this event can never be handled")
        await conn.execute(
            "INSERT INTO effects (event_id, seq, stream, tx) VALUES ($1, $2, $3, txid_current())",
            envelope.event_id,
            envelope.payload["seq"],
            envelope.payload["stream"],
        )


@pytest.fixture
async def schema(infra: Infra) -> AsyncIterator[str]:
    await asyncio.to_thread(apply_migrations, infra.database_url, SCHEMA, [SHARED_MIGRATIONS])
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(
            f"DROP TABLE IF EXISTS {SCHEMA}.effects; "
            f"CREATE TABLE {SCHEMA}.effects (event_id uuid, seq int, stream text, tx bigint)"
        )
        yield SCHEMA
    finally:
        await conn.close()


async def _publish_all(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Every message on the topic before the consumer starts: its first fetch gets them
    together, from every partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _consume(
    infra: Infra,
    topic: str,
    scope: TransactionScope | None = None,
    event_types: set[str] | None = None,
    handler: RecordingHandler | None = None,
) -> tuple[ServiceRuntime, RecordingHandler]:
    settings = infra.settings(
        ServiceSettings,
        service_name=f"{SCHEMA}-{topic}",
        consumer_max_attempts=2,
        consumer_retry_base_s=0.05,
    )
    runtime = ServiceRuntime(settings, SCHEMA)
    handler = handler or RecordingHandler()
    runtime.on(topic, handler, event_types=event_types)
    if scope is not None:
        runtime.scope_transactions(scope)
    await runtime.start()
    return runtime, handler


def _stream_events(streams: int, per_stream: int) -> list[Envelope]:
    """`streams` complaints (each its own key, so spread over the partitions), each with
    `per_stream` events numbered in publishing order."""
    events = []
    for s in range(streams):
        complaint = uuid.uuid4()
        for seq in range(per_stream):
            events.append(uncontracted_event(complaint_id=complaint, seq=seq, stream=f"s{s}"))
    return events


async def _effects(infra: Infra) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        return await conn.fetch(f"SELECT * FROM {SCHEMA}.effects ORDER BY ctid")
    finally:
        await conn.close()


async def _consume_published(
    infra: Infra,
    name: str,
    messages: list[tuple[bytes, bytes]],
    effects: int,
    scope: TransactionScope | None = None,
) -> tuple[list[asyncpg.Record], RecordingHandler]:
    """`messages` on a fresh topic before the consumer starts; consumed until `effects`
    effect rows are written and a second longer (nothing more arrives); every row."""
    topic = f"batch.{name}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(infra.kafka_bootstrap, (topic,), partitions=PARTITIONS)
    await _publish_all(infra.kafka_bootstrap, topic, messages)
    runtime, handler = await _consume(infra, topic, scope)
    try:
        await eventually(lambda: _effects_when(infra, effects), within_s=60)
        await asyncio.sleep(1)
        return await _effects(infra), handler
    finally:
        await runtime.stop()


async def test_a_fetch_across_partitions_is_one_transaction_in_partition_order(
    infra: Infra, schema: str
) -> None:
    events = _stream_events(streams=12, per_stream=5)
    messages = [(e.key, as_bytes(e)) for e in events]
    rows, _handler = await _consume_published(infra, "order", messages, len(events))
    assert len(rows) == len(events)
    assert len({r["event_id"] for r in rows}) == len(events)  # each applied once
    by_stream: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_stream[row["stream"]].append(row["seq"])
    assert all(seqs == sorted(seqs) for seqs in by_stream.values())  # per key, in order
    per_tx: dict[int, int] = defaultdict(int)
    for row in rows:
        per_tx[row["tx"]] += 1
    # One transaction per fetch, not per event: 60 events in a handful of transactions.
    assert len(per_tx) <= 6, dict(per_tx)
    assert max(per_tx.values()) >= 10


async def _effects_when(infra: Infra, count: int) -> list[asyncpg.Record] | None:
    rows = await _effects(infra)
    return rows if len(rows) >= count else None


async def _publish_with_a_poison(
    infra: Infra, name: str, *, per_stream: int, after: int
) -> tuple[str, list[Envelope], Envelope]:
    """A fresh topic (and its dead-letter topic) holding 6 streams of `per_stream` events
    and a poison keyed like event `after` and published right after it: the poison sits
    in that partition behind a good event, so the batch try has called that one before
    it fails, whatever order the fetch gives the partitions."""
    topic = f"batch.{name}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(
        infra.kafka_bootstrap, (topic, dead_letter_topic(topic)), partitions=PARTITIONS
    )
    events = _stream_events(streams=6, per_stream=per_stream)
    poison = uncontracted_event(
        complaint_id=events[after].complaint_id, poison=True, seq=0, stream="poison"
    )
    events.insert(after + 1, poison)
    await _publish_all(infra.kafka_bootstrap, topic, [(e.key, as_bytes(e)) for e in events])
    return topic, events, poison


async def test_a_poison_record_in_a_batch_is_dead_lettered_and_the_rest_applied_once(
    infra: Infra, schema: str
) -> None:
    topic, events, poison = await _publish_with_a_poison(infra, "poison", per_stream=3, after=6)
    runtime, handler = await _consume(infra, topic)
    try:
        dead = await eventually(
            lambda: read_topic(infra.kafka_bootstrap, dead_letter_topic(topic)), within_s=60
        )
        rows = await eventually(lambda: _effects_when(infra, len(events) - 1), within_s=30)
        await asyncio.sleep(1)  # nothing more arrives
        rows = await _effects(infra)
    finally:
        await runtime.stop()
    assert [m.value for m in dead] == [as_bytes(poison)]
    assert sorted(r["event_id"] for r in rows) == sorted(
        e.event_id for e in events if e is not poison
    )
    # The batch was tried first and rolled back: the good events of the poison's batch were
    # called again, one at a time, and still applied once.
    assert any(handler.calls[e.event_id] == 2 for e in events if e is not poison)
    assert handler.calls[poison.event_id] == 1 + 2  # the batch try, then max_attempts


async def test_an_event_twice_in_one_batch_is_applied_once(infra: Infra, schema: str) -> None:
    events = _stream_events(streams=4, per_stream=2)
    twice = events[3]
    messages = [(e.key, as_bytes(e)) for e in events]
    messages.insert(5, (twice.key, as_bytes(twice)))  # a redelivered copy, same partition
    rows, handler = await _consume_published(infra, "twice", messages, len(events))
    assert len(rows) == len(events)
    assert [r["event_id"] for r in rows].count(twice.event_id) == 1
    assert handler.calls[twice.event_id] == 1  # the copy was recognised inside the batch


@dataclass
class SummaryScope:
    """Writes one row per transaction on its way out: how many events it was opened
    with, in the transaction's id. The first exit fails, as a flush that breaks would."""

    opened: list[int] = field(default_factory=list)
    failures_left: int = 1

    @asynccontextmanager
    async def __call__(
        self, conn: asyncpg.Connection, envelopes: Sequence[Envelope]
    ) -> AsyncIterator[None]:
        self.opened.append(len(envelopes))
        yield
        if self.failures_left:
            self.failures_left -= 1
            raise ValueError("the scope's flush failed")
        await conn.execute(
            "INSERT INTO effects (event_id, seq, stream, tx) "
            "VALUES (NULL, $1, 'scope', txid_current())",
            len(envelopes),
        )


async def test_a_transaction_scope_wraps_each_transaction_and_its_failure_falls_back(
    infra: Infra, schema: str
) -> None:
    events = _stream_events(streams=8, per_stream=4)
    messages = [(e.key, as_bytes(e)) for e in events]
    scope = SummaryScope()
    rows, handler = await _consume_published(infra, "scope", messages, len(events), scope)
    effects = [r for r in rows if r["stream"] != "scope"]
    summaries = [r for r in rows if r["stream"] == "scope"]
    assert sorted(r["event_id"] for r in effects) == sorted(e.event_id for e in events)
    # The first batch's scope failed on exit: its events were rolled back and handled
    # again one transaction (and one scope) each.
    assert scope.opened[0] > 1
    assert scope.opened[1 : 1 + scope.opened[0]] == [1] * scope.opened[0]
    assert any(handler.calls[e.event_id] == 2 for e in events)
    # Every committed transaction has its scope's row, counting exactly its own events.
    per_tx: dict[int, int] = defaultdict(int)
    for row in effects:
        per_tx[row["tx"]] += 1
    assert {r["tx"]: r["seq"] for r in summaries} == dict(per_tx)


async def test_types_the_handler_does_not_act_on_are_passed_over_by_their_header(
    infra: Infra, schema: str
) -> None:
    topic = f"batch.types.{uuid.uuid4().hex[:6]}"
    await ensure_topics(infra.kafka_bootstrap, (topic,), partitions=PARTITIONS)
    wanted = [uncontracted_event(seq=i, stream="wanted") for i in range(6)]
    other = [uncontracted_event("test.other", seq=i, stream="other") for i in range(6)]
    # No header (a producer other than our relay): parsed and handed to the handler,
    # which decides, as every handler does.
    bare = uncontracted_event("test.other", seq=0, stream="bare")
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(
                topic, as_bytes(e), e.key, headers=[("event_type", e.event_type.encode())]
            )
            for e in (*wanted, *other)
        ]
        sent.append(await producer.send(topic, as_bytes(bare), bare.key))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    runtime, handler = await _consume(infra, topic, event_types={"test.happened"})
    try:
        rows = await eventually(lambda: _effects_when(infra, len(wanted) + 1), within_s=60)
        await asyncio.sleep(1)  # nothing more arrives
        rows = await _effects(infra)
        ignored = runtime.metrics.registry.get_sample_value(
            "events_consumed_total",
            {"service": runtime.name, "topic": topic, "outcome": "ignored"},
        )
        conn = await asyncpg.connect(infra.database_url)
        try:
            inbox = await conn.fetch(
                f"SELECT event_id FROM {SCHEMA}.inbox WHERE consumer = $1", runtime.name
            )
        finally:
            await conn.close()
    finally:
        await runtime.stop()
    handled = {e.event_id for e in (*wanted, bare)}
    assert {r["event_id"] for r in rows} == handled and len(rows) == len(handled)
    assert set(handler.calls) == handled  # the others never reached the handler
    assert {r["event_id"] for r in inbox} == handled  # nor the inbox
    assert ignored == len(other)


@dataclass
class EmittingHandler(RecordingHandler):
    """Records its effect, then puts a follow-up event in the outbox, as every service's
    unit of work does, and notes how many outbox rows its own transaction has written by
    then."""

    outbox_seen: list[int] = field(default_factory=list)

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        await super().__call__(conn, envelope)
        p = envelope.payload
        follow_up = uncontracted_event(
            "test.followed",
            complaint_id=envelope.complaint_id,
            cause=str(envelope.event_id),
            seq=p["seq"],
            stream=p["stream"],
        )
        await outbox.enqueue_many(conn, [("test.followed", follow_up)])
        self.outbox_seen.append(
            await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE xmin::text::bigint = txid_current() % 4294967296"
            )
        )


async def test_a_batch_writes_its_outbox_rows_together_before_the_commit(
    infra: Infra, schema: str
) -> None:
    # A poison in the middle: its batch is rolled back, follow-ups and all, and its good
    # events are applied again one transaction each.
    topic, events, poison = await _publish_with_a_poison(infra, "outbox", per_stream=4, after=8)
    handler = EmittingHandler()
    runtime, _ = await _consume(infra, topic, handler=handler)
    good = [e for e in events if e is not poison]
    try:
        await eventually(lambda: _effects_when(infra, len(good)), within_s=60)
        await asyncio.sleep(1)  # nothing more arrives
        conn = await asyncpg.connect(infra.database_url)
        try:
            effects = await conn.fetch(f"SELECT event_id, tx FROM {SCHEMA}.effects")
            rows = await conn.fetch(
                f"SELECT id, message, xmin::text::bigint AS xid FROM {SCHEMA}.outbox "
                "WHERE topic = 'test.followed' ORDER BY id"
            )
        finally:
            await conn.close()
    finally:
        await runtime.stop()
    assert any(handler.calls[e.event_id] == 2 for e in good)  # the rolled-back batch
    payloads = [json.loads(r["message"])["payload"] for r in rows]
    # One follow-up per applied event: nothing of the rolled-back try survived.
    assert sorted(p["cause"] for p in payloads) == sorted(str(e.event_id) for e in good)
    # Written when the transaction's handlers were done: no handler, in the batch's try or
    # in a transaction of its own, saw one of its transaction's rows (without the deferral
    # the batch's calls see 1, 2, 3 ... and the single ones 1) ...
    assert set(handler.outbox_seen) == {0}
    # ... yet each in its event's own transaction, and each key's in the events' order.
    tx_of = {str(r["event_id"]): r["tx"] % 2**32 for r in effects}
    assert all(tx_of[p["cause"]] == r["xid"] for p, r in zip(payloads, rows, strict=True))
    by_stream: dict[str, list[int]] = defaultdict(list)
    for p in payloads:
        by_stream[p["stream"]].append(p["seq"])
    assert all(seqs == sorted(seqs) for seqs in by_stream.values())
