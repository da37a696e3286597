"""Scale-out of triage and notifier (`python -m bench.scaleout`, or `run_scaleout` from
bench/run.py): one consumer group per service, its partitions shared by two instances.

Against the services `make up` started (instance-1 of each, ports 8081/8083, logs
`.run/<service>.log`); it starts instance-2 of triage and of notifier itself (same code
and env, its own `<SERVICE>_HTTP_PORT`, log `.run/<service>-2.log`, PID file
`.run/<service>-2.pid`, the same consumer group: the service name) and stops it again,
whatever happens. Phases, each under an open-loop load of BENCH_SCALEOUT_RATE
complaints/s (default 25):
1. one_instance: BENCH_SCALEOUT_SECONDS (default 20) with the stack's single triage and
   notifier: acknowledgement throughput and p50/p99 latency (as bench/run.py measures);
2. two_instances: instance-2 started, ready and rebalanced; which instance holds which
   partitions; the same load and figures;
3. join_leave, BENCH_SCALEOUT_FAULT_SECONDS (default 40) each: (a) instance-2 leaves by
   SIGTERM and joins again while the load runs; (b) instance-2 is killed (-9) under load,
   aimed at a batch it has applied but not yet committed. Each is accounted in SQL and at
   the webhook sink per ticket: every complaint acknowledged exactly once, 0 lost, 0
   duplicated; and the redeliveries and rebalances it caused are counted.

Which member is which instance: the group's members all have client id `triage` (or
`notifier`) and host `/127.0.0.1`, so neither tells them apart. Each instance logs, in
its own log file, "Consumer <member_id> assigned to partitions: (...)" after every
rebalance (faststream's rebalance listener): the member id an instance logged last is its
member in AIOKafkaAdminClient.describe_consumer_groups, and the partitions it logged must
equal the group's assignment for that member (checked, reported as `log_confirms`).

Redeliveries are counted from the instances' logs too: every applied record is logged
("event_handled" with topic, partition, offset, outcome) after its transaction commits,
so a record logged twice in one group, or absorbed by the inbox ("duplicate"), was
delivered again after it had been applied; each is told apart by who got it again (the
instance that applied it: its offset commit lost in the rebalance; another: the
partition moved first). Rebalances: the assignments instance-1 (up throughout) logged in
the phase. Webhooks: `duplicated` is strict (a ticket whose acknowledgement arrived at
the sink twice, for any reason); `duplicated_delivery_rows` are two different events
(chaos_accounting's "duplicated"); `resends` are one delivery row sent again (the same
event id: a notifier killed after the request, before recording it, leaves its lease to
expire and another instance sends it again), which the receiver can drop by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from bench.chaos import scrape
from bench.loadgen import (
    LoadResult,
    Tickets,
    ack_latencies,
    open_loop,
    percentile,
    rounded_ms,
    wait_for_acks,
)
from bench.run import (
    DEFAULT_DATABASE_URL,
    HOST,
    INTAKE_PORT,
    AckSink,
    complaint_requests,
    create_tenants,
    stack_env,
)
from deploy.local import stack

SCALED = ("triage", "notifier")  # each service's consumer group is named after it
# Modest: the pipeline carried about 14-25 complaints/s on this machine when written.
RATE = float(os.environ.get("BENCH_SCALEOUT_RATE", "25"))
SECONDS = float(os.environ.get("BENCH_SCALEOUT_SECONDS", "20"))
FAULT_SECONDS = float(os.environ.get("BENCH_SCALEOUT_FAULT_SECONDS", "40"))
ACK_TIMEOUT_S = float(os.environ.get("BENCH_SCALEOUT_ACK_TIMEOUT_S", "120"))
LEAVE_AT_S = 5.0  # into the load: the pipeline is busy when an instance goes
READY_S = 120.0
REBALANCE_S = 60.0
LATE_DUPLICATE_S = 2.0  # after the last acknowledgement, a late duplicate would arrive now
# The kill -9 victim is paused this long, so a backlog waits on its partitions and it
# takes it as one large batch once resumed; shorter than the session timeout (6 s), so
# it keeps its partitions meanwhile.
BACKLOG_S = 2.5
AIM_TIMEOUT_S = 5.0
DRAIN_S = float(os.environ.get("BENCH_SCALEOUT_DRAIN_S", "300"))
LAG_REFRESH_S = 5.0  # shared/consumer_lag.py refreshes the lag gauge this often
OUTPUT = stack.RUN_DIR / "scaleout.json"

ASSIGNED = re.compile(r"Consumer (\S+) assigned to partitions: (.*)")
TOPIC_PARTITION = re.compile(r"TopicPartition\(topic='([^']+)', partition=(\d+)\)")
Partitions = dict[str, list[int]]  # topic -> partition numbers, ascending


# ------------------------------------------------------------------ pure parts


@dataclass(frozen=True)
class LoggedAssignment:
    """One "assigned to partitions" line of an instance's log."""

    member_id: str
    partitions: Partitions


