"""structlog set-up: JSON or console, contextvars, and masking of customer contact data."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

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


def mask_text(text: str) -> str:
    """Replace e-mail addresses, card, national ID and phone numbers with placeholders."""
    return _PII.sub(_placeholder, text)


def _mask_value(key: str, value: Any) -> Any:
    if key in SENSITIVE_KEYS and value is not None:
        return "[redacted]"
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def mask_pii(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the last line of defence, applied to every log record."""
    return {key: _mask_value(key, value) for key, value in event_dict.items()}


class MaskingFilter(logging.Filter):
    """The same masking for what libraries log through stdlib logging (uvicorn's
    "Exception in ASGI application" traceback, faststream, aiokafka), which never passes
    through structlog's processors."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_text(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib logging: keep them at WARNING, in one stream, masked.
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
