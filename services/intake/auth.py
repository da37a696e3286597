"""Tenant authentication: `Authorization: Bearer <api key>`, hashes compared in constant time."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg

from services.intake import repository
from services.intake.repository import StoredKey, Tenant
from shared.problems import Problem
from shared.signing import secret_matches, split_api_key

_UNAUTHORIZED = Problem(
    401, "A valid API key is required.", headers={"WWW-Authenticate": 'Bearer realm="complaints"'}
)


class TenantAuthenticator:
    def __init__(self, pool: asyncpg.Pool, cache_s: float) -> None:
        self._pool = pool
        self._cache_s = cache_s
        # key_id -> (stored key, fetched at): spares a query per request at high rates.
        self._cache: dict[str, tuple[StoredKey, float]] = {}

    async def authenticate(self, authorization: str | None) -> Tenant:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 9110)
            raise _UNAUTHORIZED
        parts = split_api_key(token.strip())
        if parts is None:
            raise _UNAUTHORIZED
        key_id, secret = parts
        stored = await self._lookup(key_id)
        if stored is None or not secret_matches(secret, stored.secret_hash):
            raise _UNAUTHORIZED
        if stored.expires_at is not None and stored.expires_at <= datetime.now(UTC):
            raise _UNAUTHORIZED
        return stored.tenant

    async def _lookup(self, key_id: str) -> StoredKey | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[1] < self._cache_s:
            return cached[0]
        stored = await repository.find_key(self._pool, key_id)
        if stored is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (stored, now)
        return stored