def assignments_in_log(text: str) -> list[LoggedAssignment]:
    """Every assignment an instance logged, oldest first."""
    found = []
    for line in text.splitlines():
        if "assigned to partitions" not in line:
            continue
        match = ASSIGNED.search(line)
        if match:
            pairs = TOPIC_PARTITION.findall(match.group(2))
            found.append(LoggedAssignment(match.group(1), by_topic(pairs)))
    return found


def by_topic(pairs: Iterable[tuple[str, int | str]]) -> Partitions:
    topics: dict[str, set[int]] = {}
    for topic, partition in pairs:
        topics.setdefault(topic, set()).add(int(partition))
    return {topic: sorted(parts) for topic, parts in sorted(topics.items())}


@dataclass(frozen=True)
class Member:
    """A consumer group member as the broker describes it."""

    member_id: str
    client_id: str
    client_host: str
    partitions: Partitions


def decode_members(raw_members: Iterable[tuple[Any, ...]]) -> list[Member]:
    """DescribeGroups members: (member_id, client_id, client_host, metadata, assignment)."""
    members = []
    for member_id, client_id, client_host, _metadata, assignment in raw_members:
        pairs: list[tuple[str, int]] = []
        if assignment:
            decoded = ConsumerProtocolMemberAssignment.decode(assignment)
            pairs = [(topic, p) for topic, parts in decoded.assignment for p in parts]
        members.append(Member(member_id, client_id, client_host, by_topic(pairs)))
    return members


@dataclass(frozen=True)
class Identified:
    member: Member
    how: str  # "own log", or "elimination" (the one member no log claimed)
    log_confirms: bool  # the instance logged exactly the partitions the group gives it


def identify(
    members: list[Member], logged: Mapping[str, LoggedAssignment | None]
) -> dict[str, Identified]:
    """Instance name -> its member: by the member id the instance logged last; one
    instance whose log names no current member gets the one member left, if exactly one."""
    by_id = {m.member_id: m for m in members}
    found: dict[str, Identified] = {}
    for name, entry in logged.items():
        if entry is not None and entry.member_id in by_id:
            member = by_id[entry.member_id]
            found[name] = Identified(member, "own log", entry.partitions == member.partitions)
    claimed = {i.member.member_id for i in found.values()}
    left = [m for m in members if m.member_id not in claimed]
    unknown = [name for name in logged if name not in found]
    if len(left) == 1 and len(unknown) == 1:
        found[unknown[0]] = Identified(left[0], "elimination", False)
    return found


def settled(
    state: str, members: list[Member], found: Mapping[str, Identified], instances: int
) -> bool:
    """Rebalanced: a stable group of exactly our instances, each known by its own log,
    each holding partitions, and each log agreeing with the broker."""
    return (
        state == "Stable"
        and len(members) == instances
        and len(found) == instances
        and all(
            i.how == "own log" and i.log_confirms and i.member.partitions for i in found.values()
        )
    )


