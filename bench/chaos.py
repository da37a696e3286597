"""`make chaos` (`python -m bench.chaos`): the fault tests, under a steady open-loop load.

Brings up a stack of its own (a throwaway PostgreSQL cluster and a fresh Apache Kafka
log under `.run/chaos/`, the four services on free ports: a developer's `make up` stack
is never touched), creates a tenant whose webhook points at a receiver here, then per
fault: offers CHAOS_RATE complaints/s (default 20) for CHAOS_LOAD_S seconds (default 24),
each with a unique Idempotency-Key, customer id and transaction ref; injects the fault
a few seconds in; restores what it broke; waits (bounded) until every accepted complaint
was acknowledged and triaged; and counts, per ticket, in SQL and on the receiver
(bench/chaos_accounting.py). Faults: kill -9 of each service and of two at once, Kafka
kill -9 and restart, PostgreSQL immediate stop and start, the outbox relay leader paused
(SIGSTOP) while a second intake instance stands by.

A fault only proves something if it hit its window: each row must show at least one
redelivery (records a killed consumer had taken and not committed, which its group
delivers again: its kafka_consumer_fetched_offset before the kill against the group's
committed offsets after it; an event absorbed by an inbox or a batch seeked back, from
the services' events_consumed_total; an event published twice, from the topics; a
webhook resent with the same event id). Prints one table, writes bench/chaos.json, exits
1 if any complaint was lost or duplicated or any fault saw no redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.chaos_accounting import FaultCounts, GroupPartition, Webhook, count_fault, refetched
from bench.loadgen import LoadResult, open_loop, post_request
from bench.run import DESCRIPTIONS
from bench.tcp_proxy import TcpProxy
from deploy.local import stack
from deploy.local.webhook_receiver import webhook_handler
from shared.signing import verify_webhook
from shared.topics import ALL_TOPICS

ROOT = Path(__file__).resolve().parents[1]
CHAOS_DIR = ROOT / ".run" / "chaos"
RESULTS = ROOT / "bench" / "chaos.json"
HOST = "127.0.0.1"
SERVICES = ("intake", "triage", "resolution", "notifier")
STANDBY = "intake-b"  # the second intake instance of the paused-leader fault
INTAKES = ("intake", STANDBY)
RATE = float(os.environ.get("CHAOS_RATE", "20"))
LOAD_S = float(os.environ.get("CHAOS_LOAD_S", "24"))
FAULT_AT_S = 4.0  # into the load: the pipeline is busy when the fault lands
DOWN_S = 5.0  # how long the broker or the database stays down
PAUSE_S = 15.0  # longer than OUTBOX_LEADER_TIMEOUT_S (10 s): the standby must take over
DRAIN_S = float(os.environ.get("CHAOS_DRAIN_S", "90"))
READY_S = 120.0
# A stack whose service exits while starting is started afresh once (its log is printed
# first): the faults are what this run tests, and a second failure still fails it.
STACK_STARTS = 2
REDELIVERED = ("duplicate", "retried")
ATTEMPTS = 5  # per fault, while it misses its window (a fault that never hits fails the run)
BURST = 100  # complaints on top of the load before a kill -9: the victim is busy with a batch
BURST_S = 1.0
AIM_S = 5.0  # how long an aimed kill waits for its victim to take a batch
# Records the victims must have taken since the pause before the kill: the backlog's
# large batch, not the few records the client had prefetched before it was paused.
AIM_RECORDS = 30
# The victim is paused through the burst so that a backlog waits for it; once resumed it
# takes a large batch at once, and the kill lands inside that batch. Shorter than the
# consumer session timeout (6 s) and the relay's leader timeout (10 s): the victim keeps
# its partitions and its leadership.
BACKLOG_S = 2.5


# ------------------------------------------------------------------ the stack


@dataclass
class ChaosStack:
    """The processes this run started, and how to reach them."""

    pg_port: int = field(default_factory=stack.free_port)
    kafka_port: int = field(default_factory=stack.free_port)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    kafka: subprocess.Popen[bytes] | None = None
    postgres_up: bool = False
    paused: set[int] = field(default_factory=set)

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.pg_port}/{stack.DEFAULT_DATABASE}"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    def env(self, name: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
        }
        service = "intake" if name == STANDBY else name
        env[f"{service.upper()}_HTTP_PORT"] = str(self.ports[name])
        return env

    def pid(self, name: str) -> int:
        return self.processes[name].pid


def prepare_run_dir() -> None:
    """A fresh `.run/chaos`, so runs are independent; the stack module's PID files and
    logs go there too (stack.spawn writes under stack.RUN_DIR)."""
    if CHAOS_DIR.exists():
        data = CHAOS_DIR / "pgdata"
        if (data / "postmaster.pid").exists():  # a previous run that was cut short
            with contextlib.suppress(SystemExit):
                stack.stop_local_postgres(data, "immediate")
        shutil.rmtree(CHAOS_DIR)
    CHAOS_DIR.mkdir(parents=True)
    CHAOS_DIR.chmod(0o755)  # the cluster runs as the postgres account when we are root
    stack.RUN_DIR = CHAOS_DIR


def start_postgres(chaos: ChaosStack) -> None:
    stack.start_local_postgres(CHAOS_DIR / "pgdata", chaos.pg_port, CHAOS_DIR / "postgres.log")
    chaos.postgres_up = True


def stop_postgres(chaos: ChaosStack, mode: str) -> None:
    chaos.postgres_up = False
    stack.stop_local_postgres(CHAOS_DIR / "pgdata", mode)


def start_broker(chaos: ChaosStack) -> None:
    # The same log directory and port: a restart keeps every message and offset.
    chaos.kafka = stack.start_kafka(
        chaos.kafka_port, CHAOS_DIR / "kafka", log_file=CHAOS_DIR / "kafka.log"
    )
    (CHAOS_DIR / "kafka.pid").write_text(f"{chaos.kafka.pid}\n")
    stack.wait_for_kafka(chaos.bootstrap, timeout=READY_S)


def kill_broker(chaos: ChaosStack) -> None:
    if chaos.kafka is not None:
        stack.signal_group(chaos.kafka.pid, signal.SIGKILL)
        chaos.kafka.wait(timeout=10)
        chaos.kafka = None


def spawn_service(chaos: ChaosStack, name: str) -> None:
    service = "intake" if name == STANDBY else name
    command = [sys.executable, "-m", f"services.{service}", "serve"]
    chaos.processes[name] = stack.spawn(command, name, chaos.env(name))


class StackDidNotStart(Exception):
    """A service exited, or did not become ready, before any fault ran."""


async def wait_ready(chaos: ChaosStack, names: list[str]) -> None:
    deadline = time.monotonic() + READY_S
    async with httpx.AsyncClient(timeout=1) as client:
        for name in names:
            while True:
                if (code := chaos.processes[name].poll()) is not None:
                    log = stack.tail(CHAOS_DIR / f"{name}.log")
                    raise StackDidNotStart(f"{name} exited with {code}; its log:\n{log}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://{HOST}:{chaos.ports[name]}/readyz")
                    if response.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise StackDidNotStart(f"{name} not ready after {READY_S:.0f} s")
                await asyncio.sleep(0.3)


async def start_stack(chaos: ChaosStack) -> None:
    await asyncio.to_thread(start_postgres, chaos)
    await asyncio.to_thread(start_broker, chaos)
    chaos.ports = {name: stack.free_port() for name in (*SERVICES, STANDBY)}
    env = chaos.env("intake")
    (CHAOS_DIR / "stack.env").write_text(
        f"DATABASE_URL={chaos.database_url}\nKAFKA_BOOTSTRAP_SERVERS={chaos.bootstrap}\n"
    )
    await asyncio.to_thread(stack.create_topics, chaos.bootstrap)
    await asyncio.to_thread(stack.migrate, list(SERVICES), env)
    for name in SERVICES:
        spawn_service(chaos, name)
    await wait_ready(chaos, list(SERVICES))


def stop_stack(chaos: ChaosStack) -> None:
    """Everything this run started, whatever state the run left it in."""
    for pid in chaos.paused:
        stack.signal_group(pid, signal.SIGCONT)  # a stopped process would not see SIGTERM
    stack.stop_pids([p.pid for p in chaos.processes.values() if p.poll() is None])
    for process in chaos.processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    if chaos.kafka is not None:
        stack.stop_process(chaos.kafka)
        chaos.kafka = None
    if (CHAOS_DIR / "pgdata" / "postmaster.pid").exists():
        with contextlib.suppress(SystemExit):
            stop_postgres(chaos, "immediate")


# ------------------------------------------------------------------ the receiver


class Receiver:
    """The tenant's webhook endpoint: every delivery kept, signatures checked, 200."""

    def __init__(self) -> None:
        self.secret = ""
        self.hooks: list[Webhook] = []
        self.bad_signatures = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(webhook_handler(self._on_webhook), HOST, 0)
        return f"http://{HOST}:{self._server.sockets[0].getsockname()[1]}/hooks"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def _on_webhook(self, headers: dict[str, str], raw: bytes) -> int:
        valid = verify_webhook(
            self.secret,
            int(headers.get("x-complaints-timestamp", "0") or 0),
            raw,
            headers.get("x-complaints-signature", ""),
            now=int(time.time()),
        )
        if not valid:
            self.bad_signatures += 1
            return 401
        body = orjson.loads(raw)
        event_id = headers.get("x-complaints-event-id", body.get("event_id", ""))
        self.hooks.append(Webhook(body["ticket_no"], body["type"], event_id))
        return 200

    def has_all(self, tickets: set[str], wanted: tuple[str, ...]) -> bool:
        seen = {(hook.ticket_no, hook.type) for hook in self.hooks}
        return all((ticket, kind) in seen for ticket in tickets for kind in wanted)


