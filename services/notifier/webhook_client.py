"""The webhook client: signed POSTs over aiohttp's keep-alive pool.

aiohttp, not httpx: one POST to a loopback receiver costs about ten times less CPU
(`python -m bench.webhook_clients`: 3.5 ms with httpx 0.28, 0.3 ms with aiohttp 3.14,
the receiver's share included), and a complaint makes several. Waiting for a free
connection is bounded on its own, by a semaphore, so that "all our connections are
busy" (our capacity, not the tenant's fault: PoolTimeout) stays distinct from an
endpoint that is slow or unreachable; the total deadline of an attempt is the caller's
(delivery.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

# What is read of an answer: its status is all that counts; the rest of a long body is
# not worth reading (the connection is then closed instead of reused).
_ANSWER_READ_LIMIT = 64 * 1024


class PoolTimeout(Exception):
    """No connection of ours came free in time: not an attempt at the endpoint."""


class WebhookClient:
    def __init__(
        self,
        *,
        timeout_s: float,
        pool_timeout_s: float,
        connections: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._pool_timeout_s = pool_timeout_s
        self._slots = asyncio.Semaphore(connections)
        self._connections = connections
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                # Per phase, as the old client had; the total is the caller's deadline.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout_s, sock_read=self._timeout_s
                ),
                headers=self._headers,
                # No proxy or .netrc from the environment, no cookies kept between tenants.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body`; the answer's status code. Raises on no answer."""
        try:
            async with asyncio.timeout(self._pool_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimeout(f"no free connection within {self._pool_timeout_s} s") from None
        try:
            session = self._open_session()
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                read = 0
                while read < _ANSWER_READ_LIMIT:
                    chunk = await response.content.read(_ANSWER_READ_LIMIT - read)
                    if not chunk:
                        break
                    read += len(chunk)
                return response.status
        finally:
            self._slots.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