@dataclass(frozen=True)
class Handling:
    """One "event_handled" log line: a record applied (or absorbed by the inbox)."""

    topic: str
    partition: int
    offset: int
    outcome: str
    instance: str = ""
    at: str = ""  # the line's ISO timestamp: sorts in time across the instances' logs

    @property
    def record(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def handlings_in_log(text: str, instance: str = "") -> list[Handling]:
    found = []
    for line in text.splitlines():
        if '"event_handled"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = orjson.loads(line)
            found.append(
                Handling(
                    entry["topic"],
                    entry["partition"],
                    entry["offset"],
                    entry["outcome"],
                    instance,
                    entry.get("timestamp", ""),
                )
            )
    return found


def redelivery_kinds(handlings: Iterable[Handling]) -> dict[str, int]:
    """Each record seen again, by how its second delivery came about:
    - same_instance: the instance that applied it got it again (its offset commit was lost
      in a rebalance, or its batch was seeked back);
    - moved: another instance got it (the partition moved before the offset was committed);
    - first_unlogged: only the inbox's "duplicate" is logged: the application itself was
      not (before the phase, or by an instance killed between its commit and its log line).
    """
    by_record: dict[tuple[str, int, int], list[Handling]] = {}
    for handling in handlings:
        by_record.setdefault(handling.record, []).append(handling)
    kinds = {"same_instance": 0, "moved": 0, "first_unlogged": 0}
    for seen in by_record.values():
        seen.sort(key=lambda h: h.at)
        if seen[0].outcome == "duplicate":
            kinds["first_unlogged"] += 1
        elif len(seen) > 1:
            kinds["same_instance" if seen[1].instance == seen[0].instance else "moved"] += 1
    return kinds


def records_seen_again(handlings: Iterable[Handling]) -> int:
    """Records delivered again after they had been applied: logged more than once in the
    group (by topic, partition, offset), or absorbed by the inbox as already done."""
    handlings = list(handlings)
    times = Counter((h.topic, h.partition, h.offset) for h in handlings)
    again = {key for key, n in times.items() if n > 1}
    again |= {(h.topic, h.partition, h.offset) for h in handlings if h.outcome == "duplicate"}
    return len(again)


class CountingAcks(dict[str, float]):
    """AckSink.acked_at that also counts every acknowledgement webhook per ticket: AckSink
    keeps the first arrival with setdefault, so each call is one webhook received."""

    def __init__(self, existing: Mapping[str, float] | None = None) -> None:
        super().__init__(existing or {})
        self.received: Counter[str] = Counter()

    def setdefault(self, key: str, default: float) -> float:  # type: ignore[override]
        self.received[key] += 1
        return super().setdefault(key, default)


@dataclass
class AckAccount:
    """The acknowledgements of one phase's accepted complaints."""

    accepted: int = 0
    acknowledged_once: int = 0  # one webhook received, one delivery row, one triage row
    lost: int = 0  # no acknowledgement received, or no delivery or triage row
    unacknowledged: int = 0  # of the lost: no acknowledgement webhook received
    untriaged: int = 0  # of the lost: no triage row
    duplicated: int = 0  # acknowledged twice in any way (the two below, or two triage rows)
    duplicated_delivery_rows: int = 0  # two acknowledgement events for one complaint
    duplicated_webhooks: int = 0  # tickets whose acknowledgement webhook arrived twice
    resends: int = 0  # extra arrivals of a ticket's one delivery (same event, sent again)
    lost_tickets: list[str] = field(default_factory=list)
    duplicated_tickets: list[str] = field(default_factory=list)


def account(
    accepted: Iterable[str],
    received: Mapping[str, int],
    delivery_rows: Mapping[str, int],
    triage_rows: Mapping[str, int],
) -> AckAccount:
    """`received`: acknowledgement webhooks the sink got per ticket; `delivery_rows`:
    acknowledgement webhook rows in notifier.deliveries per ticket; `triage_rows`: rows
    in triage.triaged_complaints per ticket."""
    counts = AckAccount()
    for ticket in sorted(set(accepted)):
        hooks, rows = received.get(ticket, 0), delivery_rows.get(ticket, 0)
        triaged = triage_rows.get(ticket, 0)
        counts.accepted += 1
        counts.acknowledged_once += hooks == 1 and rows == 1 and triaged == 1
        counts.unacknowledged += hooks == 0
        counts.untriaged += triaged == 0
        if hooks == 0 or rows == 0 or triaged == 0:
            counts.lost += 1
            counts.lost_tickets.append(ticket)
        if hooks > 1 or rows > 1 or triaged > 1:
            counts.duplicated += 1
            counts.duplicated_tickets.append(ticket)
        counts.duplicated_delivery_rows += rows > 1
        counts.duplicated_webhooks += hooks > 1
        if rows == 1 and hooks > 1:
            counts.resends += hooks - 1
    return counts


def ack_figures(
    result: LoadResult, tickets: Mapping[int, str], acked_at: Mapping[str, float], gave_up: float
) -> dict[str, Any]:
    """Throughput and latency of one load, from each request's intended send time."""
    latencies = ack_latencies(result.sent_at, tickets, acked_at, gave_up)
    p50, p50_bound = latencies.percentile(50)
    p99, p99_bound = latencies.percentile(99)
    acked = [acked_at[t] for t in tickets.values() if t in acked_at]
    span = max(acked) - result.sent_at[0] if acked else 0.0
    return {
        "sent": result.sent,
        "accepted": result.accepted(),
        "acknowledged": latencies.acknowledged,
        # From the first intended send to the last acknowledgement.
        "acknowledged_per_s": round(latencies.acknowledged / span, 1) if span else None,
        "ack_latency_p50_ms": rounded_ms(p50),
        "ack_latency_p99_ms": rounded_ms(p99),
        "p99_lower_bound": p99_bound or p50_bound,  # some complaints never acknowledged
        "http_latency_p99_ms": result.latency_ms.get_value_at_percentile(99),
        "pacer_max_lag_ms": round(result.max_lag_s * 1000, 1),
    }


def triage_figures(
    sent_wall: Mapping[str, float], triaged_wall: Mapping[str, float]
) -> dict[str, Any]:
    """Triage is not on the acknowledgement's path (intake -> notifier), so its own
    figures: from each complaint's intended send time to its triage row's triaged_at
    (now() of the transaction that wrote it: for a batch, when the batch began), epoch s."""
    latencies = sorted(
        (triaged_wall[t] - sent) * 1000 for t, sent in sent_wall.items() if t in triaged_wall
    )
    span = max(triaged_wall.values()) - min(sent_wall.values()) if latencies else 0.0
    return {
        "triaged": len(latencies),
        "triaged_per_s": round(len(latencies) / span, 1) if span > 0 else None,
        "triage_latency_p50_ms": rounded_ms(percentile(latencies, 50)),
        "triage_latency_p99_ms": rounded_ms(percentile(latencies, 99)),
    }


def sent_wall_times(
    result: LoadResult, tickets: Mapping[int, str], wall_minus_perf: float
) -> dict[str, float]:
    """Ticket -> intended send time on the wall clock (the database's clock here)."""
    return {ticket: result.sent_at[i] + wall_minus_perf for i, ticket in tickets.items()}


def total_lag(metrics_text: str) -> int:
    """The sum of kafka_consumer_lag samples one service exposes (its group's partitions)."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(metrics_text)
            for sample in family.samples
            if sample.name == "kafka_consumer_lag"
        )
    )


# ------------------------------------------------------------------ instances


@dataclass
class InstanceLog:
    """An instance's log file, read on from where it was last read."""

    path: Path
    offset: int = 0
    latest: LoggedAssignment | None = None

    def refresh(self) -> LoggedAssignment | None:
        """The member id and partitions this instance logged last."""
        text = self.read_new()
        found = assignments_in_log(text)
        if found:
            self.latest = found[-1]
        return self.latest

    def read_new(self) -> str:
        if not self.path.exists():
            return ""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data.rfind(b"\n") + 1  # a line being written is read next time
        self.offset += complete
        return data[:complete].decode(errors="replace")


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def read_from(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


@dataclass
class Instance:
    name: str  # "instance-1" (the stack's) or "instance-2" (ours)
    service: str
    port: int
    pid: int
    log: InstanceLog
    process: subprocess.Popen[bytes] | None = None  # None: the stack's, never stopped here

    @property
    def log_path(self) -> Path:
        return self.log.path

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return stack.running(self.service) == self.pid


def stack_instance(service: str) -> Instance:
    pid = stack.running(service)
    if pid is None:
        raise SystemExit(f"{service} is not running: start the stack with `make up` first")
    log = InstanceLog(stack.RUN_DIR / f"{service}.log")
    log.refresh()  # the whole log once: its last assignment may be old
    return Instance("instance-1", service, stack.SERVICES[service], pid, log)


def extra_name(service: str) -> str:
    return f"{service}-2"


def stop_leftover(service: str) -> None:
    """An instance-2 a cut-short run of ours left behind (its PID file is still there)."""
    pid = stack.pid_alive(stack.RUN_DIR / f"{extra_name(service)}.pid")
    if (
        pid is not None
        and pid != stack.running(service)
        and stack.is_ours(pid, f"services.{service}")
    ):
        print(f"stopping {extra_name(service)} (pid {pid}) left by an earlier run", flush=True)
        stack.stop_pid(pid)
    (stack.RUN_DIR / f"{extra_name(service)}.pid").unlink(missing_ok=True)


class Fleet:
    """The instances of triage and notifier: the stack's, and the ones this run starts."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.instances: dict[str, list[Instance]] = {s: [stack_instance(s)] for s in SCALED}
        self.paused: set[int] = set()

    def of(self, service: str) -> list[Instance]:
        return [i for i in self.instances[service] if i.alive()]

    def extras(self) -> list[Instance]:
        return [i for s in SCALED for i in self.of(s) if i.process is not None]

    def start_extra(self, service: str) -> Instance:
        """Instance-2 of `service`: the same command as stack.start_services, the env of the
        stack's services (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS resolved) and its own port."""
        port = stack.free_port()
        env = {**self.env, f"{service.upper()}_HTTP_PORT": str(port)}
        name = extra_name(service)
        log = InstanceLog(stack.RUN_DIR / f"{name}.log")
        log.offset = log_size(log.path)  # the file is appended to on each start
        command = [sys.executable, "-m", f"services.{service}", "serve"]
        process = stack.spawn(command, name, env)
        instance = Instance("instance-2", service, port, process.pid, log, process)
        self.instances[service] = [i for i in self.instances[service] if i.name != "instance-2"]
        self.instances[service].append(instance)
        return instance

    async def stop(self, instances: list[Instance], sig: signal.Signals) -> None:
        """`sig` to each (its process group); awaited until it is gone (SIGKILL after 10 s)."""
        for instance in instances:
            self.resume(instance)
            stack.signal_group(instance.pid, sig)
        for instance in instances:
            assert instance.process is not None  # only ours are ever stopped
            try:
                await asyncio.to_thread(instance.process.wait, 10)
            except subprocess.TimeoutExpired:
                stack.signal_group(instance.pid, signal.SIGKILL)
                await asyncio.to_thread(instance.process.wait, 5)
            (stack.RUN_DIR / f"{extra_name(instance.service)}.pid").unlink(missing_ok=True)

    def pause(self, instance: Instance) -> None:
        stack.signal_group(instance.pid, signal.SIGSTOP)
        self.paused.add(instance.pid)

    def resume(self, instance: Instance) -> None:
        if instance.pid in self.paused:
            stack.signal_group(instance.pid, signal.SIGCONT)
            self.paused.discard(instance.pid)

    def stop_all(self) -> None:
        """Whatever this run started and still runs (the finally of every run)."""
        for pid in list(self.paused):
            stack.signal_group(pid, signal.SIGCONT)  # a stopped process would not see SIGTERM
        self.paused.clear()
        ours = [i for s in SCALED for i in self.instances[s] if i.process is not None]
        stack.stop_pids([i.pid for i in ours if i.alive()])
        for instance in ours:
            assert instance.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                instance.process.wait(timeout=5)
            (stack.RUN_DIR / f"{extra_name(instance.service)}.pid").unlink(missing_ok=True)


async def wait_ready(instances: list[Instance]) -> None:
    deadline = time.monotonic() + READY_S
    async with httpx.AsyncClient(timeout=1) as client:
        for instance in instances:
            while True:
                if not instance.alive():
                    raise SystemExit(
                        f"{instance.service} {instance.name} exited: see {instance.log_path}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://{HOST}:{instance.port}/readyz")
                    if response.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"{instance.service} {instance.name} not ready after {READY_S:.0f} s"
                    )
                await asyncio.sleep(0.3)


# ------------------------------------------------------------------ the consumer groups


async def describe(admin: AIOKafkaAdminClient, group: str) -> tuple[str, list[Member]]:
    """The group's state and members. One group per request: aiokafka 0.14 decodes the
    DescribeGroups v3 answer Kafka 4 gives with the v2 schema (no authorized_operations),
    which holds for one group and underruns on the second."""
    [response] = await admin.describe_consumer_groups([group])
    error, _, state, _, _, raw_members = response.groups[0][:6]
    if error:
        raise RuntimeError(f"DescribeGroups {group}: error code {error}")
    return state, decode_members(raw_members)


@dataclass
class GroupView:
    state: str
    members: list[Member]
    found: dict[str, Identified]
    settled: bool
    waited_s: float


async def wait_rebalanced(admin: AIOKafkaAdminClient, fleet: Fleet, service: str) -> GroupView:
    """Until the group is our live instances of `service`, each identified (bounded)."""
    began = time.monotonic()
    while True:
        instances = fleet.of(service)
        try:
            state, members = await describe(admin, service)
        except (KafkaError, RuntimeError) as error:  # the coordinator moving, say: ask again
            state, members = f"unknown ({error!r})", []
        logged = {i.name: await asyncio.to_thread(i.log.refresh) for i in instances}
        found = identify(members, logged)
        done = settled(state, members, found, len(instances))
        waited = time.monotonic() - began
        if done or waited > REBALANCE_S:
            return GroupView(state, members, found, done, round(waited, 1))
        await asyncio.sleep(0.3)


def assignment_of(view: GroupView, fleet: Fleet, service: str) -> dict[str, Any]:
    pids = {
        i.name: (i.pid, i.port, str(i.log_path.relative_to(stack.ROOT))) for i in fleet.of(service)
    }
    detail = {}
    for name, identified in sorted(view.found.items()):
        member = identified.member
        pid, port, log = pids.get(name, (None, None, None))
        detail[name] = {
            "partitions": member.partitions,
            "member_id": member.member_id,
            "client_id": member.client_id,
            "client_host": member.client_host,
            "pid": pid,
            "http_port": port,
            "log": log,
            "identified_by": identified.how,
            "log_confirms": identified.log_confirms,
        }
    claimed = {i.member.member_id for i in view.found.values()}
    unclaimed = [m.member_id for m in view.members if m.member_id not in claimed]
    return {
        "state": view.state,
        "settled": view.settled,
        "members": detail,
        "unidentified": unclaimed,
    }


# ------------------------------------------------------------------ measuring


async def processed_by(fleet: Fleet) -> dict[str, dict[str, float]]:
    """Events each live instance applied so far (events_consumed_total, processed)."""
    async with httpx.AsyncClient() as client:
        out: dict[str, dict[str, float]] = {}
        for service in SCALED:
            out[service] = {}
            for instance in fleet.of(service):
                values = await scrape(client, instance.port)
                if values is not None:
                    out[service][f"{instance.name}:{instance.pid}"] = values["processed"]
        return out


def processed_delta(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, int]]:
    """Per service and instance: events applied between two scrapes (an instance that was
    not there before counts from zero: it is a new process)."""
    return {
        service: {
            key.split(":")[0]: int(value - before.get(service, {}).get(key, 0.0))
            for key, value in counts.items()
        }
        for service, counts in after.items()
    }


