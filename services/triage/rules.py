"""Triage rules: load ``rules.toml`` into typed, frozen, validated objects.

Operations edit ``rules.toml``; this module turns it into ``TriageRules`` and refuses a
file that would silently misbehave (an unknown category, a bad priority, negative hours,
a misspelt key). Every lexicon term is normalised and compiled here, once, so the
classifier only runs ready regular expressions.

Term syntax (documented for operators at the top of ``rules.toml``):

- ``a|b|c``        any of the alternatives (plain text, not regular expressions);
- ``a|b * c|d``    ``a`` or ``b``, then ``c`` or ``d`` later in the same clause (no
                   punctuation between), at most ``gap_chars`` apart;
- ``a & b``        both ``a`` and ``b`` somewhere in the complaint, in any order;
- ``re:...``       a raw regular expression, for the rare case the above cannot express;
- ``["p", "q"]``   a list of such patterns: one signal that matches when any does.

English literals match whole words, with an optional inflection (``s``, ``es``, ``d``,
``ed``, ``ing``) so "refund" also finds "refunds" and "refunded".
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

import ahocorasick
from zhconv import zhconv as zhconv_tables

# The contract's categories, in precedence order: when several apply, the first wins.
CATEGORIES: tuple[str, ...] = (
    "fraud",
    "duplicate_charge",
    "account_frozen",
    "transfer_delay",
    "top_up_withdrawal",
    "refund",
    "privacy",
    "fees",
    "payment_failure",
    "account_access",
    "terms_marketing",
    "app_usability",
    "customer_service",
    "other",
)
PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
CHANNELS: frozenset[str] = frozenset(
    {"app", "web", "phone", "email", "chat", "social_media", "regulator", "consumer_association"}
)
TIERS: tuple[str, ...] = ("strong", "medium", "weak", "counter")

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.toml")

_ASCII_WORD = re.compile(r"[a-z0-9]")


@functools.cache
def _zhconv_char_map() -> Mapping[int, str]:
    """zhconv's one-character traditional-to-simplified conversions, as a translate table
    (str.translate is far faster than zhconv's phrase-by-phrase convert)."""
    table = zhconv_tables.getdict("zh-cn")
    return MappingProxyType(
        {ord(t): s for t, s in table.items() if len(t) == 1 and len(s) == 1 and t != s}
    )


@functools.cache
def _latin_base_char_map() -> Mapping[int, str]:
    """Accented Latin letters to their bare letter: pinyin typed with tone marks
    ("zhànghù", "lǚ") reads as the toneless pinyin most customers type ("zhanghu")."""
    table: dict[int, str] = {}
    for code in range(0xC0, 0x250):
        base = unicodedata.normalize("NFD", chr(code))[0]
        if base != chr(code) and base.isascii() and base.isalpha():
            table[code] = base
    return MappingProxyType(table)


_INFLECTION = r"(?:s|es|d|ed|ing)?"
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Normalisation:
    """How text is made comparable before matching (applied to terms and complaints)."""

    char_map: Mapping[int, str]
    replacements: Mapping[str, str]
    typo_targets: frozenset[str]  # lexicon words worth repairing a slip towards
    typo_min_length: int
    typo_substitution_min_length: int
    typo_exempt: frozenset[str]
    # Written Cantonese words and their Mandarin equivalents.
    cantonese: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def normalise(self, text: str) -> str:
        """NFKC (full-width to half-width), traditional to simplified, written Cantonese
        to Mandarin, tone marks and other accents off Latin letters, lower case,
        hyphens between letters to spaces, contractions unified, whitespace collapsed."""
        text = unicodedata.normalize("NFKC", text).translate(self.char_map).lower()
        if self.cantonese:
            text = self._cantonese_words.sub(lambda m: self.cantonese[m.group(0)], text)
        text = text.replace("\u2019", "'").replace("\u2018", "'")
        text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)
        text = re.sub(r"\s+", " ", text).strip()
        if self.replacements:
            text = _WORD.sub(lambda m: self.replacements.get(m.group(0), m.group(0)), text)
        return text

    @functools.cached_property
    def _cantonese_words(self) -> re.Pattern[str]:
        # Longest first, so "唔係" is one word, not "唔" then "係".
        return re.compile("|".join(map(re.escape, sorted(self.cantonese, key=len, reverse=True))))


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Part:
    """One conjunct of a pattern: its regular expression, and literals of which one must
    occur in any text it matches (the alternatives of its first piece). Most of the
    lexicon is absent from any one complaint; the literals found in it (TriageRules.present)
    rule a part out far faster than the regular expression can (it was half of triage's
    CPU)."""

    regex: re.Pattern[str]
    needles: frozenset[str] = frozenset()  # none for a raw `re:` term: always searched

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        return self.regex.finditer(text)

    def possible(self, present: frozenset[str]) -> bool:
        """False when none of its needles is among those `present` in the text."""
        return not self.needles or not self.needles.isdisjoint(present)


