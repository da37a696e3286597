"""Retraining on agents' labels gains accuracy. A model trained without the new
development complaints is wrong on many of them; agents review one half (each review,
a correction or a confirmation of a flagged case, is what
POST /v1/cases/{ticket_no}/category records as a labelled example), and the model
retrained with those labels does better on the other half, which it never saw."""

from __future__ import annotations

from pathlib import Path

from services.triage import evaluate, labelled, train
from services.triage.classifier import Classifier
from services.triage.model import TextModel
from services.triage.rules import load_rules

DATA = Path(__file__).resolve().parents[1] / "data"


def _accuracy(model: TextModel, examples: list[labelled.LabelledComplaint], c: Classifier) -> float:
    right = sum(
        model.predict(c.prepare_text(e.facts.description)).category == e.category for e in examples
    )
    return right / len(examples)


def test_retraining_on_agents_labels_gains_model_accuracy() -> None:
    rules_only = Classifier(load_rules())
    base = labelled.read_files([DATA / "triage_labelled.jsonl"])
    new = labelled.read_files([DATA / "triage_dev.jsonl"])
    reviewed_by_agents, held_out = new[0::2], new[1::2]

    before = train.fit(base, rules_only)
    after = train.fit([*base, *reviewed_by_agents], rules_only)

    accuracy_before = _accuracy(before, held_out, rules_only)
    accuracy_after = _accuracy(after, held_out, rules_only)
    # The service's own decision (rules and model together) gains too.
    rules = load_rules()
    decided_before = evaluate.run(held_out, Classifier(rules, before)).category_accuracy
    decided_after = evaluate.run(held_out, Classifier(rules, after)).category_accuracy
    print(
        f"\nheld-out model accuracy {accuracy_before:.3f} -> {accuracy_after:.3f}, "
        f"decision {decided_before:.3f} -> {decided_after:.3f}"
    )
    assert accuracy_after >= accuracy_before + 0.03
    assert decided_after >= decided_before + 0.02
