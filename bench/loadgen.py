"""A light open-loop HTTP/1.1 load generator over raw asyncio streams, and the
acknowledgement latencies measured with it.

httpx costs more CPU per request than the server under test on this 2-core machine, so
requests are pre-serialised bytes written to keep-alive connections. Latency is measured
from each request's *intended* send time (no coordinated omission).

Per request the generator keeps only its intended send time (an array of floats); a
caller that needs more passes `on_response` and keeps what it needs (`Tickets`: the
ticket number of each accepted complaint), so a long soak does not hold every body.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import orjson
from hdrh.histogram import HdrHistogram

OnResponse = Callable[[int, int, bytes], None]  # request index, HTTP status, body
RESPONSE_TIMEOUT_S = 120.0  # the bench's: an HTTP answer slower than this is an error


@dataclass
class LoadResult:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0
    # Up to 10 minutes: a soak that falls behind must not drop its slowest answers.
    latency_ms: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 600_000, 3))
    # sent_at[i]: request i's intended send time (time.perf_counter()); 8 bytes a request.
    sent_at: array[float] = field(default_factory=lambda: array("d"))
    bodies: dict[int, bytes] = field(default_factory=dict)  # kept only when asked for
    max_lag_s: float = 0.0  # how far behind its schedule the pacer fell at worst

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
    on_response: OnResponse | None = None,
    response_timeout_s: float | None = None,
) -> LoadResult:
    """Send `rate_per_s` requests per second for `duration_s`, whatever the server does.

    With `rate_per_s=None` the connections send back to back (a closed loop, for the
    saturation throughput only: its latencies hide queueing and are not reported).
    The schedule is `start + i / rate`, never "last send + interval", so a late wake-up
    does not push back every later request over a long run. `response_timeout_s`: an
    answer that takes longer counts as an error (the connection is replaced), so a
    server that stops answering cannot hold the run forever.
    """
    result = LoadResult()
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=0 if rate_per_s else connections)
    start = time.perf_counter() + 0.05

    async def pace() -> None:
        i = 0
        while True:
            now = time.perf_counter()
            intended = start + i / rate_per_s if rate_per_s else now
            if intended >= start + duration_s:  # a late pacer still sends its whole schedule
                break
            if intended - now > 0:
                await asyncio.sleep(intended - now)
            result.max_lag_s = max(result.max_lag_s, time.perf_counter() - intended)
            result.sent_at.append(intended)
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
                    status, body = await asyncio.wait_for(
                        _read_response(reader), response_timeout_s
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if keep_bodies:
                    result.bodies[i] = body
                if on_response is not None:
                    on_response(i, status, body)
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


class Tickets:
    """An `on_response` that keeps the ticket number of each accepted complaint."""

    def __init__(self) -> None:
        self.by_request: dict[int, str] = {}

    def __call__(self, i: int, status: int, body: bytes) -> None:
        if status == 202:
            self.by_request[i] = orjson.loads(body)["ticket_no"]


async def wait_for_acks(
    acked_at: Mapping[str, float], tickets: Collection[str], timeout_s: float
) -> float:
    """Until every ticket is acknowledged or `timeout_s` passed; returns when it stopped
    waiting (perf_counter), the lower bound of every latency still unacknowledged."""
    deadline = time.perf_counter() + timeout_s
    pending = [t for t in tickets if t not in acked_at]
    while pending and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
        pending = [t for t in pending if t not in acked_at]
    return time.perf_counter()


@dataclass
class AckLatencies:
    """Acknowledgement latencies (ms from the intended send time) of accepted complaints:
    exact for the acknowledged ones, lower bounds (the wait so far) for the others."""

    exact_ms: list[float] = field(default_factory=list)
    unacknowledged_ms: list[float] = field(default_factory=list)

    def add(self, sent_at: float, acked_at: float | None, gave_up_at: float) -> None:
        if acked_at is None:
            self.unacknowledged_ms.append((gave_up_at - sent_at) * 1000)
        else:
            self.exact_ms.append((acked_at - sent_at) * 1000)

    @property
    def acknowledged(self) -> int:
        return len(self.exact_ms)

    @property
    def accepted(self) -> int:
        return len(self.exact_ms) + len(self.unacknowledged_ms)

    def percentile(self, pct: float) -> tuple[float, bool]:
        """The `pct` percentile over every accepted complaint, and whether it is only a
        lower bound. An unacknowledged complaint counts as its wait so far: raising a
        value never lowers a percentile, so the result is exact unless some such wait
        sits at or below it (then the true value may be higher)."""
        values = sorted(self.exact_ms + self.unacknowledged_ms)
        value = percentile(values, pct)
        bound = any(w <= value for w in self.unacknowledged_ms)
        return value, bound


def ack_latencies(
    sent_at: array[float],
    tickets: Mapping[int, str],
    acked_at: Mapping[str, float],
    gave_up_at: float,
) -> AckLatencies:
    latencies = AckLatencies()
    for i, ticket in tickets.items():
        latencies.add(sent_at[i], acked_at.get(ticket), gave_up_at)
    return latencies


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest rank on ascending values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


def rounded_ms(value: float) -> float | None:
    """A latency for results.json: 0.1 ms, and None (JSON null) instead of NaN."""
    return None if math.isnan(value) else round(value, 1)
