"""The local stack's building blocks, against real processes: Apache Kafka on a free port, a
throwaway PostgreSQL cluster, and the PID bookkeeping that lets `down` stop what `up`
started and nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from deploy.local import kafka, stack
from shared.kafka_admin import ensure_topics
from tests.support import partitions_of, produce, read_topic, start_throwaway_kafka

# A stand-in for `python -m services.intake serve`: its command line names the service.
FAKE_INTAKE = [sys.executable, "-c", "import time; time.sleep(60)", "services.intake"]


def _once_started(name: str, within_s: float = 10) -> int | None:
    """The pid once the child has exec'd (until then its command line is the parent's)."""
    deadline = time.monotonic() + within_s
    while (pid := stack.running(name)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stack, "RUN_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process the stack did not start."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_pid_file_of_a_finished_process_is_not_running(run_dir: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    (run_dir / "intake.pid").write_text(str(finished.pid))
    assert stack.pid_alive(run_dir / "intake.pid") is None
    assert stack.running("intake") is None
    (run_dir / "triage.pid").write_text("not a pid")
    assert stack.running("triage") is None
    assert stack.running("notifier") is None  # no pid file at all


def test_a_reused_pid_is_not_taken_for_our_service(
    run_dir: Path, stranger: subprocess.Popen[bytes]
) -> None:
    (run_dir / "intake.pid").write_text(str(stranger.pid))
    assert stack.pid_alive(run_dir / "intake.pid") == stranger.pid
    assert stack.running("intake") is None


def test_down_stops_what_it_started_and_nothing_else(
    run_dir: Path, stranger: subprocess.Popen[bytes]
) -> None:
    bystander = subprocess.Popen(FAKE_INTAKE, start_new_session=True)  # no pid file
    try:
        ours = stack.spawn(FAKE_INTAKE, "intake")
        assert _once_started("intake") == ours.pid
        (run_dir / "triage.pid").write_text(str(stranger.pid))  # a pid reused by a stranger

        stack.down()

        assert stack.pid_alive(run_dir / "intake.pid") is None
        assert not (run_dir / "intake.pid").exists()
        assert ours.poll() is not None  # gone (and reaped)
        assert not (run_dir / "triage.pid").exists()
        assert stranger.poll() is None
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_stack_services_narrows_the_list() -> None:
    assert stack.selected_services({}) == ["intake", "triage", "resolution", "notifier"]
    assert stack.selected_services({"STACK_SERVICES": "intake, triage"}) == ["intake", "triage"]
    with pytest.raises(SystemExit):
        stack.selected_services({"STACK_SERVICES": "intake,billing"})


def test_free_ports_are_free() -> None:
    port = stack.free_port()
    assert not stack.port_open("127.0.0.1", port)


def test_free_ports_are_never_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may answer bind(0) with the port it gave last; a stack's services must
    still get different ports."""
    answers = iter([41001, 41001, 41003])

    class FakeSocket:
        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def bind(self, _address: tuple[str, int]) -> None:
            self.port = next(answers)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(kafka.socket, "socket", FakeSocket)
    monkeypatch.setattr(kafka, "_handed_out", set())
    assert [kafka.free_port(), kafka.free_port()] == [41001, 41003]


def test_apache_kafka_keeps_its_log_through_a_kill_and_restart(tmp_path: Path) -> None:
    """The local broker is Apache Kafka with its log on disk: kill -9 loses nothing."""
    topic = "stack.test.v1"
    with start_throwaway_kafka(tmp_path) as broker:

        async def create_and_fill() -> None:
            await ensure_topics(broker.bootstrap, (topic,))
            for n in range(20):
                await produce(broker.bootstrap, topic, f"m{n}".encode(), key=f"k{n}".encode())

        asyncio.run(create_and_fill())
        assert asyncio.run(partitions_of(broker.bootstrap, topic)) == list(range(6))
        broker.kill()
        assert not stack.port_open("127.0.0.1", broker.port)
        broker.start()
        values = {m.value for m in asyncio.run(read_topic(broker.bootstrap, topic))}
        assert values == {f"m{n}".encode() for n in range(20)}
    assert not stack.port_open("127.0.0.1", broker.port)


def test_wait_for_kafka_gives_up_when_nothing_listens() -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises last
        stack.wait_for_kafka(f"127.0.0.1:{stack.free_port()}", timeout=1)


