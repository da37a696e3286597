"""The local stack: `python -m deploy.local.stack up|down|status` (run from the repo root).

- PostgreSQL: `DATABASE_URL` if set; else the server on 127.0.0.1:5432 if it accepts a
  connection; else a throwaway cluster in `.run/pgdata` started with the machine's
  `initdb`/`pg_ctl` on port 55432 (as the `postgres` account when run as root, because
  initdb refuses root). The services create the `complaints` database when missing.
- Kafka: `KAFKA_BOOTSTRAP_SERVERS` if set; else Apache Kafka (deploy/local/kafka.py: jars
  from Maven Central, one KRaft node, log kept in `.run/kafka/data`) on 127.0.0.1:9092;
  topics are created explicitly, six partitions each.
- The services (`STACK_SERVICES=intake,triage` narrows the list), each migrated, then
  started in the background with the caller's environment plus the resolved
  `DATABASE_URL`/`KAFKA_BOOTSTRAP_SERVERS`; PID in `.run/<name>.pid`, log in
  `.run/<name>.log`, resolved settings in `.run/stack.env`. `up` starts only what is not
  running; `down` stops only what has a PID file here whose process is still ours.
- Prometheus, when Debian's `prometheus` binary is installed and `PROMETHEUS` is not `0`:
  on 127.0.0.1:9090, scraping the four services' ports with the alert rules of
  deploy/prometheus/alerts.yml; config `.run/prometheus.yml`, data `.run/prometheus/`,
  PID `.run/prometheus.pid`, log `.run/prometheus.log`.
- `status`: each process's PID, and each service's `/healthz` and `/readyz` (with the
  checks that fail).

Functions the tests reuse:

    free_port() -> int
    port_open(host: str, port: int) -> bool
    start_kafka(port: int, work_dir: Path) -> subprocess.Popen[bytes]
        # Apache Kafka on 127.0.0.1:<port>, data and kafka.log in <work_dir>, own group
    wait_for_kafka(bootstrap: str, timeout: float = 30) -> None
        # returns once a metadata request succeeds; raises the last error after timeout
    stop_process(process: subprocess.Popen[bytes]) -> None
        # SIGTERM to its process group, SIGKILL after 10 s, reaped
    resolve_database_url(env: Mapping[str, str]) -> str | None
        # DATABASE_URL, or the 127.0.0.1:5432 server if it answers; None: start one
    start_local_postgres(data_dir: Path, port: int, log_file: Path) -> None
        # initdb once, then pg_ctl start -w on 127.0.0.1:<port> (socket in /tmp)
    stop_local_postgres(data_dir: Path) -> None
    read_stack_env() -> dict[str, str]
        # DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS as the last `up` resolved them
    running(name: str) -> int | None
        # PID of our `name` (a service, "kafka" or "prometheus") if its .run PID file
        # names a live, matching process (checked in /proc/<pid>/cmdline, so a reused PID
        # is not ours)
    prometheus_binary() -> str | None
    prometheus_config(targets: Mapping[str, str], rule_files: list[Path], ...) -> str
        # a scrape config, one job per service name, targets "host:port"
    start_prometheus(binary: str, config: Path, data_dir: Path, port: int, log_file: Path)
        -> subprocess.Popen[bytes]  # on 127.0.0.1:<port>, its own process group
    wait_for_prometheus(base_url: str, process: subprocess.Popen[bytes] | None, timeout: float)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from deploy.local.kafka import PROCESS_MARKER as KAFKA_MARKER
from deploy.local.kafka import free_port, start_kafka

__all__ = ["free_port", "start_kafka"]

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = ROOT / ".run"
SERVICES = {"intake": 8080, "triage": 8081, "resolution": 8082, "notifier": 8083}
LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_PG_PORT = 55432
DEFAULT_DATABASE = "complaints"
SYSTEM_POSTGRES = "postgresql://postgres@127.0.0.1:5432"
PROMETHEUS_PORT = 9090
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


# ------------------------------------------------------------------ processes


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def pid_alive(pid_file: Path) -> int | None:
    """The PID in `pid_file` if that process still exists, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def command_marker(name: str) -> str:
    """What the command line of our process called `name` contains."""
    if name == "kafka":
        return KAFKA_MARKER
    if name == "prometheus":
        # Our config file, not the word "prometheus": a system Prometheus is not ours.
        return f"--config.file={RUN_DIR / 'prometheus.yml'}"
    return f"services.{name}"


