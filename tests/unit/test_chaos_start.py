"""`make chaos` at its start: a service that exits says why (its log), not just that it did."""

from __future__ import annotations

import asyncio
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
