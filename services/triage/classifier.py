"""Complaint triage: category, priority, reasons and due times. Pure domain, no I/O.

How a category is chosen (the knobs live in rules.toml):

1. The description is normalised (full-width to half-width, traditional to simplified
   Chinese, lower case, contractions unified) and one-letter English slips of a short
   list of signal words are repaired ("refnd" -> "refund").
2. Every lexicon term of every category is searched. A match lying inside a longer
   match does not count: the longer wording is the meaning ("免手续费" is a promise, not
   a fee; "提现手续费" is a fee, not a withdrawal; "诈骗电话" is a leak, not a fraud).
3. In negatable categories a keyword shortly after a negation cue in the same clause is
   ignored ("not a scam", "不是诈骗", "没有被盗"), and so is one right after a
   figurative frame ("feels like theft", "this fee is a scam") or right before a
   figurative ending ("跟诈骗有什么区别", "stealing from people").
4. A category's text score is the sum of the weights of its distinct matched terms,
   minus its counter-terms (context that speaks against it).
5. A category applies when its score (text plus a modest weight for a matching
   category_hint) reaches ``min_score``, and it matched a strong term or its text
   score is at least ``dominance_ratio`` of the strongest text score of any category
   but ``other`` (a question or a suggestion never outweighs a problem): an incidental
   word does not compete with a strong signal. Among the categories that apply, the
   contract's precedence decides. When none applies, the strongest weak signal wins
   (the hint breaks ties); with no signal at all the complaint is ``other``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from services.triage.decision import (
    DecisionPolicy,
    FraudSignals,
    RuleSupport,
    apply_floor,
    decide_category,
    needs_review,
    safety_floor,
)
from services.triage.model import Prediction, TextModel
from services.triage.rules import (
    CATEGORIES,
    PRIORITIES,
    CategoryRule,
    Negation,
    Normalisation,
    Pattern,
    Term,
    TriageRules,
)

FALLBACK_CATEGORY = "other"


@dataclass(frozen=True)
class ComplaintFacts:
    description: str
    channel: str
    amount: Decimal | None = None
    currency: str | None = None
    category_hint: str | None = None
    merchant: str | None = None
    transaction_ref: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ComplaintFacts:
        """Build from the contract's complaint fields; unknown keys (id, ...) are ignored."""
        description = data.get("description")
        if not isinstance(description, str) or not description.strip():
            raise ValueError("description is required and must be a non-empty string")
        currency = _optional_text(data, "currency")
        return cls(
            description=description,
            channel=(_optional_text(data, "channel") or "").lower(),
            amount=_amount(data.get("amount")),
            currency=currency.upper() if currency else None,
            category_hint=_optional_text(data, "category_hint"),
            merchant=_optional_text(data, "merchant"),
            transaction_ref=_optional_text(data, "transaction_ref"),
        )


@dataclass(frozen=True)
class Classification:
    category: str
    priority: str
    reasons: tuple[str, ...]
    regulatory_issue: str
    actions: tuple[str, ...]
    confidence: float = 1.0  # 0-1, how sure the decision is (decision.py)
    needs_review: bool = False  # below the policy's threshold: a human categorises it


@dataclass(frozen=True)
class DueTimes:
    first_response_due: datetime
    resolution_due: datetime


