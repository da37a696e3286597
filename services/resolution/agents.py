"""Back-office agents: one tenant each; tokens are shown once and stored only as hashes."""

from __future__ import annotations

import secrets
import uuid

import asyncpg

from shared.signing import hash_secret

AGENT_TOKEN_PREFIX = "wca"  # noqa: S105 - a public prefix, not a secret


def parse_tenant_id(value: str) -> uuid.UUID:
    """The --tenant argument: a UUID (what create-tenant printed), else ValueError."""
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        raise ValueError(
            f"--tenant must be a tenant id (a UUID, as printed by "
            f"`python -m services.intake create-tenant`), not {value!r}"
        ) from None


def split_agent_token(presented: str) -> tuple[str, str] | None:
    """('token_id', 'secret') of a well-formed `wca_<id>_<secret>` token, else None."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != AGENT_TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


async def create_agent(
    conn: asyncpg.Connection,
    *,
    name: str,
    approver: bool,
    tenant_id: uuid.UUID | None = None,
) -> dict[str, str]:
    """Registers the agent; returns its id and its token (the only time it is shown).

    An agent without a tenant sees no case at all (the API refuses its token): the CLI
    always passes one."""
    agent_id = uuid.uuid4()
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO agents (id, name, token_id, token_hash, approver, tenant_id) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        agent_id,
        name,
        token_id,
        hash_secret(secret),
        approver,
        tenant_id,
    )
    return {"agent_id": str(agent_id), "token": f"{AGENT_TOKEN_PREFIX}_{token_id}_{secret}"}
