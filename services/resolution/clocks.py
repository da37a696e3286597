"""A case's clocks, pure (no I/O): what runs, when it is due, and the calendars.

Every case runs two internal clocks, from triage's due times, paused while the case is
`awaiting_customer` (on resume the due time moves by the paused duration):
- `first_response`: met by the first agent action the customer sees;
- `resolution`: met when the case is resolved; a reopened case runs a fresh one.

and the legal clocks of its tenant's jurisdiction, never paused:
- `cn`: `legal_final` 15 calendar days from receipt, extendable to 30 and then 60 days
  only by an approver's decision (the customer is told);
- `eu`, `uk`: `legal_response` 15 business days (met by a holding response, i.e. any agent
  response the customer sees) and `legal_final` 35 business days;
- `us`: `legal_response` 15 calendar days and `legal_final` 60 calendar days.

Calendar days are exact: received_at + N x 24 h. Business days follow the regulators'
"by the end of the Nth business day after receipt": the day of receipt does not count,
and the clock is due at the end (local midnight) of the Nth business day, in the
jurisdiction's time zone. A business day is Monday-Friday, not a holiday, plus any extra
working day (China's make-up working weekends).

Holidays come from the `holidays` library:
- cn: country_holidays("CN"). Its make-up working days are read from the library's own
  "Day off (substituted from MM/DD/YYYY)" entries: the date named is worked.
- eu: the ECB's TARGET2 calendar, financial_holidays("ECB") (EU-wide; a tenant whose
  customers follow a national calendar sets `country` in the override file).
- uk: country_holidays("GB", subdiv="ENG") (England and Wales bank holidays).
- us: country_holidays("US") (federal).

Tenant overrides (TOML, ResolutionSettings.holiday_overrides_file), a jurisdiction's
table first, then the tenant's on top:

    [jurisdiction.cn]
    holidays = ["2026-10-09"]            # extra days off
    working_days = ["2026-10-10"]        # extra working days (weekend make-up days)

    [tenant."6f1c1f3e-0000-4000-8000-000000000001"]
    country = "DE"                       # optional: national calendar instead of default
    holidays = ["2026-12-24", "2026-12-31"]
    working_days = []

New estimate after a breach (told to the customer): for an internal clock, the breach
time plus the clock's original duration (its promise again, at least one hour); for a
legal clock, the end of the 5th business day after the breach in the case's calendar.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import holidays


class ClockName(StrEnum):
    FIRST_RESPONSE = "first_response"
    RESOLUTION = "resolution"
    LEGAL_RESPONSE = "legal_response"
    LEGAL_FINAL = "legal_final"


class ClockState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"


INTERNAL = frozenset({ClockName.FIRST_RESPONSE, ClockName.RESOLUTION})
LEGAL = frozenset({ClockName.LEGAL_RESPONSE, ClockName.LEGAL_FINAL})
JURISDICTIONS = ("cn", "eu", "uk", "us")

TIME_ZONES: Mapping[str, ZoneInfo] = {
    "cn": ZoneInfo("Asia/Shanghai"),
    "eu": ZoneInfo("Europe/Brussels"),
    "uk": ZoneInfo("Europe/London"),
    "us": ZoneInfo("America/New_York"),
}

# cn's legal_final: 15 days, then 30, then 60 (each step one approver's decision).
CN_FINAL_LADDER_DAYS = (15, 30, 60)
MIN_INTERNAL_ESTIMATE = timedelta(hours=1)
LEGAL_ESTIMATE_BUSINESS_DAYS = 5


def kind_of(name: str) -> str:
    return "internal" if name in INTERNAL else "legal"


# --- calendars --------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarOverride:
    country: str | None = None
    holidays: frozenset[date] = frozenset()
    working_days: frozenset[date] = frozenset()


@dataclass(frozen=True)
class HolidayOverrides:
    by_jurisdiction: Mapping[str, CalendarOverride] = field(default_factory=dict)
    by_tenant: Mapping[str, CalendarOverride] = field(default_factory=dict)


NO_OVERRIDES = HolidayOverrides()


class InvalidOverrides(ValueError):
    """The override file does not follow the format above."""


def _dates(value: Any, where: str) -> frozenset[date]:
    if not isinstance(value, list):
        raise InvalidOverrides(f"{where} must be a list of dates")
    out = set()
    for item in value:
        if isinstance(item, date) and not isinstance(item, datetime):
            out.add(item)
        elif isinstance(item, str):
            try:
                out.add(date.fromisoformat(item))
            except ValueError:
                raise InvalidOverrides(f"{where}: {item!r} is not a YYYY-MM-DD date") from None
        else:
            raise InvalidOverrides(f"{where}: {item!r} is not a date")
    return frozenset(out)


def _override(table: Any, where: str) -> CalendarOverride:
    if not isinstance(table, dict):
        raise InvalidOverrides(f"{where} must be a table")
    unknown = set(table) - {"country", "holidays", "working_days"}
    if unknown:
        raise InvalidOverrides(f"{where}: unknown keys {sorted(unknown)}")
    country = table.get("country")
    if country is not None and (
        not isinstance(country, str) or country not in holidays.list_supported_countries()
    ):
        raise InvalidOverrides(f"{where}.country: {country!r} is not a supported country")
    return CalendarOverride(
        country=country,
        holidays=_dates(table.get("holidays", []), f"{where}.holidays"),
        working_days=_dates(table.get("working_days", []), f"{where}.working_days"),
    )


def parse_overrides(text: str) -> HolidayOverrides:
    """The override file's text (TOML) -> HolidayOverrides; raises InvalidOverrides."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidOverrides(f"not TOML: {exc}") from None
    unknown = set(data) - {"jurisdiction", "tenant"}
    if unknown:
        raise InvalidOverrides(f"unknown tables {sorted(unknown)}")
    jurisdictions = data.get("jurisdiction", {})
    tenants = data.get("tenant", {})
    if not isinstance(jurisdictions, dict) or not isinstance(tenants, dict):
        raise InvalidOverrides("jurisdiction and tenant must be tables")
    by_tenant = {}
    for tenant, table in tenants.items():
        try:
            key = str(uuid.UUID(tenant))
        except ValueError:
            raise InvalidOverrides(f"tenant {tenant!r} is not a tenant id (uuid)") from None
        by_tenant[key] = _override(table, f"tenant.{tenant}")
    return HolidayOverrides(
        by_jurisdiction={j: _override(t, f"jurisdiction.{j}") for j, t in jurisdictions.items()},
        by_tenant=by_tenant,
    )


