"""Agent authentication: `Authorization: Bearer <agent token>`, hashes compared in
constant time. An agent acts for its own tenant only: every query downstream is scoped
by `Agent.tenant_id`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from services.resolution.agents import split_agent_token
from services.resolution.commands import Agent
from shared.problems import Problem
from shared.signing import secret_matches

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="resolution"'}
UNAUTHORIZED = Problem(401, "A valid agent token is required.", headers=_CHALLENGE)
_NO_TENANT = Problem(
    401,
    "This agent works for no tenant; register it again with "
    "`create-agent NAME --tenant TENANT_ID`.",
    headers=_CHALLENGE,
)


@dataclass(frozen=True)
class _Stored:
    agent: Agent | None  # None: the agent has no tenant (created before tenants existed)
    token_hash: bytes


class AgentAuthenticator:
    def __init__(self, pool: asyncpg.Pool, cache_s: float) -> None:
        self._pool = pool
        self._cache_s = cache_s
        # token_id -> (stored agent, fetched at): spares a query per request.
        self._cache: dict[str, tuple[_Stored, float]] = {}

    async def authenticate(self, authorization: str | None) -> Agent:
        if not authorization or not authorization.startswith("Bearer "):
            raise UNAUTHORIZED
        parts = split_agent_token(authorization.removeprefix("Bearer ").strip())
        if parts is None:
            raise UNAUTHORIZED
        token_id, secret = parts
        stored = await self._lookup(token_id)
        if stored is None or not secret_matches(secret, stored.token_hash):
            raise UNAUTHORIZED
        if stored.agent is None:
            raise _NO_TENANT
        return stored.agent

    async def _lookup(self, token_id: str) -> _Stored | None:
        now = time.monotonic()
        cached = self._cache.get(token_id)
        if cached is not None and now - cached[1] < self._cache_s:
            return cached[0]
        if len(token_id) > 64 or "\x00" in token_id:
            return None  # never a token we issued; and Postgres refuses NUL in text
        row = await self._pool.fetchrow(
            "SELECT id, tenant_id, name, approver, token_hash FROM agents WHERE token_id = $1",
            token_id,
        )
        if row is None:
            return None
        agent = (
            Agent(row["id"], row["tenant_id"], row["name"], row["approver"])
            if row["tenant_id"] is not None
            else None
        )
        stored = _Stored(agent, bytes(row["token_hash"]))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token_id] = (stored, now)
        return stored
