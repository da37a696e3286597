"""How the rules and the text model make one decision, how sure it is, and the safety
floor on priority. Pure functions over the two halves' outputs; no I/O.

Category. Each half has a say: the model's probability for every category, plus a bonus
for the category the rules chose, larger when a rule *applied* (a strong term, or a score
that held its own) than when the rules only saw a weak signal. The highest sum wins.
So a clear rule hit stands unless the model is confident of something else, and where
the rules are silent or weak the model decides.

Confidence is that winning sum over the most it could have been, so it reads as a
probability: both halves agreeing on a clear case is near 1, a weak rule the model
doubts is near 0.3. Below ``review_below`` the decision ``needs_review``.

Safety floor. A complaint that speaks of money taken, lost or moved without consent, an
account taken over, or a scam is never below P2, and is P1 when the rules or the model
see fraud, whatever the category. "The rules see fraud": a strong fraud term matched,
or the fraud lexicon reaches the minimum score (even when another category took
precedence or outweighed it) and the model gives fraud at least ``fraud_p1_with_rules``.
"The model sees fraud": its fraud probability reaches ``fraud_p1``. A weaker trace of
either puts the floor at P2: the fraud lexicon at its minimum score, a weaker fraud term
("someone", "骗人的活动") unless the model gives fraud less than ``fraud_p1_with_rules``,
or a fraud probability of ``fraud_p2``.

Priority hedge (opt-in, ``TRIAGE_PRIORITY_HEDGE``). Where the model gives a more urgent
category than the decided one at least ``priority_hedge``, the complaint takes that
category's priority (classifier.py): the category stays the likeliest one, the clock the
safest one. It departs from the contract's priority rule, so it is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.triage.model import Prediction, readable

RuleSupport = Literal["applies", "weak", "none"]


@dataclass(frozen=True)
class DecisionPolicy:
    # Chosen on the development data only: the model trained without the development
    # part scored on it, and without the safety development part on that (README
    # "Tests"). The test parts played no part.
    rule_bonus_applies: float = 0.2
    rule_bonus_weak: float = 0.0
    review_below: float = 0.5
    # fraud_p1 and fraud_p1_with_rules were lowered from 0.5 and 0.2 on the second
    # floor development set (triage_floor_dev.jsonl, scored by a model trained without
    # the development parts): P1 recall of its stolen-money complaints 0.846 -> 0.900,
    # its loose-fraud-word complaints' priority unchanged (0.80), the development part's
    # priority 0.898 -> 0.893. fraud_p2 was lowered from 0.2 the same way, a session
    # later: its stolen-money complaints at P2 or higher 0.989 -> 0.996 (0.1 would reach
    # 1.0 but cost the development part's priority 0.893 -> 0.860; 0.15 costs 0.886).
    # fraud_p1 then 0.3 -> 0.25 in the twelfth floor round, each development set scored by
    # a model trained on all the others (the shipped model's training less that set):
    # the safety and floor sets' 2,179 stolen-money complaints at P1 0.9872 -> 0.9908, their 540
    # non-fraud complaints' priority (0.8537) and triage_dev's (0.8548) unchanged; 0.2
    # gains 0.0009 more and costs triage_dev's priority (0.85). (Scored by a model trained
    # without the development part and the floor sets, earlier rounds saw 0.25 cost
    # triage_dev's priority 0.881 -> 0.874, and kept 0.3.)
    fraud_p1: float = 0.25
    fraud_p2: float = 0.15
    # The rules' fraud signal makes a complaint P1 unless the model all but rules fraud
    # out: fraud words quoted in another story ("显示非本人操作" at a failed face scan,
    # "骗人的活动" of a coupon) are then a trace (P2), not a fraud. Lowered from 0.1 in
    # the eighth floor round, with a model trained without the development part and the
    # floor development sets: the floor sets' 1,279 stolen-money complaints at P1
    # 0.934 -> 0.946, their non-fraud complaints' priority (0.803) and the development
    # part's (0.881) unchanged; 0.0 would cost both (0.797, 0.874).
    # The same bound takes the P2 floor from a weaker fraud term the model all but rules
    # out (sixteenth round: on the seven development sets the model was not trained on,
    # 1,809 complaints, priority 0.9585 -> 0.9596, their 1,040 stolen-money complaints
    # at P2 or higher unchanged, 1,039).
    fraud_p1_with_rules: float = 0.05
    # A strong fraud term ("被转走", "wasn't me") makes a complaint P1 whatever the model
    # says: theft told in one clause of a complaint about something else reads to the
    # model as that something else. Chosen on the fifth floor development set (model
    # not trained on it): its stolen-money P1 recall 0.890 -> 0.900; the development
    # part's priority 0.869 -> 0.867.
    strong_term_p1: bool = True
    # A category the model gives at least this probability lends its priority when it is
    # more urgent than the decision's: a doubtful decision errs towards the customer.
    # Off by default (None): the priority then follows CONTRACT section 5 from the
    # category, channel and amount, with the safety floor as the only exception.
    priority_hedge: float | None = None


@dataclass(frozen=True)
class CategoryDecision:
    category: str
    confidence: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class FraudSignals:
    rules_score: float  # the fraud lexicon's text score (0 when no fraud term matched)
    rules_min_score: float  # what a category needs to apply
    model_probability: float | None  # None without a model
    rules_strong: bool = False  # a strong fraud term matched: it names the theft itself


def decide_category(
    rules_category: str,
    support: RuleSupport,
    prediction: Prediction | None,
    policy: DecisionPolicy,
) -> CategoryDecision:
    if prediction is None:
        # Rules alone: how clear their signal was is all there is to go on.
        confidence = {"applies": 0.8, "weak": 0.45, "none": 0.3}[support]
        return CategoryDecision(rules_category, confidence, ())
    bonus = _bonus(support, policy)
    combined = dict(prediction.probabilities)
    combined[rules_category] = combined.get(rules_category, 0.0) + bonus
    # Ties go to the rules' category: it is the explainable one.
    winner = max(combined, key=lambda c: (combined[c], c == rules_category))
    confidence = combined[winner] / (1.0 + bonus)
    features = ", ".join(f"'{readable(c.feature)}'" for c in prediction.top_features)
    reasons = [
        f"model: {prediction.category} p={prediction.probability(prediction.category):.2f}"
        + (f" (top features {features})" if features else "")
    ]
    if winner != rules_category:
        reasons.append(
            f"model's {winner} (p={prediction.probability(winner):.2f}) outweighs the rules' "
            f"{rules_category} ({support}) -> {winner}"
        )
    elif prediction.category != rules_category:
        reasons.append(
            f"rules' {rules_category} ({support}) outweighs the model's {prediction.category}"
        )
    return CategoryDecision(winner, round(confidence, 3), tuple(reasons))


def _bonus(support: RuleSupport, policy: DecisionPolicy) -> float:
    if support == "applies":
        return policy.rule_bonus_applies
    if support == "weak":
        return policy.rule_bonus_weak
    return 0.0


def needs_review(confidence: float, policy: DecisionPolicy) -> bool:
    return confidence < policy.review_below


def safety_floor(signals: FraudSignals, policy: DecisionPolicy) -> tuple[str | None, str | None]:
    """The highest priority the complaint may have at least, and why (None: no floor)."""
    p = signals.model_probability
    rules_see_fraud = signals.rules_score >= signals.rules_min_score
    if policy.strong_term_p1 and signals.rules_strong and rules_see_fraud:
        return "P1", "safety floor: a strong fraud term -> P1"
    if rules_see_fraud and (p is None or p >= policy.fraud_p1_with_rules):
        return (
            "P1",
            f"safety floor: the fraud rules see fraud (score {signals.rules_score:g}) -> P1",
        )
    if p is not None and p >= policy.fraud_p1:
        return "P1", f"safety floor: the model sees fraud (p={p:.2f}) -> P1"
    if rules_see_fraud or (
        signals.rules_score > 0 and (p is None or p >= policy.fraud_p1_with_rules)
    ):
        return "P2", "safety floor: a fraud term matched -> at least P2"
    if p is not None and p >= policy.fraud_p2:
        return "P2", f"safety floor: the model sees a trace of fraud (p={p:.2f}) -> at least P2"
    return None, None


def apply_floor(priority: str, floor: str | None) -> str:
    # "P1" < "P2" < ...: the smaller string is the higher priority.
    return min(priority, floor) if floor else priority
