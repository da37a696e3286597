"""A light open-loop HTTP/1.1 load generator over raw asyncio streams.

httpx costs more CPU per request than the server under test on this 2-core machine, so
requests are pre-serialised bytes written to keep-alive connections. Latency is measured
from each request's *intended* send time (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram


@dataclass
class LoadResult:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0
    latency_ms: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000, 3))
    sent_at: dict[int, float] = field(default_factory=dict)  # request index -> intended time
    bodies: dict[int, bytes] = field(default_factory=dict)  # kept only when asked for

    def accepted(self) -> int:
        return self.statuses.get(202, 0)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def open_loop(
    host: str,
    port: int,
    request_for: Callable[[int], bytes],
    *,
    rate_per_s: float | None,
    duration_s: float,
    connections: int = 64,
    keep_bodies: bool = False,
) -> LoadResult:
    """Send `rate_per_s` requests per second for `duration_s`, whatever the server does.

    With `rate_per_s=None` the connections send back to back (a closed loop, for the
    saturation throughput only: its latencies hide queueing and are not reported).
    """
    result = LoadResult()
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=0 if rate_per_s else connections)
    start = time.perf_counter() + 0.05

    async def pace() -> None:
        i = 0
        while (now := time.perf_counter()) < start + duration_s:
            intended = start + i / rate_per_s if rate_per_s else now
            if intended - now > 0:
                await asyncio.sleep(intended - now)
            result.sent_at[i] = intended
            await queue.put(i)
            i += 1
        result.sent = i
        for _ in range(connections):
            await queue.put(None)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := await queue.get()) is not None:
                try:
                    writer.write(request_for(i))
                    status, body = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if keep_bodies:
                    result.bodies[i] = body
                done = time.perf_counter()
                result.latency_ms.record_value(max(1, int((done - result.sent_at[i]) * 1000)))
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(pace(), *(worker() for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - began
    return result


def post_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
