"""intake's HTTP API (CONTRACT section 3) against real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.intake.app import MIGRATIONS, SCHEMA, create_app
from services.intake.settings import IntakeSettings
from services.intake.tenants import create_tenant
from shared.db import connect
from shared.events import new_event
from shared.problems import PROBLEM_JSON
from shared.runtime import migrate
from shared.topics import COMPLAINTS_RECEIVED, COMPLAINTS_RESOLUTION
from tests.integration.events import as_bytes
from tests.support import Infra, eventually, produce, read_topic, running

COMPLAINT: dict[str, Any] = {
    "customer": {
        "id": "u-829",
        "locale": "zh-CN",
        "email": "a@example.com",
        "phone": "+8613800138000",
    },
    "channel": "app",
    "description": "同一笔订单被扣了两次款，请退回多扣的86.50元。",
    "amount": "86.50",
    "currency": "CNY",
    "transaction_ref": "T20261122-0001",
    "merchant": "Example Mart",
    "occurred_at": "2026-11-22T10:15:00+08:00",
    "category_hint": "duplicate_charge",
    "evidence": [{"kind": "screenshot", "uri": "https://files.example.com/e/1.png"}],
}
TICKET = re.compile(r"^WC-\d{8}-\d{6,}$")
BY_KEY = "SELECT count(*) FROM complaints WHERE idempotency_key = $1"


# ------------------------------------------------------------------ fixtures and helpers


async def _migrated(infra: Infra, **overrides: Any) -> IntakeSettings:
    settings = infra.settings(IntakeSettings, **overrides)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    return settings


@pytest.fixture(scope="module")
async def intake(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    settings = await _migrated(infra)
    async with running(create_app(settings)) as client:
        yield client


async def new_tenant(infra: Infra) -> dict[str, str]:
    conn = await connect(infra.database_url, SCHEMA)
    try:
        return await create_tenant(
            conn,
            name=f"wallet-{uuid.uuid4().hex[:6]}",
            webhook_url="http://127.0.0.1:9/hooks",
            jurisdiction="cn",
            locale="zh-CN",
            webhook_master_key="test-master-key",
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def tenant(infra: Infra, intake: httpx.AsyncClient) -> dict[str, str]:
    return await new_tenant(infra)


@pytest.fixture(scope="module")
async def other_tenant(infra: Infra, intake: httpx.AsyncClient) -> dict[str, str]:
    return await new_tenant(infra)


def auth(tenant: dict[str, str], key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


async def post_complaint(
    client: httpx.AsyncClient, tenant: dict[str, str], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/complaints", json=body or COMPLAINT, headers=auth(tenant, str(uuid.uuid4()))
    )
    assert response.status_code == 202, response.text
    return response.json()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["status"] == status
    assert "Traceback" not in response.text
    return problem


def error_fields(response: httpx.Response) -> set[str]:
    return {e["field"] for e in assert_problem(response, 422)["errors"]}


async def db_count(infra: Infra, sql: str, *args: Any) -> int:
    conn = await connect(infra.database_url, SCHEMA)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def events_on_topic(infra: Infra, complaint_id: str, count: int = 1) -> list[dict]:
    async def probe() -> list[dict] | None:
        found = [
            json.loads(m.value or b"")
            for m in await read_topic(infra.kafka_bootstrap, COMPLAINTS_RECEIVED)
            if m.key == complaint_id.encode()
        ]
        return found if len(found) >= count else None

    return await eventually(probe)


async def set_status(
    infra: Infra, client: httpx.AsyncClient, tenant: dict[str, str], accepted: dict, status: str
) -> None:
    """What the resolution service does: a complaint.status_changed on its topic."""
    event = new_event(
        "complaint.status_changed",
        producer="resolution",
        tenant_id=uuid.UUID(tenant["tenant_id"]),
        complaint_id=uuid.UUID(accepted["complaint_id"]),
        ticket_no=accepted["ticket_no"],
        correlation_id=uuid.uuid4(),
        payload={"status": status, "note": f"Status changed to {status}.", "actor": "a-1"},
    )
    await produce(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION, as_bytes(event), event.key)

    async def shows_status() -> bool:
        view = await client.get(accepted["links"]["self"], headers=auth(tenant))
        return view.json()["status"] == status

    await eventually(shows_status)


# ------------------------------------------------------------------ create


async def test_create_answers_202_with_ticket_and_the_complaint_can_be_read(
    intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    before = datetime.now(UTC)
    response = await intake.post("/v1/complaints", json=COMPLAINT, headers=auth(tenant, "k-1"))

    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {
        "complaint_id",
        "ticket_no",
        "status",
        "received_at",
        "first_response_due",
        "links",
    }
    assert TICKET.match(body["ticket_no"]) and body["status"] == "received"
    assert uuid.UUID(body["complaint_id"])
    received_at = datetime.fromisoformat(body["received_at"])
    assert before <= received_at <= datetime.now(UTC)
    assert datetime.fromisoformat(body["first_response_due"]) > received_at
    assert body["links"] == {"self": f"/v1/complaints/{body['ticket_no']}"}
    assert "idempotent-replayed" not in response.headers

    view = (await intake.get(body["links"]["self"], headers=auth(tenant))).json()
    assert view["ticket_no"] == body["ticket_no"] and view["status"] == "received"
    assert (view["amount"], view["currency"]) == ("86.50", "CNY")  # a string, never a float
    assert view["customer_id"] == "u-829" and view["category"] is None
    assert view["resolutions"] == []
    assert [(t["status"], t["detail"]) for t in view["timeline"]] == [
        ("received", "Complaint received.")
    ]

    metrics = (await intake.get("/metrics")).text
    assert 'complaints_received_total{channel="app"}' in metrics


async def test_same_key_same_body_replays_the_answer_and_creates_nothing(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    key = f"replay-{uuid.uuid4()}"
    first = await intake.post("/v1/complaints", json=COMPLAINT, headers=auth(tenant, key))
    # Same JSON, other key order and whitespace: still the same body.
    reordered = json.dumps(dict(reversed(list(COMPLAINT.items()))), indent=2)
    second = await intake.post(
        "/v1/complaints",
        content=reordered,
        headers={**auth(tenant, key), "Content-Type": "application/json"},
    )

    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    complaint_id = uuid.UUID(first.json()["complaint_id"])
    assert await db_count(infra, BY_KEY, key) == 1
    timeline = "SELECT count(*) FROM complaint_timeline WHERE complaint_id = $1"
    assert await db_count(infra, timeline, complaint_id) == 1
    outbox = "SELECT count(*) FROM outbox WHERE message_key = $1"
    assert await db_count(infra, outbox, str(complaint_id).encode()) == 1


async def test_concurrent_requests_with_one_key_create_one_complaint(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    key = f"race-{uuid.uuid4()}"
    responses = await asyncio.gather(
        *(
            intake.post("/v1/complaints", json=COMPLAINT, headers=auth(tenant, key))
            for _ in range(8)
        )
    )

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["ticket_no"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert await db_count(infra, BY_KEY, key) == 1


async def test_same_key_with_another_body_is_409(
    intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    key = f"conflict-{uuid.uuid4()}"
    first = await intake.post("/v1/complaints", json=COMPLAINT, headers=auth(tenant, key))
    other = {**COMPLAINT, "amount": "86.51"}
    second = await intake.post("/v1/complaints", json=other, headers=auth(tenant, key))

    assert first.status_code == 202
    assert "Idempotency-Key" in assert_problem(second, 409)["detail"]


async def test_keys_are_per_tenant(
    intake: httpx.AsyncClient, tenant: dict[str, str], other_tenant: dict[str, str]
) -> None:
    key = f"shared-{uuid.uuid4()}"
    mine = await intake.post("/v1/complaints", json=COMPLAINT, headers=auth(tenant, key))
    theirs = await intake.post("/v1/complaints", json=COMPLAINT, headers=auth(other_tenant, key))

    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["ticket_no"] != theirs.json()["ticket_no"]


@pytest.mark.parametrize("key", [None, "", "x" * 129, "naïve-ключ"])
async def test_missing_or_bad_idempotency_key_is_400(
    intake: httpx.AsyncClient, tenant: dict[str, str], key: str | None
) -> None:
    headers = auth(tenant)
    content = json.dumps(COMPLAINT).encode()
    request_headers = {**headers, "Content-Type": "application/json"}
    if key is not None:
        request_headers["Idempotency-Key"] = key
    response = await intake.post(
        "/v1/complaints",
        content=content,
        headers={k: v.encode() for k, v in request_headers.items()},  # bytes: any charset
    )

    problem = assert_problem(response, 400)
    assert problem["errors"][0]["field"] == "Idempotency-Key"


# ------------------------------------------------------------------ bad input


def _without(field: str) -> dict[str, Any]:
    return {k: v for k, v in COMPLAINT.items() if k != field}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**COMPLAINT, "priority": "P1"}, "priority", id="unknown-field"),
        pytest.param(
            {**COMPLAINT, "customer": {"id": "u-1", "nickname": "x"}},
            "customer.nickname",
            id="unknown-nested-field",
        ),
        pytest.param({**COMPLAINT, "amount": 86.5}, "amount", id="float-money"),
        pytest.param({**COMPLAINT, "amount": 86}, "amount", id="integer-money"),
        pytest.param({**COMPLAINT, "amount": "86.5.0"}, "amount", id="malformed-money"),
        pytest.param({**COMPLAINT, "amount": "-1.00"}, "amount", id="negative-money"),
        pytest.param({**COMPLAINT, "amount": "0.00"}, "amount", id="zero-money"),
        pytest.param({**COMPLAINT, "currency": "XYZ"}, "currency", id="unknown-currency"),
        pytest.param({**COMPLAINT, "currency": "cny"}, "currency", id="lowercase-currency"),
        pytest.param(_without("currency"), "currency", id="amount-without-currency"),
        pytest.param({**COMPLAINT, "channel": "fax"}, "channel", id="unknown-channel"),
        pytest.param({**COMPLAINT, "channel": 5}, "channel", id="channel-wrong-type"),
        pytest.param({**COMPLAINT, "description": 42}, "description", id="text-wrong-type"),
        pytest.param({**COMPLAINT, "description": ""}, "description", id="empty-text"),
        pytest.param({**COMPLAINT, "description": "   "}, "description", id="blank-text"),
        pytest.param({**COMPLAINT, "description": "字" * 5001}, "description", id="oversized-text"),
        pytest.param({**COMPLAINT, "description": "a\x00b"}, "description", id="nul-character"),
        pytest.param(_without("description"), "description", id="missing-description"),
        pytest.param({**COMPLAINT, "customer": {}}, "customer.id", id="missing-customer-id"),
        pytest.param(
            {**COMPLAINT, "customer": {"id": "u-1", "email": "not-an-address"}},
            "customer.email",
            id="bad-email",
        ),
        pytest.param(
            {**COMPLAINT, "occurred_at": "2026-11-22T10:15:00"},
            "occurred_at",
            id="naive-timestamp",
        ),
        pytest.param({**COMPLAINT, "occurred_at": 1763777700}, "occurred_at", id="unix-time"),
        pytest.param(
            {**COMPLAINT, "occurred_at": "0001-01-01T00:00:00+14:00"},
            "occurred_at",
            id="timestamp-out-of-range",
        ),
        pytest.param({**COMPLAINT, "evidence": "x"}, "evidence", id="evidence-wrong-type"),
        pytest.param(
            {**COMPLAINT, "evidence": [{"kind": "photo", "uri": "ftp://x"}]},
            "evidence.0.uri",
            id="evidence-bad-uri",
        ),
    ],
)
async def test_invalid_complaint_is_422_with_field_errors(
    intake: httpx.AsyncClient, tenant: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await intake.post(
        "/v1/complaints", json=body, headers=auth(tenant, str(uuid.uuid4()))
    )
    assert field in error_fields(response)


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{", 400),
        (b"not json", 400),
        (b'{"channel": "app",}', 400),
        (b"\xff\xfe", 400),
        (b'{"description": "\\ud800"}', 400),  # a lone surrogate
        (b"", 400),
        (b"[1, 2]", 422),
        (b'"a string"', 422),
        (b"null", 422),
    ],
)
async def test_malformed_json_is_a_problem_never_a_500(
    intake: httpx.AsyncClient, tenant: dict[str, str], content: bytes, status: int
) -> None:
    response = await intake.post(
        "/v1/complaints",
        content=content,
        headers={**auth(tenant, str(uuid.uuid4())), "Content-Type": "application/json"},
    )
    assert_problem(response, status)


async def test_body_over_64_kib_is_413_declared_or_streamed(
    intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    big = json.dumps({**COMPLAINT, "description": "x" * (64 * 1024)}).encode()
    declared = await intake.post(
        "/v1/complaints",
        content=big,
        headers={**auth(tenant, str(uuid.uuid4())), "Content-Type": "application/json"},
    )

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):  # chunked: no Content-Length to trust
            yield big[start : start + 8192]

    streamed = await intake.post(
        "/v1/complaints",
        content=chunks(),
        headers={**auth(tenant, str(uuid.uuid4())), "Content-Type": "application/json"},
    )
    assert_problem(declared, 413)
    assert_problem(streamed, 413)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_wrong_content_type_is_415(
    intake: httpx.AsyncClient, tenant: dict[str, str], content_type: str | None
) -> None:
    headers = auth(tenant, str(uuid.uuid4()))
    if content_type:
        headers["Content-Type"] = content_type
    response = await intake.post(
        "/v1/complaints", content=json.dumps(COMPLAINT).encode(), headers=headers
    )
    assert_problem(response, 415)


async def test_content_type_with_charset_is_accepted(
    intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    response = await intake.post(
        "/v1/complaints",
        content=json.dumps(COMPLAINT).encode(),
        headers={
            **auth(tenant, str(uuid.uuid4())),
            "Content-Type": "application/json; charset=utf-8",
        },
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        "Bearer wck_0000000000000000_unknown-key-id",
        "wrong-secret",  # the tenant's real key id with another secret
    ],
)
async def test_missing_or_wrong_api_key_is_401_on_every_endpoint(
    intake: httpx.AsyncClient, tenant: dict[str, str], authorization: str | None
) -> None:
    headers: dict[str, str] = {"Idempotency-Key": str(uuid.uuid4())}
    if authorization == "wrong-secret":
        key_id = tenant["api_key"].split("_")[1]
        headers["Authorization"] = f"Bearer wck_{key_id}_{'A' * 43}"
    elif authorization is not None:
        headers["Authorization"] = authorization
    ticket = "WC-20261122-000001"
    calls = [
        intake.post("/v1/complaints", json=COMPLAINT, headers=headers),
        intake.get("/v1/complaints", headers=headers),
        intake.get("/v1/complaints?limit=1000", headers=headers),  # auth before validation
        intake.get(f"/v1/complaints/{ticket}", headers=headers),
        intake.post(f"/v1/complaints/{ticket}/messages", json={"text": "hi"}, headers=headers),
        intake.post(f"/v1/complaints/{ticket}/feedback", json={"score": 5}, headers=headers),
    ]
    for response in await asyncio.gather(*calls):
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_bearer_scheme_is_case_insensitive_on_every_endpoint(
    intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    # RFC 9110: the filing route reads its header itself, the others through HTTPBearer.
    headers = {"Authorization": f"bearer {tenant['api_key']}"}
    filed = await intake.post(
        "/v1/complaints", json=COMPLAINT, headers={**headers, "Idempotency-Key": "case-1"}
    )
    assert filed.status_code == 202, filed.text
    ticket = filed.json()["ticket_no"]
    read = await intake.get(
        f"/v1/complaints/{ticket}", headers={"Authorization": f"BEARER {tenant['api_key']}"}
    )
    assert read.status_code == 200, read.text


# ------------------------------------------------------------------ tenant isolation


async def test_another_tenants_ticket_is_404_exactly_like_a_missing_one(
    intake: httpx.AsyncClient, tenant: dict[str, str], other_tenant: dict[str, str]
) -> None:
    theirs = await post_complaint(intake, other_tenant)
    missing = "WC-20200101-999999"

    for ticket in (theirs["ticket_no"], missing, "not-a-ticket"):
        base = f"/v1/complaints/{ticket}"
        responses = [
            await intake.get(base, headers=auth(tenant)),
            await intake.post(f"{base}/messages", json={"text": "hi"}, headers=auth(tenant)),
            await intake.post(
                f"{base}/messages", json={"text": "hi"}, headers=auth(tenant, "same-key")
            ),
            await intake.post(f"{base}/feedback", json={"score": 1}, headers=auth(tenant)),
        ]
        for response in responses:
            assert assert_problem(response, 404) == {
                "type": "https://errors.complaints.example/404",
                "title": "Not Found",
                "status": 404,
                "detail": "No such complaint.",
            }

    # Even the answers to a bad body are the same for all three.
    bad_body = [
        (await intake.post(f"/v1/complaints/{t}/messages", json={"text": ""}, headers=auth(tenant)))
        for t in (theirs["ticket_no"], missing, "not-a-ticket")
    ]
    assert {r.status_code for r in bad_body} == {422}
    assert bad_body[0].json() == bad_body[1].json() == bad_body[2].json()

    listed = (await intake.get("/v1/complaints?limit=100", headers=auth(tenant))).json()
    assert theirs["ticket_no"] not in {i["ticket_no"] for i in listed["items"]}
    owner = await intake.get(theirs["links"]["self"], headers=auth(other_tenant))
    assert owner.status_code == 200  # the owner still sees it, untouched
    assert len(owner.json()["timeline"]) == 1


# ------------------------------------------------------------------ list


async def test_list_filters_by_customer_and_status_and_pages_with_a_cursor(
    infra: Infra, intake: httpx.AsyncClient
) -> None:
    tenant = await new_tenant(infra)
    mine = [
        await post_complaint(intake, tenant, {**COMPLAINT, "customer": {"id": "u-pages"}})
        for _ in range(5)
    ]
    await post_complaint(intake, tenant, {**COMPLAINT, "customer": {"id": "u-else"}})

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = "customer_id=u-pages&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await intake.get(f"/v1/complaints?{query}", headers=auth(tenant))).json()
        pages.append([item["ticket_no"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [t for p in pages for t in p] == [c["ticket_no"] for c in reversed(mine)]  # newest first
    everything = (await intake.get("/v1/complaints", headers=auth(tenant))).json()
    assert len(everything["items"]) == 6 and everything["next_cursor"] is None
    # Empty values, as a URL template leaves them, filter nothing.
    templated = await intake.get(
        "/v1/complaints?customer_id=&status=&cursor=", headers=auth(tenant)
    )
    assert templated.status_code == 200 and templated.json() == everything
    item = everything["items"][0]
    assert item["customer_id"] == "u-else" and item["amount"] == "86.50"

    await set_status(infra, intake, tenant, mine[1], "in_progress")
    in_progress = (
        await intake.get("/v1/complaints?status=in_progress", headers=auth(tenant))
    ).json()
    assert [i["ticket_no"] for i in in_progress["items"]] == [mine[1]["ticket_no"]]
    received = (
        await intake.get("/v1/complaints?status=received&customer_id=u-pages", headers=auth(tenant))
    ).json()
    assert len(received["items"]) == 4


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=ten",
        "status=lost",
        "cursor=not-a-cursor",
        "cursor=MjAyNi0xMS0yMlQxMDoxNTowMHxub3QtYS11dWlk",  # base64 of a bad position
        "customer_id=" + "x" * 129,
    ],
)
async def test_bad_list_parameters_are_422(
    intake: httpx.AsyncClient, tenant: dict[str, str], query: str
) -> None:
    response = await intake.get(f"/v1/complaints?{query}", headers=auth(tenant))
    assert error_fields(response)


# ------------------------------------------------------------------ messages


async def test_a_message_is_stored_on_the_timeline_and_published(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    accepted = await post_complaint(intake, tenant)
    body = {
        "text": "附上银行对账单，两笔扣款都在上面。",
        "evidence": [{"kind": "statement", "uri": "https://files.example.com/e/2.pdf"}],
    }
    correlation_id = str(uuid.uuid4())
    response = await intake.post(
        f"{accepted['links']['self']}/messages",
        json=body,
        headers={**auth(tenant), "X-Correlation-Id": correlation_id},
    )

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["ticket_no"] == accepted["ticket_no"]
    assert answer["links"] == {"complaint": accepted["links"]["self"]}
    view = (await intake.get(accepted["links"]["self"], headers=auth(tenant))).json()
    assert view["status"] == "received"  # recorded only: resolution owns the case status
    assert view["timeline"][-1] == {
        "at": answer["received_at"],
        "status": "received",
        "detail": "Customer sent a follow-up message with 1 attachment(s).",
    }
    received, added = await events_on_topic(infra, accepted["complaint_id"], count=2)
    assert received["event_type"] == "complaint.received"
    assert added["event_type"] == "complaint.message_added"
    assert added["correlation_id"] == correlation_id
    assert added["ticket_no"] == accepted["ticket_no"] and added["producer"] == "intake"
    assert added["payload"]["message_id"] == answer["message_id"]
    assert added["payload"]["text"] == body["text"]
    assert added["payload"]["evidence"] == body["evidence"]
    assert added["payload"]["complaint_status"] == "received"


async def test_message_idempotency_replay_conflict_and_no_key(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    first, second = [await post_complaint(intake, tenant) for _ in range(2)]
    url = f"{first['links']['self']}/messages"
    key = f"msg-{uuid.uuid4()}"

    original = await intake.post(url, json={"text": "Any news?"}, headers=auth(tenant, key))
    replay = await intake.post(url, json={"text": "Any news?"}, headers=auth(tenant, key))
    other_body = await intake.post(url, json={"text": "Hello?"}, headers=auth(tenant, key))
    other_ticket = await intake.post(
        f"{second['links']['self']}/messages", json={"text": "Any news?"}, headers=auth(tenant, key)
    )
    unkeyed = [
        await intake.post(url, json={"text": "Any news?"}, headers=auth(tenant)) for _ in "ab"
    ]

    assert original.status_code == replay.status_code == 202
    assert replay.json() == original.json() and replay.headers["idempotent-replayed"] == "true"
    assert_problem(other_body, 409)
    assert_problem(other_ticket, 409)
    assert [r.status_code for r in unkeyed] == [202, 202]
    assert unkeyed[0].json()["message_id"] != unkeyed[1].json()["message_id"]
    messages = "SELECT count(*) FROM complaint_messages WHERE complaint_id = $1"
    assert await db_count(infra, messages, uuid.UUID(first["complaint_id"])) == 3
    assert await db_count(infra, messages, uuid.UUID(second["complaint_id"])) == 0
    await events_on_topic(infra, first["complaint_id"], count=4)  # received + 3 messages
    await asyncio.sleep(0.5)  # nothing more follows
    assert len(await events_on_topic(infra, first["complaint_id"])) == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "  \n "}, "text"),
        ({"text": "x" * 5001}, "text"),
        ({"text": 12}, "text"),
        ({"text": "hi", "mood": "angry"}, "mood"),
        ({"text": "hi", "evidence": [{"kind": "photo"}]}, "evidence.0.uri"),
    ],
)
async def test_invalid_message_is_422(
    intake: httpx.AsyncClient, tenant: dict[str, str], body: dict[str, Any], field: str
) -> None:
    accepted = await post_complaint(intake, tenant)
    response = await intake.post(
        f"{accepted['links']['self']}/messages", json=body, headers=auth(tenant)
    )
    assert field in error_fields(response)


async def test_message_body_limits_and_content_type(
    intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    accepted = await post_complaint(intake, tenant)
    url = f"{accepted['links']['self']}/messages"
    big = json.dumps({"text": "x" * (65 * 1024)}).encode()
    json_type = {"Content-Type": "application/json"}

    assert_problem(await intake.post(url, content=big, headers={**auth(tenant), **json_type}), 413)
    assert_problem(await intake.post(url, content=b"hi", headers=auth(tenant)), 415)
    assert_problem(await intake.post(url, content=b"{", headers={**auth(tenant), **json_type}), 400)


# ------------------------------------------------------------------ feedback


async def test_feedback_before_resolution_is_409(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    accepted = await post_complaint(intake, tenant)
    url = f"{accepted['links']['self']}/feedback"

    early = await intake.post(url, json={"score": 1}, headers=auth(tenant, "early"))
    await set_status(infra, intake, tenant, accepted, "in_progress")
    still_early = await intake.post(url, json={"score": 1}, headers=auth(tenant))

    assert "resolved" in assert_problem(early, 409)["detail"]
    assert_problem(still_early, 409)
    feedback = "SELECT count(*) FROM complaint_feedback WHERE complaint_id = $1"
    assert await db_count(infra, feedback, uuid.UUID(accepted["complaint_id"])) == 0


async def test_low_score_reopens_the_complaint_and_tells_resolution(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    accepted = await post_complaint(intake, tenant)
    await set_status(infra, intake, tenant, accepted, "resolved")
    url = f"{accepted['links']['self']}/feedback"
    body = {"score": 2, "comment": "Only half of the amount came back."}
    key = f"fb-{uuid.uuid4()}"

    response = await intake.post(url, json=body, headers=auth(tenant, key))

    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["score"], answer["reopened"], answer["status"]) == (2, True, "reopened")
    view = (await intake.get(accepted["links"]["self"], headers=auth(tenant))).json()
    assert view["status"] == "reopened"
    assert view["timeline"][-1] == {
        "at": answer["received_at"],
        "status": "reopened",
        "detail": "Customer rated the resolution 2/5; the complaint is reopened.",
    }
    [_, feedback] = await events_on_topic(infra, accepted["complaint_id"], count=2)
    assert feedback["event_type"] == "complaint.feedback_received"
    assert feedback["payload"]["score"] == 2 and feedback["payload"]["reopen"] is True
    assert feedback["payload"]["comment"] == body["comment"]
    assert feedback["payload"]["previous_status"] == "resolved"
    assert feedback["payload"]["feedback_id"] == answer["feedback_id"]

    # A replay answers the same, although the complaint is no longer resolved.
    replay = await intake.post(url, json=body, headers=auth(tenant, key))
    assert replay.status_code == 202 and replay.json() == answer
    # New feedback on a reopened complaint waits for the next resolution.
    assert_problem(await intake.post(url, json={"score": 1}, headers=auth(tenant)), 409)
    assert_problem(await intake.post(url, json={"score": 3}, headers=auth(tenant, key)), 409)
    rows = "SELECT count(*) FROM complaint_feedback WHERE complaint_id = $1"
    assert await db_count(infra, rows, uuid.UUID(accepted["complaint_id"])) == 1


@pytest.mark.parametrize("status", ["resolved", "closed"])
async def test_good_score_is_recorded_without_reopening(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str], status: str
) -> None:
    accepted = await post_complaint(intake, tenant)
    await set_status(infra, intake, tenant, accepted, status)

    response = await intake.post(
        f"{accepted['links']['self']}/feedback", json={"score": 4}, headers=auth(tenant)
    )

    assert response.status_code == 202, response.text
    assert (response.json()["reopened"], response.json()["status"]) == (False, status)
    view = (await intake.get(accepted["links"]["self"], headers=auth(tenant))).json()
    assert view["status"] == status
    assert view["timeline"][-1]["detail"] == "Customer rated the resolution 4/5."
    [_, feedback] = await events_on_topic(infra, accepted["complaint_id"], count=2)
    assert feedback["payload"]["reopen"] is False and feedback["payload"]["comment"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "score"),
        ({"score": 0}, "score"),
        ({"score": 6}, "score"),
        ({"score": 4.0}, "score"),
        ({"score": "4"}, "score"),
        ({"score": True}, "score"),
        ({"score": 4, "comment": ""}, "comment"),
        ({"score": 4, "comment": "x" * 2001}, "comment"),
        ({"score": 4, "stars": 5}, "stars"),
    ],
)
async def test_invalid_feedback_is_422(
    intake: httpx.AsyncClient, tenant: dict[str, str], body: dict[str, Any], field: str
) -> None:
    accepted = await post_complaint(intake, tenant)
    response = await intake.post(
        f"{accepted['links']['self']}/feedback", json=body, headers=auth(tenant)
    )
    assert field in error_fields(response)


# ------------------------------------------------------------------ the event on Kafka


async def test_the_received_event_reaches_the_topic_in_the_contract_envelope(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    correlation_id = str(uuid.uuid4())
    response = await intake.post(
        "/v1/complaints",
        json=COMPLAINT,
        headers={**auth(tenant, str(uuid.uuid4())), "X-Correlation-Id": correlation_id},
    )
    accepted = response.json()

    [event] = await events_on_topic(infra, accepted["complaint_id"])

    assert set(event) == {
        "event_id",
        "event_type",
        "schema_version",
        "occurred_at",
        "producer",
        "tenant_id",
        "complaint_id",
        "ticket_no",
        "correlation_id",
        "payload",
    }
    assert uuid.UUID(event["event_id"])
    assert (event["event_type"], event["schema_version"], event["producer"]) == (
        "complaint.received",
        1,
        "intake",
    )
    assert event["tenant_id"] == tenant["tenant_id"]
    assert event["complaint_id"] == accepted["complaint_id"]
    assert event["ticket_no"] == accepted["ticket_no"]
    assert event["correlation_id"] == correlation_id
    occurred_at = datetime.fromisoformat(event["occurred_at"])
    assert occurred_at.utcoffset() == timedelta(0)
    assert occurred_at == datetime.fromisoformat(accepted["received_at"])
    p = event["payload"]
    assert (p["amount"], p["currency"]) == ("86.50", "CNY")  # money as a string on the wire
    assert p["customer"] == COMPLAINT["customer"]
    assert p["channel"] == "app" and p["description"] == COMPLAINT["description"]
    assert p["tenant"] == {
        "jurisdiction": "cn",
        "locale": "zh-CN",
        "webhook_url": "http://127.0.0.1:9/hooks",
    }


# ------------------------------------------------------------------ rate limit (last: its
# own app instance joins the module's consumer group)


async def test_over_the_tenants_rate_is_429_with_retry_after(infra: Infra) -> None:
    settings = await _migrated(infra, rate_limit_per_s=0.5, rate_limit_burst=3)
    limited, other = await new_tenant(infra), await new_tenant(infra)
    async with running(create_app(settings)) as client:
        answers = [
            await client.get("/v1/complaints?limit=1", headers=auth(limited)) for _ in range(4)
        ]
        others = await client.get("/v1/complaints?limit=1", headers=auth(other))
        posted = await client.post(
            "/v1/complaints", json=COMPLAINT, headers=auth(limited, str(uuid.uuid4()))
        )

        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        assert_problem(answers[3], 429)
        retry_after = int(answers[3].headers["retry-after"])
        assert 1 <= retry_after <= 2
        assert others.status_code == 200  # per tenant: the other one is not held back
        assert_problem(posted, 429)

        await asyncio.sleep(retry_after)
        again = await client.get("/v1/complaints?limit=1", headers=auth(limited))
        assert again.status_code == 200


# ------------------------------------------------------------------ card numbers (PCI DSS 3.3)

CARD_VISA, CARD_UNIONPAY = "4111 1111 1111 1111", "6222021234567890128"


async def test_a_card_number_the_customer_typed_is_kept_as_its_last_four_digits(
    infra: Infra, intake: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    body = {
        **COMPLAINT,
        "description": f"卡号{CARD_VISA}被扣了两次，另一张{CARD_UNIONPAY}也是。电话13800138000",
    }
    accepted = await post_complaint(intake, tenant, body)
    complaint_id = uuid.UUID(accepted["complaint_id"])
    message_url = f"{accepted['links']['self']}/messages"
    sent = await intake.post(
        message_url, json={"text": f"请退到 {CARD_VISA.replace(' ', '-')}"}, headers=auth(tenant)
    )
    assert sent.status_code == 202, sent.text
    await set_status(infra, intake, tenant, accepted, "resolved")
    rated = await intake.post(
        f"{accepted['links']['self']}/feedback",
        json={"score": 4, "comment": f"已退到{CARD_UNIONPAY}"},
        headers=auth(tenant),
    )
    assert rated.status_code == 202, rated.text

    conn = await connect(infra.database_url, SCHEMA)
    try:
        description = await conn.fetchval(
            "SELECT description FROM complaints WHERE id = $1", complaint_id
        )
        stored = await conn.fetchval(
            "SELECT concat_ws(' ', (SELECT c::text FROM complaints c WHERE c.id = $1),"
            " (SELECT string_agg(m::text, ' ') FROM complaint_messages m"
            "  WHERE m.complaint_id = $1),"
            " (SELECT string_agg(f::text, ' ') FROM complaint_feedback f"
            "  WHERE f.complaint_id = $1),"
            " (SELECT string_agg(convert_from(o.message, 'UTF8'), ' ') FROM outbox o"
            "  WHERE o.message_key = $2))",
            complaint_id,
            str(complaint_id).encode(),
        )
    finally:
        await conn.close()
    assert description == (
        "卡号**** **** **** 1111被扣了两次，另一张**** **** **** 0128也是。电话13800138000"
    )
    events = await events_on_topic(infra, accepted["complaint_id"], count=3)
    published = json.dumps(events, ensure_ascii=False)
    received, message, feedback = (e["payload"] for e in events)
    assert received["description"] == description
    assert message["text"] == "请退到 **** **** **** 1111"
    assert feedback["comment"] == "已退到**** **** **** 0128"
    for text in (stored, published):
        digits_only = re.sub(r"[ -]", "", text)
        for card in (CARD_VISA, CARD_UNIONPAY):
            assert card.replace(" ", "") not in digits_only
        # What is not a card number is kept as typed.
        assert "13800138000" in text and "T20261122-0001" in text