# One compiled pattern: its parts are conjunctive (``&``), every part must match.
Pattern = tuple[Part, ...]


@dataclass(frozen=True)
class Term:
    """One lexicon entry: one signal, matched by any of its patterns, counted once."""

    source: str
    weight: float
    patterns: tuple[Pattern, ...]
    words: frozenset[str]  # its English words: real words that typo repair leaves alone


@dataclass(frozen=True)
class CategoryRule:
    name: str
    priority: str
    regulatory_issue: str
    actions: tuple[str, ...]
    negatable: bool
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class Scoring:
    """How lexicon matches become a category (see rules.toml [scoring])."""

    weights: Mapping[str, float]  # per tier: strong, medium, weak, counter
    min_score: float
    dominance_ratio: float
    hint_weight: float
    gap_chars: int


@dataclass(frozen=True)
class Negation:
    """Negation cues that cancel a keyword of a negatable category shortly after them."""

    cues_zh: tuple[str, ...]
    window_chars: int
    cues_en: frozenset[str]
    fillers_en: frozenset[str]  # words that may stand between an English cue and a keyword
    window_words: int
    scope_breaks_zh: tuple[str, ...]
    scope_breaks_en: frozenset[str]
    # Frames that make the keyword right after them a figure of speech about the
    # provider's conduct ("feels like theft", "this fee is a scam"): regexes that must
    # match at the very end of the text before the keyword.
    figurative: tuple[re.Pattern[str], ...]
    # The same by what follows the keyword ("跟诈骗有什么区别"): regexes that must match
    # at the very start of the text after it.
    figurative_after: tuple[re.Pattern[str], ...]


@dataclass(frozen=True)
class DueHours:
    first_response: Decimal
    resolution: Decimal


