"""The text model beside the rules: the service's numpy scoring equals scikit-learn's
own, the file round-trips without pickle, and the decision carries confidence,
needs_review, the model's features and the safety floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.triage import labelled, train
from services.triage.classifier import Classifier, ComplaintFacts
from services.triage.decision import DecisionPolicy, FraudSignals, safety_floor
from services.triage.model import DEFAULT_MODEL_PATH, Prediction, TextModel, analyse
from services.triage.rules import load_rules
from services.triage.settings import TriageSettings

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def examples() -> list[labelled.LabelledComplaint]:
    return labelled.read_files([DATA / "triage_labelled.jsonl", DATA / "triage_dev.jsonl"])


def test_analyse_gives_chinese_bigrams_english_trigrams_and_word_bigrams() -> None:
    features = analyse("钱没了 refund never arrived")
    assert {"钱", "钱没", "没了", "w:refund", " re", "nd ", "b:never arrived"} <= set(features)


def test_numpy_scores_equal_scikit_learns(examples, tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rules_only = Classifier(load_rules())
    subset = examples[::3]
    model = train.fit(subset, rules_only)
    texts = [rules_only.prepare_text(e.facts.description) for e in subset]
    vectoriser = TfidfVectorizer(analyzer=analyse, sublinear_tf=True).fit(texts)
    reference = LogisticRegression(
        C=train.REGULARISATION_C, max_iter=5000, class_weight=train.CLASS_WEIGHT
    )
    reference.fit(vectoriser.transform(texts), [e.category for e in subset])
    probe = texts[:40]
    expected = reference.predict_proba(vectoriser.transform(probe))
    model.save(tmp_path / "m.npz")
    loaded = TextModel.load(tmp_path / "m.npz")  # float32 on disk
    for text, row in zip(probe, expected, strict=True):
        got = loaded.predict(text).probabilities
        assert np.allclose([got[c] for c in reference.classes_], row, atol=1e-3)


def test_the_shipped_model_loads_and_decides_with_reasons() -> None:
    classifier = Classifier(load_rules(), TextModel.load(DEFAULT_MODEL_PATH))
    result = classifier.classify(ComplaintFacts("每次转账都要扣两块钱，太坑了", channel="app"))
    assert 0.0 <= result.confidence <= 1.0
    assert any(reason.startswith("model: ") for reason in result.reasons)


def test_uncertain_decisions_need_review() -> None:
    classifier = Classifier(
        load_rules(), TextModel.load(DEFAULT_MODEL_PATH), DecisionPolicy(review_below=0.99)
    )
    result = classifier.classify(ComplaintFacts("hmm", channel="app"))
    assert result.needs_review is True
    assert result.confidence < 0.99


@pytest.mark.parametrize(
    ("signals", "floor"),
    [
        (FraudSignals(rules_score=2.0, rules_min_score=2.0, model_probability=0.2), "P1"),
        (FraudSignals(rules_score=2.0, rules_min_score=2.0, model_probability=None), "P1"),
        # Fraud words the model all but rules out (quoted in another story): a trace.
        (FraudSignals(rules_score=2.0, rules_min_score=2.0, model_probability=0.03), "P2"),
        (FraudSignals(rules_score=2.0, rules_min_score=2.0, model_probability=0.06), "P1"),
        (FraudSignals(rules_score=0.0, rules_min_score=2.0, model_probability=0.5), "P1"),
        (FraudSignals(rules_score=0.0, rules_min_score=2.0, model_probability=0.3), "P1"),
        # The model alone: P1 from 0.25 (the twelfth floor round; 0.3 before).
        (FraudSignals(rules_score=0.0, rules_min_score=2.0, model_probability=0.25), "P1"),
        (FraudSignals(rules_score=0.0, rules_min_score=2.0, model_probability=0.24), "P2"),
        # A weak fraud term ("someone", "骗人的活动") is a trace unless the model all but
        # rules fraud out (the sixteenth round); alone, without a model, it is one.
        (FraudSignals(rules_score=1.0, rules_min_score=2.0, model_probability=0.06), "P2"),
        (FraudSignals(rules_score=1.0, rules_min_score=2.0, model_probability=None), "P2"),
        (FraudSignals(rules_score=1.0, rules_min_score=2.0, model_probability=0.0), None),
        (FraudSignals(rules_score=0.0, rules_min_score=2.0, model_probability=0.2), "P2"),
        (FraudSignals(rules_score=0.0, rules_min_score=2.0, model_probability=0.01), None),
        # A strong fraud term stands even where the model reads another story.
        (
            FraudSignals(
                rules_score=3.0, rules_min_score=2.0, model_probability=0.01, rules_strong=True
            ),
            "P1",
        ),
    ],
)
def test_safety_floor(signals: FraudSignals, floor: str | None) -> None:
    assert safety_floor(signals, DecisionPolicy())[0] == floor


def test_a_strong_term_alone_needs_the_model_when_the_policy_says_so() -> None:
    signals = FraudSignals(
        rules_score=3.0, rules_min_score=2.0, model_probability=0.01, rules_strong=True
    )
    assert safety_floor(signals, DecisionPolicy(strong_term_p1=False))[0] == "P2"


def test_theft_told_in_passing_inside_another_complaint_is_p1() -> None:
    # With the shipped model, on a story mostly about support.
    result = (
        TriageSettings()
        .classifier()
        .classify(
            ComplaintFacts(
                "Your support line kept me waiting for an hour and the agent was rude. Oh and "
                "someone transferred $60 out of my wallet last night.",
                channel="app",
            )
        )
    )
    assert result.priority == "P1"


def test_the_floor_lifts_a_low_category_that_speaks_of_stolen_money() -> None:
    # "someone" and the clicked link are fraud evidence even where another category wins.
    result = Classifier(load_rules()).classify(
        ComplaintFacts(
            "The app keeps crashing after I clicked the link, and my balance is gone", channel="app"
        )
    )
    assert result.priority in ("P1", "P2")


def test_a_doubtful_decision_takes_the_more_urgent_priority() -> None:
    prediction = Prediction(
        probabilities={"fees": 0.6, "transfer_delay": 0.3, "other": 0.1},
        category="fees",
        top_features=(),
    )

    class Model:
        def predict(self, text: str) -> Prediction:
            return prediction

    facts = ComplaintFacts("the payment is somewhere in between", channel="app")
    hedged = Classifier(
        load_rules(), Model(), DecisionPolicy(rule_bonus_applies=0.0, priority_hedge=0.2)
    )
    plain = Classifier(load_rules(), Model(), DecisionPolicy(rule_bonus_applies=0.0))
    result = hedged.classify(facts)
    assert result.category == "fees"
    assert result.priority == "P2"  # transfer_delay's, which the model gives p=0.30
    assert any("transfer_delay p=0.30 -> priority P2" in reason for reason in result.reasons)
    assert plain.classify(facts).priority == "P3"


def test_the_priority_hedge_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # Off by default: the priority follows CONTRACT section 5 (plus the safety floor).
    assert TriageSettings().decision_policy().priority_hedge is None
    monkeypatch.setenv("TRIAGE_PRIORITY_HEDGE", "0.2")
    assert TriageSettings().decision_policy().priority_hedge == 0.2
