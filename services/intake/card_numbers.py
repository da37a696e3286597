"""Card numbers customers type into free text, redacted to their last four digits before
the text is stored or published (PCI DSS 3.3/3.4: a full PAN is never kept; help desks'
credit-card redaction does the same). Pure functions, no I/O.

A card number here is 13-19 digits, written in one piece or in groups separated by
single spaces or dashes, that passes the Luhn check and does not start with 0 (no
payment card does; "00" is how international phone numbers start). Digits glued to
letters (transaction refs such as T20261122-0001) or following "+" (phone numbers) are
not card numbers; neither is any run that fails the Luhn check.
"""

from __future__ import annotations

import re

MIN_DIGITS, MAX_DIGITS = 13, 19
# Groups shorter than this are dates, times and amounts, not parts of a card number.
_MIN_GROUP = 3

# A maximal run of digit groups; ASCII-only boundaries, as Chinese text runs straight into
# numbers ("卡号6222...").
_RUN = re.compile(r"(?<![0-9A-Za-z+])\d+(?:[ -]\d+)*(?![0-9A-Za-z])")
_GROUP = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    return (
        MIN_DIGITS <= len(digits) <= MAX_DIGITS
        and digits.isdigit()
        and digits[0] != "0"
        and luhn_valid(digits)
    )


def redacted(digits: str) -> str:
    return f"**** **** **** {digits[-4:]}"


def _redact_run(run: str) -> str:
    """The card numbers among `run`'s consecutive groups, longest first, redacted."""
    groups = list(_GROUP.finditer(run))
    out: list[str] = []
    cursor = 0  # position in `run` up to which `out` holds the text
    i = 0
    while i < len(groups):
        for j in range(len(groups) - 1, i - 1, -1):
            window = groups[i : j + 1]
            digits = "".join(g.group() for g in window)
            if all(len(g.group()) >= _MIN_GROUP for g in window) and is_card_number(digits):
                out.append(run[cursor : window[0].start()])
                out.append(redacted(digits))
                cursor = window[-1].end()
                i = j + 1
                break
        else:
            i += 1
    out.append(run[cursor:])
    return "".join(out)


def redact_card_numbers(text: str) -> str:
    """`text` with every card number in it replaced by `**** **** **** <last four>`."""
    return _RUN.sub(lambda match: _redact_run(match.group()), text)