async def steady_load(
    api_keys: list[str], sink: AckSink, fleet: Fleet, seconds: float, database_url: str
) -> dict[str, Any]:
    drain = await wait_drained()
    before = await processed_by(fleet)
    tickets = Tickets()
    wall_minus_perf = time.time() - time.perf_counter()
    result = await open_loop(
        HOST,
        INTAKE_PORT,
        complaint_requests(api_keys),
        rate_per_s=RATE,
        duration_s=seconds,
        connections=32,
        on_response=tickets,
    )
    gave_up = await wait_for_acks(sink.acked_at, tickets.by_request.values(), ACK_TIMEOUT_S)
    figures = ack_figures(result, tickets.by_request, sink.acked_at, gave_up)
    sent_wall = sent_wall_times(result, tickets.by_request, wall_minus_perf)
    triaged = await triaged_at(database_url, set(sent_wall), ACK_TIMEOUT_S)
    events = processed_delta(before, await processed_by(fleet))
    instances = {service: len(fleet.of(service)) for service in SCALED}
    return {
        "offered_per_s": RATE,
        "seconds": seconds,
        "instances": instances,
        **figures,
        **triage_figures(sent_wall, triaged),
        "events_applied": events,
        "backlog_before": drain,
    }


async def triaged_at(database_url: str, tickets: set[str], timeout_s: float) -> dict[str, float]:
    """Ticket -> triaged_at (epoch s) of its triage row, once all are there (bounded)."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT ticket_no, extract(epoch FROM triaged_at)::float8 AS at "
                "FROM triage.triaged_complaints WHERE ticket_no = ANY($1::text[])",
                list(tickets),
            )
            if len(rows) >= len(tickets) or time.monotonic() > deadline:
                return {row["ticket_no"]: row["at"] for row in rows}
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def wait_drained() -> dict[str, Any]:
    """Until the stack's consumer groups have no lag (bounded by DRAIN_S), so a phase does
    not measure the backlog an earlier load left (a soak leaves thousands)."""
    ports = [stack.SERVICES[name] for name in ("triage", "resolution", "notifier")]
    began = time.monotonic()
    first: int | None = None
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            lag = 0
            for port in ports:
                with contextlib.suppress(httpx.HTTPError):
                    lag += total_lag((await client.get(f"http://{HOST}:{port}/metrics")).text)
            first = lag if first is None else first
            waited = time.monotonic() - began
            if lag == 0 or waited > DRAIN_S:
                return {"lag": first, "waited_s": round(waited, 1), "lag_after": lag}
            await asyncio.sleep(LAG_REFRESH_S)


# ------------------------------------------------------------------ join and leave


@dataclass
class PhaseLogs:
    """Where every instance's log stood when a phase began."""

    # (service, log) -> (instance name, offset); a restarted instance-2 appends to its log.
    offsets: dict[tuple[str, Path], tuple[str, int]] = field(default_factory=dict)

    def note(self, instance: Instance, offset: int | None = None) -> None:
        start = log_size(instance.log_path) if offset is None else offset
        self.offsets.setdefault((instance.service, instance.log_path), (instance.name, start))

    def redeliveries(self) -> dict[str, dict[str, int]]:
        handled: dict[str, list[Handling]] = {s: [] for s in SCALED}
        for (service, path), (name, offset) in self.offsets.items():
            handled[service] += handlings_in_log(read_from(path, offset), name)
        return {
            service: {"records": records_seen_again(h), **redelivery_kinds(h)}
            for service, h in handled.items()
        }

    def rebalances(self, fleet: Fleet) -> dict[str, int]:
        """Assignments instance-1 (there throughout) logged in the phase."""
        counts = {}
        for service in SCALED:
            first = fleet.instances[service][0]
            _, offset = self.offsets[(service, first.log_path)]
            counts[service] = len(assignments_in_log(read_from(first.log_path, offset)))
        return counts


