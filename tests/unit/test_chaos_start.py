"""`make chaos` at its start: a service that exits says why (its log), not just that it did."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bench import chaos


def test_a_service_exiting_at_start_reports_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chaos, "CHAOS_DIR", tmp_path)
    (tmp_path / "triage.log").write_text("starting\nOSError: [Errno 98] address already in use\n")
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    stack = chaos.ChaosStack(ports={"triage": 9}, processes={"triage": exited})

    with pytest.raises(chaos.StackDidNotStart) as raised:
        asyncio.run(chaos.wait_ready(stack, ["triage"]))

    assert "triage exited with 3" in str(raised.value)
    assert "address already in use" in str(raised.value)


def _main_with_starts(monkeypatch: pytest.MonkeyPatch, failures: int) -> tuple[int, list[int]]:
    """`chaos.main` with a stack that fails to start `failures` times, then runs no fault."""
    outcomes = iter([*[chaos.StackDidNotStart("triage exited with 1")] * failures, []])
    recorded: list[int] = []

    async def chaos_run(_stack: chaos.ChaosStack) -> list[chaos.FaultResult]:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(chaos, "chaos_run", chaos_run)
    monkeypatch.setattr(chaos, "prepare_run_dir", lambda: None)
    monkeypatch.setattr(chaos, "stop_stack", lambda _stack: None)
    monkeypatch.setattr(chaos, "selected_faults", dict)
    monkeypatch.setattr(chaos.signal, "signal", lambda *_: None)  # the suite keeps its own
    monkeypatch.setattr(
        chaos, "write_results", lambda _r, _s, stack_starts: recorded.append(stack_starts)
    )
    quieted = logging.getLogger("aiokafka")  # main() quiets it for the run: put it back
    level = quieted.level
    try:
        return chaos.main(), recorded
    finally:
        quieted.setLevel(level)


def test_a_stack_that_fails_to_start_once_is_started_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _main_with_starts(monkeypatch, failures=1) == (0, [2])


def test_a_stack_that_fails_to_start_twice_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _main_with_starts(monkeypatch, failures=2) == (1, [])