@dataclass(frozen=True)
class TriageRules:
    categories: tuple[CategoryRule, ...]  # in precedence order
    scoring: Scoring
    negation: Negation
    normalisation: Normalisation
    raise_channels: frozenset[str]
    large_amounts: Mapping[str, Decimal]
    due_hours: Mapping[str, DueHours]

    @functools.cached_property
    def needles(self) -> frozenset[str]:
        """Every part's needles: the literals worth looking for in a complaint."""
        return frozenset(
            needle
            for rule in self.categories
            for term in rule.terms
            for pattern in term.patterns
            for part in pattern
            for needle in part.needles
        )

    @functools.cached_property
    def _needle_automaton(self) -> ahocorasick.Automaton:
        automaton = ahocorasick.Automaton()
        for needle in self.needles:
            if needle:
                automaton.add_word(needle, needle)
        automaton.make_automaton()
        return automaton

    @functools.cached_property
    def _lexicon(self) -> tuple[tuple[CategoryRule, Term, Pattern], ...]:
        """Every pattern with its category and term, in the file's order."""
        return tuple(
            (rule, term, pattern)
            for rule in self.categories
            for term in rule.terms
            for pattern in term.patterns
        )

    @functools.cached_property
    def _patterns_by_needle(self) -> tuple[dict[str, list[int]], tuple[int, ...]]:
        """({needle: the _lexicon positions of the patterns whose first part with needles
        has it}, the positions of the patterns with no needles at all)."""
        by_needle: dict[str, list[int]] = {}
        always: list[int] = []
        for at, (_rule, _term, pattern) in enumerate(self._lexicon):
            trigger = next((part for part in pattern if part.needles), None)
            if trigger is None:
                always.append(at)
                continue
            for needle in trigger.needles:
                by_needle.setdefault(needle, []).append(at)
        return by_needle, tuple(always)

    def possible_patterns(
        self, present: frozenset[str]
    ) -> list[tuple[CategoryRule, Term, Pattern]]:
        """The patterns that can match a text holding the needles `present`, in the file's
        order: each of their parts has one of its needles there (or has none). Most of
        the lexicon is absent from any one complaint, so only these are tried."""
        by_needle, always = self._patterns_by_needle
        positions = set(always)
        for needle in present:
            positions.update(by_needle.get(needle, ()))
        lexicon = self._lexicon
        return [
            lexicon[at]
            for at in sorted(positions)
            if all(part.possible(present) for part in lexicon[at][2])
        ]

    def present(self, text: str) -> frozenset[str]:
        """The needles that occur in `text` (normalised). One Aho-Corasick pass over the
        text finds all of them, overlapping ones too: a substring test per needle (1,783
        of them) took a quarter of a classification."""
        found = {needle for _end, needle in self._needle_automaton.iter(text)}
        if "" in self.needles:
            found.add("")
        return frozenset(found)

    def category(self, name: str) -> CategoryRule:
        for rule in self.categories:
            if rule.name == name:
                return rule
        raise KeyError(name)


def load_rules(path: Path | None = None) -> TriageRules:
    """Read and validate the rules file; a ValueError names what is wrong and where."""
    path = path or DEFAULT_RULES_PATH
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return _build(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def rules_from_mapping(data: Mapping[str, Any]) -> TriageRules:
    """Build rules from an already parsed TOML document (used by tests and tools)."""
    return _build(data)


def _build(data: Mapping[str, Any]) -> TriageRules:
    _check_keys(
        data,
        "top level",
        {"scoring", "negation", "normalisation", "priority", "due_hours", "categories"},
    )
    scoring = _scoring(_table(data, "scoring"))
    normalisation = _normalisation(_table(data, "normalisation"))
    categories = _categories(_table(data, "categories"), scoring, normalisation)
    _check_typo_targets(normalisation, categories)
    return TriageRules(
        categories=categories,
        scoring=scoring,
        negation=_negation(_table(data, "negation"), normalisation),
        normalisation=normalisation,
        raise_channels=_raise_channels(_table(data, "priority")),
        large_amounts=_large_amounts(_table(data, "priority")),
        due_hours=_due_hours(_table(data, "due_hours")),
    )


# ---------------------------------------------------------------- sections


def _scoring(table: Mapping[str, Any]) -> Scoring:
    _check_keys(
        table, "[scoring]", {"weights", "min_score", "dominance_ratio", "hint_weight", "gap_chars"}
    )
    ratio = _number(table, "dominance_ratio", "[scoring]")
    if not 0 <= ratio <= 1:
        raise ValueError(f"[scoring] dominance_ratio must be between 0 and 1, got {ratio}")
    return Scoring(
        weights=_tier_weights(table),
        min_score=_positive(table, "min_score", "[scoring]"),
        dominance_ratio=ratio,
        hint_weight=_non_negative(table, "hint_weight", "[scoring]"),
        gap_chars=int(_positive(table, "gap_chars", "[scoring]")),
    )


def _normalisation(table: Mapping[str, Any]) -> Normalisation:
    where = "[normalisation]"
    _check_keys(
        table,
        where,
        {
            "traditional_to_simplified",
            "replacements",
            "typo_targets",
            "typo_min_length",
            "typo_substitution_min_length",
            "typo_exempt",
            "cantonese",
        },
    )
    pairs = _string(table, "traditional_to_simplified", where).split()
    # zhconv's table covers every traditional character; the file's own pairs win.
    char_map: dict[int, str] = {**_latin_base_char_map(), **_zhconv_char_map()}
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"{where} traditional_to_simplified: '{pair}' is not a char pair")
        char_map[ord(pair[0])] = pair[1]
    replacements = _word_map(table, "replacements", where)
    # Cantonese keys in the characters the text has by then (traditional ones simplified).
    cantonese = {k.translate(char_map): v for k, v in _word_map(table, "cantonese", where).items()}
    return Normalisation(
        char_map=MappingProxyType(char_map),
        replacements=MappingProxyType({k.lower(): v.lower() for k, v in replacements.items()}),
        typo_targets=frozenset(w.lower() for w in _strings(table, "typo_targets", where)),
        typo_min_length=int(_positive(table, "typo_min_length", where)),
        typo_substitution_min_length=int(_positive(table, "typo_substitution_min_length", where)),
        typo_exempt=frozenset(w.lower() for w in _strings(table, "typo_exempt", where)),
        cantonese=MappingProxyType(cantonese),
    )