async def sql_counts(
    database_url: str, tickets: list[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Acknowledgement webhook delivery rows and triage rows, per ticket."""
    conn = await asyncpg.connect(database_url)
    try:
        deliveries = await conn.fetch(
            "SELECT ticket_no, count(*) AS n FROM notifier.deliveries "
            "WHERE channel = 'webhook' AND type = 'complaint.acknowledged' "
            "AND ticket_no = ANY($1::text[]) GROUP BY ticket_no",
            tickets,
        )
        triage = await conn.fetch(
            "SELECT ticket_no, count(*) AS n FROM triage.triaged_complaints "
            "WHERE ticket_no = ANY($1::text[]) GROUP BY ticket_no",
            tickets,
        )
    finally:
        await conn.close()
    return {r["ticket_no"]: r["n"] for r in deliveries}, {r["ticket_no"]: r["n"] for r in triage}


class Timeline:
    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.events: dict[str, float] = {}

    def mark(self, what: str) -> None:
        self.events[what] = round(time.perf_counter() - self.began, 1)


async def leave_by_sigterm_and_join(
    admin: AIOKafkaAdminClient, fleet: Fleet, logs: PhaseLogs, timeline: Timeline
) -> list[str]:
    problems = []
    await asyncio.sleep(LEAVE_AT_S)
    timeline.mark("sigterm")
    await fleet.stop(fleet.extras(), signal.SIGTERM)
    timeline.mark("exited")
    problems += await rebalanced(admin, fleet, timeline, "left")
    for service in SCALED:
        instance = fleet.start_extra(service)
        logs.note(instance, instance.log.offset)
    timeline.mark("started")
    await wait_ready(fleet.extras())
    timeline.mark("ready")
    problems += await rebalanced(admin, fleet, timeline, "joined")
    return problems


async def kill_aimed(
    admin: AIOKafkaAdminClient, fleet: Fleet, logs: PhaseLogs, timeline: Timeline
) -> list[str]:
    """kill -9 of every instance-2, each aimed at a batch it applied but has not committed:
    paused BACKLOG_S (a backlog piles up on its partitions), resumed, and killed the
    moment its log shows the first record of the batch applied."""
    await asyncio.sleep(LEAVE_AT_S)
    victims = fleet.extras()
    if not victims:
        return ["no instance-2 running to kill"]
    for victim in victims:
        fleet.pause(victim)
    timeline.mark("paused")
    await asyncio.sleep(BACKLOG_S)
    for victim in victims:
        victim.log.read_new()  # written before the pause: from here on, it is the batch
    aims = await asyncio.gather(*(kill_on_first_record(fleet, v) for v in victims))
    timeline.mark("killed")
    for victim in victims:
        assert victim.process is not None
        await asyncio.to_thread(victim.process.wait, 10)
        (stack.RUN_DIR / f"{extra_name(victim.service)}.pid").unlink(missing_ok=True)
    problems = [f"{v.service} {v.name}: {aim}" for v, aim in zip(victims, aims, strict=True) if aim]
    return problems + await rebalanced(admin, fleet, timeline, "left")


async def kill_on_first_record(fleet: Fleet, victim: Instance) -> str:
    """SIGCONT, then SIGKILL once a record is applied; '' when aimed, else what missed."""
    fleet.resume(victim)
    began = time.monotonic()
    missed = "no record applied within the aim window: killed unaimed"
    while time.monotonic() - began < AIM_TIMEOUT_S:
        if '"event_handled"' in victim.log.read_new():
            missed = ""
            break
        await asyncio.sleep(0.005)
    stack.signal_group(victim.pid, signal.SIGKILL)
    return missed


async def rebalanced(
    admin: AIOKafkaAdminClient, fleet: Fleet, timeline: Timeline, what: str
) -> list[str]:
    views = await asyncio.gather(*(wait_rebalanced(admin, fleet, s) for s in SCALED))
    timeline.mark(f"{what}_rebalanced")
    return [
        f"{s}: not rebalanced after {what}"
        for s, v in zip(SCALED, views, strict=True)
        if not v.settled
    ]


async def join_leave_phase(
    kind: str,
    api_keys: list[str],
    sink: AckSink,
    fleet: Fleet,
    admin: AIOKafkaAdminClient,
    database_url: str,
) -> dict[str, Any]:
    acks = counting_acks(sink)
    drain = await wait_drained()
    logs = PhaseLogs()
    for service in SCALED:
        for instance in fleet.instances[service]:
            logs.note(instance)
    tickets = Tickets()
    wall_minus_perf = time.time() - time.perf_counter()
    timeline = Timeline()
    load = asyncio.create_task(
        open_loop(
            HOST,
            INTAKE_PORT,
            complaint_requests(api_keys),
            rate_per_s=RATE,
            duration_s=FAULT_SECONDS,
            connections=32,
            on_response=tickets,
        )
    )
    fault = leave_by_sigterm_and_join if kind == "sigterm_leave_then_join" else kill_aimed
    problems = await fault(admin, fleet, logs, timeline)
    result = await load
    timeline.mark("load_ended")
    gave_up = await wait_for_acks(acks, tickets.by_request.values(), ACK_TIMEOUT_S)
    sent_wall = sent_wall_times(result, tickets.by_request, wall_minus_perf)
    triaged = await triaged_at(database_url, set(sent_wall), ACK_TIMEOUT_S)
    await asyncio.sleep(LATE_DUPLICATE_S)
    accepted = list(tickets.by_request.values())
    delivery_rows, triage_rows = await sql_counts(database_url, accepted)
    counts = account(accepted, acks.received, delivery_rows, triage_rows)
    redelivered = await asyncio.to_thread(logs.redeliveries)
    # The fault must land while the load runs, or it proved nothing about the load.
    fault_marks = [t for name, t in timeline.events.items() if name != "load_ended"]
    under_load = max(fault_marks, default=0.0) < FAULT_SECONDS
    record = asdict(counts)
    record["lost_tickets"] = counts.lost_tickets[:20]
    record["duplicated_tickets"] = counts.duplicated_tickets[:20]
    return {
        "kind": kind,
        "offered_per_s": RATE,
        "seconds": FAULT_SECONDS,
        "timeline_s": timeline.events,
        "under_load": under_load,
        **record,
        "redelivered_records": redelivered,
        "redeliveries": sum(r["records"] for r in redelivered.values()) + counts.resends,
        "rebalances": await asyncio.to_thread(logs.rebalances, fleet),
        **{
            k: v
            for k, v in ack_figures(result, tickets.by_request, acks, gave_up).items()
            if "latency" in k
        },
        **triage_figures(sent_wall, triaged),
        "backlog_before": drain,
        "problems": problems,
    }


def counting_acks(sink: AckSink) -> CountingAcks:
    """The sink's acked_at, counting from now on (the same dict for every caller of it)."""
    if not isinstance(sink.acked_at, CountingAcks):
        sink.acked_at = CountingAcks(sink.acked_at)
    return sink.acked_at


def kill_hit_window(phases: list[dict[str, Any]]) -> dict[str, bool]:
    """Per service, whether the kill -9 hit what it aimed at: work its victim had done but
    not recorded as done, which then came again on the survivor (a record moved, or
    applied and never logged; for notifier also a webhook sent and not marked delivered,
    resent). Redeliveries of the survivor's own batch do not count: they come with any
    rebalance."""
    hit: dict[str, bool] = {}
    for phase in phases:
        if phase["kind"] != "kill_9_under_load":
            continue
        for service, kinds in phase["redelivered_records"].items():
            resent = phase["resends"] if service == "notifier" else 0
            seen = kinds["moved"] + kinds["first_unlogged"] + resent
            hit[service] = hit.get(service, False) or seen > 0
    return hit


def join_leave_summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "accepted",
        "acknowledged_once",
        "lost",
        "duplicated",  # strict: any second arrival at the sink counts
        "duplicated_delivery_rows",  # two different events: chaos_accounting's "duplicated"
        "duplicated_webhooks",
        "resends",  # the same delivery (event id) sent again: at-least-once webhooks
        "redeliveries",
    )
    summary: dict[str, Any] = {key: sum(p[key] for p in phases) for key in keys}
    summary["rebalances"] = sum(sum(p["rebalances"].values()) for p in phases)
    summary["kill_hit_window"] = kill_hit_window(phases)
    summary["phases"] = phases
    return summary


# ------------------------------------------------------------------ the run


async def run_scaleout(api_keys: list[str], sink: AckSink, env: dict[str, str]) -> dict[str, Any]:
    """The scale-out measurement against the running stack (see the module docstring);
    every instance it started is stopped before it returns."""
    for service in SCALED:
        stop_leftover(service)
    counting_acks(sink)
    database_url = env.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    fleet = Fleet(env)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", stack.LOCAL_KAFKA),
        request_timeout_ms=5000,
    )
    await admin.start()
    try:
        return await _phases(api_keys, sink, fleet, admin, database_url)
    finally:
        fleet.stop_all()  # blocking on purpose: it must finish even if the run is cancelled
        await admin.close()


