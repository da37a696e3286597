"""README's webhook-verification snippets (Python and Node.js) run as printed, against
bodies signed by shared.signing (what the notifier sends): they accept a genuine webhook
and refuse a changed body, another tenant's secret, a stale timestamp and a malformed
signature, exactly as shared.signing.verify_webhook decides. The README cannot drift."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from shared import jsonutil
from shared.signing import derive_webhook_secret, sign_webhook, verify_webhook

ROOT = Path(__file__).resolve().parents[2]
MARKER = "webhook-verification:"

PYTHON_HARNESS = """
import json as _json, sys as _sys
_cases = _json.load(_sys.stdin)
print(_json.dumps([
    verify(c["secret"], c["timestamp"], c["signature"], bytes.fromhex(c["body_hex"]))
    for c in _cases
]))
"""
NODE_HARNESS = """
const _cases = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(_cases.map(
  (c) => verify(c.secret, c.timestamp, c.signature, Buffer.from(c.body_hex, "hex")),
)));
"""


def _apis_section() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## APIs\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, "README.md has no '## APIs' section"
    return match.group(1)


def _snippet(language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```", _apis_section(), re.S | re.M)
    marked = [b for b in blocks if re.match(rf"(#|//) {MARKER} {language}\b", b)]
    assert len(marked) == 1, f"one ```{language} block marked '{MARKER} {language}' in ## APIs"
    return marked[0]


def _cases() -> list[dict[str, Any]]:
    tenant = str(uuid.uuid4())
    secret = derive_webhook_secret("test-master-key", tenant)
    other_secret = derive_webhook_secret("test-master-key", str(uuid.uuid4()))
    body = jsonutil.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "complaint.acknowledged",
            "ticket_no": "WC-20261122-000042",
            "complaint_id": str(uuid.uuid4()),
            "occurred_at": "2026-11-22T02:16:03.412877+00:00",
            "locale": "zh-CN",
            "message": "您的投诉已受理，工单号 WC-20261122-000042。",
            "data": {"category": "duplicate_charge", "priority": "P2"},
        }
    )
    now = int(time.time())

    def case(
        name: str,
        *,
        ts: int = now,
        signed_with: str = secret,
        sent: bytes = body,
        signature: str | None = None,
        timestamp: str | None = None,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "secret": secret,
            "timestamp": timestamp if timestamp is not None else str(ts),
            "signature": signature or sign_webhook(signed_with, ts, body),
            "body_hex": sent.hex(),
        }

    return [
        case("genuine"),
        case("signed 4 minutes ago", ts=now - 240),
        case("changed body", sent=body.replace("受理".encode(), "拒绝".encode())),
        case("re-serialised body", sent=json.dumps(json.loads(body)).encode()),
        case("another tenant's secret", signed_with=other_secret),
        case("stale timestamp", ts=now - 301),
        case("timestamp from the future", ts=now + 600),
        case("malformed signature", signature="sha256=abc"),
        case("upper-case hex", signature=sign_webhook(secret, now, body).upper()),
        case("timestamp header not a number", timestamp="soon"),
    ]


def _expected(cases: list[dict[str, Any]]) -> list[bool]:
    now = int(time.time())
    results = []
    for c in cases:
        if not c["timestamp"].isdigit():
            results.append(False)
            continue
        body = bytes.fromhex(c["body_hex"])
        results.append(verify_webhook(c["secret"], int(c["timestamp"]), body, c["signature"], now))
    return results


def _run(command: list[str], cases: list[dict[str, Any]]) -> list[bool]:
    done = subprocess.run(
        command, input=json.dumps(cases), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_expected_verdicts_are_what_the_cases_say() -> None:
    verdicts = dict(zip([c["name"] for c in _cases()], _expected(_cases()), strict=True))
    assert verdicts == {
        "genuine": True,
        "signed 4 minutes ago": True,
        "changed body": False,
        "re-serialised body": False,
        "another tenant's secret": False,
        "stale timestamp": False,
        "timestamp from the future": False,
        "malformed signature": False,
        "upper-case hex": False,
        "timestamp header not a number": False,
    }


def test_the_python_snippet_verifies_as_the_notifier_signs(tmp_path: Path) -> None:
    script = tmp_path / "verify.py"
    script.write_text(_snippet("python") + PYTHON_HARNESS)
    cases = _cases()
    assert _run([sys.executable, str(script)], cases) == _expected(cases)


def test_the_javascript_snippet_verifies_as_the_notifier_signs(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node (Node.js) is needed to run the README's JavaScript snippet"
    script = tmp_path / "verify.cjs"
    script.write_text(_snippet("javascript") + NODE_HARNESS)
    cases = _cases()
    assert _run([node, str(script)], cases) == _expected(cases)


def test_the_readme_states_the_key_bytes_and_the_tolerance() -> None:
    section = _apis_section()
    assert "UTF-8 bytes" in section and "not\nhex-decoded" in section
    assert "5 minutes" in section and "constant time" in section
    assert "{X-Complaints-Timestamp}." in section
