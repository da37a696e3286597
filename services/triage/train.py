"""``python -m services.triage train``: fit the text model from labelled complaints.

scikit-learn does the fitting (TF-IDF over model.analyse's character n-grams, then a
multinomial logistic regression); the result is written as model.TextModel's file, which
the service scores without scikit-learn. The text is prepared exactly as the classifier
prepares it (the rules' normalisation and typo repair), so training and serving read the
same characters. Training is deterministic: the same examples give the same file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from services.triage import evaluate
from services.triage.classifier import Classifier
from services.triage.decision import DecisionPolicy
from services.triage.evaluate import Report
from services.triage.labelled import LabelledComplaint
from services.triage.model import TextModel, analyse
from services.triage.rules import TriageRules

# Inverse regularisation strength, chosen on the development part (README "Tests"):
# larger fits the examples harder, smaller generalises more.
REGULARISATION_C = 20.0
# Every category weighs the same in training, however many examples it has: the safety
# examples make fraud several times as common as any other category, which would tilt
# every doubtful complaint towards it (chosen on the development part).
CLASS_WEIGHT = "balanced"


def fit(
    examples: Sequence[LabelledComplaint],
    classifier: Classifier,
    *,
    c: float = REGULARISATION_C,
    sources: Sequence[str] = (),
) -> TextModel:
    # Imported here: the service itself never needs scikit-learn.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len({e.category for e in examples}) < 2:
        raise ValueError("training needs examples of at least two categories")
    texts = [classifier.prepare_text(e.facts.description) for e in examples]
    labels = [e.category for e in examples]
    vectoriser = TfidfVectorizer(analyzer=analyse, sublinear_tf=True)
    matrix = vectoriser.fit_transform(texts)
    regression = LogisticRegression(C=c, max_iter=5000, class_weight=CLASS_WEIGHT)
    regression.fit(matrix, labels)
    return TextModel(
        classes=tuple(str(c) for c in regression.classes_),
        vocabulary=tuple(str(f) for f in vectoriser.get_feature_names_out()),
        idf=vectoriser.idf_,
        coef=regression.coef_,
        intercept=regression.intercept_,
        meta={
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "examples": len(examples),
            "per_category": dict(sorted(Counter(labels).items())),
            "sources": list(sources),
            "c": c,
        },
    )


def cross_validate(
    examples: Sequence[LabelledComplaint],
    rules: TriageRules,
    *,
    folds: int = 5,
    c: float = REGULARISATION_C,
    policy: DecisionPolicy | None = None,
) -> Report:
    """Each example classified by a model that never saw it (stratified folds, fixed
    seed). The rules are not refitted: on data they were written from, this measures
    the model's share honestly and the rules' in-sample."""
    from sklearn.model_selection import StratifiedKFold

    rules_only = Classifier(rules)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=2026)
    labels = [e.category for e in examples]
    outcomes = []
    for train_rows, test_rows in splitter.split(labels, labels):
        model = fit([examples[i] for i in train_rows], rules_only, c=c)
        classifier = Classifier(rules, model, policy)
        outcomes += evaluate.run([examples[i] for i in test_rows], classifier).outcomes
    return evaluate.Report(tuple(outcomes))
