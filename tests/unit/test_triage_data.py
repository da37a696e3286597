"""The labelled sets are sound: each priority label follows CONTRACT section 5 from the
category, channel and amount, ids are unique, and no complaint a model or rule learns
from is also in a test part (which would make the held-out figures in-sample)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.triage import labelled
from services.triage.rules import PRIORITIES, TriageRules, load_rules

DATA = Path(__file__).resolve().parents[1] / "data"
TEST_PARTS = (
    DATA / "triage_test.jsonl",
    DATA / "triage_safety_test.jsonl",
    DATA / "triage_fresh_test.jsonl",
    DATA / "triage_floor_test.jsonl",
    DATA / "triage_floor_test4.jsonl",
    DATA / "triage_floor_test5.jsonl",
    DATA / "triage_floor_test6.jsonl",
    DATA / "triage_fresh_test2.jsonl",
    DATA / "triage_floor_test7.jsonl",
    DATA / "triage_fresh_test3.jsonl",
    DATA / "triage_floor_test8.jsonl",
    DATA / "triage_fresh_test4.jsonl",
    DATA / "triage_floor_test9.jsonl",
    DATA / "triage_fresh_test5.jsonl",
    DATA / "triage_floor_test10.jsonl",
    DATA / "triage_fresh_test6.jsonl",
    DATA / "triage_floor_test11.jsonl",
    DATA / "triage_fresh_test7.jsonl",
    DATA / "triage_floor_test12.jsonl",
    DATA / "triage_fresh_test8.jsonl",
    DATA / "triage_floor_test13.jsonl",
    DATA / "triage_fresh_test9.jsonl",
    DATA / "triage_fresh_test10.jsonl",
    DATA / "triage_floor_test14.jsonl",
    DATA / "triage_fresh_test11.jsonl",
    DATA / "triage_floor_test15.jsonl",
    DATA / "triage_fresh_test12.jsonl",
    DATA / "triage_floor_test16.jsonl",
    DATA / "triage_fresh_test13.jsonl",
    DATA / "triage_floor_test17.jsonl",
    DATA / "triage_fresh_test14.jsonl",
    DATA / "triage_fresh_test15.jsonl",
    DATA / "triage_floor_test18.jsonl",
)
ALL_FILES = (*labelled.DEVELOPMENT_FILES, *TEST_PARTS)


def contract_priority(example: labelled.LabelledComplaint, rules: TriageRules) -> str:
    facts = example.facts
    priority = rules.category(example.category).priority
    if facts.channel in rules.raise_channels:
        priority = PRIORITIES[max(PRIORITIES.index(priority) - 1, 0)]
    threshold = rules.large_amounts.get(facts.currency or "")
    if facts.amount is not None and threshold is not None and facts.amount >= threshold:
        priority = "P1"
    return priority


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda path: path.name)
def test_priority_labels_follow_the_contract(path: Path) -> None:
    rules = load_rules()
    examples = labelled.read_files([path])
    wrong = [e.id for e in examples if e.priority != contract_priority(e, rules)]
    assert examples
    assert wrong == []


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda path: path.name)
def test_ids_are_unique(path: Path) -> None:
    ids = [e.id for e in labelled.read_files([path])]
    assert len(ids) == len(set(ids))


def test_no_training_complaint_is_in_a_test_part() -> None:
    def key(example: labelled.LabelledComplaint) -> str:
        return "".join(example.facts.description.split()).lower()

    held_out = {key(e) for e in labelled.read_files(TEST_PARTS)}
    training = labelled.read_files(labelled.DEVELOPMENT_FILES)
    assert len(training) > 4000
    assert [e.id for e in training if key(e) in held_out] == []