class Classifier:
    """The rules, and the text model beside them when one is given (decision.py says how
    the two make one decision). Without a model the rules decide alone."""

    def __init__(
        self,
        rules: TriageRules,
        model: TextModel | None = None,
        policy: DecisionPolicy | None = None,
    ) -> None:
        self._rules = rules
        self._model = model
        self._policy = policy or DecisionPolicy()
        self._strong_weight = rules.scoring.weights["strong"]
        lexicon = frozenset(
            word for rule in rules.categories for term in rule.terms for word in term.words
        )
        self._typos = _TypoRepair(rules.normalisation, lexicon)

    @property
    def has_model(self) -> bool:
        return self._model is not None

    def prepare_text(self, description: str) -> str:
        """The text both halves read: normalised, typos repaired (train.py uses it too)."""
        return self._prepare(description)[0]

    def classify(self, facts: ComplaintFacts) -> Classification:
        text, typo_reasons = self._prepare(facts.description)
        evidence, negation_reasons = _Matcher(self._rules, text).run()
        rules_category, support, category_reasons = self._decide(evidence, facts.category_hint)
        prediction = self._model.predict(text) if self._model else None
        decision = decide_category(rules_category, support, prediction, self._policy)
        category = decision.category
        priority, priority_reasons = self._priority(category, facts)
        if prediction is not None:
            priority = self._hedge(priority, category, prediction, facts, priority_reasons)
        floor, floor_reason = safety_floor(
            FraudSignals(
                rules_score=evidence["fraud"].score,
                rules_min_score=self._rules.scoring.min_score,
                rules_strong=evidence["fraud"].strongest_term >= self._strong_weight,
                model_probability=prediction.probability("fraud") if prediction else None,
            ),
            self._policy,
        )
        if floor_reason and apply_floor(priority, floor) != priority:
            priority = apply_floor(priority, floor)
            priority_reasons.append(floor_reason)
        rule = self._rules.category(category)
        return Classification(
            category=category,
            priority=priority,
            reasons=(
                *typo_reasons,
                *negation_reasons,
                *category_reasons,
                *decision.reasons,
                *priority_reasons,
            ),
            regulatory_issue=rule.regulatory_issue,
            actions=rule.actions,
            confidence=decision.confidence,
            needs_review=needs_review(decision.confidence, self._policy),
        )

    def due_times(self, priority: str, received_at: datetime) -> DueTimes:
        if priority not in self._rules.due_hours:
            raise ValueError(f"unknown priority '{priority}', expected one of {list(PRIORITIES)}")
        if received_at.tzinfo is None:
            # SLA clocks compare instants; a naive time would silently mean "local time".
            raise ValueError("received_at must be timezone-aware")
        hours = self._rules.due_hours[priority]
        return DueTimes(
            first_response_due=received_at + _hours(hours.first_response),
            resolution_due=received_at + _hours(hours.resolution),
        )

    # ------------------------------------------------------------ steps

    def _prepare(self, description: str) -> tuple[str, list[str]]:
        text = self._rules.normalisation.normalise(description)
        text, repairs = self._typos.repair(text)
        return text, [f"read '{typo}' as '{word}'" for typo, word in repairs]

    def _decide(
        self, evidence: Mapping[str, _Evidence], hint: str | None
    ) -> tuple[str, RuleSupport, list[str]]:
        scoring = self._rules.scoring
        reasons: list[str] = []
        hint = self._valid_hint(hint, reasons)
        totals = {
            name: ev.score + (scoring.hint_weight if name == hint else 0.0)
            for name, ev in evidence.items()
        }
        # The fallback (a question, a suggestion) never outweighs a problem the complaint
        # names: "请问为什么转出700不需要我的指纹？" is a question, and first a theft.
        strongest = max(
            (ev.score for name, ev in evidence.items() if name != FALLBACK_CATEGORY),
            default=0.0,
        )
        applies = [
            name
            for name in CATEGORIES
            if evidence[name].score > 0
            and totals[name] >= scoring.min_score
            and self._not_incidental(evidence[name], strongest)
        ]
        if applies:
            winner = applies[0]
            reasons += evidence[winner].reasons
            reasons.append(f"{winner} applies with score {totals[winner]:g}")
            reasons += [
                f"{name} also applies (score {totals[name]:g}); {winner} takes precedence"
                for name in applies[1:]
            ]
            reasons += self._outweighed(evidence, totals, applies, strongest)
            support: RuleSupport = "applies"
        else:
            winner = self._weak_winner(evidence, totals, reasons)
            support = "weak" if evidence[winner].score > 0 else "none"
        reasons += _hint_reasons(hint, winner, scoring.hint_weight)
        return winner, support, reasons

    def _not_incidental(self, evidence: _Evidence, strongest: float) -> bool:
        """A strong term always counts; weaker evidence must hold its own against the
        strongest category, so an incidental word does not win by precedence."""
        scoring = self._rules.scoring
        return (
            evidence.strongest_term >= scoring.weights["strong"]
            or evidence.score >= scoring.dominance_ratio * strongest
        )

    def _valid_hint(self, hint: str | None, reasons: list[str]) -> str | None:
        if hint is None or hint in CATEGORIES:
            return hint
        reasons.append(f"category_hint '{hint}' is not a known category -> ignored")
        return None

    def _outweighed(
        self,
        evidence: Mapping[str, _Evidence],
        totals: Mapping[str, float],
        applies: list[str],
        strongest: float,
    ) -> list[str]:
        min_score = self._rules.scoring.min_score
        return [
            f"{name} (score {totals[name]:g}, no strong term) is outweighed by the strongest "
            f"signal (score {strongest:g}) -> not applied"
            for name in CATEGORIES
            if name not in applies and evidence[name].score > 0 and totals[name] >= min_score
        ]

    def _weak_winner(
        self,
        evidence: Mapping[str, _Evidence],
        totals: Mapping[str, float],
        reasons: list[str],
    ) -> str:
        signalled = [name for name in CATEGORIES if evidence[name].score > 0]
        if not signalled:
            reasons.append(f"no category keywords matched -> {FALLBACK_CATEGORY}")
            return FALLBACK_CATEGORY
        # max() keeps the first of equals, and CATEGORIES is in precedence order.
        winner = max(signalled, key=lambda name: totals[name])
        reasons += evidence[winner].reasons
        reasons.append(
            f"no category reached the minimum score {self._rules.scoring.min_score:g}; "
            f"strongest weak signal is {winner} (score {totals[winner]:g})"
        )
        return winner

    def _priority(self, category: str, facts: ComplaintFacts) -> tuple[str, list[str]]:
        rules = self._rules
        priority = rules.category(category).priority
        reasons = [f"base priority of {category} is {priority}"]
        if facts.channel in rules.raise_channels:
            raised = _raise(priority)
            if raised == priority:
                reasons.append(f"channel {facts.channel}: priority stays {priority}")
            else:
                reasons.append(f"channel {facts.channel} raises priority {priority} -> {raised}")
            priority = raised
        if facts.amount is not None:
            priority = self._large_amount(facts.amount, facts.currency, priority, reasons)
        return priority, reasons

    def _hedge(
        self,
        priority: str,
        category: str,
        prediction: Prediction,
        facts: ComplaintFacts,
        reasons: list[str],
    ) -> str:
        """Where the model gives a more urgent category a fair chance, the complaint gets
        that category's priority: a doubtful decision errs towards the customer."""
        threshold = self._policy.priority_hedge
        if threshold is None:
            return priority
        for other, probability in prediction.probabilities.items():
            if other == category or probability < threshold:
                continue
            candidate, _ = self._priority(other, facts)
            if candidate < priority:  # "P1" < "P2": the smaller string is more urgent
                reasons.append(
                    f"the model gives {other} p={probability:.2f} -> priority {candidate}"
                )
                priority = candidate
        return priority

    def _large_amount(
        self, amount: Decimal, currency: str | None, priority: str, reasons: list[str]
    ) -> str:
        if currency is None:
            reasons.append(f"amount {amount} has no currency: large-amount rule not applied")
            return priority
        threshold = self._rules.large_amounts.get(currency)
        if threshold is None:
            reasons.append(f"no large-amount threshold configured for {currency}")
            return priority
        if amount >= threshold:
            reasons.append(
                f"amount {amount} {currency} >= large-amount threshold {threshold} {currency} -> P1"
            )
            return "P1"
        return priority


