"""``python -m services.triage classify FILE``: classify JSON Lines, one answer per line.

Each input line is a JSON object with the complaint fields plus an ``id``. Each output
line is ``{"id", "category", "priority", "reasons"}``, in input order; a line that is not
a JSON object or has no usable description yields ``{"id", "error"}`` instead, and the
run goes on. Blank lines are skipped. The classification is the service's own code path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, TextIO

from services.triage.classifier import Classifier, ComplaintFacts


def classify_lines(lines: Iterable[str], out: TextIO, classifier: Classifier) -> int:
    """Write one JSON line per non-blank input line; return how many lines had errors."""
    errors = 0
    for line in lines:
        if not line.strip():
            continue
        answer = _classify_line(line, classifier)
        errors += "error" in answer
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
    return errors


def _classify_line(line: str, classifier: Classifier) -> dict[str, Any]:
    try:
        # Amounts stay Decimal even when a producer wrote them as JSON numbers.
        record = json.loads(line, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        return {"id": None, "error": f"invalid JSON: {exc.msg} (column {exc.colno})"}
    if not isinstance(record, Mapping):
        return {"id": None, "error": "expected a JSON object"}
    complaint_id = _id(record.get("id"))
    try:
        facts = ComplaintFacts.from_mapping(record)
    except ValueError as exc:
        return {"id": complaint_id, "error": str(exc)}
    result = classifier.classify(facts)
    return {
        "id": complaint_id,
        "category": result.category,
        "priority": result.priority,
        "reasons": list(result.reasons),
    }


def _id(value: Any) -> str | int | None:
    # Echo a usable id back so the caller can match the answer; anything else is null.
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return value
