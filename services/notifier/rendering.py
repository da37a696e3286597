"""What the customer reads: a notification's subject, text and HTML in their locale,
rendered from the template files under templates/<locale>/.

Layout: templates/<locale>/<template>.subject.j2, .txt.j2 and .html.j2 for each
`template` key planning.py emits ("complaint.triaged", ...), _base.html.j2 (the e-mail's
frame) and labels.json (codes in words: categories, outcomes, clocks ...).

Jinja2 sandboxed (template files are content, edited by people who are not reviewers of
code), StrictUndefined (a variable the data lacks is an error, never a blank in front of
the customer), autoescaping for the HTML part only (the text part is the webhook's
"message" and must stay the customer's words as written). Amounts and dates go through
Babel filters in the customer's locale and time zone. Deterministic: the same inputs give
the same bytes, so a retried delivery sends what the first attempt sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal, is_currency
from jinja2 import FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")
TEMPLATE_DIR = Path(__file__).parent / "templates"

# The clock a customer reads due times in when we do not know theirs, and its name.
_DEFAULT_ZONES = {"zh-CN": "Asia/Shanghai", "en": "UTC"}
# Zone names that read better than Babel's ("中国标准时间"): kept from the first texts.
_ZONE_NAMES = {
    ("zh-CN", "Asia/Shanghai"): "北京时间",
    ("zh-CN", "UTC"): "UTC",
    ("en", "UTC"): "UTC",
}
_BABEL_LOCALES = {"zh-CN": "zh_CN", "en": "en"}


@dataclass(frozen=True)
class Rendered:
    subject: str  # e-mail subject, contains the ticket number
    text: str  # plain text: the webhook's "message" and the e-mail's text part
    html: str  # the e-mail's HTML part (autoescaped)


def supported_locale(locale: str | None, fallback: str | None = None) -> str:
    """The customer's locale if we write in it (zh-TW reads zh-CN, en-GB en), else the
    tenant's (`fallback`), else zh-CN."""
    for candidate in (locale, fallback):
        found = _match(candidate)
        if found:
            return found
    return DEFAULT_LOCALE


def _match(locale: str | None) -> str | None:
    if not locale:
        return None
    if locale in LOCALES:
        return locale
    language = locale.replace("_", "-").split("-", 1)[0].lower()
    return {"zh": "zh-CN", "en": "en"}.get(language)


def render(
    template: str,
    locale: str,
    data: Mapping[str, Any],
    *,
    ticket_no: str,
    time_zone: str | None = None,
) -> Rendered:
    """`template` ("complaint.triaged", the delivery row's template) for the customer in
    `locale`, with due times in `time_zone` (an IANA name) when known. Raises
    jinja2.UndefinedError when `data` lacks a variable the template needs and
    jinja2.TemplateNotFound for an unknown template: both permanent for that row."""
    base, context = _template_context(template, locale, data, ticket_no, time_zone)
    subject = _ENV.get_template(f"{base}.subject.j2").render(context)
    text = _ENV.get_template(f"{base}.txt.j2").render(context)
    # One line for the subject: a header never carries a line break from the data.
    subject = " ".join(subject.split())
    html = _ENV.get_template(f"{base}.html.j2").render({**context, "subject": subject})
    return Rendered(subject=subject, text=_tidy(text), html=html.strip() + "\n")


def render_text(
    template: str,
    locale: str,
    data: Mapping[str, Any],
    *,
    ticket_no: str,
    time_zone: str | None = None,
) -> str:
    """render()'s `text` alone, for a webhook's `message`: the subject and the HTML part
    (two thirds of the rendering) are left out. Raises as render() does."""
    base, context = _template_context(template, locale, data, ticket_no, time_zone)
    return _tidy(_ENV.get_template(f"{base}.txt.j2").render(context))


def _template_context(
    template: str,
    locale: str,
    data: Mapping[str, Any],
    ticket_no: str,
    time_zone: str | None,
) -> tuple[str, dict[str, Any]]:
    """The templates' path prefix ("zh-CN/complaint.triaged") and their variables."""
    locale = supported_locale(locale)
    context = {
        **data,
        "ticket_no": ticket_no,
        "locale": locale,
        "time_zone": _zone_name(time_zone, locale),
        "labels": _LABELS[locale],
    }
    return f"{locale}/{template}", context


def _tidy(text: str) -> str:
    """Template line breaks as written, no trailing blanks, at most one empty line."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _zone_name(time_zone: str | None, locale: str) -> str:
    if time_zone:
        try:
            ZoneInfo(time_zone)
            return time_zone
        except (ZoneInfoNotFoundError, ValueError):
            pass  # an odd value from a client: the locale's clock, never a failed delivery
    return _DEFAULT_ZONES[locale]


# ------------------------------------------------------------------------ filters


@pass_context
def _when(ctx: Context, value: str | datetime) -> str:
    """A due time in the customer's clock, with the clock named: 2026-11-23 10:00（北京时间）."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    locale, zone = ctx["locale"], ctx["time_zone"]
    tz = ZoneInfo(zone)
    babel_locale = _BABEL_LOCALES[locale]
    when = format_datetime(at, "yyyy-MM-dd HH:mm", tzinfo=tz, locale=babel_locale)
    name = _ZONE_NAMES.get((locale, zone)) or format_datetime(
        at, "zzzz", tzinfo=tz, locale=babel_locale
    )
    return f"{when}（{name}）" if locale == "zh-CN" else f"{when} {name}"


@pass_context
def _money(ctx: Context, amount: str | int | Decimal, currency: str | None = None) -> str:
    """An amount as the customer's locale writes it in its currency: ¥86.50 (zh-CN),
    CN¥86.50 (en), $86.50 (en, USD). Points and other amounts without a currency are a
    plain number."""
    try:
        number = Decimal(str(amount))
    except InvalidOperation:
        return str(amount)
    babel_locale = _BABEL_LOCALES[ctx["locale"]]
    if currency and is_currency(currency):
        return format_currency(number, currency, locale=babel_locale)
    plain = format_decimal(number, locale=babel_locale)
    return f"{plain} {currency}" if currency else plain


@pass_context
def _label(ctx: Context, code: Any, kind: str) -> str:
    """A code in words ("duplicate_charge" -> 重复扣款) from labels.json; a code the file
    does not know yet reads as itself, so a new category never blocks a notification."""
    words = ctx["labels"].get(kind, {})
    return str(words.get(str(code), str(code).replace("_", " ")))


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        undefined=StrictUndefined,
        autoescape=select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False, default=False
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,  # loaded once: the files ship with the code
        cache_size=-1,
    )
    env.filters.update(when=_when, money=_money, label=_label)
    return env


def _load_labels() -> dict[str, dict[str, dict[str, str]]]:
    return {
        locale: json.loads((TEMPLATE_DIR / locale / "labels.json").read_text("utf-8"))
        for locale in LOCALES
    }


_ENV = _environment()
_LABELS = _load_labels()
# Compile every template now: a broken file fails the service's start, not a delivery.
TEMPLATES = tuple(sorted(_ENV.list_templates(extensions=["j2"])))
for _name in TEMPLATES:
    _ENV.get_template(_name)
