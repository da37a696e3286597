"""CPU milliseconds per complaint, per process of the stack, from /proc.

Each process's CPU is the utime + stime of /proc/<pid>/stat (clock ticks), counted for a
process *tree*: the root, its live children, and the root's cutime + cstime (the CPU of
children it has already reaped). For PostgreSQL the root is the postmaster, so backends
that started and exited within the interval are counted too; the services and the Kafka
JVM have no children, and the same sum is just their own CPU (every thread included).

The load generator is this process (os.times()), the webhook receiver included. The
machine's busy time (/proc/stat) is recorded beside it: when it is much larger than the
sum, something else was using the cores during the measurement.

    processes = await stack_processes(database_url)
    with CpuMeter(processes) as meter:
        ...  # send, wait for the acknowledgements
    meter.ms_per_complaint(acknowledged)  # {"intake": ..., "postgres": ..., "total": ...}
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg

from deploy.local.stack import running

SERVICES = ("intake", "triage", "resolution", "notifier")
LOADGEN = "loadgen"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of one /proc/<pid>/stat line this module uses (CPU in clock ticks)."""

    pid: int
    comm: str
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    starttime: int  # ticks after boot: with the pid, names one process (pids are reused)


def parse_stat(line: str) -> ProcStat:
    """One /proc/<pid>/stat line. The command name is in parentheses and may itself hold
    spaces and parentheses, so the fields are counted from the last ')'."""
    head, _, tail = line.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = tail.split()  # fields[0] is field 3 of proc(5), "state"
    return ProcStat(
        pid=int(pid),
        comm=comm,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
        starttime=int(fields[19]),
    )


def machine_busy_ticks(proc_stat_line: str) -> int:
    """Busy ticks of all cores from the first ("cpu ") line of /proc/stat: user, nice,
    system, irq, softirq and steal (guest time is already inside user and nice)."""
    name, *values = proc_stat_line.split()
    if name != "cpu":
        raise ValueError(f"not the aggregate cpu line of /proc/stat: {proc_stat_line!r}")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
    return user + nice + system + irq + softirq + steal


def tree_ticks(root: int, stats: Mapping[int, ProcStat]) -> int:
    """CPU ticks of `root`, its live children and its reaped ones. Summed at both ends of
    an interval, the difference counts a child that exited meanwhile exactly once: live
    (its CPU so far) at the start, in the parent's cutime/cstime at the end."""
    parent = stats[root]
    children = (s for s in stats.values() if s.ppid == root)
    return (
        parent.utime
        + parent.stime
        + parent.cutime
        + parent.cstime
        + sum(s.utime + s.stime for s in children)
    )


def read_stats() -> dict[int, ProcStat]:
    """Every process's stat line; one that exits while we read is skipped."""
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue
    return stats


@dataclass(frozen=True)
class Snapshot:
    ticks: dict[str, int]  # process name -> ticks of its tree
    started: dict[str, int]  # process name -> its root's starttime (to detect restarts)
    loadgen_s: float
    machine_ticks: int
    wall_s: float  # time.perf_counter()


def snapshot(processes: Mapping[str, int]) -> Snapshot:
    stats = read_stats()
    present = {name: pid for name, pid in processes.items() if pid in stats}
    times = os.times()
    return Snapshot(
        ticks={name: tree_ticks(pid, stats) for name, pid in present.items()},
        started={name: stats[pid].starttime for name, pid in present.items()},
        loadgen_s=times.user + times.system,
        machine_ticks=machine_busy_ticks((PROC / "stat").read_text().splitlines()[0]),
        wall_s=time.perf_counter(),
    )


def cpu_seconds(before: Snapshot, after: Snapshot) -> dict[str, float | None]:
    """CPU seconds per process over the interval; None for one that was missing at either
    end or restarted in between (its counters began again: no honest difference)."""
    seconds: dict[str, float | None] = {}
    for name in before.ticks.keys() | after.ticks.keys():
        same = name in before.ticks and before.started.get(name) == after.started.get(name)
        seconds[name] = (after.ticks[name] - before.ticks[name]) / TICKS_PER_S if same else None
    seconds[LOADGEN] = after.loadgen_s - before.loadgen_s
    return dict(sorted(seconds.items()))


