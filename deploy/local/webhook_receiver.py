"""A minimal HTTP/1.1 endpoint for receiving webhooks on loopback (demo, bench, tests).

`webhook_handler(on_request)` gives an `asyncio.start_server` connection handler that
reads keep-alive requests one after another, hands each one's headers (lower-case names)
and raw body to `on_request`, and answers with the status it returns and an empty body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

OnRequest = Callable[[dict[str, str], bytes], int]
ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_REASONS = {200: "OK", 503: "Service Unavailable"}


def webhook_handler(on_request: OnRequest) -> ConnectionHandler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                headers = {
                    key.strip().lower(): value.strip()
                    for key, _, value in (
                        line.partition(":") for line in head.split("\r\n")[1:] if line
                    )
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = on_request(headers, body)
                reason = _REASONS.get(status, "Status")
                writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the sender closed the connection, or the server is shutting down
        finally:
            writer.close()

    return serve
