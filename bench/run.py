"""`make bench`: measures the local stack and writes bench/results.json (CONTRACT section 9).

Runs against the services `make up` started (ports 8080-8083, `.run/stack.env`):
1. intake saturation: closed loop over keep-alive connections -> accepted complaints/s,
   once with the downstream services paused (intake alone, Kafka holding the backlog)
   and once with them draining it on the same cores;
2. acknowledgement latency at a stated offered load (open loop): from each complaint's
   intended send time to its signed acknowledgement webhook arriving here;
3. pipeline throughput: a burst of complaints, timed until every one is acknowledged;
4. the bare asyncio baseline (bench/baseline.py), in the same run;
then peak RSS per service. Each measurement runs three times; the summary is the median.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.baseline import run_baseline
from bench.loadgen import LoadResult, open_loop, post_request
from deploy.local.webhook_receiver import webhook_handler

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
RESULTS = ROOT / "bench" / "results.json"
HOST = "127.0.0.1"
INTAKE_PORT = int(os.environ.get("INTAKE_HTTP_PORT", "8080"))
SERVICES = ("intake", "triage", "resolution", "notifier")
TENANTS = 10  # the per-tenant rate limit is 200/s: load comes from several wallet apps
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))

DESCRIPTIONS = [
    "我的账户被盗刷了，有两笔不是我操作的消费",
    "I was charged twice for the same order at the supermarket",
    "转账给朋友三天了还没到账",
    "My account was frozen without any notice and I cannot withdraw",
    "退款申请提交一周了还没有退回来",
    "The app keeps crashing when I open my bill",
]


class AckSink:
    """Receives the webhooks; notes when each ticket's acknowledgement arrived."""

    def __init__(self) -> None:
        self.acked_at: dict[str, float] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(webhook_handler(self._on_webhook), HOST, 0)
        return f"http://{HOST}:{self._server.sockets[0].getsockname()[1]}/hooks"

    def _on_webhook(self, _headers: dict[str, str], raw: bytes) -> int:
        body = orjson.loads(raw)
        if body["type"] == "complaint.acknowledged":
            self.acked_at.setdefault(body["ticket_no"], time.perf_counter())
        return 200


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    env_file = RUN_DIR / "stack.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and value:
                env.setdefault(key.strip(), value.strip())
    return env


def create_tenants(webhook_url: str, env: dict[str, str]) -> list[str]:
    keys = []
    for i in range(TENANTS):
        out = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            [
                *(sys.executable, "-m", "services.intake", "create-tenant", f"bench-{i}"),
                *("--webhook-url", webhook_url, "--locale", "en"),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        keys.append(json.loads(out.stdout)["api_key"])
    return keys


def complaint_requests(api_keys: list[str]) -> Any:
    run = uuid.uuid4().hex[:8]

    def request_for(i: int) -> bytes:
        body = orjson.dumps(
            {
                "customer": {"id": f"b-{i % 5000}", "locale": "en"},
                "channel": "app",
                "description": DESCRIPTIONS[i % len(DESCRIPTIONS)],
                "amount": f"{(i % 900) + 10}.50",
                "currency": "CNY",
            }
        )
        headers = {
            "Authorization": f"Bearer {api_keys[i % len(api_keys)]}",
            "Idempotency-Key": f"{run}-{i}",
            "Content-Type": "application/json",
        }
        return post_request(HOST, "/v1/complaints", headers, body)

    return request_for


async def intake_saturation(api_keys: list[str], *, isolated: bool) -> dict[str, Any]:
    """Closed-loop saturation of intake. `isolated`: the downstream services are paused
    (SIGSTOP) for the run, as when intake absorbs a burst and Kafka holds the backlog;
    otherwise they compete for the same two cores while draining it."""
    paused = _downstream_pids() if isolated else []
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        result = await open_loop(
            HOST,
            INTAKE_PORT,
            complaint_requests(api_keys),
            rate_per_s=None,
            duration_s=6 if isolated else 10,  # the isolated run leaves a backlog to drain
            connections=48,
        )
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    return {
        "kind": "intake_alone" if isolated else "intake_with_pipeline",
        "duration_s": round(result.elapsed_s, 2),
        "statuses": result.statuses,
        "accepted": result.accepted(),
        "errors": result.errors,
        "accepted_per_s": round(result.accepted() / result.elapsed_s, 1),
    }


def _downstream_pids() -> list[int]:
    pids = []
    for service in SERVICES[1:]:
        pid_file = RUN_DIR / f"{service}.pid"
        if pid_file.exists():
            pids.append(int(pid_file.read_text().strip()))
    return pids


async def acknowledged(sink: AckSink, result: LoadResult, timeout_s: float) -> dict[int, float]:
    tickets = {
        i: orjson.loads(body)["ticket_no"]
        for i, body in result.bodies.items()
        if body.startswith(b'{"complaint_id"')
    }
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline and any(t not in sink.acked_at for t in tickets.values()):
        await asyncio.sleep(0.2)
    return {i: sink.acked_at[t] for i, t in tickets.items() if t in sink.acked_at}


async def ack_latency(api_keys: list[str], sink: AckSink, rate: float) -> dict[str, Any]:
    result = await open_loop(
        HOST,
        INTAKE_PORT,
        complaint_requests(api_keys),
        rate_per_s=rate,
        duration_s=15,
        connections=32,
        keep_bodies=True,
    )
    acks = await acknowledged(sink, result, timeout_s=60)
    latencies = sorted((acks[i] - result.sent_at[i]) * 1000 for i in acks)
    return {
        "kind": "ack_latency",
        "offered_per_s": rate,
        "sent": result.sent,
        "accepted": result.accepted(),
        "acknowledged": len(acks),
        "ack_latency_p50_ms": round(_percentile(latencies, 50), 1),
        "ack_latency_p99_ms": round(_percentile(latencies, 99), 1),
        "http_latency_p99_ms": result.latency_ms.get_value_at_percentile(99),
    }


async def pipeline_throughput(api_keys: list[str], sink: AckSink, rate: float) -> dict[str, Any]:
    began = time.perf_counter()
    result = await open_loop(
        HOST,
        INTAKE_PORT,
        complaint_requests(api_keys),
        rate_per_s=rate,
        duration_s=15,
        connections=48,
        keep_bodies=True,
    )
    acks = await acknowledged(sink, result, timeout_s=120)
    last = max(acks.values(), default=began)
    return {
        "kind": "pipeline",
        "offered_per_s": rate,
        "accepted": result.accepted(),
        "acknowledged": len(acks),
        "complaints_per_s": round(len(acks) / (last - began), 1),
    }


async def drained(sink: AckSink, accepted: int, timeout_s: float = 300) -> None:
    """Until every complaint accepted so far has been acknowledged."""
    deadline = time.perf_counter() + timeout_s
    while len(sink.acked_at) < accepted and time.perf_counter() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)


