"""CPU per webhook POST, httpx against aiohttp, on this machine (`python -m bench.webhook_clients`).

What chose the notifier's client (services/notifier/webhook_client.py): both POST the
same 600-byte body with five headers to a keep-alive loopback receiver in the same
process, 16 at a time; the figure is this process's CPU time per request, the
receiver's share included (the same for both)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

BODY = b'{"x": "' + b"1" * 600 + b'"}'
HEADERS = {"Content-Type": "application/json", "X-A": "1", "X-B": "2", "X-C": "3", "X-D": "4"}
CONCURRENCY = 16


async def _receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _cpu_ms_per_request(post: Callable[[], Awaitable[None]], requests: int) -> float:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with slots:
            await post()

    await asyncio.gather(*(one() for _ in range(200)))  # warm: connections open
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (time.process_time() - started) / requests * 1000


async def main(requests: int = 3000) -> dict[str, float]:
    server = await asyncio.start_server(_receiver, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks"
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=CONCURRENCY)) as client:

        async def httpx_post() -> None:
            response = await client.post(url, content=BODY, headers=HEADERS)
            assert response.status_code == 200

        httpx_ms = await _cpu_ms_per_request(httpx_post, requests)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def aiohttp_post() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                assert response.status == 200

        aiohttp_ms = await _cpu_ms_per_request(aiohttp_post, requests)
    server.close()
    figures = {
        f"httpx {httpx.__version__}": round(httpx_ms, 2),
        f"aiohttp {aiohttp.__version__}": round(aiohttp_ms, 2),
    }
    print("CPU ms per POST:", figures)
    return figures


if __name__ == "__main__":
    asyncio.run(main())
