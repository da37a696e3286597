"""Fast JSON (orjson) with Decimal support: money never passes through float."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def dumps_sorted(value: Any) -> bytes:
    """Canonical form: sorted keys, for fingerprints that ignore key order."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS)


def dumps_str(value: Any) -> str:
    return dumps(value).decode()


loads = orjson.loads