def create_tenant(chaos: ChaosStack, webhook_url: str) -> dict[str, str]:
    out = subprocess.run(  # noqa: S603 - our own CLI
        [
            *(sys.executable, "-m", "services.intake", "create-tenant", "Chaos Wallet"),
            *("--webhook-url", webhook_url, "--locale", "en"),
        ],
        cwd=ROOT,
        env=chaos.env("intake"),
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout))


# ------------------------------------------------------------------ load


def complaint_requests(api_key: str, fault: str) -> Callable[[int], bytes]:
    """Request `i` of this fault: unique key, customer and transaction, so it can be traced.
    Every third one is a small duplicate charge, refunded automatically (resolution works)."""
    run = uuid.uuid4().hex[:8]

    def request_for(i: int) -> bytes:
        key = f"chaos-{run}-{fault}-{i}"
        body = orjson.dumps(
            {
                "customer": {"id": key, "locale": "en"},
                "channel": "app",
                "description": DESCRIPTIONS[i % len(DESCRIPTIONS)],
                "amount": f"{(i % 150) + 10}.50",
                "currency": "CNY",
                "transaction_ref": f"T-{key}",
            }
        )
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        }
        return post_request(HOST, "/v1/complaints", headers, body)

    return request_for


def accepted_tickets(result: LoadResult) -> dict[str, str]:
    """ticket_no -> complaint_id of every 202."""
    tickets = {}
    for body in result.bodies.values():
        if body.startswith(b'{"complaint_id"'):
            answer = orjson.loads(body)
            tickets[answer["ticket_no"]] = answer["complaint_id"]
    return tickets


