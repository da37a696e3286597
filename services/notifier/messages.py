"""The first texts' interface, kept for callers that render the webhook's text only:
thin wrappers over rendering.py (the templates under templates/). New code uses
rendering.render, which also gives the e-mail's subject and HTML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.notifier import rendering

DEFAULT_LOCALE = rendering.DEFAULT_LOCALE


def supported_locale(locale: str | None, fallback: str | None = None) -> str:
    return rendering.supported_locale(locale, fallback)


def render(template: str, locale: str, data: Mapping[str, Any]) -> str:
    """The text of `template` for the customer in `locale`; the ticket number is
    data["ticket_no"] (as delivery.webhook_body passes it)."""
    return rendering.render(template, locale, data, ticket_no=str(data["ticket_no"])).text