def peak_rss_mb() -> dict[str, float]:
    peaks = {}
    for service in SERVICES:
        pid_file = RUN_DIR / f"{service}.pid"
        if not pid_file.exists():
            continue
        status = Path(f"/proc/{pid_file.read_text().strip()}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[service] = round(int(line.split()[1]) / 1024, 1)
    return peaks


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "broker": "Tansu (local stack)",
        "database": "PostgreSQL (local)",
        "load_generator": "same machine, raw asyncio HTTP/1.1 keep-alive (bench/loadgen.py)",
    }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def _median_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def main() -> None:
    env = stack_env()
    sink = AckSink()
    webhook_url = await sink.start()
    api_keys = create_tenants(webhook_url, env)
    ack_rate = float(os.environ.get("BENCH_ACK_RATE", "50"))
    pipeline_rate = float(os.environ.get("BENCH_PIPELINE_RATE", "300"))
    runs: list[dict[str, Any]] = []
    accepted = 0
    for repeat in range(REPEATS):
        for measure in (
            intake_saturation(api_keys, isolated=True),
            intake_saturation(api_keys, isolated=False),
            ack_latency(api_keys, sink, ack_rate),
            pipeline_throughput(api_keys, sink, pipeline_rate),
        ):
            run = await measure
            run["repeat"] = repeat
            runs.append(run)
            print(json.dumps(run), flush=True)
            accepted += run["accepted"]
            await drained(sink, accepted)  # each measurement starts with empty queues
        baseline = await run_baseline(
            env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/complaints"),
            env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            complaints=3000,
        )
        runs.append({"kind": "baseline", "repeat": repeat, "complaints_per_s": round(baseline, 1)})
        print(json.dumps(runs[-1]))

    def of(kind: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["kind"] == kind]

    pipeline = statistics.median(of("pipeline", "complaints_per_s"))
    baseline = statistics.median(of("baseline", "complaints_per_s"))
    summary = {
        "intake_accepted_per_s": statistics.median(of("intake_alone", "accepted_per_s")),
        "intake_accepted_per_s_with_pipeline_running": statistics.median(
            of("intake_with_pipeline", "accepted_per_s")
        ),
        "pipeline_complaints_per_s": pipeline,
        "ack_latency_p50_ms": statistics.median(of("ack_latency", "ack_latency_p50_ms")),
        "ack_latency_p99_ms": statistics.median(of("ack_latency", "ack_latency_p99_ms")),
        "ack_latency_offered_per_s": ack_rate,
        "baseline_complaints_per_s": baseline,
        "ratio_to_baseline": round(pipeline / baseline, 3),
        "peak_rss_mb": peak_rss_mb(),
        "spread": {
            "intake_accepted_per_s": _median_spread(of("intake_alone", "accepted_per_s")),
            "intake_accepted_per_s_with_pipeline_running": _median_spread(
                of("intake_with_pipeline", "accepted_per_s")
            ),
            "pipeline_complaints_per_s": _median_spread(of("pipeline", "complaints_per_s")),
            "ack_latency_p99_ms": _median_spread(of("ack_latency", "ack_latency_p99_ms")),
            "baseline_complaints_per_s": _median_spread(of("baseline", "complaints_per_s")),
        },
    }
    RESULTS.write_text(
        json.dumps({"machine": machine(), "runs": runs, "summary": summary}, indent=2) + "\n"
    )
    print(json.dumps(summary, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
