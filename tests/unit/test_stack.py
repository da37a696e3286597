"""The local stack's process bookkeeping: `down` stops what `up` started, nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy.local import stack


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stack, "RUN_DIR", tmp_path)
    return tmp_path


def test_a_pid_file_of_a_finished_process_is_not_running(run_dir: Path) -> None:
    finished = subprocess.run(["true"], check=True)
    assert finished.returncode == 0
    (run_dir / "intake.pid").write_text("999999999")
    assert stack.pid_alive(run_dir / "intake.pid") is None
    (run_dir / "triage.pid").write_text("not a pid")
    assert stack.pid_alive(run_dir / "triage.pid") is None


def test_down_stops_what_has_a_pid_file_and_nothing_else(run_dir: Path) -> None:
    ours = stack.spawn(["sleep", "60"], "intake")
    theirs = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert stack.pid_alive(run_dir / "intake.pid") == ours
        stack.down()
        assert not (run_dir / "intake.pid").exists()
        assert theirs.poll() is None  # no pid file here: untouched
    finally:
        theirs.kill()
        theirs.wait()


def test_free_ports_are_free() -> None:
    port = stack.free_port()
    assert not stack.port_open("127.0.0.1", port)
