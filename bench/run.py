"""`make bench`: measures the local stack and writes bench/results.json (CONTRACT section 9).

Runs against the services `make up` started (ports 8080-8083, `.run/stack.env`). First a
warm-up, not counted: intake saturated for BENCH_WARM_UP_S (default 5) with the pipeline
running, then drained. Before each measurement the stack is let go quiet (bench/settle.py;
the wait is in the run's `settled_before`). Each repeat (BENCH_REPEATS, default 3; the
summary is the median, with the spread):
1. intake saturation: closed loop over keep-alive connections -> accepted complaints/s,
   once with the downstream services paused (intake alone, Kafka holding the backlog)
   and once with them draining it on the same cores;
2. acknowledgement latency at a stated offered load (open loop): from each complaint's
   intended send time to its signed acknowledgement webhook arriving here;
3. pipeline throughput: a burst of complaints, timed until every one is acknowledged
   and through triage, metered like 4 -> CPU ms per complaint at saturation
   (summary.cpu_ms_per_complaint_at_saturation);
4. CPU cost: 5 s idle, then open loop at 100/s for 20 s, metered (bench/cpu.py) from the
   first send until every complaint is acknowledged -> CPU ms per complaint per process;
5. the batched asyncio baseline (bench/baseline.py), in the same run.
Then, once: the latency-versus-load curve (bench/curve.py; BENCH_CURVE_RATES, default
25,50,100,200,300 per s, 15 s each, drained between; plotted to bench/latency_curve.png),
and last, since it may leave a backlog, the soak (bench/soak.py; BENCH_SOAK_RATE per s,
default 100, for BENCH_SOAK_MINUTES, default 10, acknowledgements awaited up to
BENCH_SOAK_ACK_TIMEOUT_S, default 120; BENCH_SKIP_SOAK=1 skips it, summary.soak is then
null). Then peak RSS per service. Every wait is bounded: what was not acknowledged in time
is recorded as such (acknowledged < accepted), not waited for indefinitely.
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from bench import curve, settle, soak
from bench.baseline import run_baseline
from bench.cpu import CpuMeter, stack_processes
from bench.loadgen import (
    RESPONSE_TIMEOUT_S,
    LoadResult,
    Tickets,
    open_loop,
    percentile,
    post_request,
    rounded_ms,
    wait_for_acks,
)
from deploy.local.webhook_receiver import webhook_handler

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
RESULTS = ROOT / "bench" / "results.json"
HOST = "127.0.0.1"
INTAKE_PORT = int(os.environ.get("INTAKE_HTTP_PORT", "8080"))
SERVICES = ("intake", "triage", "resolution", "notifier")
TENANTS = 10  # the per-tenant rate limit is 200/s: load comes from several wallet apps
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CPU_COST_RATE = 100.0
CPU_COST_S = 20.0
IDLE_S = 5.0
WARM_UP_S = float(os.environ.get("BENCH_WARM_UP_S", "5"))
CPU_KEYS = (*SERVICES, "postgres", "kafka", "loadgen", "total")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/complaints"

DESCRIPTIONS = [
    "我的账户被盗刷了，有两笔不是我操作的消费",
    "I was charged twice for the same order at the supermarket",
    "转账给朋友三天了还没到账",
    "My account was frozen without any notice and I cannot withdraw",
    "退款申请提交一周了还没有退回来",
    "The app keeps crashing when I open my bill",
]


class AckSink:
    """Receives the webhooks; notes when each ticket's acknowledgement arrived, and its
    triage news (`complaint.triaged`, after triage and resolution: the end of the path
    every complaint takes, which the acknowledgement no longer waits for)."""

    def __init__(self) -> None:
        self.acked_at: dict[str, float] = {}
        self.triaged_at: dict[str, float] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(webhook_handler(self._on_webhook), HOST, 0)
        return f"http://{HOST}:{self._server.sockets[0].getsockname()[1]}/hooks"

    def _on_webhook(self, _headers: dict[str, str], raw: bytes) -> int:
        body = orjson.loads(raw)
        if body["type"] == "complaint.acknowledged":
            self.acked_at.setdefault(body["ticket_no"], time.perf_counter())
        elif body["type"] == "complaint.triaged":
            self.triaged_at.setdefault(body["ticket_no"], time.perf_counter())
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


async def intake_saturation(
    api_keys: list[str], *, isolated: bool, duration_s: float | None = None, kind: str | None = None
) -> dict[str, Any]:
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
            # The isolated run leaves a backlog to drain.
            duration_s=duration_s or (6 if isolated else 10),
            connections=48,
            response_timeout_s=RESPONSE_TIMEOUT_S,
        )
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    return {
        "kind": kind or ("intake_alone" if isolated else "intake_with_pipeline"),
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


async def arrived(
    seen_at: Mapping[str, float], result: LoadResult, timeout_s: float
) -> dict[int, float]:
    """Request index -> when its webhook (the sink's `acked_at` or `triaged_at`) came, for
    the accepted complaints, waiting up to `timeout_s` for the last."""
    tickets = {
        i: orjson.loads(body)["ticket_no"]
        for i, body in result.bodies.items()
        if body.startswith(b'{"complaint_id"')
    }
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline and any(t not in seen_at for t in tickets.values()):
        await asyncio.sleep(0.2)
    return {i: seen_at[t] for i, t in tickets.items() if t in seen_at}


def _latencies_ms(arrivals: Mapping[int, float], result: LoadResult) -> list[float]:
    """Each arrival's wait from its request's intended send time, sorted, in ms."""
    return sorted((at - result.sent_at[i]) * 1000 for i, at in arrivals.items())


async def _offer_for_15_s(
    api_keys: list[str], sink: AckSink, rate: float, *, connections: int, wait_s: float
) -> tuple[LoadResult, dict[int, float], dict[int, float]]:
    """Open loop at `rate` for 15 s, then the acknowledgements and the triage news that
    came within `wait_s` each: (the load, acknowledged at, triaged at), by request."""
    result = await open_loop(
        HOST,
        INTAKE_PORT,
        complaint_requests(api_keys),
        rate_per_s=rate,
        duration_s=15,
        connections=connections,
        response_timeout_s=RESPONSE_TIMEOUT_S,
        keep_bodies=True,
    )
    acks = await arrived(sink.acked_at, result, timeout_s=wait_s)
    triaged = await arrived(sink.triaged_at, result, timeout_s=wait_s)
    return result, acks, triaged


async def ack_latency(api_keys: list[str], sink: AckSink, rate: float) -> dict[str, Any]:
    result, acks, triaged = await _offer_for_15_s(api_keys, sink, rate, connections=32, wait_s=60)
    latencies = _latencies_ms(acks, result)
    triage_latencies = _latencies_ms(triaged, result)
    return {
        "kind": "ack_latency",
        "offered_per_s": rate,
        "sent": result.sent,
        "accepted": result.accepted(),
        "acknowledged": len(acks),
        "ack_latency_p50_ms": rounded_ms(percentile(latencies, 50)),
        "ack_latency_p99_ms": rounded_ms(percentile(latencies, 99)),
        # The same complaints' triage news: through triage, resolution and the notifier.
        "triaged": len(triaged),
        "triaged_latency_p50_ms": rounded_ms(percentile(triage_latencies, 50)),
        "triaged_latency_p99_ms": rounded_ms(percentile(triage_latencies, 99)),
        "http_latency_p99_ms": result.latency_ms.get_value_at_percentile(99),
    }


async def pipeline_throughput(
    api_keys: list[str], sink: AckSink, rate: float, processes: dict[str, int]
) -> dict[str, Any]:
    """Sustained throughput with more offered than the stack carries; its CPU metered
    from the first send until the last complaint is through, so `cpu_ms_per_complaint`
    here is the cost at saturation, the one that bounds throughput (at a fixed rate
    below it the stack's loops take more, smaller rounds and fill the idle cores)."""
    began = time.perf_counter()
    with CpuMeter(processes) as meter:
        # Sustained means through the whole path: a complaint counts once its triage news
        # (the last webhook of that path) came, so acknowledgements that run ahead of a
        # growing triage backlog do not count as throughput.
        result, acks, done = await _offer_for_15_s(api_keys, sink, rate, connections=48, wait_s=120)
    last_ack = max(acks.values(), default=began)
    last = max(done.values(), default=began)
    return {
        "kind": "pipeline",
        "offered_per_s": rate,
        "accepted": result.accepted(),
        "acknowledged": len(acks),
        "triaged": len(done),
        "complaints_per_s": round(len(done) / (last - began), 1),
        "acknowledged_per_s": round(len(acks) / (last_ack - began), 1),
        **meter.report(len(done)),
    }


async def offer_until_acknowledged(
    api_keys: list[str], sink: AckSink, rate: float, duration_s: float
) -> tuple[LoadResult, Tickets, float]:
    """Open loop at `rate` for `duration_s`, then until every accepted complaint is
    acknowledged and its triage news came (at most 300 s more: all the work a complaint
    causes); with the time the last of them came."""
    tickets = Tickets()
    result = await open_loop(
        HOST,
        INTAKE_PORT,
        complaint_requests(api_keys),
        rate_per_s=rate,
        duration_s=duration_s,
        connections=32,
        response_timeout_s=RESPONSE_TIMEOUT_S,
        on_response=tickets,
    )
    ended = await wait_for_acks(sink.acked_at, tickets.by_request.values(), timeout_s=300)
    ended = max(ended, await wait_for_acks(sink.triaged_at, tickets.by_request.values(), 300))
    return result, tickets, ended


async def cpu_cost(
    api_keys: list[str],
    sink: AckSink,
    processes: dict[str, int],
    rate: float = CPU_COST_RATE,
    duration_s: float = CPU_COST_S,
) -> dict[str, Any]:
    """CPU per complaint: metered from the first send until the last acknowledgement,
    divided by the complaints acknowledged. That interval also holds the stack's idle
    work (polling, heartbeats), so the idle rate just before is recorded beside it."""
    with CpuMeter(processes) as idle:
        await asyncio.sleep(IDLE_S)
    began = time.perf_counter()
    with CpuMeter(processes) as meter:
        result, tickets, ended = await offer_until_acknowledged(api_keys, sink, rate, duration_s)
    acknowledged = sum(
        t in sink.acked_at and t in sink.triaged_at for t in tickets.by_request.values()
    )
    return {
        "kind": "cpu_cost",
        "offered_per_s": rate,
        "sent": result.sent,
        "accepted": result.accepted(),
        "acknowledged": acknowledged,
        # When False the CPU also holds work on complaints not counted: a high figure.
        "all_acknowledged": acknowledged == result.accepted(),
        "duration_s": round(ended - began, 1),
        **meter.report(acknowledged),
        "idle_cpu_s_per_s": {
            name: None if s is None else round(s / IDLE_S, 3) for name, s in idle.seconds().items()
        },
    }


async def drained(sink: AckSink, accepted: int, timeout_s: float = 300) -> None:
    """Until every complaint accepted so far has been acknowledged and triaged."""
    deadline = time.perf_counter() + timeout_s
    while (
        min(len(sink.acked_at), len(sink.triaged_at)) < accepted and time.perf_counter() < deadline
    ):
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
        "broker": "Apache Kafka (local stack, deploy/local/kafka.py)",
        "database": "PostgreSQL (local)",
        "load_generator": "same machine, raw asyncio HTTP/1.1 keep-alive (bench/loadgen.py)",
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def baseline_run(env: dict[str, str], repeat: int) -> dict[str, Any]:
    try:
        rate = await run_baseline(
            env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            complaints=3000,
        )
    except Exception as exc:  # recorded, not fatal: the other figures still stand
        return {"kind": "baseline", "repeat": repeat, "error": repr(exc)}
    return {"kind": "baseline", "repeat": repeat, "complaints_per_s": round(rate, 1)}


async def latency_curve(api_keys: list[str], sink: AckSink) -> list[dict[str, Any]]:
    points = []
    for rate in curve.rates_from(os.environ.get("BENCH_CURVE_RATES")):
        point = await curve.curve_point(
            HOST,
            INTAKE_PORT,
            complaint_requests(api_keys),
            sink.acked_at,
            rate,
            drained_by=sink.triaged_at,
        )
        print(json.dumps(point), flush=True)
        points.append(point)
    return points


async def soak_run(
    api_keys: list[str], sink: AckSink, env: dict[str, str], processes: dict[str, int]
) -> dict[str, Any]:
    return await soak.soak(
        HOST,
        INTAKE_PORT,
        complaint_requests(api_keys),
        sink.acked_at,
        rate=float(os.environ.get("BENCH_SOAK_RATE", "100")),
        minutes=float(os.environ.get("BENCH_SOAK_MINUTES", "10")),
        database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        processes=processes,
        ack_timeout_s=float(os.environ.get("BENCH_SOAK_ACK_TIMEOUT_S", "120")),
    )


def cpu_summary(runs: list[dict[str, Any]], kind: str = "cpu_cost") -> dict[str, float | None]:
    """Per process, the median over the repeats of its CPU ms per complaint in the runs
    of `kind` (the fixed-rate cost runs, or the pipeline runs: the cost at saturation)."""
    costs = [r["cpu_ms_per_complaint"] for r in runs if r["kind"] == kind]
    return {key: _median([c[key] for c in costs if c.get(key) is not None]) for key in CPU_KEYS}


def _triage_classify_1000_s() -> float:
    # bench.micro imports this module's DESCRIPTIONS: imported here, not at the top.
    from bench.micro import classify_1000_s

    return classify_1000_s()


async def main() -> None:
    env = stack_env()
    sink = AckSink()
    webhook_url = await sink.start()
    api_keys = create_tenants(webhook_url, env)
    processes = await stack_processes(env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    print(f"metering CPU of {processes} and this process (loadgen)", flush=True)
    ack_rate = float(os.environ.get("BENCH_ACK_RATE", "50"))
    pipeline_rate = float(os.environ.get("BENCH_PIPELINE_RATE", "300"))
    runs: list[dict[str, Any]] = []
    # Not counted: the first requests of a fresh stack pay for cold caches, connection
    # pools filling and the first compilations in every service and in PostgreSQL.
    warm_up = await intake_saturation(
        api_keys, isolated=False, duration_s=WARM_UP_S, kind="warm_up"
    )
    runs.append(warm_up)
    print(json.dumps(warm_up), flush=True)
    accepted = warm_up["accepted"]
    await drained(sink, accepted)
    for repeat in range(REPEATS):
        for measure in (
            intake_saturation(api_keys, isolated=True),
            intake_saturation(api_keys, isolated=False),
            ack_latency(api_keys, sink, ack_rate),
            pipeline_throughput(api_keys, sink, pipeline_rate, processes),
            cpu_cost(api_keys, sink, processes),
        ):
            quiet = await settle.settled(processes)
            run = await measure
            run["repeat"] = repeat
            run["settled_before"] = quiet
            runs.append(run)
            print(json.dumps(run), flush=True)
            accepted += run["accepted"]
            await drained(sink, accepted)  # each measurement starts with empty queues
        quiet = await settle.settled(processes)
        runs.append(await baseline_run(env, repeat) | {"settled_before": quiet})
        print(json.dumps(runs[-1]), flush=True)

    curve_points = await latency_curve(api_keys, sink)
    runs.extend(curve_points)
    soak_summary = None
    if os.environ.get("BENCH_SKIP_SOAK") == "1":
        print("soak skipped (BENCH_SKIP_SOAK=1): summary.soak is null", flush=True)
    else:
        accepted += sum(p["accepted"] for p in curve_points)
        await drained(sink, accepted)
        quiet = await settle.settled(processes)
        soak_record = await soak_run(api_keys, sink, env, processes)
        soak_record["settled_before"] = quiet
        runs.append(soak_record)
        print(json.dumps(soak_record), flush=True)
        soak_summary = soak.summary(soak_record)
        if backlog := soak_record["accepted"] - soak_record["acknowledged"]:
            print(f"{backlog} soak complaints still in the pipeline: it drains on its own")

    def of(kind: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["kind"] == kind and r.get(key) is not None]

    pipeline = _median(of("pipeline", "complaints_per_s"))
    baseline = _median(of("baseline", "complaints_per_s"))
    cpu_totals = [r["cpu_ms_per_complaint"].get("total") for r in runs if r["kind"] == "cpu_cost"]
    summary = {
        "intake_accepted_per_s": _median(of("intake_alone", "accepted_per_s")),
        "intake_accepted_per_s_with_pipeline_running": _median(
            of("intake_with_pipeline", "accepted_per_s")
        ),
        "pipeline_complaints_per_s": pipeline,
        "ack_latency_p50_ms": _median(of("ack_latency", "ack_latency_p50_ms")),
        "ack_latency_p99_ms": _median(of("ack_latency", "ack_latency_p99_ms")),
        "ack_latency_offered_per_s": ack_rate,
        "baseline_complaints_per_s": baseline,
        "ratio_to_baseline": round(pipeline / baseline, 3) if pipeline and baseline else None,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_ms_per_complaint": cpu_summary(runs),
        "cpu_cost_offered_per_s": CPU_COST_RATE,
        "cpu_ms_per_complaint_at_saturation": cpu_summary(runs, kind="pipeline"),
        "soak": soak_summary,
        "triage_classify_1000_cpu_s": _triage_classify_1000_s(),
        "latency_curve": curve.summary_points(curve_points),
        "knee_per_s": curve.knee(curve_points),
        "knee_rule": f"highest offered rate with p99 < {curve.KNEE_P99_MS:g} ms, all acknowledged",
        "spread": {
            "intake_accepted_per_s": _median_spread(of("intake_alone", "accepted_per_s")),
            "intake_accepted_per_s_with_pipeline_running": _median_spread(
                of("intake_with_pipeline", "accepted_per_s")
            ),
            "pipeline_complaints_per_s": _median_spread(of("pipeline", "complaints_per_s")),
            "ack_latency_p99_ms": _median_spread(of("ack_latency", "ack_latency_p99_ms")),
            "baseline_complaints_per_s": _median_spread(of("baseline", "complaints_per_s")),
            "cpu_ms_per_complaint_total": _median_spread([t for t in cpu_totals if t]),
        },
    }
    results = {"machine": machine(), "runs": runs, "summary": summary}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {RESULTS}")
    if curve_points:
        try:
            print(f"plotted to {curve.plot(summary, results['machine'])}")
        except ImportError as exc:  # matplotlib is in the test extra
            print(f"no plot ({exc}): pip install -e '.[test]', then python -m bench.curve")


if __name__ == "__main__":
    asyncio.run(main())
