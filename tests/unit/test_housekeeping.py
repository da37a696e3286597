"""Housekeeping's pure parts: which tables, the VACUUM statement, when a step is due,
when a table is analyzed, and the settings behind them."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.notifier.settings import NotifierSettings
from shared.housekeeping import (
    CHURNING_TABLES,
    RELIABILITY_TABLES,
    TABLE_VOCABULARY,
    Policy,
    Schedule,
    TableStats,
    analyze_statement,
    churning_tables,
    needs_analyze,
    qualified,
    to_vacuum,
    vacuum_now,
    vacuum_statement,
)
from shared.runtime import SHARED_MIGRATIONS
from shared.settings import ServiceSettings

SERVICES = Path(__file__).parents[2] / "services"


def _created_tables(*folders: Path) -> set[str]:
    sql = " ".join(f.read_text() for folder in folders for f in sorted(folder.glob("*.sql")))
    return set(re.findall(r"CREATE TABLE (\w+)", sql))


@pytest.mark.parametrize("schema", sorted(CHURNING_TABLES))
def test_every_churning_table_is_one_of_the_services_own(schema: str) -> None:
    tables = churning_tables(schema)
    assert set(RELIABILITY_TABLES) <= set(tables)
    assert set(tables) <= _created_tables(SHARED_MIGRATIONS, SERVICES / schema / "migrations")


def test_another_schema_has_the_reliability_tables_and_labels_stay_a_closed_set() -> None:
    assert churning_tables("relaytest") == RELIABILITY_TABLES
    assert all(re.fullmatch(r"[a-z_]+", t) for t in TABLE_VOCABULARY)
    assert len(TABLE_VOCABULARY) < 20


def test_a_record_table_the_round_does_not_vacuum_can_be_analyzed_alone() -> None:
    assert analyze_statement("resolution", "cases") == 'ANALYZE (SKIP_LOCKED) "resolution"."cases"'


def test_the_vacuum_statement_names_its_table_fully_and_skips_a_locked_one() -> None:
    assert vacuum_statement("notifier", "deliveries", analyze=False) == (
        'VACUUM (SKIP_LOCKED) "notifier"."deliveries"'
    )
    assert vacuum_statement("intake", "outbox", analyze=True) == (
        'VACUUM (SKIP_LOCKED, ANALYZE) "intake"."outbox"'
    )


@pytest.mark.parametrize("name", ["Outbox", "out box", 'x"; DROP TABLE y; --', "", "1table"])
def test_only_plain_identifiers_are_put_into_the_statement(name: str) -> None:
    with pytest.raises(ValueError):
        qualified("notifier", name)
    with pytest.raises(ValueError):
        qualified(name, "outbox")


def _stats(*, live: int, modified: int, analyzed: bool = True) -> TableStats:
    return TableStats("outbox", dead=0, live=live, modified=modified, analyzed=analyzed)


def test_a_table_is_analyzed_by_autovacuums_rule_or_when_it_never_was() -> None:
    assert needs_analyze(_stats(live=0, modified=0, analyzed=False))
    assert not needs_analyze(_stats(live=1000, modified=150))  # 50 + 10 % of 1000
    assert needs_analyze(_stats(live=1000, modified=151))
    assert not needs_analyze(_stats(live=0, modified=50))


def _policy(purge_s: float = 600, vacuum_s: float = 60) -> Policy:
    return Policy(timedelta(days=1), timedelta(days=30), purge_s, vacuum_s)


def test_the_tick_is_the_shorter_interval_and_the_session_outlives_it() -> None:
    assert _policy().tick_s == 60
    assert _policy(purge_s=30).tick_s == 30
    assert _policy(vacuum_s=0).tick_s == 600  # VACUUM only after a purge: the purge's tick
    for policy in (_policy(), _policy(vacuum_s=0)):
        assert policy.idle_timeout_s > policy.tick_s


def test_a_new_leader_purges_and_vacuums_at_its_first_round_then_at_the_intervals() -> None:
    schedule = Schedule(_policy())
    assert schedule.purge_due(0.0) and schedule.vacuum_due(0.0)
    schedule.last_purge = schedule.last_vacuum = 0.0
    assert not schedule.purge_due(59.9) and not schedule.vacuum_due(59.9)
    assert schedule.vacuum_due(60.0) and not schedule.purge_due(60.0)
    assert schedule.purge_due(600.0)


def test_without_a_periodic_vacuum_only_the_purge_is_scheduled() -> None:
    schedule = Schedule(_policy(vacuum_s=0))
    assert schedule.last_vacuum == -math.inf
    assert not schedule.vacuum_due(1e9)
    assert schedule.purge_due(0.0)


def test_what_is_vacuumed_every_table_periodically_else_what_lost_rows() -> None:
    tables = CHURNING_TABLES["notifier"]
    assert to_vacuum(tables, {}, periodic=True) == list(tables)
    deleted = {"outbox": 3, "inbox": 0, "deliveries": 2, "delivery_attempts": 5}
    assert to_vacuum(tables, deleted, periodic=False) == [
        "outbox",
        "deliveries",
        "delivery_attempts",
    ]
    assert to_vacuum(tables, {"outbox": 0}, periodic=False) == []


def test_a_queue_table_is_vacuumed_every_round_a_record_table_by_autovacuums_rule() -> None:
    def stats(table: str, dead: int, live: int) -> TableStats:
        return TableStats(table, dead=dead, live=live, modified=0, analyzed=True)

    assert vacuum_now(stats("deliveries", dead=0, live=1_000_000), {})
    assert vacuum_now(stats("outbox", dead=10, live=1_000_000), {})
    # A record table: 50 dead tuples plus a fifth of the live ones, as autovacuum.
    assert not vacuum_now(stats("cases", dead=2_050, live=10_000), {})
    assert vacuum_now(stats("cases", dead=2_051, live=10_000), {})
    assert not vacuum_now(stats("complaints", dead=40, live=0), {})
    # Rows a retention step just deleted from it: vacuumed whatever the share.
    assert vacuum_now(stats("recipients", dead=1, live=10_000), {"recipients": 1})


def test_the_settings_defaults_and_their_bounds() -> None:
    s = ServiceSettings()
    policy = Policy.from_settings(s)
    assert policy.outbox_retention == timedelta(days=1)  # published rows: debugging only
    assert policy.inbox_retention == timedelta(days=30)
    assert (policy.purge_every_s, policy.vacuum_every_s) == (600, 60)
    assert ServiceSettings(housekeeping_vacuum_interval_s=0).housekeeping_vacuum_interval_s == 0
    for bad in (
        {"outbox_retention_days": -1},
        {"inbox_retention_days": -1},
        {"housekeeping_purge_interval_s": 0},
        {"housekeeping_vacuum_interval_s": -1},
    ):
        with pytest.raises(ValidationError):
            ServiceSettings(**bad)


def test_the_environment_names_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_RETENTION_DAYS", "0.5")
    monkeypatch.setenv("HOUSEKEEPING_VACUUM_INTERVAL_S", "30")
    monkeypatch.setenv("NOTIFIER_DELIVERY_RETENTION_DAYS", "90")
    s = NotifierSettings()
    assert (s.outbox_retention_days, s.housekeeping_vacuum_interval_s) == (0.5, 30)
    assert s.delivery_retention_days == 90


def test_finished_deliveries_are_kept_a_month_by_default_and_never_a_negative_time() -> None:
    assert NotifierSettings().delivery_retention_days == 30
    with pytest.raises(ValidationError):
        NotifierSettings(delivery_retention_days=-1)