def is_ours(pid: int, marker: str) -> bool:
    # A PID file can outlive its process and the PID be reused by something else:
    # only a process whose command line still names our program counts as ours.
    # A zombie has an empty command line, so it counts as gone.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(marker.encode() in part for part in cmdline)


def running(name: str) -> int | None:
    """The PID of our process `name` if it runs, per `.run/<name>.pid`."""
    pid = pid_alive(RUN_DIR / f"{name}.pid")
    return pid if pid is not None and is_ours(pid, command_marker(name)) else None


def spawn(
    command: list[str], name: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Starts `command` detached, logging to `.run/<name>.log`, its PID in `.run/<name>.pid`."""
    RUN_DIR.mkdir(exist_ok=True)
    with (RUN_DIR / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own commands
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `down` stops it and its children
        )
    (RUN_DIR / f"{name}.pid").write_text(f"{process.pid}\n")
    return process


def signal_group(pid: int, sig: signal.Signals) -> None:
    """`sig` to the process group `pid` leads (our spawns do), else to `pid` alone."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child (tests)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_pids(pids: list[int], timeout_s: float = 10) -> None:
    """SIGTERM to all at once (each takes a moment to leave its consumer group), then
    SIGKILL to whatever still runs after `timeout_s`."""
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    remaining = [pid for pid in pids if not gone(pid)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = [pid for pid in remaining if not gone(pid)]
    for pid in remaining:
        signal_group(pid, signal.SIGKILL)


def stop_pid(pid: int, timeout_s: float = 10) -> None:
    stop_pids([pid], timeout_s)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    stop_pid(process.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


# ------------------------------------------------------------------ Kafka


def wait_for_kafka(bootstrap: str, timeout: float = 30) -> None:
    """Until the broker answers a metadata request (an open port is not enough)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(probe())
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def ensure_kafka(env: Mapping[str, str]) -> str:
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        return env["KAFKA_BOOTSTRAP_SERVERS"]
    if pid := running("kafka"):
        print(f"Apache Kafka already running on {LOCAL_KAFKA} (pid {pid})")
    elif port_open("127.0.0.1", 9092):
        print(f"something else listens on {LOCAL_KAFKA}; using it as the broker")
    else:
        RUN_DIR.mkdir(exist_ok=True)
        process = start_kafka(9092, RUN_DIR / "kafka", log_file=RUN_DIR / "kafka.log")
        (RUN_DIR / "kafka.pid").write_text(f"{process.pid}\n")
        print(f"started Apache Kafka on {LOCAL_KAFKA} (pid {process.pid}, log .run/kafka.log)")
    wait_for_kafka(LOCAL_KAFKA, timeout=120)
    return LOCAL_KAFKA


# ------------------------------------------------------------------ PostgreSQL


def postgres_answers(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.Error:
        return False
    return True


def resolve_database_url(env: Mapping[str, str]) -> str | None:
    """The database to use without starting anything, or None when none answers."""
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    if postgres_answers(f"{SYSTEM_POSTGRES}/postgres"):
        return f"{SYSTEM_POSTGRES}/{DEFAULT_DATABASE}"
    return None


def start_local_postgres(data_dir: Path, port: int, log_file: Path) -> None:
    """A trust-auth cluster in `data_dir` on 127.0.0.1:`port` (initdb on first use)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    if os.geteuid() == 0:
        # The cluster belongs to the postgres account (see _as_postgres_user).
        owner = _postgres_account()
        shutil.chown(data_dir, user=owner, group=owner)
        shutil.chown(log_file, user=owner, group=owner)
    if not (data_dir / "PG_VERSION").exists():
        initdb = [pg_tool("initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust"]
        _run_as_postgres_user(initdb)
    options = f"-p {port} -k /tmp -c listen_addresses=127.0.0.1"
    if os.environ.get("PG_STAT_STATEMENTS") == "1":
        # Opt-in, for `python -m bench.statements`: counts every statement the services run.
        options += " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    _run_as_postgres_user(
        [pg_tool("pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(log_file), "-w", "start"]
    )


def stop_local_postgres(data_dir: Path, mode: str = "fast") -> None:
    _run_as_postgres_user([pg_tool("pg_ctl"), "-D", str(data_dir), "-m", mode, "-w", "stop"])


def pg_tool(name: str) -> str:
    """`initdb`/`pg_ctl`: on PATH, else in Debian's versioned folder (newest first)."""
    if found := shutil.which(name):
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
        reverse=True,
    )
    if not candidates:
        raise SystemExit(
            f"PostgreSQL's {name} was not found: run `make install` (it installs Debian's "
            "postgresql package) or set DATABASE_URL to a reachable server"
        )
    return str(candidates[0])


def ensure_postgres(env: Mapping[str, str]) -> str:
    url = resolve_database_url(env)
    if url is not None:
        return url
    local_url = f"postgresql://postgres@127.0.0.1:{LOCAL_PG_PORT}"
    if postgres_answers(f"{local_url}/postgres"):
        print(f"throwaway PostgreSQL already running on 127.0.0.1:{LOCAL_PG_PORT}")
    else:
        RUN_DIR.mkdir(exist_ok=True)
        start_local_postgres(RUN_DIR / "pgdata", LOCAL_PG_PORT, RUN_DIR / "postgres.log")
        # `down` stops the cluster only when this marker says we started it.
        (RUN_DIR / "postgres.started").write_text("by make up\n")
        print(f"started a throwaway PostgreSQL cluster on 127.0.0.1:{LOCAL_PG_PORT}")
    return f"{local_url}/{DEFAULT_DATABASE}"


def _postgres_account() -> str:
    for account in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(account)
            return account
    raise SystemExit(
        "running as root and no 'postgres' account exists to run initdb as; "
        "set DATABASE_URL to a reachable PostgreSQL server instead"
    )


def _run_as_postgres_user(command: list[str]) -> None:
    # initdb and pg_ctl refuse to run as root: use an unprivileged account then.
    if os.geteuid() == 0:
        command = ["runuser", "-u", _postgres_account(), "--", *command]
    try:
        subprocess.run(command, check=True, cwd="/")  # noqa: S603 - the machine's pg tools
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(
            f"could not run {' '.join(command)}: {error}\n"
            "set DATABASE_URL to a reachable PostgreSQL server instead"
        ) from error


# ------------------------------------------------------------------ services


def selected_services(env: Mapping[str, str]) -> list[str]:
    """`STACK_SERVICES` (comma-separated) or all four, in start order."""
    names = [n.strip() for n in env.get("STACK_SERVICES", ",".join(SERVICES)).split(",")]
    unknown = [n for n in names if n and n not in SERVICES]
    if unknown:
        raise SystemExit(f"unknown services in STACK_SERVICES: {unknown}")
    return [n for n in names if n]


def service_env(env: Mapping[str, str], database_url: str, bootstrap: str) -> dict[str, str]:
    return {**env, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}


def create_topics(bootstrap: str) -> None:
    from shared.kafka_admin import ensure_topics

    created = asyncio.run(ensure_topics(bootstrap))
    if created:
        print(f"created topics: {', '.join(created)}")


def migrate(names: list[str], env: Mapping[str, str]) -> None:
    for name in names:
        result = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", f"services.{name}", "migrate"], cwd=ROOT, env=dict(env)
        )
        if result.returncode != 0:
            raise SystemExit(f"migrating {name} failed (exit {result.returncode})")


def start_services(names: list[str], env: Mapping[str, str]) -> None:
    for name in names:
        if pid := running(name):
            print(f"{name} already running (pid {pid})")
            continue
        process = spawn([sys.executable, "-m", f"services.{name}", "serve"], name, env)
        print(f"started {name} (pid {process.pid})")


def wait_ready(names: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = set(names)
    while waiting:
        for name in sorted(waiting):
            if not running(name):
                raise SystemExit(f"{name} exited; its log:\n{tail(RUN_DIR / f'{name}.log')}")
            with contextlib.suppress(httpx.HTTPError):
                url = f"http://127.0.0.1:{SERVICES[name]}/readyz"
                if httpx.get(url, timeout=1).status_code == 200:
                    waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{tail(RUN_DIR / f'{n}.log')}" for n in sorted(waiting))
            raise SystemExit(f"not ready after {timeout_s:.0f} s: {sorted(waiting)}\n{logs}")
        time.sleep(0.3)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def read_stack_env() -> dict[str, str]:
    """What the last `up` resolved (for `demo`, `bench` and `status`)."""
    path = RUN_DIR / "stack.env"
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


# ------------------------------------------------------------------ Prometheus


def prometheus_binary() -> str | None:
    """Debian's `prometheus` server (package prometheus), if installed."""
    found = shutil.which("prometheus")
    if found is None and Path("/usr/bin/prometheus").exists():
        found = "/usr/bin/prometheus"  # PATH may lack /usr/bin in a stripped environment
    return found


def prometheus_config(
    targets: Mapping[str, str], rule_files: list[Path], scrape_interval: str = "5s"
) -> str:
    """A Prometheus config scraping `targets` (job name -> "host:port", the job naming the
    service as in deploy/prometheus/prometheus.yml) and loading `rule_files`. JSON, which
    is YAML too, so no YAML library is needed."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": [t]}]}
            for job, t in targets.items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def start_prometheus(
    binary: str, config: Path, data_dir: Path, port: int, log_file: Path
) -> subprocess.Popen[bytes]:
    """Prometheus on 127.0.0.1:`port` in its own process group, logging to `log_file`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=7d",
    ]
    with log_file.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - the machine's prometheus, our arguments
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_prometheus(
    base_url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60
) -> None:
    """Until /-/ready answers 200 (the TSDB is open and the rules are loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/-/ready", timeout=1).status_code == 200:
                return
        if process is not None and process.poll() is not None:
            raise SystemExit(f"prometheus exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"prometheus not ready at {base_url} after {timeout:.0f} s")
        time.sleep(0.2)


def ensure_prometheus(env: Mapping[str, str], port: int = PROMETHEUS_PORT) -> str | None:
    """Our Prometheus on 127.0.0.1:`port`, started unless running; its URL, or None when
    skipped (`PROMETHEUS=0`, no binary, or the port taken by something else)."""
    if env.get("PROMETHEUS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    url = f"http://127.0.0.1:{port}"
    if pid := running("prometheus"):
        print(f"Prometheus already running on {url} (pid {pid})")
        return url
    if port_open("127.0.0.1", port):
        print(f"something else listens on 127.0.0.1:{port}; not starting Prometheus")
        return None
    binary = prometheus_binary()
    if binary is None:
        print("no prometheus binary (Debian package prometheus): not starting Prometheus")
        return None
    RUN_DIR.mkdir(exist_ok=True)
    config = RUN_DIR / "prometheus.yml"
    targets = {name: f"127.0.0.1:{p}" for name, p in SERVICES.items()}
    config.write_text(prometheus_config(targets, [ALERT_RULES]))
    process = start_prometheus(
        binary, config, RUN_DIR / "prometheus", port, RUN_DIR / "prometheus.log"
    )
    (RUN_DIR / "prometheus.pid").write_text(f"{process.pid}\n")
    try:
        wait_for_prometheus(url, process)
    except SystemExit as error:
        raise SystemExit(f"{error}; its log:\n{tail(RUN_DIR / 'prometheus.log')}") from None
    print(f"started Prometheus on {url} (pid {process.pid}, log .run/prometheus.log)")
    return url


# ------------------------------------------------------------------ health


def service_health(port: int, host: str = "127.0.0.1") -> str | None:
    """What `/healthz` and `/readyz` on `port` say, in a few words (the failing readiness
    checks named); None when nothing answers."""
    base = f"http://{host}:{port}"
    try:
        healthz = httpx.get(f"{base}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    health = "healthy" if healthz.status_code == 200 else f"healthz {healthz.status_code}"
    try:
        readyz = httpx.get(f"{base}/readyz", timeout=5)
    except httpx.HTTPError as error:
        return f"{health}, readyz: no answer ({type(error).__name__})"
    if readyz.status_code == 200:
        return f"{health}, ready"
    try:
        checks = readyz.json().get("checks", {})
    except (ValueError, AttributeError):
        checks = {}
    failing = sorted(name for name, ok in checks.items() if not ok) if checks else []
    detail = f" (failing: {', '.join(failing)})" if failing else ""
    return f"{health}, not ready: readyz {readyz.status_code}{detail}"


def prometheus_health(port: int | None = None) -> str | None:
    port = port or PROMETHEUS_PORT  # read at call time (a test moves it)
    try:
        ready = httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2)
    except httpx.HTTPError:
        return None
    return "ready" if ready.status_code == 200 else f"not ready ({ready.status_code})"


# ------------------------------------------------------------------ commands


def up() -> None:
    names = selected_services(os.environ)
    database_url = ensure_postgres(os.environ)
    bootstrap = ensure_kafka(os.environ)
    env = service_env(os.environ, database_url, bootstrap)
    RUN_DIR.mkdir(exist_ok=True)
    (RUN_DIR / "stack.env").write_text(
        f"DATABASE_URL={database_url}\nKAFKA_BOOTSTRAP_SERVERS={bootstrap}\n"
    )
    create_topics(bootstrap)
    migrate(names, env)
    start_services(names, env)
    wait_ready(names)
    print("\nready:")
    for name in names:
        base = f"http://127.0.0.1:{SERVICES[name]}"
        print(f"  {name:<10} {base}  metrics {base}/metrics  log .run/{name}.log")
    if "intake" in names:
        print("  complaint API  http://127.0.0.1:8080/v1/complaints")
        print("  OpenAPI        http://127.0.0.1:8080/openapi.json (docs: /docs)")
    if "resolution" in names:
        print("  agent API      http://127.0.0.1:8082/v1/cases")
    print(f"  database       {database_url}\n  broker         {bootstrap}")
    prometheus_url = ensure_prometheus(os.environ)
    if prometheus_url is not None:
        print(f"  Prometheus     {prometheus_url}  (alerts {prometheus_url}/alerts)")
    print(f"  PIDs and logs  {RUN_DIR}/<name>.pid, <name>.log; stop with `make down`")


def down() -> None:
    # Services first (they commit offsets and flush on the way out), then the broker.
    stop_ours(list(SERVICES))
    stop_ours(["prometheus", "kafka"])
    marker = RUN_DIR / "postgres.started"
    if marker.exists():
        stop_local_postgres(RUN_DIR / "pgdata")
        marker.unlink()
        print("stopped the throwaway PostgreSQL cluster")


def stop_ours(names: list[str]) -> None:
    """Stops each `name` whose `.run/<name>.pid` names a live process of ours; forgets the
    PID file either way. A process without a PID file here is never touched."""
    ours: dict[str, int] = {}
    for name in names:
        pid_file = RUN_DIR / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = pid_alive(pid_file)
        if pid is not None and is_ours(pid, command_marker(name)):
            ours[name] = pid
        elif pid is not None:
            print(f"{name}: pid {pid} is no longer ours; left alone")
            pid_file.unlink()
        else:
            pid_file.unlink()
    stop_pids(list(ours.values()))
    for name, pid in ours.items():
        (RUN_DIR / f"{name}.pid").unlink(missing_ok=True)
        print(f"stopped {name} (pid {pid})")


def status() -> None:
    for name, port in SERVICES.items():
        pid = running(name)
        health = service_health(port)
        if pid:
            state = f"running, pid {pid}, {health or f'no answer on :{port}'}"
        elif health:
            state = f"not started by make up, but :{port} answers: {health}"
        else:
            state = "not running"
        print(f"{name:<10} {state}")
    pid = running("kafka")
    print(f"{'kafka':<10} {f'running, pid {pid}' if pid else 'not running'}")
    pid = running("prometheus")
    prometheus = prometheus_health()
    if pid:
        url = f"http://127.0.0.1:{PROMETHEUS_PORT}"
        print(f"{'prometheus':<10} running, pid {pid}, {prometheus or 'no answer'}  {url}")
    elif prometheus:
        print(f"{'prometheus':<10} not started by make up, but :{PROMETHEUS_PORT} is {prometheus}")
    else:
        print(f"{'prometheus':<10} not running")
    if (RUN_DIR / "postgres.started").exists():
        print(f"{'postgres':<10} throwaway cluster in {RUN_DIR / 'pgdata'}")
    for key, value in read_stack_env().items():
        print(f"{key}={value}")


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python -m deploy.local.stack up|down|status", file=sys.stderr)
        return 2
    commands[argv[0]]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