# ---------------------------------------------------------------- matching


@dataclass
class _Evidence:
    score: float = 0.0
    strongest_term: float = 0.0  # the weight of its strongest matched term
    reasons: list[str] = field(default_factory=list)


Spans = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Candidate:
    category: str
    term: Term
    occurrences: tuple[Spans, ...]  # per part of one pattern: its (start, end) spans


class _Matcher:
    """Finds lexicon terms in one normalised description and scores each category."""

    def __init__(self, rules: TriageRules, text: str) -> None:
        self._rules = rules
        self._text = text
        self._negation_reasons: list[str] = []
        # Negated occurrences still claim their text: "诈骗" negated hides the "骗" in it.
        self._negated_spans: set[tuple[int, int]] = set()

    def run(self) -> tuple[dict[str, _Evidence], list[str]]:
        evidence = {rule.name: _Evidence() for rule in self._rules.categories}
        candidates: list[_Candidate] = []
        possible = self._rules.possible_patterns(self._rules.present(self._text))
        # A term's patterns stand together, in order: grouped by the term (by identity).
        for _, group in itertools.groupby(possible, key=lambda entry: id(entry[1])):
            entries = list(group)
            rule, term = entries[0][0], entries[0][1]
            found = [
                _Candidate(rule.name, term, occurrences)
                for _rule, _term, pattern in entries
                if (occurrences := self._find(rule, term, pattern)) is not None
            ]
            if term.weight > 0:
                candidates += found
            elif found:
                # Counter-terms only describe context: they claim no text.
                self._count(evidence[rule.name], found[0])
        counted: set[int] = set()
        for candidate in self._resolve_overlaps(candidates):
            if id(candidate.term) not in counted:  # a term counts once
                counted.add(id(candidate.term))
                self._count(evidence[candidate.category], candidate)
        return evidence, self._negation_reasons

    def _find(self, rule: CategoryRule, term: Term, pattern: Pattern) -> tuple[Spans, ...] | None:
        """Every part's non-negated occurrences, or None when some part is absent."""
        raw = [
            [m.span() for m in part.finditer(self._text) if m.end() > m.start()] for part in pattern
        ]
        if not all(raw):
            return None
        if not (rule.negatable and term.weight > 0):
            return tuple(tuple(spans) for spans in raw)
        kept = []
        for spans in raw:
            negated = {span for span in spans if self._negated(span, rule.name)}
            self._negated_spans |= negated
            kept.append(tuple(span for span in spans if span not in negated))
        return tuple(kept) if all(kept) else None

    def _negated(self, span: tuple[int, int], category: str) -> bool:
        negation = self._rules.negation
        cue = _negation_cue(self._text[: span[0]], negation) or _figurative_ending(
            self._text, span[1], negation
        )
        if cue is None:
            return False
        keyword = self._text[span[0] : span[1]]
        reason = f"keyword '{keyword}' negated by '{cue}' -> not {category}"
        if reason not in self._negation_reasons:
            self._negation_reasons.append(reason)
        return True

    def _resolve_overlaps(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Drop every occurrence lying strictly inside a longer one, negated or not: the
        longer wording is the meaning ("免手续费" is a promise, the "手续费" inside it is
        no fee; "不是诈骗" negates the "骗" inside "诈骗" too)."""
        spans = sorted(
            {span for cand in candidates for part in cand.occurrences for span in part}
            | self._negated_spans,
            key=lambda span: span[0] - span[1],  # longest first
        )

        def inside_longer(span: tuple[int, int]) -> bool:
            start, end = span
            for other_start, other_end in spans:
                if other_end - other_start <= end - start:
                    return False
                if other_start <= start and end <= other_end:
                    return True
            return False

        resolved = []
        for cand in candidates:
            parts = tuple(
                tuple(span for span in part if not inside_longer(span)) for part in cand.occurrences
            )
            if all(parts):
                resolved.append(_Candidate(cand.category, cand.term, parts))
        return resolved

    def _count(self, evidence: _Evidence, candidate: _Candidate) -> None:
        words = [f"'{self._text[spans[0][0] : spans[0][1]]}'" for spans in candidate.occurrences]
        label = "keyword" if len(words) == 1 else "keywords"
        verb = "->" if candidate.term.weight > 0 else "counts against"
        evidence.score += candidate.term.weight
        evidence.strongest_term = max(evidence.strongest_term, candidate.term.weight)
        evidence.reasons.append(f"{label} {' + '.join(words)} {verb} {candidate.category}")


def _negation_cue(prefix: str, negation: Negation) -> str | None:
    """The negation cue governing a keyword that starts right after ``prefix``, if any:
    a cue shortly before it in its clause, or a figurative frame right before it."""
    for frame in negation.figurative:  # a frame holds its own words: no clause needed
        if match := frame.search(prefix):
            return match.group(0).strip()
    clause = _current_clause(prefix, negation)
    for cue in negation.cues_zh:
        at = clause.rfind(cue)
        if at < 0:
            continue
        # A one-character cue (没, 未, 无) must touch the keyword: "没注意被骗" is no negation.
        window = negation.window_chars if len(cue) > 1 else 0
        if len(clause) - (at + len(cue)) <= window:
            return cue
    # English: walk back over filler words only ("not saying it is fraud"); a content
    # word stops the search ("I don't know who stole it" is no negation of "stole").
    words = _WORDS.findall(clause)
    for word in reversed(words[-(negation.window_words + 1) :]):
        if word in negation.cues_en:
            return word
        if word not in negation.fillers_en:
            return None
    return None


def _figurative_ending(text: str, keyword_end: int, negation: Negation) -> str | None:
    """The words right after a keyword that make it a figure of speech, if any."""
    for frame in negation.figurative_after:
        if match := frame.match(text, keyword_end):
            return match.group(0).strip()
    return None


def _current_clause(prefix: str, negation: Negation) -> str:
    start = 0
    for mark in negation.scope_breaks_zh:
        at = prefix.rfind(mark)
        if at >= 0:
            start = max(start, at + len(mark))
    for match in _WORDS.finditer(prefix):
        if match.group(0) in negation.scope_breaks_en:
            start = max(start, match.end())
    return prefix[start:]


_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")


# ---------------------------------------------------------------- typo repair


class _TypoRepair:
    """Repairs an English word one slip away from exactly one typo target.

    A slip is a missing letter, two swapped neighbours, or (in longer words) an extra or
    a wrong letter. Targets are a short list of signal words, not the whole lexicon, so
    real words stay as they are ("though" is not "through"); ``typo_exempt`` lists real
    words that still look like a target ("sending" is not "pending").
    """

    def __init__(self, norm: Normalisation, lexicon: frozenset[str]) -> None:
        self._norm = norm
        self._vocabulary = norm.typo_targets
        self._known = lexicon | norm.typo_exempt  # real words, never repaired
        self._omissions: dict[str, set[str]] = {}
        self._substitutions: dict[str, set[str]] = {}
        for word in self._vocabulary:
            for i in range(len(word)):
                self._omissions.setdefault(word[:i] + word[i + 1 :], set()).add(word)
                if len(word) >= norm.typo_substitution_min_length:
                    self._substitutions.setdefault(word[:i] + "?" + word[i + 1 :], set()).add(word)

    def repair(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        repairs: list[tuple[str, str]] = []

        def fix(match: re.Match[str]) -> str:
            token = match.group(0)
            word = self._correction(token)
            if word is None:
                return token
            if (token, word) not in repairs:
                repairs.append((token, word))
            return word

        return _TOKEN.sub(fix, text), repairs

    def _correction(self, token: str) -> str | None:
        if (
            len(token) < self._norm.typo_min_length
            or token in self._vocabulary
            or token in self._known
        ):
            return None
        # The likeliest slips first; a later kind is tried only when the first finds none.
        for found in (self._omitted_or_swapped(token), self._added_or_wrong(token)):
            found = {word for word in found if _stem(word) != _stem(token)}
            if found:
                return found.pop() if len(found) == 1 else None
        return None

    def _omitted_or_swapped(self, token: str) -> set[str]:
        found = set(self._omissions.get(token, ()))
        for i in range(len(token) - 1):
            swapped = token[:i] + token[i + 1] + token[i] + token[i + 2 :]
            if swapped in self._vocabulary:
                found.add(swapped)
        return found

    def _added_or_wrong(self, token: str) -> set[str]:
        if len(token) < self._norm.typo_substitution_min_length:
            return set()
        found: set[str] = set()
        for i in range(len(token)):
            dropped = token[:i] + token[i + 1 :]
            if dropped in self._vocabulary:
                found.add(dropped)
            found |= self._substitutions.get(token[:i] + "?" + token[i + 1 :], set())
        return found


def _stem(word: str) -> str:
    """Crude English stem, enough to tell an inflection ("charges") from a typo."""
    for suffix in ("ing", "ed", "es", "er", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


_TOKEN = re.compile(r"(?<![a-z'])[a-z]+(?![a-z'])")


# ---------------------------------------------------------------- helpers


def _raise(priority: str) -> str:
    index = PRIORITIES.index(priority)
    return PRIORITIES[max(index - 1, 0)]


def _hours(hours: Decimal) -> timedelta:
    return timedelta(seconds=int(hours * 3600))


def _hint_reasons(hint: str | None, winner: str, weight: float) -> list[str]:
    if hint is None:
        return []
    if hint == winner:
        return [f"category_hint '{hint}' agrees (+{weight:g})"]
    return [f"category_hint '{hint}' not followed: the text points to {winner}"]


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value.strip() or None


def _amount(value: Any) -> Decimal | None:
    # Money is Decimal from end to end: a float has already lost the cents.
    if value is None or value == "":
        return None
    if isinstance(value, bool | float):
        raise ValueError('amount must be a decimal string such as "86.50"')
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | str):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"amount '{value}' is not a decimal number") from exc
    else:
        raise ValueError('amount must be a decimal string such as "86.50"')
    if not amount.is_finite():
        raise ValueError(f"amount '{value}' is not a finite number")
    return amount
