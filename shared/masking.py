"""Masking of customer contact data in text that leaves the process as diagnostics: log
lines, tracebacks, dead-letter error headers. Pure functions, no logging set-up here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# One pass, alternatives tried in order at each position: our own identifiers first (kept
# as they are), then e-mail, international phone, national ID, card, other phone numbers.
# Boundaries are ASCII-only on purpose: `\b` and `\w` count Chinese characters as word
# characters, which would let "电话13800138000" or "身份证110105..." through unmasked.
_NOT_AFTER_ALNUM = r"(?<![0-9A-Za-z])"
_NOT_BEFORE_ALNUM = r"(?![0-9A-Za-z])"
_PATTERNS = {
    # ticket numbers, UUIDs, RFC 3339 dates and timestamps: not contact data, keep them.
    "keep": r"WC-\d{8}-\d+"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "intl_phone": rf"(?<![0-9A-Za-z+])\+\d[\d -]{{6,}}\d{_NOT_BEFORE_ALNUM}",
    "id": rf"{_NOT_AFTER_ALNUM}\d{{17}}[\dXx]{_NOT_BEFORE_ALNUM}",
    "card": rf"{_NOT_AFTER_ALNUM}(?:\d[ -]?){{12,18}}\d{_NOT_BEFORE_ALNUM}",
    "phone": rf"{_NOT_AFTER_ALNUM}\d[\d -]{{6,}}\d{_NOT_BEFORE_ALNUM}",
}
_PII = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _PATTERNS.items()))
_PLACEHOLDERS = {"email": "[email]", "intl_phone": "[phone]", "id": "[id]", "card": "[card]"}

# Fields whose value is customer contact data whatever it looks like.
SENSITIVE_KEYS = frozenset({"email", "phone", "customer_email", "customer_phone", "id_number"})


def _placeholder(match: re.Match[str]) -> str:
    kind = match.lastgroup or "phone"
    return match.group() if kind == "keep" else _PLACEHOLDERS.get(kind, "[phone]")


# Most logged values are identifiers, names from closed vocabularies or text with few
# digits: those are answered without the full pattern (it was most of a log line's
# cost). Every pattern above but "keep" needs an "@" or two digits with at least six
# digits, spaces or dashes between them ("complaints.received.v1" has neither); a whole
# UUID or ticket number is kept.
_MAY_HOLD_CONTACT = re.compile(r"@|\d[\d -]{6,}\d")
_WHOLE_IDENTIFIER = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|WC-\d{8}-\d+"
)


def mask_text(text: str) -> str:
    """Replace e-mail addresses, card, national ID and phone numbers with placeholders."""
    if _MAY_HOLD_CONTACT.search(text) is None or _WHOLE_IDENTIFIER.fullmatch(text):
        return text
    return _PII.sub(_placeholder, text)


def mask(text: str) -> str:
    """The one function for any diagnostic text (e.g. a DLQ `x-dlq-error` header)."""
    return mask_text(text)


def mask_value(key: str, value: Any) -> Any:
    """`value` masked, recursively; a sensitive key's value is redacted whatever it is."""
    if key in SENSITIVE_KEYS and value is not None:
        return "[redacted]"
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, int | float):  # before the slower ABC checks
        return value
    if isinstance(value, Mapping):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(key, v) for v in value]
    return value
