"""Tenant administration through the real command line, checked against the real API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.intake.app import MIGRATIONS, SCHEMA, create_app
from services.intake.settings import IntakeSettings
from shared.db import connect
from shared.runtime import migrate
from shared.signing import derive_webhook_secret
from tests.support import Infra, eventually, running

REPO = Path(__file__).resolve().parents[2]
MASTER_KEY = "tenants-test-master-key"


def cli(infra: Infra, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "WEBHOOK_MASTER_KEY": MASTER_KEY,
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.intake", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def run_cli(infra: Infra, *args: str) -> dict[str, Any]:
    result = await asyncio.to_thread(cli, infra, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
async def intake(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    # No key cache: an expired key must fail on the very next request.
    settings = infra.settings(IntakeSettings, auth_cache_s=0)
    await asyncio.to_thread(migrate, settings, SCHEMA, MIGRATIONS)
    async with running(create_app(settings)) as client:
        yield client


async def status_with(client: httpx.AsyncClient, api_key: str) -> int:
    response = await client.get("/v1/complaints", headers={"Authorization": f"Bearer {api_key}"})
    return response.status_code


async def fetch(infra: Infra, sql: str, *args: Any) -> list[Any]:
    conn = await connect(infra.database_url, SCHEMA)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_create_tenant_prints_credentials_and_stores_only_a_hash(
    infra: Infra, intake: httpx.AsyncClient
) -> None:
    created = await run_cli(
        infra, "create-tenant", "Example Wallet", "--webhook-url", "https://wallet.example/hooks"
    )

    assert set(created) == {"tenant_id", "api_key", "webhook_secret"}
    tenant_id = uuid.UUID(created["tenant_id"])
    prefix, key_id, secret = created["api_key"].split("_", 2)
    assert prefix == "wck" and key_id and len(secret) >= 40
    assert created["webhook_secret"] == derive_webhook_secret(MASTER_KEY, str(tenant_id))

    [tenant] = await fetch(infra, "SELECT * FROM tenants WHERE id = $1", tenant_id)
    assert (tenant["name"], tenant["webhook_url"]) == (
        "Example Wallet",
        "https://wallet.example/hooks",
    )
    assert (tenant["jurisdiction"], tenant["locale"]) == ("cn", "zh-CN")  # the defaults
    [key] = await fetch(infra, "SELECT * FROM api_keys WHERE tenant_id = $1", tenant_id)
    assert key["key_id"] == key_id and key["expires_at"] is None
    assert bytes(key["secret_hash"]) == hashlib.sha256(secret.encode()).digest()
    # Neither the key nor its secret is stored anywhere in intake's schema, in any form
    # but the hash (nor is the webhook secret: it is derived when needed).
    everything = await fetch(
        infra,
        "SELECT row_to_json(t)::text AS r FROM tenants t "
        "UNION ALL SELECT row_to_json(k)::text FROM api_keys k",
    )
    stored = "\n".join(row["r"] for row in everything)
    for plaintext in (secret, created["api_key"], created["webhook_secret"]):
        assert plaintext not in stored
    assert await status_with(intake, created["api_key"]) == 200


async def test_create_tenant_with_jurisdiction_and_locale(infra: Infra) -> None:
    created = await run_cli(
        infra,
        "create-tenant",
        "EU Wallet",
        "--webhook-url",
        "https://eu.example/hooks",
        "--jurisdiction",
        "eu",
        "--locale",
        "en",
    )
    [tenant] = await fetch(
        infra,
        "SELECT jurisdiction, locale FROM tenants WHERE id = $1",
        uuid.UUID(created["tenant_id"]),
    )
    assert (tenant["jurisdiction"], tenant["locale"]) == ("eu", "en")


@pytest.mark.parametrize(
    "args",
    [
        ("create-tenant", "W", "--webhook-url", "ftp://wallet.example/hooks"),
        ("create-tenant", "W", "--webhook-url", "https://w.example", "--jurisdiction", "fr"),
        ("create-tenant", "W", "--webhook-url", "https://w.example", "--locale", "de-DE"),
        ("create-tenant", "W"),
        ("rotate-key", str(uuid.UUID(int=0))),
        ("rotate-key", "not-a-uuid"),
    ],
)
async def test_bad_admin_input_is_an_error_message_not_a_traceback(
    infra: Infra, args: tuple[str, ...]
) -> None:
    result = await asyncio.to_thread(cli, infra, *args)
    assert result.returncode == 2
    assert "error" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


async def test_rotated_key_overlaps_then_the_old_one_stops_working(
    infra: Infra, intake: httpx.AsyncClient
) -> None:
    created = await run_cli(
        infra, "create-tenant", "Rotating Wallet", "--webhook-url", "https://r.example/hooks"
    )
    old_key = created["api_key"]

    rotated = await run_cli(infra, "rotate-key", created["tenant_id"], "--overlap-hours", "24")

    new_key = rotated["api_key"]
    assert new_key != old_key and rotated["previous_keys"] == 1
    assert await status_with(intake, old_key) == 200  # inside the overlap window
    assert await status_with(intake, new_key) == 200
    old_key_id = old_key.split("_")[1]
    [expiry] = await fetch(infra, "SELECT expires_at FROM api_keys WHERE key_id = $1", old_key_id)
    assert expiry["expires_at"].isoformat() == rotated["previous_keys_expire_at"]

    # The overlap is over (moved into the past rather than waiting 24 hours).
    await fetch(
        infra,
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_id = $1",
        old_key_id,
    )
    assert await status_with(intake, old_key) == 401
    assert await status_with(intake, new_key) == 200


async def test_a_tiny_overlap_expires_by_itself(infra: Infra, intake: httpx.AsyncClient) -> None:
    created = await run_cli(
        infra, "create-tenant", "Hasty Wallet", "--webhook-url", "https://h.example/hooks"
    )

    rotated = await run_cli(infra, "rotate-key", created["tenant_id"], "--overlap-hours", "0.0005")

    async def old_key_refused() -> bool:
        return await status_with(intake, created["api_key"]) == 401

    await eventually(old_key_refused, within_s=10, interval=0.2)  # 1.8 s overlap
    assert await status_with(intake, rotated["api_key"]) == 200
    # Rotating again keeps the earliest expiry of the first key, and starts the second's.
    again = await run_cli(infra, "rotate-key", created["tenant_id"], "--overlap-hours", "1")
    assert again["previous_keys"] == 2
    assert await status_with(intake, created["api_key"]) == 401
    assert await status_with(intake, rotated["api_key"]) == 200
    assert await status_with(intake, again["api_key"]) == 200
