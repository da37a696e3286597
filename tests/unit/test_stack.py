"""The local stack's building blocks, against real processes: Tansu on a free port, a
throwaway PostgreSQL cluster, and the PID bookkeeping that lets `down` stop what `up`
started and nothing else."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.local import stack

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


def test_tansu_answers_and_takes_topics_with_six_partitions(tmp_path: Path) -> None:
    port = stack.free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = stack.start_tansu(port, tmp_path)
    try:
        stack.wait_for_kafka(bootstrap, timeout=30)

        async def create_and_describe() -> list[dict]:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic("stack.test.v1", 6, 1)])
                return await admin.describe_topics(["stack.test.v1"])
            finally:
                await admin.close()

        (described,) = asyncio.run(create_and_describe())
        assert len(described["partitions"]) == 6
    finally:
        stack.stop_process(broker)
    assert broker.returncode is not None
    assert not stack.port_open("127.0.0.1", port)


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