async def _phases(
    api_keys: list[str],
    sink: AckSink,
    fleet: Fleet,
    admin: AIOKafkaAdminClient,
    database_url: str,
) -> dict[str, Any]:
    before = {s: assignment_of(await wait_rebalanced(admin, fleet, s), fleet, s) for s in SCALED}
    print(f"one instance each: {json.dumps(before)}", flush=True)
    one = await steady_load(api_keys, sink, fleet, SECONDS, database_url)
    print(f"one_instance: {json.dumps(one)}", flush=True)

    began = time.monotonic()
    for service in SCALED:
        fleet.start_extra(service)
    await wait_ready(fleet.extras())
    ready_s = time.monotonic() - began
    views = {s: await wait_rebalanced(admin, fleet, s) for s in SCALED}
    detail = {s: assignment_of(views[s], fleet, s) for s in SCALED}
    print(f"two instances each: {json.dumps(detail)}", flush=True)
    two = await steady_load(api_keys, sink, fleet, SECONDS, database_url)
    two["ready_after_start_s"] = round(ready_s, 1)
    two["rebalanced_after_ready_s"] = {s: v.waited_s for s, v in views.items()}
    print(f"two_instances: {json.dumps(two)}", flush=True)

    phases = []
    for kind in ("sigterm_leave_then_join", "kill_9_under_load"):
        phase = await join_leave_phase(kind, api_keys, sink, fleet, admin, database_url)
        print(f"{kind}: {json.dumps(phase)}", flush=True)
        phases.append(phase)
    return {
        "kind": "scale_out",
        "offered_per_s": RATE,
        "one_instance": one,
        "two_instances": two,
        "assignment": {
            s: {name: m["partitions"] for name, m in detail[s]["members"].items()} for s in SCALED
        },
        "assignment_detail": detail,
        "assignment_before": {
            s: {name: m["partitions"] for name, m in before[s]["members"].items()} for s in SCALED
        },
        "join_leave": join_leave_summary(phases),
        "identified_by": (
            "each instance's own log: the member id in its last 'Consumer <member_id> "
            "assigned to partitions' line, checked against describe_consumer_groups"
        ),
    }


async def main() -> None:
    env = stack_env()
    sink = AckSink()
    webhook_url = await sink.start()
    api_keys = await asyncio.to_thread(create_tenants, webhook_url, env)
    results = await run_scaleout(api_keys, sink, env)
    OUTPUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {OUTPUT}")


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: the finally stops instance-2


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    asyncio.run(main())
