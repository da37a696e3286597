"""structlog set-up: JSON or console, contextvars, and masking of customer contact data."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

# Order matters: e-mail before phone, card before ID, so the longer pattern wins.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_CN_ID = re.compile(r"\b\d{17}[\dXx]\b")
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d -]{6,}\d\b")

# Fields whose value is customer contact data whatever it looks like.
SENSITIVE_KEYS = frozenset({"email", "phone", "customer_email", "customer_phone", "id_number"})


def mask_text(text: str) -> str:
    """Replace e-mail addresses, card, national ID and phone numbers with placeholders."""
    text = _EMAIL.sub("[email]", text)
    text = _CN_ID.sub("[id]", text)
    text = _CARD.sub("[card]", text)
    return _PHONE.sub("[phone]", text)


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
    # Libraries log through stdlib logging: keep them at WARNING, in one stream.
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)s %(message)s")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