def _word_map(table: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    """An optional table of words to words (an empty word would match everywhere)."""
    words = table.get(key, {})
    if not isinstance(words, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in words.items()
    ):
        raise ValueError(f"{where} {key} must map words to words")
    return dict(words)


def _negation(table: Mapping[str, Any], norm: Normalisation) -> Negation:
    where = "[negation]"
    _check_keys(
        table,
        where,
        {
            "cues_zh",
            "window_chars",
            "cues_en",
            "fillers_en",
            "window_words",
            "scope_breaks_zh",
            "scope_breaks_en",
            "figurative",
            "figurative_after",
        },
    )

    def words(key: str) -> tuple[str, ...]:
        values = tuple(norm.normalise(c) for c in _strings(table, key, where))
        if not all(values):
            raise ValueError(f"{where} {key} has an empty or whitespace-only entry")
        return values

    return Negation(
        cues_zh=words("cues_zh"),
        window_chars=int(_non_negative(table, "window_chars", where)),
        cues_en=frozenset(words("cues_en")),
        fillers_en=frozenset(words("fillers_en")),
        window_words=int(_non_negative(table, "window_words", where)),
        scope_breaks_zh=words("scope_breaks_zh"),
        scope_breaks_en=frozenset(words("scope_breaks_en")),
        figurative=tuple(_frame(source, where) for source in _strings(table, "figurative", where)),
        figurative_after=tuple(
            _frame(source, where, after=True)
            for source in _strings(table, "figurative_after", where)
        ),
    )


def _frame(source: str, where: str, *, after: bool = False) -> re.Pattern[str]:
    """A figurative frame: a regex over the normalised text, anchored at the end of the
    text before the keyword (or, ``after``, matched at the start of the text after it)."""
    key = "figurative_after" if after else "figurative"
    try:
        return re.compile(f"(?:{source})" if after else f"(?:{source})$")
    except re.error as exc:
        raise ValueError(f"{where} {key} {source!r} is not a regex: {exc}") from exc


def _raise_channels(table: Mapping[str, Any]) -> frozenset[str]:
    _check_keys(table, "[priority]", {"raise_channels", "large_amount"})
    channels = frozenset(_strings(table, "raise_channels", "[priority]"))
    unknown = sorted(channels - CHANNELS)
    if unknown:
        raise ValueError(f"[priority] raise_channels: unknown channel(s) {unknown}")
    return channels


def _large_amounts(table: Mapping[str, Any]) -> Mapping[str, Decimal]:
    where = "[priority.large_amount]"
    amounts = table.get("large_amount")
    if not isinstance(amounts, Mapping):
        raise ValueError(f"{where} is missing")
    result: dict[str, Decimal] = {}
    for currency, raw in amounts.items():
        if not _CURRENCY.match(currency):
            raise ValueError(f"{where} '{currency}' is not an ISO 4217 currency code")
        result[currency] = _money(raw, f"{where} {currency}")
    return MappingProxyType(result)


def _due_hours(table: Mapping[str, Any]) -> Mapping[str, DueHours]:
    _check_keys(table, "[due_hours]", set(PRIORITIES))
    result: dict[str, DueHours] = {}
    for priority in PRIORITIES:
        where = f"[due_hours.{priority}]"
        row = table.get(priority)
        if not isinstance(row, Mapping):
            raise ValueError(f"{where} is missing")
        _check_keys(row, where, {"first_response", "resolution"})
        first = _hours(row, "first_response", where)
        resolution = _hours(row, "resolution", where)
        if first > resolution:
            raise ValueError(f"{where} first_response ({first}h) is after resolution")
        result[priority] = DueHours(first_response=first, resolution=resolution)
    return MappingProxyType(result)


def _categories(
    table: Mapping[str, Any], scoring: Scoring, norm: Normalisation
) -> tuple[CategoryRule, ...]:
    unknown = sorted(set(table) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"[categories] unknown category {unknown}; known: {list(CATEGORIES)}")
    missing = [name for name in CATEGORIES if name not in table]
    if missing:
        raise ValueError(f"[categories] missing categories {missing}")
    return tuple(
        _category(name, table[name], scoring.weights, norm, scoring.gap_chars)
        for name in CATEGORIES
    )


def _check_typo_targets(norm: Normalisation, categories: tuple[CategoryRule, ...]) -> None:
    lexicon = {word for rule in categories for term in rule.terms for word in term.words}
    unknown = sorted(norm.typo_targets - lexicon)
    if unknown:
        raise ValueError(f"[normalisation] typo_targets not used by any term: {unknown}")
    short = sorted(w for w in norm.typo_targets if len(w) < norm.typo_min_length)
    if short:
        raise ValueError(f"[normalisation] typo_targets shorter than typo_min_length: {short}")


def _tier_weights(table: Mapping[str, Any]) -> Mapping[str, float]:
    where = "[scoring.weights]"
    raw = table.get("weights")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} is missing")
    _check_keys(raw, where, set(TIERS))
    weights = {tier: _number(raw, tier, where) for tier in TIERS}
    if any(weights[t] <= 0 for t in ("strong", "medium", "weak")):
        raise ValueError(f"{where} strong, medium and weak must be positive")
    if weights["counter"] >= 0:
        raise ValueError(f"{where} counter must be negative (it lowers a score)")
    return MappingProxyType(weights)