def stack_sum(per_process: Mapping[str, float | None]) -> float:
    """The stack's part of a per-process figure (seconds, cores): every process measured
    but the load generator."""
    return sum(v for name, v in per_process.items() if v is not None and name != LOADGEN)


def per_complaint_ms(seconds: Mapping[str, float | None], complaints: int) -> dict[str, float]:
    """Milliseconds per complaint per process, plus "total" (the sum of those measured)."""
    if complaints <= 0:
        return {}
    measured = {name: s for name, s in seconds.items() if s is not None}
    result = {name: round(s * 1000 / complaints, 3) for name, s in measured.items()}
    result["total"] = round(sum(measured.values()) * 1000 / complaints, 3)
    return result


class CpuMeter:
    """Snapshots the processes' CPU on entering and on leaving the `with` block."""

    def __init__(self, processes: Mapping[str, int]) -> None:
        self.processes = dict(processes)
        self.before: Snapshot | None = None
        self.after: Snapshot | None = None

    def __enter__(self) -> CpuMeter:
        self.before = snapshot(self.processes)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.after = snapshot(self.processes)

    def _ends(self) -> tuple[Snapshot, Snapshot]:
        if self.before is None or self.after is None:
            raise RuntimeError("CpuMeter is read after its `with` block")
        return self.before, self.after

    def seconds(self) -> dict[str, float | None]:
        return cpu_seconds(*self._ends())

    def machine_seconds(self) -> float:
        before, after = self._ends()
        return (after.machine_ticks - before.machine_ticks) / TICKS_PER_S

    def ms_per_complaint(self, complaints: int) -> dict[str, float]:
        return per_complaint_ms(self.seconds(), complaints)

    def report(self, complaints: int) -> dict[str, Any]:
        """What a run record keeps: CPU seconds and cores used per process over the
        interval, ms per `complaints`, and the machine's busy time per complaint (to
        compare with "total": the difference is CPU used by something else)."""
        before, after = self._ends()
        seconds = self.seconds()
        wall = after.wall_s - before.wall_s
        return {
            "interval_s": round(wall, 1),
            "cpu_s": {k: None if v is None else round(v, 2) for k, v in seconds.items()},
            "cpu_cores": {k: None if v is None else round(v / wall, 3) for k, v in seconds.items()},
            "cpu_ms_per_complaint": per_complaint_ms(seconds, complaints),
            "machine_cpu_ms_per_complaint": (
                round(self.machine_seconds() * 1000 / complaints, 3) if complaints else None
            ),
        }


def postmaster_pid_from_file(pid_file_text: str) -> int:
    """The first line of a data directory's postmaster.pid is the postmaster's PID."""
    return int(pid_file_text.splitlines()[0])


async def postmaster_pid(database_url: str) -> int | None:
    """The PID of the postmaster serving `database_url`, if it runs on this machine."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        data_directory = await conn.fetchval("SELECT current_setting('data_directory')")
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        # Read while our backend lives: its parent is the postmaster.
        return local_postmaster(Path(data_directory), backend)
    finally:
        await conn.close()


def local_postmaster(data_directory: Path, backend_pid: int) -> int | None:
    """The PID in `<data_directory>/postmaster.pid` (`.run/pgdata` for the stack's own
    cluster) if our backend is its child here: a server elsewhere that happens to share
    the data directory's path is not taken for it."""
    try:
        pid = postmaster_pid_from_file((data_directory / "postmaster.pid").read_text())
        parent = parse_stat((PROC / str(backend_pid) / "stat").read_text()).ppid
    except (OSError, ValueError, IndexError):
        return None
    return pid if parent == pid else None


async def stack_processes(database_url: str) -> dict[str, int]:
    """The root PID of each process of the stack found running: the four services and the
    broker by their `.run/<name>.pid` (checked to still be ours), PostgreSQL by its
    postmaster."""
    found = {name: pid for name in (*SERVICES, "kafka") if (pid := running(name))}
    if pid := await postmaster_pid(database_url):
        found["postgres"] = pid
    return found
