"""The clock rules of services/resolution/clocks.py, pure: no database, no sleeps."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from services.resolution import clocks
from services.resolution.clocks import (
    NO_OVERRIDES,
    ClockName,
    ExtensionRefused,
    InvalidOverrides,
    calendar_for,
    extend_legal_final,
    initial_clocks,
    new_estimate,
    parse_overrides,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def due_by_name(planned: list[clocks.PlannedClock]) -> dict[str, datetime]:
    return {p.name.value: p.due_at for p in planned}


RECEIVED = utc(2025, 9, 30, 2)  # Tuesday 10:00 in Beijing, 03:00 in London


def plan(jurisdiction: str, received: datetime = RECEIVED) -> dict[str, datetime]:
    cal = calendar_for(jurisdiction, None, NO_OVERRIDES)
    return due_by_name(
        initial_clocks(
            jurisdiction,
            received,
            received + timedelta(hours=8),
            received + timedelta(hours=72),
            cal,
        )
    )


def test_internal_clocks_take_triage_due_times() -> None:
    due = plan("cn")
    assert due["first_response"] == RECEIVED + timedelta(hours=8)
    assert due["resolution"] == RECEIVED + timedelta(hours=72)


def test_cn_final_answer_is_15_calendar_days_even_across_national_day() -> None:
    due = plan("cn")
    assert set(due) == {"first_response", "resolution", "legal_final"}
    assert due["legal_final"] == RECEIVED + timedelta(days=15)


def test_us_response_and_final_are_calendar_days() -> None:
    due = plan("us")
    assert due["legal_response"] == RECEIVED + timedelta(days=15)
    assert due["legal_final"] == RECEIVED + timedelta(days=60)


def test_uk_counts_business_days_to_the_end_of_the_day_in_london() -> None:
    due = plan("uk")
    # From Wed 1 Oct, 15 business days (no UK holiday): Tue 21 Oct, ends at 00:00 BST.
    assert due["legal_response"] == utc(2025, 10, 21, 23)
    # 35: Tue 18 Nov, ends at midnight GMT.
    assert due["legal_final"] == utc(2025, 11, 19, 0)


def test_uk_skips_christmas_boxing_day_and_new_year() -> None:
    cal = calendar_for("uk", None, NO_OVERRIDES)
    received = utc(2025, 12, 19, 12)  # Friday
    # Dec 22, 23, 24, 29, 30, 31 (6), Jan 2 (7), 5-9 (12), 12-14 (15): Dec 25, 26, Jan 1 off.
    assert cal.add_business_days(received, 15) == utc(2026, 1, 15, 0)
    assert not cal.is_business_day(date(2025, 12, 25))
    assert not cal.is_business_day(date(2025, 12, 26))
    assert not cal.is_business_day(date(2026, 1, 1))


def test_uk_bank_holidays() -> None:
    cal = calendar_for("uk", None, NO_OVERRIDES)
    for day in (date(2025, 4, 18), date(2025, 4, 21), date(2025, 5, 5), date(2025, 8, 25)):
        assert not cal.is_business_day(day), day
    # Friday 2 May 2025 -> the 1st business day after is Tuesday 6 May (Monday is May Day).
    assert cal.add_business_days(utc(2025, 5, 2, 9), 1) == utc(2025, 5, 6, 23)


def test_eu_uses_the_target_calendar_in_brussels_time() -> None:
    cal = calendar_for("eu", None, NO_OVERRIDES)
    assert not cal.is_business_day(date(2025, 12, 25))
    assert not cal.is_business_day(date(2025, 12, 26))
    assert not cal.is_business_day(date(2025, 4, 18))  # Good Friday
    assert not cal.is_business_day(date(2025, 5, 1))  # Labour Day
    assert cal.is_business_day(date(2025, 5, 29))  # Ascension: not a TARGET holiday
    # A complaint at 23:30 UTC on Monday is already Tuesday in Brussels: counted from there.
    assert cal.add_business_days(utc(2025, 6, 2, 23, 30), 1) == utc(2025, 6, 4, 22)


def test_cn_business_days_skip_national_day_and_work_the_make_up_weekend() -> None:
    cal = calendar_for("cn", None, NO_OVERRIDES)
    for day in range(1, 9):
        assert not cal.is_business_day(date(2025, 10, day)), day
    assert cal.is_business_day(date(2025, 9, 28))  # Sunday, made up for the holiday
    assert cal.is_business_day(date(2025, 10, 11))  # Saturday, made up too
    assert not cal.is_business_day(date(2025, 10, 12))  # an ordinary Sunday
    # Tue 30 Sep: Oct 9 (1), Oct 10 (2), Sat Oct 11 (3): ends at 00:00 Beijing = 16:00 UTC.
    assert cal.add_business_days(RECEIVED, 3) == utc(2025, 10, 11, 16)


def test_override_file_adds_holidays_and_working_days_per_jurisdiction_and_tenant() -> None:
    tenant = uuid.uuid4()
    overrides = parse_overrides(
        f"""
        [jurisdiction.uk]
        holidays = ["2025-12-24"]
        working_days = ["2025-12-27"]

        [tenant."{tenant}"]
        holidays = [2025-12-23]
        working_days = ["2025-12-24"]
        """
    )
    plain = calendar_for("uk", uuid.uuid4(), overrides)  # another tenant: jurisdiction only
    assert not plain.is_business_day(date(2025, 12, 24))
    assert plain.is_business_day(date(2025, 12, 27))  # a Saturday made a working day
    assert plain.is_business_day(date(2025, 12, 23))
    mine = calendar_for("uk", tenant, overrides)
    assert mine.is_business_day(date(2025, 12, 24))  # the tenant's table wins
    assert not mine.is_business_day(date(2025, 12, 23))
    assert mine.is_business_day(date(2025, 12, 27))


def test_override_file_may_name_a_national_calendar() -> None:
    tenant = uuid.uuid4()
    overrides = parse_overrides(f'[tenant."{tenant}"]\ncountry = "DE"\n')
    assert not calendar_for("eu", tenant, overrides).is_business_day(date(2025, 10, 3))
    assert calendar_for("eu", None, overrides).is_business_day(date(2025, 10, 3))


@pytest.mark.parametrize(
    "text",
    [
        "[jurisdiction.uk]\nholidays = ['25-12-2025']\n",
        "[jurisdiction.uk]\nholidays = '2025-12-25'\n",
        "[jurisdiction.uk]\nfeasts = []\n",
        "[tenant.acme]\nholidays = []\n",
        "[jurisdiction.uk]\ncountry = 'XX'\n",
        "[other]\n",
        "not toml at all [",
    ],
)
def test_a_bad_override_file_is_refused(text: str) -> None:
    with pytest.raises(InvalidOverrides):
        parse_overrides(text)


def test_pause_and_resume_move_the_due_time_by_the_paused_duration() -> None:
    due = utc(2025, 1, 1, 12)
    paused = utc(2025, 1, 1, 10)
    remaining = clocks.remaining_when_paused(due, paused)
    assert remaining == timedelta(hours=2)
    resumed = utc(2025, 1, 3, 9)
    assert clocks.due_after_resume(remaining, resumed) == due + (resumed - paused)


def test_a_clock_paused_when_overdue_is_overdue_on_resume() -> None:
    remaining = clocks.remaining_when_paused(utc(2025, 1, 1, 12), utc(2025, 1, 1, 13))
    assert clocks.due_after_resume(remaining, utc(2025, 1, 2)) < utc(2025, 1, 2)


def test_fresh_resolution_clock_keeps_the_original_promise() -> None:
    now = utc(2025, 2, 1)
    fresh = clocks.fresh_resolution(timedelta(hours=72), now)
    assert fresh.name is ClockName.RESOLUTION
    assert fresh.due_at == now + timedelta(hours=72)


def test_cn_extension_ladder_15_30_60_then_refused() -> None:
    now = RECEIVED + timedelta(days=1)
    first = extend_legal_final("cn", RECEIVED, "running", 0, RECEIVED + timedelta(days=15), now)
    assert (first.extensions, first.days) == (1, 30)
    assert first.due_at == RECEIVED + timedelta(days=30)
    second = extend_legal_final("cn", RECEIVED, "running", 1, first.due_at, now)
    assert (second.extensions, second.days, second.previous_due_at) == (2, 60, first.due_at)
    assert second.due_at == RECEIVED + timedelta(days=60)
    with pytest.raises(ExtensionRefused, match="60 days"):
        extend_legal_final("cn", RECEIVED, "running", 2, second.due_at, now)


@pytest.mark.parametrize(
    ("jurisdiction", "state", "now_offset", "why"),
    [
        ("eu", "running", 1, "only a cn"),
        ("cn", "met", 1, "already given"),
        ("cn", "breached", 16, "breached"),
        ("cn", "running", 16, "already passed"),
    ],
)
def test_extension_refused(jurisdiction: str, state: str, now_offset: int, why: str) -> None:
    with pytest.raises(ExtensionRefused, match=why):
        extend_legal_final(
            jurisdiction,
            RECEIVED,
            state,
            0,
            RECEIVED + timedelta(days=15),
            RECEIVED + timedelta(days=now_offset),
        )


def test_new_estimate_internal_is_the_promise_again_at_least_an_hour() -> None:
    now = utc(2025, 3, 3, 10)
    assert new_estimate("resolution", timedelta(hours=72), now, None, "cn") == now + timedelta(
        hours=72
    )
    assert new_estimate("first_response", timedelta(minutes=5), now, None, "cn") == now + (
        timedelta(hours=1)
    )


def test_new_estimate_legal_is_five_business_days_later() -> None:
    cal = calendar_for("uk", None, NO_OVERRIDES)
    now = utc(2025, 12, 22, 10)  # Monday before Christmas
    # Dec 23, 24, 29, 30, 31: ends at midnight GMT.
    assert new_estimate("legal_final", timedelta(days=35), now, cal, "uk") == utc(2026, 1, 1)


def test_unknown_jurisdiction_runs_internal_clocks_only() -> None:
    planned = initial_clocks("br", RECEIVED, RECEIVED, RECEIVED, None)
    assert [p.name.value for p in planned] == ["first_response", "resolution"]