def test_a_throwaway_postgres_cluster_starts_and_stops() -> None:
    # Not under pytest's tmp_path: as root the cluster runs as the postgres account,
    # which cannot enter pytest's private (0700) directories.
    with tempfile.TemporaryDirectory(prefix="stack-pg-") as scratch:
        os.chmod(scratch, 0o755)  # noqa: S103 - the postgres account must reach the data dir
        data_dir = Path(scratch) / "data"
        port = stack.free_port()
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        stack.start_local_postgres(data_dir, port, Path(scratch) / "postgres.log")
        try:
            assert stack.postgres_answers(url)
        finally:
            stack.stop_local_postgres(data_dir)
        assert not stack.postgres_answers(url)


# ------------------------------------------------------------------ Prometheus and status


def _prometheus_tools() -> tuple[str, str]:
    """Debian's prometheus and promtool, which `make install` installs."""
    binary, promtool = stack.prometheus_binary(), shutil.which("promtool")
    if binary is None or promtool is None:
        pytest.fail(
            "Debian's prometheus package is not installed (no prometheus or promtool): "
            "`make install` installs it (deploy/local/bootstrap.sh)",
            pytrace=False,
        )
    return binary, promtool


def test_the_local_prometheus_config_scrapes_the_four_ports_and_loads_the_rules(
    tmp_path: Path,
) -> None:
    _, promtool = _prometheus_tools()
    targets = {name: f"127.0.0.1:{port}" for name, port in stack.SERVICES.items()}
    config = tmp_path / "prometheus.yml"
    config.write_text(stack.prometheus_config(targets, [stack.ALERT_RULES]))

    parsed = json.loads(config.read_text())
    scraped = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in parsed["scrape_configs"]
    }
    assert scraped == {
        "intake": ["127.0.0.1:8080"],
        "triage": ["127.0.0.1:8081"],
        "resolution": ["127.0.0.1:8082"],
        "notifier": ["127.0.0.1:8083"],
    }
    # promtool also loads and checks the rule file the config names.
    checked = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout


def test_prometheus_0_skips_it(run_dir: Path) -> None:
    assert stack.ensure_prometheus({"PROMETHEUS": "0"}, port=stack.free_port()) is None
    assert not (run_dir / "prometheus.pid").exists()


def test_up_starts_our_prometheus_once_and_down_stops_it(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _prometheus_tools()
    port = stack.free_port()
    url = stack.ensure_prometheus({}, port=port)
    try:
        assert url == f"http://127.0.0.1:{port}"
        pid = stack.running("prometheus")
        assert pid is not None
        assert (run_dir / "prometheus" / "wal").is_dir()  # its data under .run/prometheus
        assert "127.0.0.1:8080" in (run_dir / "prometheus.yml").read_text()
        rules = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert any(rule["name"] == "ServiceDown" for g in rules for rule in g["rules"])

        assert stack.ensure_prometheus({}, port=port) == url  # a second `up`: left as it is
        assert stack.running("prometheus") == pid
        assert "already running" in capsys.readouterr().out
    finally:
        stack.down()
    assert stack.running("prometheus") is None
    assert not (run_dir / "prometheus.pid").exists()
    assert not stack.port_open("127.0.0.1", port)


def test_a_port_taken_by_another_prometheus_is_left_alone(run_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        assert stack.ensure_prometheus({}, port=port) is None
    assert not (run_dir / "prometheus.pid").exists()


class _FakeService(BaseHTTPRequestHandler):
    """Alive, not ready: what /readyz of a service without its broker answers."""

    def do_GET(self) -> None:  # http.server calls it by this name
        if self.path == "/healthz":
            status, body = 200, {"status": "ok"}
        else:
            checks = {"database": True, "broker": False, "consumer": False}
            status, body = 503, {"status": "not_ready", "checks": checks}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_ready_service() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_status_shows_health_and_the_failing_readiness_checks(
    run_dir: Path,
    not_ready_service: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed_port = stack.free_port()
    monkeypatch.setattr(stack, "SERVICES", {"intake": not_ready_service, "triage": closed_port})
    monkeypatch.setattr(stack, "PROMETHEUS_PORT", stack.free_port())
    assert stack.service_health(not_ready_service) == (
        "healthy, not ready: readyz 503 (failing: broker, consumer)"
    )
    assert stack.service_health(closed_port) is None

    ours = stack.spawn(FAKE_INTAKE, "intake")
    try:
        assert _once_started("intake") == ours.pid
        stack.status()
    finally:
        stack.down()
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert lines["intake"].endswith(
        f"running, pid {ours.pid}, healthy, not ready: readyz 503 (failing: broker, consumer)"
    )
    assert lines["triage"].endswith("not running")
    assert lines["prometheus"].endswith("not running")
