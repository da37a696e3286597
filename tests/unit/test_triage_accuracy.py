"""Triage accuracy on labelled complaints: the project's own set, and the customer's
examples (``triage_examples.jsonl``) wherever this checkout can see them: the file named
by ``TRIAGE_EXAMPLES``, or ``shared/data/`` beside the repository. The test ids show which
sets ran.

Run with ``pytest -s`` to see the figures; they are also in any failure message.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from services.triage.classifier import Classifier, ComplaintFacts
from services.triage.rules import CATEGORIES, TriageRules, load_rules

LABELLED = Path(__file__).resolve().parents[1] / "data" / "triage_labelled.jsonl"
CUSTOMER_EXAMPLES = [
    path
    for path in (
        Path(os.environ.get("TRIAGE_EXAMPLES", "")),
        Path(__file__).resolve().parents[3] / "shared" / "data" / "triage_examples.jsonl",
    )
    if path.is_file()
][:1]
MIN_ACCURACY = 0.95


@dataclass
class Score:
    name: str
    total: int = 0
    category_hits: int = 0
    priority_hits: int = 0
    misses: list[str] = field(default_factory=list)
    under_prioritised: list[str] = field(default_factory=list)

    @property
    def category_accuracy(self) -> float:
        return self.category_hits / self.total

    @property
    def priority_accuracy(self) -> float:
        return self.priority_hits / self.total

    def summary(self) -> str:
        lines = [
            f"{self.name}: {self.total} complaints, "
            f"category accuracy {self.category_accuracy:.3f} ({self.category_hits}/{self.total}), "
            f"priority accuracy {self.priority_accuracy:.3f} ({self.priority_hits}/{self.total})"
        ]
        lines += [f"  miss {miss}" for miss in self.misses]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def rules() -> TriageRules:
    return load_rules()


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def must_be_p1(row: dict, rules: TriageRules) -> bool:
    if row["expected_category"] == "fraud":
        return True
    threshold = rules.large_amounts.get(str(row.get("currency", "")).upper())
    return bool(row.get("amount")) and threshold is not None and Decimal(row["amount"]) >= threshold


def evaluate(path: Path, rules: TriageRules) -> Score:
    classifier = Classifier(rules)
    score = Score(path.name)
    for row in read_jsonl(path):
        result = classifier.classify(ComplaintFacts.from_mapping(row))
        score.total += 1
        score.category_hits += result.category == row["expected_category"]
        score.priority_hits += result.priority == row["expected_priority"]
        if (result.category, result.priority) != (
            row["expected_category"],
            row["expected_priority"],
        ):
            score.misses.append(
                f"{row['id']}: expected {row['expected_category']}/{row['expected_priority']}, "
                f"got {result.category}/{result.priority}: {row['description']}"
            )
        if must_be_p1(row, rules) and result.priority != "P1":
            score.under_prioritised.append(f"{row['id']}: {result.priority}: {row['description']}")
    return score


def check(score: Score) -> None:
    print("\n" + score.summary())
    assert score.total > 0, f"{score.name} is empty"
    assert score.category_accuracy >= MIN_ACCURACY, score.summary()
    assert score.priority_accuracy >= MIN_ACCURACY, score.summary()
    assert not score.under_prioritised, "fraud or large-amount complaints below P1:\n" + "\n".join(
        score.under_prioritised
    )


@pytest.mark.parametrize("dataset", [LABELLED, *CUSTOMER_EXAMPLES], ids=lambda path: path.name)
def test_accuracy(rules: TriageRules, dataset: Path) -> None:
    check(evaluate(dataset, rules))


def test_own_labelled_set_is_broad_enough() -> None:
    rows = read_jsonl(LABELLED)
    per_category = Counter(row["expected_category"] for row in rows)
    assert len(rows) >= 220
    assert {
        category: per_category[category] for category in CATEGORIES if per_category[category] < 10
    } == {}
    assert set(per_category) <= set(CATEGORIES)
    assert len({row["id"] for row in rows}) == len(rows), "ids must be unique"
    channels = Counter(row["channel"] for row in rows)
    assert channels["regulator"] and channels["social_media"] and channels["consumer_association"]
    assert any(row.get("category_hint") not in (None, row["expected_category"]) for row in rows)
