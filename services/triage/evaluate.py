"""``python -m services.triage evaluate FILE``: how well triage does on labelled complaints.

Prints category and priority accuracy, P1 recall, the safety floor's recall (complaints
labelled P1 or P2 that came out P2 or higher), how many decisions asked for review and
how accurate the others were, per-category precision and recall, and the confusion
matrix (rows: the label, columns: the decision). The classification is the service's
own code path (Classifier.classify).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.triage.classifier import Classification, Classifier
from services.triage.labelled import LabelledComplaint
from services.triage.rules import CATEGORIES

# Short column names for the confusion matrix, in CATEGORIES order.
_SHORT = (
    "fra",
    "dup",
    "frz",
    "trf",
    "top",
    "ref",
    "prv",
    "fee",
    "pay",
    "acc",
    "trm",
    "app",
    "cs",
    "oth",
)


@dataclass(frozen=True)
class Outcome:
    expected_category: str
    expected_priority: str
    category: str
    priority: str
    confidence: float
    needs_review: bool


@dataclass(frozen=True)
class Report:
    outcomes: tuple[Outcome, ...]

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def category_accuracy(self) -> float:
        return _share(self.outcomes, lambda o: o.category == o.expected_category)

    @property
    def priority_accuracy(self) -> float:
        return _share(self.outcomes, lambda o: o.priority == o.expected_priority)

    @property
    def p1_recall(self) -> float | None:
        p1 = [o for o in self.outcomes if o.expected_priority == "P1"]
        return _share(p1, lambda o: o.priority == "P1") if p1 else None

    @property
    def floor_recall(self) -> float | None:
        urgent = [o for o in self.outcomes if o.expected_priority in ("P1", "P2")]
        return _share(urgent, lambda o: o.priority in ("P1", "P2")) if urgent else None

    @property
    def review_share(self) -> float:
        return _share(self.outcomes, lambda o: o.needs_review)

    @property
    def accuracy_without_review(self) -> float | None:
        sure = [o for o in self.outcomes if not o.needs_review]
        return _share(sure, lambda o: o.category == o.expected_category) if sure else None

    def summary(self) -> dict[str, float | int | None]:
        return {
            "complaints": self.total,
            "category_accuracy": _round(self.category_accuracy),
            "priority_accuracy": _round(self.priority_accuracy),
            "p1_recall": _round(self.p1_recall),
            "p2_floor_recall": _round(self.floor_recall),
            "needs_review_share": _round(self.review_share),
            "accuracy_without_review": _round(self.accuracy_without_review),
        }


def run(examples: Sequence[LabelledComplaint], classifier: Classifier) -> Report:
    return Report(tuple(_outcome(e, classifier.classify(e.facts)) for e in examples))


def _outcome(example: LabelledComplaint, result: Classification) -> Outcome:
    return Outcome(
        example.category,
        example.priority,
        result.category,
        result.priority,
        result.confidence,
        result.needs_review,
    )


def render(report: Report) -> str:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    expected = [o.expected_category for o in report.outcomes]
    decided = [o.category for o in report.outcomes]
    lines = [f"{key:24} {value}" for key, value in report.summary().items()]
    precision, recall, _, support = precision_recall_fscore_support(
        expected, decided, labels=list(CATEGORIES), zero_division=0
    )
    lines += ["", f"{'category':20} {'precision':>9} {'recall':>7} {'support':>8}"]
    for name, p, r, n in zip(CATEGORIES, precision, recall, support, strict=True):
        lines.append(f"{name:20} {p:9.3f} {r:7.3f} {n:8d}")
    matrix = confusion_matrix(expected, decided, labels=list(CATEGORIES))
    lines += ["", "confusion (rows: label, columns: decision)"]
    lines.append(" " * 5 + "".join(f"{s:>5}" for s in _SHORT))
    for short, row in zip(_SHORT, matrix, strict=True):
        lines.append(f"{short:>5}" + "".join(f"{v:5d}" if v else "    ." for v in row))
    return "\n".join(lines)


def _share(items: Sequence[Outcome], test) -> float:
    return sum(1 for item in items if test(item)) / len(items) if items else 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
