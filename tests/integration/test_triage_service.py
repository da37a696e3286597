"""triage against real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.triage.app import MIGRATIONS, SCHEMA, create_app
from services.triage.domain import Cause
from services.triage.incident_policy import IncidentPolicy
from services.triage.incidents import purge_counts
from services.triage.settings import TriageSettings
from services.triage.unit_of_work import PgIncidentCounters
from shared.db import connect, create_pool
from shared.runtime import migrate
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_TRIAGED, INCIDENTS, dead_letter_topic
from tests.integration.events import as_bytes, received_event
from tests.support import Infra, Message, eventually, produce, read_topic, running


@pytest.fixture(scope="module")
async def triage(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    settings = infra.settings(
        TriageSettings,
        consumer_max_attempts=2,
        consumer_retry_base_s=0.05,
        incident_merchant_min_complaints=3,
        incident_category_min_complaints=4,
    )
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    async with running(create_app(settings)) as client:
        yield client


async def _triaged(infra: Infra, complaint_id: uuid.UUID, count: int = 1) -> list[dict]:
    async def probe() -> list[dict] | None:
        found = [
            json.loads(m.value or b"")
            for m in await read_topic(infra.kafka_bootstrap, COMPLAINTS_TRIAGED)
            if m.key == str(complaint_id).encode()
        ]
        return found if len(found) >= count else None

    return await eventually(probe)


async def test_classifies_sets_due_times_and_carries_the_facts(
    infra: Infra, triage: httpx.AsyncClient
) -> None:
    event = received_event(
        description="Someone logged into my account and transferred money out, I never did it",
        amount="50.00",
        currency="USD",
        merchant="Example Mart",
        customer={"id": "u-1", "locale": "en", "email": "li@example.com", "phone": "+86 1380"},
    )
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)

    [triaged] = await _triaged(infra, event.complaint_id)
    p = triaged["payload"]
    assert triaged["event_type"] == "complaint.triaged" and triaged["producer"] == "triage"
    assert triaged["correlation_id"] == str(event.correlation_id)
    assert (p["category"], p["priority"]) == ("fraud", "P1")
    assert p["actions"] == ["freeze_review_requested"]
    assert p["reasons"] and p["regulatory_issue"]
    assert p["first_response_due"] < p["resolution_due"]
    assert (p["amount"], p["currency"], p["merchant"]) == ("50.00", "USD", "Example Mart")
    assert p["duplicate_of"] is None
    # Read outside this system: no tenant webhook URL, no customer contact.
    assert p["tenant"] == {"jurisdiction": "cn", "locale": "zh-CN"}
    assert p["customer"] == {"id": "u-1", "locale": "en"}
    assert not {"webhook_url", "email", "phone"} & set(json.dumps(p).split('"'))

    metrics = (await triage.get("/metrics")).text
    assert 'complaints_triaged_total{category="fraud",priority="P1"}' in metrics


async def test_same_transaction_from_same_customer_is_linked_as_duplicate(
    infra: Infra, triage: httpx.AsyncClient
) -> None:
    tenant_id = uuid.uuid4()
    common = {"tenant_id": tenant_id, "customer_id": "u-dup", "transaction_ref": "T-42"}
    first = received_event(description="同一笔订单被扣了两次款", **common)
    second = received_event(description="还是那笔重复扣款，怎么还没处理", **common)
    other_customer = received_event(
        description="同一笔订单被扣了两次款",
        tenant_id=tenant_id,
        customer_id="u-else",
        transaction_ref="T-42",
    )
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(first), first.key)
    [first_triaged] = await _triaged(infra, first.complaint_id)
    for event in (second, other_customer):
        await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)

    [second_triaged] = await _triaged(infra, second.complaint_id)
    [other_triaged] = await _triaged(infra, other_customer.complaint_id)
    assert first_triaged["payload"]["duplicate_of"] is None
    assert second_triaged["payload"]["duplicate_of"] == str(first.complaint_id)
    assert other_triaged["payload"]["duplicate_of"] is None


async def test_redelivered_event_is_triaged_once(infra: Infra, triage: httpx.AsyncClient) -> None:
    event = received_event(description="Transfer to my friend never arrived after 3 days")
    for _ in range(2):
        await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)
    marker = received_event(description="app keeps crashing")  # processed after both copies
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(marker), event.key)

    await _triaged(infra, marker.complaint_id)
    assert len(await _triaged(infra, event.complaint_id)) == 1


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (b'{"hello": "world"}', "validation error"),
        ("schema_version_2", "unsupported schema_version 2"),
    ],
)
async def test_poison_message_is_dead_lettered_with_its_reason_and_triage_goes_on(
    infra: Infra, triage: httpx.AsyncClient, poison: bytes | str, reason: str
) -> None:
    if poison == "schema_version_2":
        body = json.loads(as_bytes(received_event()))
        poison = json.dumps({**body, "schema_version": 2}).encode()
    key = uuid.uuid4().hex.encode()
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, poison, key)
    after = received_event(description="提现到银行卡三天了还没到账")
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(after), key)

    await _triaged(infra, after.complaint_id)

    async def dead_lettered() -> list | None:
        dlq = await read_topic(infra.kafka_bootstrap, dead_letter_topic(COMPLAINTS_RECEIVED))
        return [m for m in dlq if m.key == key] or None

    dead = await eventually(dead_lettered)
    assert len(dead) == 1
    assert dead[0].value == poison  # untouched
    assert reason in dead[0].headers["x-dlq-error"].decode()
    assert dead[0].headers["x-dlq-consumer"] == b"triage"
    assert dead[0].headers["x-dlq-original-topic"] == COMPLAINTS_RECEIVED.encode()


async def test_a_complaint_the_handler_cannot_process_is_dead_lettered_after_retries(
    infra: Infra, triage: httpx.AsyncClient
) -> None:
    # Blank after stripping: passes the contract, fails the classifier every time.
    broken = received_event(description="   ")
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(broken), broken.key)

    dead = await _dead_lettered(infra, broken.key)
    assert dead.headers["x-dlq-attempts"] == b"2"
    assert b"description" in dead.headers["x-dlq-error"]


async def _dead_lettered(infra: Infra, key: bytes) -> Message:
    async def probe() -> list[Message] | None:
        dead = await read_topic(infra.kafka_bootstrap, dead_letter_topic(COMPLAINTS_RECEIVED))
        return [m for m in dead if m.key == key] or None

    [dead] = await eventually(probe)
    return dead


async def test_an_event_breaking_its_contract_is_dead_lettered_at_once_with_the_reason(
    infra: Infra, triage: httpx.AsyncClient
) -> None:
    # new_event refuses to build it; a producer that skips it puts a float on the wire.
    valid = received_event(amount="86.50", currency="CNY")
    broken = valid.model_copy(update={"payload": {**valid.payload, "amount": 86.5}})
    await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(broken), broken.key)

    dead = await _dead_lettered(infra, broken.key)
    assert dead.value == as_bytes(broken)  # untouched
    assert dead.headers["x-dlq-error-type"] == b"InvalidEventPayload"
    assert dead.headers["x-dlq-attempts"] == b"1"  # never handed to the handler
    assert dead.headers["x-dlq-error"] == (
        b"invalid complaint.received payload: amount: "
        b"Value error, money must be a decimal string, not a JSON number"
    )
    conn = await connect(infra.database_url, SCHEMA)
    try:
        assert not await conn.fetchval(
            "SELECT count(*) FROM triaged_complaints WHERE complaint_id = $1", broken.complaint_id
        )
    finally:
        await conn.close()


async def _incident_events(infra: Infra, tenant_id: uuid.UUID, count: int) -> list[dict]:
    async def probe() -> list[dict] | None:
        found = [
            json.loads(m.value or b"") for m in await read_topic(infra.kafka_bootstrap, INCIDENTS)
        ]
        mine = [e for e in found if e["tenant_id"] == str(tenant_id)]
        return mine if len(mine) >= count else None

    return await eventually(probe)


async def test_a_burst_at_one_merchant_opens_an_incident_later_ones_update_it(
    infra: Infra, triage: httpx.AsyncClient
) -> None:
    tenant_id = uuid.uuid4()
    texts = ["付款失败了但是钱扣了", "Payment failed at checkout", "支付不成功", "付不了款"]
    burst = [
        received_event(
            tenant_id=tenant_id,
            customer_id=f"u-{i}",
            description=text,
            merchant="Example  Mart" if i % 2 else "example mart",
        )
        for i, text in enumerate(texts)
    ]
    for event in burst:
        await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)

    events = await _incident_events(infra, tenant_id, 2)
    # Keyed by complaint, so the two may sit on different partitions: match by type.
    by_type = {e["event_type"]: e for e in events}
    opened, updated = by_type["incident.opened"], by_type["incident.updated"]
    assert opened["producer"] == "triage"
    incident_id = opened["payload"]["incident_id"]
    assert updated["payload"]["incident_id"] == incident_id
    assert opened["payload"]["kind"] == "merchant"
    assert opened["payload"]["complaint_count"] == 3
    assert updated["payload"]["complaint_count"] == 4
    # Partitions run in parallel, so any three of the four may open it; the fourth joins.
    members = {*opened["payload"]["complaint_ids"], updated["payload"]["complaint_id"]}
    assert members == {str(e.complaint_id) for e in burst}
    for complaint_id in (opened["complaint_id"], updated["complaint_id"]):
        [triaged] = await _triaged(infra, uuid.UUID(complaint_id))
        assert triaged["payload"]["incident_id"] == incident_id
    # Recorded too: every member, the one that joined later among them, and each
    # complaint counted once for its merchant.
    conn = await connect(infra.database_url, SCHEMA)
    try:
        rows = await conn.fetch(
            "SELECT complaint_id, incident_id FROM triaged_complaints WHERE tenant_id = $1",
            tenant_id,
        )
        counted = await conn.fetchval(
            "SELECT sum(complaints) FROM incident_counts "
            "WHERE tenant_id = $1 AND kind = 'merchant'",
            tenant_id,
        )
    finally:
        await conn.close()
    assert {str(r["complaint_id"]): str(r["incident_id"]) for r in rows} == {
        str(e.complaint_id): incident_id for e in burst
    }
    assert counted == len(burst)


async def test_a_category_spike_without_a_merchant_opens_an_incident(
    infra: Infra, triage: httpx.AsyncClient
) -> None:
    tenant_id = uuid.uuid4()
    burst = [
        received_event(
            tenant_id=tenant_id,
            customer_id=f"c-{i}",
            description=f"The app crashes every time I open it (#{i})",
        )
        for i in range(4)
    ]
    for event in burst:
        await produce(infra.kafka_bootstrap, COMPLAINTS_RECEIVED, as_bytes(event), event.key)

    [opened] = await _incident_events(infra, tenant_id, 1)
    assert opened["payload"]["kind"] == "category"
    assert opened["payload"]["cause"] == "app_usability"
    assert opened["payload"]["complaint_count"] == 4


async def test_old_incident_counters_are_purged(infra: Infra, triage: httpx.AsyncClient) -> None:
    pool = await create_pool(infra.database_url, SCHEMA)
    tenant_id = uuid.uuid4()
    try:
        await pool.execute(
            "INSERT INTO incident_counts VALUES "
            "($1, 'category', 'fees', now() - interval '3 days', 7), "
            "($1, 'category', 'fees', date_trunc('minute', now()), 2)",
            tenant_id,
        )
        await purge_counts(pool, IncidentPolicy())
        left = await pool.fetchval(
            "SELECT sum(complaints) FROM incident_counts WHERE tenant_id = $1", tenant_id
        )
    finally:
        await pool.close()
    assert left == 2


async def test_counting_a_cause_waits_for_the_transaction_that_holds_it(
    infra: Infra, triage: httpx.AsyncClient
) -> None:
    # The lock and the count go in one statement: the lock must still come first, so a
    # second transaction counting the same cause waits until the first one ends (in
    # another minute, so no row lock of the count's table would hold it).
    tenant_id = uuid.uuid4()
    cause = Cause("category", "fees")
    at = datetime.now(UTC)
    first = await connect(infra.database_url, SCHEMA)
    second = await connect(infra.database_url, SCHEMA)
    try:
        holding = first.transaction()
        await holding.start()
        await PgIncidentCounters(first).lock_and_add_one(tenant_id, cause, at)
        async with second.transaction():
            waiting = asyncio.create_task(
                PgIncidentCounters(second).lock_and_add_one(
                    tenant_id, cause, at + timedelta(minutes=5)
                )
            )
            await asyncio.sleep(0.5)
            assert not waiting.done()
            await holding.commit()
            await asyncio.wait_for(waiting, 10)
        counted = await PgIncidentCounters(first).count(tenant_id, cause, at, None)
    finally:
        await first.close()
        await second.close()
    assert counted == 2