def _category(
    name: str,
    table: Any,
    weights: Mapping[str, float],
    norm: Normalisation,
    gap_chars: int,
) -> CategoryRule:
    where = f"[categories.{name}]"
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")
    _check_keys(table, where, {"priority", "regulatory_issue", "actions", "negatable", *TIERS})
    priority = _string(table, "priority", where)
    if priority not in PRIORITIES:
        raise ValueError(f"{where} priority '{priority}' is not one of {list(PRIORITIES)}")
    negatable = table.get("negatable", False)
    if not isinstance(negatable, bool):
        raise ValueError(f"{where} negatable must be true or false")
    terms = tuple(
        _term(entry, weights[tier], norm, gap_chars, f"{where} {tier}")
        for tier in TIERS
        for entry in _entries(table, tier, where)
    )
    return CategoryRule(
        name=name,
        priority=priority,
        regulatory_issue=_string(table, "regulatory_issue", where),
        actions=tuple(_strings(table, "actions", where)),
        negatable=negatable,
        terms=terms,
    )


# ---------------------------------------------------------------- terms


def _term(
    entry: str | list[str], weight: float, norm: Normalisation, gap_chars: int, where: str
) -> Term:
    sources = [entry] if isinstance(entry, str) else entry
    patterns = tuple(_pattern(source, norm, gap_chars, where) for source in sources)
    words = frozenset(
        word
        for source in sources
        if not source.startswith("re:")
        for word in re.findall(r"[a-z]+", norm.normalise(source))
    )
    return Term(source=" / ".join(sources), weight=weight, patterns=patterns, words=words)


