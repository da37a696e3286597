"""Tenant administration: create a tenant, rotate its API key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.intake import repository
from services.intake.repository import Tenant
from shared.signing import derive_webhook_secret, issue_api_key

JURISDICTIONS = ("cn", "eu", "uk", "us")
LOCALES = ("zh-CN", "en")


async def create_tenant(
    conn: asyncpg.Connection,
    *,
    name: str,
    webhook_url: str,
    jurisdiction: str,
    locale: str,
    webhook_master_key: str,
) -> dict[str, Any]:
    if jurisdiction not in JURISDICTIONS:
        raise ValueError(f"jurisdiction must be one of {', '.join(JURISDICTIONS)}")
    if locale not in LOCALES:
        raise ValueError(f"locale must be one of {', '.join(LOCALES)}")
    if not webhook_url.startswith(("http://", "https://")):
        raise ValueError("webhook URL must be http(s)")
    tenant = Tenant(uuid.uuid4(), name, webhook_url, jurisdiction, locale)
    key = issue_api_key()
    async with conn.transaction():
        await repository.insert_tenant(conn, tenant)
        await repository.insert_api_key(conn, key.key_id, tenant.id, key.secret_hash)
    return {
        "tenant_id": str(tenant.id),
        "api_key": key.plaintext,
        "webhook_secret": derive_webhook_secret(webhook_master_key, str(tenant.id)),
    }


async def rotate_key(
    conn: asyncpg.Connection, *, tenant_id: uuid.UUID, overlap: timedelta
) -> dict[str, Any]:
    """Issue a new key; the old ones keep working for `overlap`, then stop."""
    if overlap < timedelta(0):
        raise ValueError("the overlap cannot be negative")
    key = issue_api_key()
    expires_at = datetime.now(UTC) + overlap
    async with conn.transaction():
        if not await repository.tenant_exists(conn, tenant_id):
            raise ValueError(f"no tenant {tenant_id}")
        await repository.insert_api_key(conn, key.key_id, tenant_id, key.secret_hash)
        expired = await repository.expire_other_keys(conn, tenant_id, key.key_id, expires_at)
    return {
        "tenant_id": str(tenant_id),
        "api_key": key.plaintext,
        "previous_keys_expire_at": expires_at.isoformat(),
        "previous_keys": expired,
    }