_SUBSTITUTED = re.compile(r"substituted from (\d{2})/(\d{2})/(\d{4})")


@lru_cache(maxsize=64)
def _base_holidays(jurisdiction: str, country: str | None) -> holidays.HolidayBase:
    if country is not None:
        return holidays.country_holidays(country)
    match jurisdiction:
        case "cn":
            # English names: the make-up working days are read from them.
            return holidays.country_holidays("CN", language="en_US")
        case "eu":
            return holidays.financial_holidays("ECB")
        case "uk":
            return holidays.country_holidays("GB", subdiv="ENG")  # England and Wales
        case "us":
            return holidays.country_holidays("US")
    raise ValueError(f"no calendar for jurisdiction {jurisdiction!r}")


@dataclass(frozen=True)
class BusinessCalendar:
    """Which local dates are worked in one jurisdiction, for one tenant."""

    jurisdiction: str
    tz: ZoneInfo
    country: str | None = None
    extra_holidays: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()

    def _library(self) -> holidays.HolidayBase:
        return _base_holidays(self.jurisdiction, self.country)

    def _made_up(self, day: date) -> bool:
        """A weekend day the library's calendar says is worked (cn's make-up days)."""
        return day in _make_up_days(self.jurisdiction, self.country, day.year)

    def is_business_day(self, day: date) -> bool:
        if day in self.extra_working_days:
            return True
        if day in self.extra_holidays:
            return False
        if day.weekday() >= 5:
            return self._made_up(day)
        return day not in self._library()

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The end (next local midnight) of the `days`-th business day after `start`'s
        local date, as an aware datetime in UTC's offset of the input."""
        local = start.astimezone(self.tz).date()
        counted = 0
        while counted < days:
            local += timedelta(days=1)
            if self.is_business_day(local):
                counted += 1
        end = datetime.combine(local + timedelta(days=1), time(0), tzinfo=self.tz)
        return end.astimezone(start.tzinfo)


@lru_cache(maxsize=256)
def _make_up_days(jurisdiction: str, country: str | None, year: int) -> frozenset[date]:
    if country is not None or jurisdiction != "cn":
        return frozenset()
    found = set()
    # A day off early next year may be made up by a weekend day of this one.
    for name in holidays.country_holidays("CN", years=(year, year + 1), language="en_US").values():
        for m in _SUBSTITUTED.finditer(name):
            found.add(date(int(m[3]), int(m[1]), int(m[2])))
    return frozenset(d for d in found if d.year == year)


def calendar_for(
    jurisdiction: str, tenant_id: uuid.UUID | str | None, overrides: HolidayOverrides
) -> BusinessCalendar:
    """The jurisdiction's calendar with its overrides and then the tenant's applied."""
    if jurisdiction not in TIME_ZONES:
        raise ValueError(f"no calendar for jurisdiction {jurisdiction!r}")
    layers = [overrides.by_jurisdiction.get(jurisdiction)]
    if tenant_id is not None:
        layers.append(overrides.by_tenant.get(str(tenant_id)))
    country: str | None = None
    extra_h: set[date] = set()
    extra_w: set[date] = set()
    for layer in layers:
        if layer is None:
            continue
        country = layer.country or country
        # A later layer wins for a date both name.
        extra_h = (extra_h - layer.working_days) | layer.holidays
        extra_w = (extra_w - layer.holidays) | layer.working_days
    return BusinessCalendar(
        jurisdiction=jurisdiction,
        tz=TIME_ZONES[jurisdiction],
        country=country,
        extra_holidays=frozenset(extra_h),
        extra_working_days=frozenset(extra_w),
    )