def _pattern(source: str, norm: Normalisation, gap_chars: int, where: str) -> Pattern:
    if not source.strip():
        raise ValueError(f"{where} has an empty term")
    if source.startswith("re:"):
        try:
            return (Part(re.compile(source[3:])),)
        except re.error as exc:
            raise ValueError(f"{where} term '{source}': bad regular expression: {exc}") from exc
    return tuple(
        Part(
            re.compile(_sequence_pattern(part, norm, gap_chars, where, source)),
            needles=frozenset(norm.normalise(lit) for lit in part.split(" * ")[0].split("|")),
        )
        for part in source.split(" & ")
    )


def _sequence_pattern(part: str, norm: Normalisation, gap: int, where: str, source: str) -> str:
    # A gap stays inside one clause: it may not cross punctuation (a "." inside a number
    # such as 0.1% is allowed).
    gap_pattern = rf"(?:[^。！？!?；;,，、\n.]|\.(?=\d)){{0,{gap}}}?"
    pieces = [_alternatives(alt, norm, where, source) for alt in part.split(" * ")]
    return gap_pattern.join(pieces)


def _alternatives(group: str, norm: Normalisation, where: str, source: str) -> str:
    literals = [norm.normalise(lit) for lit in group.split("|")]
    if not all(literals):
        raise ValueError(f"{where} term '{source}' has an empty alternative")
    # Longest first so the regex engine prefers the most specific wording.
    literals.sort(key=len, reverse=True)
    return "(?:" + "|".join(_literal(lit) for lit in literals) + ")"


def _literal(literal: str) -> str:
    pattern = re.escape(literal)
    if _ASCII_WORD.match(literal[0]):
        pattern = r"(?<![a-z0-9])" + pattern
    if _ASCII_WORD.match(literal[-1]):
        suffix = _INFLECTION if literal[-1].isalpha() else ""
        pattern = pattern + suffix + r"(?![a-z0-9])"
    return pattern


# ---------------------------------------------------------------- value checks


def _check_keys(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"[{key}] is missing")
    return value


def _string(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} {key} must be a non-empty string")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} {key} must be a list of strings")
    return value


def _entries(table: Mapping[str, Any], key: str, where: str) -> list[str | list[str]]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(_is_entry(v) for v in value):
        raise ValueError(f"{where} {key} must be a list of strings or lists of strings")
    return value


def _is_entry(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _number(table: Mapping[str, Any], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} {key} must be a number")
    return float(value)


def _positive(table: Mapping[str, Any], key: str, where: str) -> float:
    value = _number(table, key, where)
    if value <= 0:
        raise ValueError(f"{where} {key} must be positive, got {value}")
    return value


def _non_negative(table: Mapping[str, Any], key: str, where: str) -> float:
    value = _number(table, key, where)
    if value < 0:
        raise ValueError(f"{where} {key} must not be negative, got {value}")
    return value


def _hours(table: Mapping[str, Any], key: str, where: str) -> Decimal:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} {key} must be a number of hours")
    hours = Decimal(str(value))
    if hours < 0:
        raise ValueError(f"{where} {key} must not be negative, got {value}")
    return hours


def _money(raw: Any, where: str) -> Decimal:
    # Money never goes through float: a TOML float is refused, write "1500" or 1500.
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(f'{where} must be a decimal string such as "1500" or an integer')
    try:
        amount = Decimal(str(raw))
    except InvalidOperation as exc:
        raise ValueError(f"{where} '{raw}' is not a decimal amount") from exc
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{where} must be a positive amount, got {raw}")
    return amount
