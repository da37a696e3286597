"""``classify_lines``: the JSON Lines batch classification behind ``classify FILE``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.triage.classifier import Classifier
from services.triage.classify_cli import classify_lines
from services.triage.rules import load_rules
from services.triage.settings import TriageSettings

LABELLED = Path(__file__).resolve().parents[1] / "data" / "triage_labelled.jsonl"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_rules())


def run(lines: list[str], classifier: Classifier) -> tuple[int, list[dict]]:
    out = io.StringIO()
    errors = classify_lines(lines, out, classifier)
    return errors, [json.loads(line) for line in out.getvalue().splitlines()]


def line(**fields: object) -> str:
    return json.dumps(fields, ensure_ascii=False) + "\n"


def test_one_answer_per_line_in_order(classifier: Classifier) -> None:
    errors, answers = run(
        [
            line(id="a", description="钱包被盗刷了", channel="app"),
            line(
                id="b",
                description="I was charged twice",
                channel="regulator",
                amount="20",
                currency="USD",
            ),
            line(id="c", description="客服电话一直打不通", channel="phone"),
        ],
        classifier,
    )
    assert errors == 0
    assert [(a["id"], a["category"], a["priority"]) for a in answers] == [
        ("a", "fraud", "P1"),
        ("b", "duplicate_charge", "P1"),
        ("c", "customer_service", "P4"),
    ]
    assert all(set(answer) == {"id", "category", "priority", "reasons"} for answer in answers)
    assert all(answer["reasons"] for answer in answers)


def test_bad_lines_yield_errors_and_processing_continues(classifier: Classifier) -> None:
    errors, answers = run(
        [
            "{not json\n",
            line(id="no-description", channel="app"),
            "[1, 2, 3]\n",
            line(id="ok", description="扫码付款一直失败", channel="app"),
            line(id="bad-amount", description="扫码付款一直失败", channel="app", amount="lots"),
            line(id=7, description="  ", channel="app"),
        ],
        classifier,
    )
    assert errors == 5
    assert len(answers) == 6
    assert answers[0]["id"] is None and answers[0]["error"].startswith("invalid JSON")
    assert answers[1] == {"id": "no-description", "error": answers[1]["error"]}
    assert "description" in answers[1]["error"]
    assert answers[2] == {"id": None, "error": "expected a JSON object"}
    assert answers[3]["category"] == "payment_failure"
    assert answers[4]["id"] == "bad-amount" and "amount" in answers[4]["error"]
    assert answers[5]["id"] == 7 and "description" in answers[5]["error"]


def test_blank_lines_are_skipped(classifier: Classifier) -> None:
    errors, answers = run(
        ["\n", "   \n", line(id="x", description="退款一直没到", channel="app")], classifier
    )
    assert errors == 0
    assert [answer["id"] for answer in answers] == ["x"]


def test_an_amount_written_as_a_json_number_stays_exact(classifier: Classifier) -> None:
    raw = '{"id": "n", "description": "扫码付款一直失败", "channel": "app", "amount": 10000.00, '
    raw += '"currency": "CNY"}\n'
    errors, answers = run([raw], classifier)
    assert errors == 0
    assert answers[0]["priority"] == "P1"


def test_output_keeps_chinese_readable(classifier: Classifier) -> None:
    out = io.StringIO()
    classify_lines([line(id="z", description="钱包被盗刷了", channel="app")], out, classifier)
    assert "盗刷" in out.getvalue()


def test_the_labelled_set_classifies_in_order_without_errors(classifier: Classifier) -> None:
    lines = LABELLED.read_text(encoding="utf-8").splitlines(keepends=True)
    errors, answers = run(lines, classifier)
    assert errors == 0
    assert [answer["id"] for answer in answers] == [
        json.loads(text)["id"] for text in lines if text.strip()
    ]


def test_the_command_line_matches_the_service_code_path(
    classifier: Classifier, tmp_path: Path
) -> None:
    rows = [json.loads(text) for text in LABELLED.read_text(encoding="utf-8").splitlines()[:25]]
    source = tmp_path / "complaints.jsonl"
    source.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n")

    done = subprocess.run(
        [sys.executable, "-m", "services.triage", "classify", str(source)],
        capture_output=True,
        text=True,
        check=True,
    )

    printed = [json.loads(text) for text in done.stdout.splitlines()]
    # The service's own classifier: the rules and the shipped model.
    _, expected = run([json.dumps(row) for row in rows], TriageSettings().classifier())
    assert printed == expected
    assert set(printed[0]) == {"id", "category", "priority", "reasons"}
