"""No customer contact data in the log of the real `python -m services.intake serve`:
errors whose messages echo a phone number, an e-mail address and a card number, provoked
from outside (a poison event, a malformed HTTP request), leave them masked in every line,
and every line (structlog's, uvicorn's, faststream's, aiokafka's) is one JSON object from
our own handler: no library handler writes around the masking."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from deploy.local.stack import free_port
from shared.topics import COMPLAINTS_TRIAGED, dead_letter_topic
from tests.support import (
    Infra,
    Message,
    eventually,
    intake_cli,
    produce,
    read_topic,
    serving_intake,
)

PHONE, EMAIL, CARD = "+8613800138000", "zs@example.cn", "4111111111111111"
# Under 50 characters: pydantic quotes longer input cut in the middle ("zs...e.cn").
PII = f"{PHONE} {EMAIL} {CARD}"


@dataclass
class Served:
    log: str
    dead_letters: list[Message]


def _env(infra: Infra, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "INTAKE_HTTP_PORT": str(port),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "CONSUMER_MAX_ATTEMPTS": "2",
        "CONSUMER_RETRY_BASE_S": "0.05",
    }


def _envelope(**fields: object) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "complaint.triaged",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": "triage",
        "tenant_id": str(uuid.uuid4()),
        "complaint_id": str(uuid.uuid4()),
        "ticket_no": "WC-20261122-000042",
        "correlation_id": str(uuid.uuid4()),
        "payload": {},
        **fields,
    }


async def _provoke(infra: Infra, base_url: str, tenant: dict[str, str]) -> list[bytes]:
    """Errors that echo the customer's data: returns the keys of the poison events."""
    headers = {"Authorization": f"Bearer {tenant['api_key']}", "Idempotency-Key": "pii-1"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        accepted = await client.post(
            "/v1/complaints",
            json={
                "customer": {"id": "u-pii", "email": EMAIL, "phone": PHONE},
                "channel": "app",
                "description": f"卡号{CARD}被扣两次，电话{PHONE}，邮箱{EMAIL}",
            },
            headers=headers,
        )
    assert accepted.status_code == 202, accepted.text
    complaint = accepted.json()
    # 1. A producer's bug: the contact data where an id belongs. pydantic's error message
    #    quotes the input; the consumer logs it and dead-letters the event.
    garbled = _envelope(complaint_id=PII)
    # 2. A real complaint's triage with the contact data where a due time belongs: the
    #    payload's contract, or the read model's datetime parsing, quotes it.
    bad_due = _envelope(
        tenant_id=tenant["tenant_id"],
        complaint_id=complaint["complaint_id"],
        ticket_no=complaint["ticket_no"],
        payload={
            "category": "duplicate_charge",
            "priority": "P2",
            "first_response_due": PII,
            "resolution_due": PII,
            "received_at": complaint["received_at"],
        },
    )
    keys = [b"pii-garbled", complaint["complaint_id"].encode()]
    for key, envelope in zip(keys, (garbled, bad_due), strict=True):
        await produce(infra.kafka_bootstrap, COMPLAINTS_TRIAGED, json.dumps(envelope).encode(), key)
    # 3. A malformed HTTP request carrying them: uvicorn (httptools) logs and answers 400.
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /{PHONE} {EMAIL} {CARD} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    return keys


@pytest.fixture(scope="module")
def served(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    port = free_port()
    env = _env(infra, port)
    log_path = tmp_path_factory.mktemp("intake") / "intake.log"
    with serving_intake(env, port, log_path) as base_url:
        tenant = json.loads(
            intake_cli(
                env, "create-tenant", "PII Wallet", "--webhook-url", "http://127.0.0.1:9/hooks"
            )
        )
        keys = asyncio.run(_provoke(infra, base_url, tenant))

        async def dead_lettered() -> list[Message] | None:
            found = await read_topic(infra.kafka_bootstrap, dead_letter_topic(COMPLAINTS_TRIAGED))
            mine = [m for m in found if m.key in keys]
            return mine if len(mine) == len(keys) else None

        dead_letters = asyncio.run(eventually(dead_lettered, within_s=60))
    yield Served(log_path.read_text(errors="replace"), dead_letters)


def _assert_no_contact_data(text: str) -> None:
    compact = re.sub(r"[\s-]", "", text)
    for value in (PHONE, PHONE.removeprefix("+"), EMAIL, CARD):
        assert value not in text and value not in compact, value


def test_the_log_has_the_errors_masked_and_no_contact_data(served: Served) -> None:
    _assert_no_contact_data(served.log)
    # The errors were logged, with their quoted input masked.
    assert "event_dead_lettered" in served.log
    for marker in ("[phone]", "[email]", "[card]"):
        assert marker in served.log, marker


def test_every_line_comes_through_our_json_handler(served: Served) -> None:
    lines = [json.loads(line) for line in served.log.splitlines() if line.strip()]
    assert all({"event", "level", "timestamp"} <= line.keys() for line in lines), lines
    loggers = {line.get("logger", "") for line in lines}
    # uvicorn's warning about the malformed request and faststream's start-up line, which
    # their own handlers would have written as plain, unmasked text.
    assert "uvicorn.error" in loggers, loggers
    assert any(name.startswith("faststream") for name in loggers), loggers


def test_dead_letter_error_headers_carry_no_contact_data(served: Served) -> None:
    headers = [m.headers["x-dlq-error"].decode() for m in served.dead_letters]
    for header in headers:
        _assert_no_contact_data(header)
    assert any("[phone]" in h and "[email]" in h and "[card]" in h for h in headers), headers
