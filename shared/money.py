"""Money as text: the one way an amount leaves the system (API answers, events, labelled rows)."""

from __future__ import annotations

from decimal import Decimal


def money_string(amount: Decimal | None) -> str | None:
    """A decimal string with at least two decimals ("2300.00", "86.50", "0.1234"), never a
    float and never an exponent (numeric(19,4) pads to four decimals)."""
    if amount is None:
        return None
    normalized = amount.normalize()
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        normalized = normalized.quantize(Decimal("0.01"))
    return format(normalized, "f")