# --- the clocks of a case ---------------------------------------------------------------


@dataclass(frozen=True)
class PlannedClock:
    name: ClockName
    started_at: datetime
    due_at: datetime

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    @property
    def duration(self) -> timedelta:
        return self.due_at - self.started_at


def legal_clocks(
    jurisdiction: str, received_at: datetime, calendar: BusinessCalendar | None
) -> list[PlannedClock]:
    """The legal clocks of a jurisdiction; none for one this service has no rules for."""
    match jurisdiction:
        case "cn":
            return [
                PlannedClock(
                    ClockName.LEGAL_FINAL,
                    received_at,
                    received_at + timedelta(days=CN_FINAL_LADDER_DAYS[0]),
                )
            ]
        case "eu" | "uk":
            assert calendar is not None
            return [
                PlannedClock(
                    ClockName.LEGAL_RESPONSE,
                    received_at,
                    calendar.add_business_days(received_at, 15),
                ),
                PlannedClock(
                    ClockName.LEGAL_FINAL, received_at, calendar.add_business_days(received_at, 35)
                ),
            ]
        case "us":
            return [
                PlannedClock(
                    ClockName.LEGAL_RESPONSE, received_at, received_at + timedelta(days=15)
                ),
                PlannedClock(ClockName.LEGAL_FINAL, received_at, received_at + timedelta(days=60)),
            ]
    return []


def initial_clocks(
    jurisdiction: str,
    received_at: datetime,
    first_response_due: datetime,
    resolution_due: datetime,
    calendar: BusinessCalendar | None,
) -> list[PlannedClock]:
    return [
        PlannedClock(ClockName.FIRST_RESPONSE, received_at, first_response_due),
        PlannedClock(ClockName.RESOLUTION, received_at, resolution_due),
        *legal_clocks(jurisdiction, received_at, calendar),
    ]


def fresh_resolution(duration: timedelta, now: datetime) -> PlannedClock:
    """A reopened case's resolution clock: the original promise again, from now."""
    return PlannedClock(ClockName.RESOLUTION, now, now + duration)


# --- pause and resume -------------------------------------------------------------------


def remaining_when_paused(due_at: datetime, now: datetime) -> timedelta:
    """What is left of a clock paused now (negative when it was already overdue: it then
    breaches as soon as it runs again)."""
    return due_at - now


def due_after_resume(remaining: timedelta, now: datetime) -> datetime:
    """A paused clock resumed now: due moves by exactly the time it stood paused."""
    return now + remaining


# --- the cn extension ladder ------------------------------------------------------------


class ExtensionRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Extension:
    extensions: int  # after this one: 1 (30 days) or 2 (60 days)
    days: int
    previous_due_at: datetime
    due_at: datetime


def extend_legal_final(
    jurisdiction: str,
    received_at: datetime,
    state: str,
    extensions: int,
    due_at: datetime,
    now: datetime,
) -> Extension:
    """The next step of cn's ladder (15 -> 30 -> 60 days from receipt), or why not."""
    if jurisdiction != "cn":
        raise ExtensionRefused(
            f"only a cn final-answer deadline can be extended; this case is under {jurisdiction}"
        )
    if state == ClockState.MET:
        raise ExtensionRefused("the final answer was already given: nothing to extend")
    if state == ClockState.BREACHED:
        raise ExtensionRefused(
            "the deadline has already passed and was breached; an extension must be decided "
            "before it is due"
        )
    if now >= due_at:
        raise ExtensionRefused("the deadline has already passed; it can no longer be extended")
    if extensions + 1 >= len(CN_FINAL_LADDER_DAYS):
        raise ExtensionRefused(
            f"already extended to {CN_FINAL_LADDER_DAYS[-1]} days, the legal maximum"
        )
    days = CN_FINAL_LADDER_DAYS[extensions + 1]
    return Extension(
        extensions=extensions + 1,
        days=days,
        previous_due_at=due_at,
        due_at=received_at + timedelta(days=days),
    )


# --- after a breach ---------------------------------------------------------------------


def new_estimate(
    name: str,
    duration: timedelta,
    now: datetime,
    calendar: BusinessCalendar | None,
    jurisdiction: str,
) -> datetime:
    """The new time told to the customer once a clock breached (rule in the docstring)."""
    if name in INTERNAL:
        return now + max(duration, MIN_INTERNAL_ESTIMATE)
    cal = calendar if calendar is not None else calendar_for(jurisdiction, None, NO_OVERRIDES)
    return cal.add_business_days(now, LEGAL_ESTIMATE_BUSINESS_DAYS)