# ------------------------------------------------------------------ metrics and SQL


async def metrics_text(client: httpx.AsyncClient, port: int) -> str | None:
    try:
        return (await client.get(f"http://{HOST}:{port}/metrics", timeout=2)).text
    except httpx.HTTPError:
        return None


def counters(text: str) -> dict[str, float]:
    """An instance's events so far, its redeliveries and whether it leads the relay."""
    values = {"processed": 0.0, "redelivered": 0.0, "dead_lettered": 0.0, "leader": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "events_consumed_total":
                outcome = sample.labels.get("outcome")
                if outcome == "processed":
                    values["processed"] += sample.value
                elif outcome in REDELIVERED:
                    values["redelivered"] += sample.value
                elif outcome == "dead_lettered":
                    values["dead_lettered"] += sample.value
            elif sample.name == "outbox_relay_leader":
                values["leader"] = sample.value
    return values


def taken_offsets(text: str) -> dict[GroupPartition, int]:
    """How far the instance has taken each partition (kafka_consumer_fetched_offset)."""
    return {
        (s.labels["group"], s.labels["topic"], int(s.labels["partition"])): int(s.value)
        for family in text_string_to_metric_families(text)
        if family.name == "kafka_consumer_fetched_offset"
        for s in family.samples
    }


async def scrape(client: httpx.AsyncClient, port: int) -> dict[str, float] | None:
    text = await metrics_text(client, port)
    return counters(text) if text is not None else None


async def committed_offsets(chaos: ChaosStack, groups: set[str]) -> dict[GroupPartition, int]:
    """The groups' committed offsets as the broker holds them now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=chaos.bootstrap)
    await admin.start()
    try:
        found: dict[GroupPartition, int] = {}
        for group in groups:
            for tp, meta in (await admin.list_consumer_group_offsets(group)).items():
                if meta is not None and meta.offset >= 0:
                    found[(group, tp.topic, tp.partition)] = meta.offset
        return found
    finally:
        await admin.close()


@dataclass
class Snapshot:
    """Counters per running instance, keyed by name and PID: a restarted process counts
    from zero again, so its whole count belongs to the fault that restarted it."""

    counters: dict[tuple[str, int], dict[str, float]]


async def snapshot(chaos: ChaosStack) -> Snapshot:
    async with httpx.AsyncClient() as client:
        names = [n for n, p in chaos.processes.items() if p.poll() is None]
        scraped = await asyncio.gather(*(scrape(client, chaos.ports[n]) for n in names))
    return Snapshot(
        {(n, chaos.pid(n)): values for n, values in zip(names, scraped, strict=True) if values}
    )


def counter_delta(before: Snapshot, after: Snapshot, key: str) -> int:
    total = 0.0
    for instance, values in after.counters.items():
        total += values[key] - before.counters.get(instance, {}).get(key, 0.0)
    return int(total)


async def sql_counts(
    chaos: ChaosStack, tickets: list[str]
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Triage rows per ticket, notifier webhook delivery rows per (ticket, type)."""
    conn = await asyncpg.connect(chaos.database_url)
    try:
        triage = await conn.fetch(
            "SELECT ticket_no, count(*) AS n FROM triage.triaged_complaints "
            "WHERE ticket_no = ANY($1::text[]) GROUP BY ticket_no",
            tickets,
        )
        deliveries = await conn.fetch(
            "SELECT ticket_no, type, count(*) AS n FROM notifier.deliveries "
            "WHERE channel = 'webhook' AND ticket_no = ANY($1::text[]) GROUP BY ticket_no, type",
            tickets,
        )
    finally:
        await conn.close()
    return (
        {row["ticket_no"]: row["n"] for row in triage},
        {(row["ticket_no"], row["type"]): row["n"] for row in deliveries},
    )


async def relay_lock_holder(chaos: ChaosStack) -> int | None:
    """The backend PID holding intake's outbox relay lock (application_name intake-relay)."""
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(chaos.database_url, timeout=3)
        try:
            return await conn.fetchval(
                "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted "
                "AND a.application_name = 'intake-relay' LIMIT 1"
            )
        finally:
            await conn.close()
    return None


async def republished(chaos: ChaosStack, complaint_ids: set[str]) -> int:
    """Messages about these complaints on the topics beyond one per event id: an outbox
    row the relay published again (its first send was not acknowledged, or not marked)."""
    from tests.support import read_topic  # the suite's reader of a whole topic

    seen: Counter[str] = Counter()
    for topic in ALL_TOPICS:
        for message in await read_topic(chaos.bootstrap, topic):
            envelope = orjson.loads(message.value or b"{}")
            if envelope.get("complaint_id") in complaint_ids:
                seen[envelope["event_id"]] += 1
    return sum(n - 1 for n in seen.values())


# ------------------------------------------------------------------ faults


# A fault returns a note for the table and what went wrong with the fault itself.
Fault = Callable[["Run"], Awaitable[tuple[str, list[str]]]]


@dataclass
class Run:
    chaos: ChaosStack
    proxy: TcpProxy
    receiver: Receiver
    api_key: str
    # Tickets accepted by earlier faults: their late webhooks are not this fault's.
    earlier: set[str] = field(default_factory=set)
    leader: str = "intake"  # the intake instance the paused-leader fault pauses
    fault_name: str = ""
    # Loads a fault adds to the steady one (the burst of an aimed kill): accounted too.
    extra_loads: list[asyncio.Task[LoadResult]] = field(default_factory=list)
    refetched: int = 0  # records a killed or paused consumer had taken, delivered again


async def kill_and_restart(run: Run, names: list[str]) -> tuple[str, list[str]]:
    aimed, taken = await aim_at_a_batch(run, names)
    for name in names:
        stack.signal_group(run.chaos.pid(name), signal.SIGKILL)
    for name in names:
        await asyncio.to_thread(run.chaos.processes[name].wait, 10)
    # Read before the restart: the dead members' offsets are what their group resumes from.
    committed = await committed_offsets(run.chaos, {group for group, _, _ in taken})
    run.refetched = refetched(taken, committed)
    await asyncio.sleep(1)  # a supervisor's restart delay
    began = time.monotonic()
    for name in names:
        spawn_service(run.chaos, name)
    await wait_ready(run.chaos, names)
    note = f"{aimed}; ready again {time.monotonic() - began:.1f} s after the restart"
    return note, []


async def aim_at_a_batch(
    run: Run, names: list[str], action: str = "killed"
) -> tuple[str, dict[GroupPartition, int]]:
    """Waits until the victims are in the middle of a batch, the window a kill -9 or a
    pause aims at (records taken, offsets not yet committed), and returns how far they
    had taken each partition as last seen; `action` names the blow in the note. BURST
    more complaints arrive within BURST_S on top of the steady load, with the victims
    paused meanwhile (see BACKLOG_S) so that a backlog waits for them; once resumed, each
    takes a large batch at once, and the blow comes the moment the victims' metrics show
    they have taken AIM_RECORDS more records."""
    ports = [run.chaos.ports[name] for name in names]
    async with httpx.AsyncClient() as client:
        texts = await asyncio.gather(*(metrics_text(client, port) for port in ports))
        before = sum(sum(taken_offsets(text or "").values()) for text in texts)
        for name in names:
            stack.signal_group(run.chaos.pid(name), signal.SIGSTOP)
        run.extra_loads.append(
            asyncio.create_task(
                open_loop(
                    HOST,
                    run.proxy.port,
                    complaint_requests(run.api_key, f"{run.fault_name}-burst"),
                    # Spread over BURST_S: a pacer that starts late on this busy loop
                    # must still send most of it.
                    rate_per_s=BURST / BURST_S,
                    duration_s=BURST_S,
                    connections=16,
                    keep_bodies=True,
                )
            )
        )
        await asyncio.sleep(BURST_S + BACKLOG_S)
        for name in names:
            stack.signal_group(run.chaos.pid(name), signal.SIGCONT)
        began = time.monotonic()
        taken: dict[GroupPartition, int] = {}
        while time.monotonic() - began < AIM_S:
            texts = await asyncio.gather(*(metrics_text(client, port) for port in ports))
            seen = [taken_offsets(text) for text in texts if text is not None]
            taken = {partition: offset for one in seen for partition, offset in one.items()}
            if sum(taken.values()) - before >= AIM_RECORDS:
                return f"{action} {time.monotonic() - began:.2f} s after the resume", taken
            await asyncio.sleep(0.005)
    return f"no batch seen: {action} unaimed", taken


async def kafka_restart(run: Run) -> tuple[str, list[str]]:
    await asyncio.to_thread(kill_broker, run.chaos)
    await asyncio.sleep(DOWN_S)
    began = time.monotonic()
    await asyncio.to_thread(start_broker, run.chaos)
    return f"down {DOWN_S:.0f} s, answering {time.monotonic() - began:.1f} s after its start", []


async def postgres_restart(run: Run) -> tuple[str, list[str]]:
    await asyncio.to_thread(stop_postgres, run.chaos, "immediate")
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(start_postgres, run.chaos)
    return f"stop -m immediate, down {DOWN_S:.0f} s", []


async def pause_leader(run: Run) -> tuple[str, list[str]]:
    """SIGSTOP the intake instance leading the outbox relay (run.leader, found by
    prepare_pause); the other must take over within OUTBOX_LEADER_TIMEOUT_S.

    Aimed like a kill: the pause lands while the leader's consumer holds a batch it has
    not committed, so its group delivers those records again to the standby once the
    paused member's session expires (and the relay, busy with the backlog the aim built,
    may have published rows it had not yet marked). Unaimed, the pause often fell
    between batches and saw no redelivery at all."""
    chaos = run.chaos
    pid = chaos.pid(run.leader)
    holder = await relay_lock_holder(chaos)
    aimed, taken = await aim_at_a_batch(run, [run.leader], action="paused")
    paused_at = time.monotonic()
    stack.signal_group(pid, signal.SIGSTOP)
    chaos.paused.add(pid)
    # Read at once: the paused member can commit nothing more, and its group has not yet
    # handed its partitions on (the session timeout is 6 s).
    committed = await committed_offsets(chaos, {group for group, _, _ in taken})
    run.refetched = refetched(taken, committed)
    takeover = await takeover_s(chaos, standby_of(run.leader), paused_at)
    new_holder = await relay_lock_holder(chaos)
    await asyncio.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
    stack.signal_group(pid, signal.SIGCONT)
    chaos.paused.discard(pid)
    if takeover is None:
        return f"{run.leader} paused {PAUSE_S:.0f} s", ["the standby never took the relay over"]
    note = (
        f"{run.leader} {aimed}, for {PAUSE_S:.0f} s; the standby leads after "
        f"{takeover:.1f} s (lock: backend {holder} -> {new_holder})"
    )
    return note, []


def standby_of(leader: str) -> str:
    return STANDBY if leader == "intake" else "intake"


async def takeover_s(chaos: ChaosStack, standby: str, paused_at: float) -> float | None:
    """Seconds from the pause until `standby` reports the relay's leadership."""
    async with httpx.AsyncClient() as client:
        while time.monotonic() - paused_at < PAUSE_S + 10:
            values = await scrape(client, chaos.ports[standby])
            if values and values["leader"]:
                return time.monotonic() - paused_at
            await asyncio.sleep(0.2)
    return None


async def prepare_pause(run: Run) -> None:
    """A second intake instance; find which one leads; the load goes to the other, so
    the complaints it accepts during the pause wait for the takeover."""
    if STANDBY not in run.chaos.processes:
        spawn_service(run.chaos, STANDBY)
        await wait_ready(run.chaos, [STANDBY])
    deadline = time.monotonic() + 30
    while True:
        counters = (await snapshot(run.chaos)).counters
        leaders = [n for (n, _), v in counters.items() if v["leader"] and n in INTAKES]
        if len(leaders) == 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    if len(leaders) != 1:
        raise SystemExit(f"expected one intake instance to lead the relay, leaders: {leaders}")
    run.leader = leaders[0]
    run.proxy.target_port = run.chaos.ports[standby_of(run.leader)]


FAULTS: dict[str, Fault] = {
    "kill -9 intake": lambda run: kill_and_restart(run, ["intake"]),
    "kill -9 triage": lambda run: kill_and_restart(run, ["triage"]),
    "kill -9 resolution": lambda run: kill_and_restart(run, ["resolution"]),
    "kill -9 notifier": lambda run: kill_and_restart(run, ["notifier"]),
    "kill -9 triage+notifier": lambda run: kill_and_restart(run, ["triage", "notifier"]),
    "Kafka kill -9, restart": kafka_restart,
    "PostgreSQL restart": postgres_restart,
    "relay leader paused": pause_leader,
}


# ------------------------------------------------------------------ one fault


@dataclass
class FaultResult:
    fault: str
    offered: int
    statuses: dict[int, int]
    counts: FaultCounts
    absorbed: int  # inbox duplicates and seeked-back batches, all services
    refetched: int = 0  # taken by a killed or paused consumer, not committed: delivered again
    republished: int = 0
    dead_lettered: int = 0
    drained_s: float = 0.0
    notes: str = ""
    attempt: int = 1
    problems: list[str] = field(default_factory=list)  # the fault's own (no takeover, say)

    @property
    def redelivered(self) -> int:
        """At least this many deliveries were repeated. The records an inbox absorbed after
        a kill are among the refetched ones, so the larger of the two counts, not both."""
        return max(self.absorbed, self.refetched) + self.republished + self.counts.resends

    def failures(self) -> list[str]:
        """Lost, duplicated or dead-lettered complaints; missing redelivery is judged per
        fault over its attempts (see missed_window)."""
        problems = list(self.problems)
        if self.counts.lost:
            problems.append(f"{self.counts.lost} lost: {self.counts.lost_tickets[:5]}")
        if self.counts.duplicated:
            problems.append(f"{self.counts.duplicated} duplicated")
        if self.dead_lettered:
            problems.append(f"{self.dead_lettered} dead-lettered")
        return problems


async def run_fault(run: Run, name: str, fault: Fault) -> FaultResult:
    print(f"\n== {name}", flush=True)
    before = await snapshot(run.chaos)
    run.earlier |= {hook.ticket_no for hook in run.receiver.hooks}
    slug = "-".join(name.replace("+", " ").replace(",", "").split()).lower()
    load = asyncio.create_task(
        open_loop(
            HOST,
            run.proxy.port,
            complaint_requests(run.api_key, slug),
            rate_per_s=RATE,
            duration_s=LOAD_S,
            connections=16,
            keep_bodies=True,
        )
    )
    await asyncio.sleep(FAULT_AT_S)
    run.fault_name, run.extra_loads, run.refetched = slug, [], 0
    notes, problems = await fault(run)
    results = [await load, *[await extra for extra in run.extra_loads]]
    tickets = {t: c for result in results for t, c in accepted_tickets(result).items()}
    statuses: Counter[int] = Counter()
    for result in results:
        statuses.update(result.statuses)
    began = time.monotonic()
    await drained(run.receiver, set(tickets))
    drained_s = time.monotonic() - began
    await asyncio.sleep(2)  # a late duplicate would arrive now
    after = await snapshot(run.chaos)
    triage_rows, delivery_rows = await sql_counts(run.chaos, list(tickets))
    hooks = [hook for hook in run.receiver.hooks if hook.ticket_no not in run.earlier]
    counts = count_fault(tickets, hooks, triage_rows, delivery_rows)
    run.earlier |= set(tickets)
    outcome = FaultResult(
        fault=name,
        offered=sum(result.sent for result in results),
        statuses=dict(statuses),
        counts=counts,
        absorbed=counter_delta(before, after, "redelivered"),
        refetched=run.refetched,
        dead_lettered=counter_delta(before, after, "dead_lettered"),
        drained_s=round(drained_s, 1),
        republished=await republished(run.chaos, set(tickets.values())),
        notes=notes,
        problems=problems,
    )
    if counts.unexpected:
        outcome.notes += f"; {counts.unexpected} stored without a 202 (cut off)"
    errors = sum(result.errors for result in results)
    print(f"   {notes}; {dict(statuses)} errors {errors}", flush=True)
    return outcome


async def drained(receiver: Receiver, tickets: set[str]) -> None:
    deadline = time.monotonic() + DRAIN_S
    wanted = ("complaint.acknowledged", "complaint.triaged")
    while not receiver.has_all(tickets, wanted) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------ report


LEGEND = (
    "at least (taken by a killed consumer and delivered again / absorbed by an inbox or"
    " seeked back / published twice / webhook resent)"
)
COLUMNS = (
    "fault",
    "accepted",
    "acked once",
    "triaged once",
    "lost",
    "duplicated",
    "redelivered",
    "notes",
)


def table(results: list[FaultResult]) -> str:
    rows = [COLUMNS]
    for r in results:
        c = r.counts
        redelivered = f"{r.redelivered} ({r.refetched}/{r.absorbed}/{r.republished}/{c.resends})"
        rows.append(
            (
                r.fault if r.attempt == 1 else f"{r.fault} (attempt {r.attempt})",
                str(c.accepted),
                str(c.acknowledged_once),
                str(c.triaged_once),
                str(c.lost),
                str(c.duplicated),
                redelivered,
                r.notes,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("| " + " | ".join([*cells, row[-1]]) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in [*widths, 5]) + "|")
    return "\n".join(lines)


def write_results(results: list[FaultResult], elapsed_s: float, stack_starts: int) -> None:
    runs = []
    for r in results:
        entry = asdict(r)
        entry["counts"].pop("lost_tickets")
        entry["counts"].pop("duplicated_tickets")
        entry["lost_tickets"] = r.counts.lost_tickets[:20]
        entry["redelivered"] = r.redelivered
        entry["failures"] = r.failures()
        runs.append(entry)
    document = {
        "offered_per_s": RATE,
        "load_s": LOAD_S,
        "fault_at_s": FAULT_AT_S,
        "elapsed_s": round(elapsed_s, 1),
        "stack_starts": stack_starts,
        "redelivered": LEGEND,
        "faults": runs,
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


# ------------------------------------------------------------------ main


async def chaos_run(chaos: ChaosStack) -> list[FaultResult]:
    print(f"starting a stack of our own under {CHAOS_DIR}", flush=True)
    await start_stack(chaos)
    receiver = Receiver()
    webhook_url = await receiver.start()
    tenant = await asyncio.to_thread(create_tenant, chaos, webhook_url)
    receiver.secret = tenant["webhook_secret"]
    proxy = TcpProxy(HOST, chaos.ports["intake"])
    await proxy.start()
    run = Run(chaos, proxy, receiver, tenant["api_key"])
    results: list[FaultResult] = []
    try:
        for name, fault in selected_faults().items():
            results += await run_with_attempts(run, name, fault)
    finally:
        await proxy.stop()
        await receiver.stop()
    if receiver.bad_signatures:
        print(f"{receiver.bad_signatures} webhooks with a bad signature (answered 401)")
    return results


async def run_with_attempts(run: Run, name: str, fault: Fault) -> list[FaultResult]:
    """A fault that saw no redelivery missed its window and proved nothing: it is run
    again, up to ATTEMPTS times; every attempt's complaints are still accounted."""
    attempts: list[FaultResult] = []
    for attempt in range(1, ATTEMPTS + 1):
        if fault is pause_leader:
            await prepare_pause(run)
        outcome = await run_fault(run, name, fault)
        outcome.attempt = attempt
        attempts.append(outcome)
        if outcome.redelivered:
            break
        print(f"   no redelivery: the fault missed its window (attempt {attempt})", flush=True)
    return attempts


def selected_faults() -> dict[str, Fault]:
    """CHAOS_FAULTS=intake,Kafka runs the faults whose names contain one of the words."""
    words = [w.strip() for w in os.environ.get("CHAOS_FAULTS", "").split(",") if w.strip()]
    return {n: f for n, f in FAULTS.items() if not words or any(w in n for w in words)}


def missed_window(results: list[FaultResult]) -> list[str]:
    hit = {r.fault for r in results if r.redelivered}
    return sorted({r.fault for r in results} - hit)


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    began = time.monotonic()
    # Our broker probes log every refused connection while the broker is down on purpose.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # SIGTERM (CI cancelling the job) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupted)
    for start in range(1, STACK_STARTS + 1):
        prepare_run_dir()
        chaos = ChaosStack()
        try:
            results = asyncio.run(chaos_run(chaos))
            break
        except StackDidNotStart as exc:
            print(f"the stack did not start (start {start} of {STACK_STARTS}): {exc}", flush=True)
            if start == STACK_STARTS:
                return 1
        finally:
            stop_stack(chaos)
    elapsed = time.monotonic() - began
    write_results(results, elapsed, stack_starts=start)
    print(f"\n{table(results)}\n")
    print(f"redelivered = {LEGEND}")
    print(f"{RATE:.0f} complaints/s offered for {LOAD_S:.0f} s per fault; {elapsed:.0f} s in all")
    print(f"written to {RESULTS}")
    failures = [(r.fault, problem) for r in results for problem in r.failures()]
    missed = "no redelivery in any attempt: the fault never hit its window"
    failures += [(fault, missed) for fault in missed_window(results)]
    for fault, problem in failures:
        print(f"FAIL {fault}: {problem}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
