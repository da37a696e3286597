"""Back-office agents: tokens are shown once and stored only as hashes."""

from __future__ import annotations

import secrets
import uuid

import asyncpg

from shared.signing import hash_secret

AGENT_TOKEN_PREFIX = "wca"  # noqa: S105 - a public prefix, not a secret


async def create_agent(conn: asyncpg.Connection, *, name: str, approver: bool) -> dict[str, str]:
    agent_id = uuid.uuid4()
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO agents (id, name, token_id, token_hash, approver) VALUES ($1, $2, $3, $4, $5)",
        agent_id,
        name,
        token_id,
        hash_secret(secret),
        approver,
    )
    return {"agent_id": str(agent_id), "token": f"{AGENT_TOKEN_PREFIX}_{token_id}_{secret}"}
