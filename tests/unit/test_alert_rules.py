"""The alert rules and what they watch, checked by Prometheus's own promtool.

- `promtool check rules` / `check config`: deploy/prometheus/ parses, the config loads the
  rules;
- `promtool test rules`: deploy/prometheus/alerts_test.yml, which must have, for every
  alert, a case where it fires and one where it stays quiet;
- every alert has a severity, a summary, a description and a runbook_url naming a section
  of docs/operations.md that exists; every metric an expression names is one the
  services export;
- `promtool check metrics` on the text exposition of a ServiceMetrics registry with every
  metric given a sample.

promtool comes from Debian's `prometheus` package, which `make install`
(deploy/local/bootstrap.sh) installs when it is missing; without it these tests fail.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import ServiceMetrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RUNBOOK = REPO / "docs" / "operations.md"
SEVERITIES = {"critical", "warning"}

# PromQL words an expression may hold that are not metric names.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "offset", "rate", "increase", "deriv", "delta",
    "irate", "histogram_quantile", "vector", "absent", "bool",
}  # fmt: skip


@functools.cache
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not on PATH, so the alert rules cannot be checked. `make install` "
            "installs it (Debian's prometheus package, deploy/local/bootstrap.sh); or run "
            "`apt-get install prometheus`.",
            pytrace=False,
        )
    return binary


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=PROMETHEUS_DIR,
        timeout=120,
        check=False,
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def populated_metrics() -> ServiceMetrics:
    """A registry with a sample in every metric, so the exposition shows each family with
    its labels (a labelled metric says nothing until it has a child)."""
    metrics = ServiceMetrics("intake")
    for collector in list(metrics.registry._collector_to_names):
        label_names = getattr(collector, "_labelnames", None)
        if label_names is None:
            continue  # a custom collector: it exposes whatever it has
        child = collector.labels(*["sample"] * len(label_names)) if label_names else collector
        kind = getattr(collector, "_type", "")
        if kind == "counter":
            child.inc()
        elif kind == "gauge":
            child.set(1)
        elif kind in ("histogram", "summary"):
            child.observe(0.2)
    return metrics


def exported_sample_names() -> set[str]:
    text = generate_latest(populated_metrics().registry).decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def markdown_anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in text.splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            heading = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(heading.replace(" ", "-"))
    return anchors


def metric_names_in(expr: str) -> set[str]:
    # Label matchers, grouping label lists, ranges and strings name no metric.
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", stripped)
    stripped = re.sub(r"\b\d+[smhdwy]\b", " ", stripped)  # offsets
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return words - PROMQL_WORDS


def test_the_rules_and_the_config_that_loads_them_are_valid() -> None:
    checked = run_promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = run_promtool("check", "config", str(CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout, config.stdout


def test_the_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert cases["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_has_a_severity_annotations_and_its_runbook_section() -> None:
    anchors = markdown_anchors(RUNBOOK.read_text(encoding="utf-8"))
    rules = alert_rules()
    assert len(rules) >= 7
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md", name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"docs/operations.md has no section for {name}"


def test_every_metric_an_alert_names_is_exported() -> None:
    exported = exported_sample_names() | {"up"}  # `up` is Prometheus's own, per target
    for rule in alert_rules():
        unknown = metric_names_in(rule["expr"]) - exported
        assert unknown == set(), f"{rule['alert']} names metrics nobody exports: {unknown}"


def test_the_metrics_exposition_passes_promtool_check_metrics() -> None:
    text = generate_latest(populated_metrics().registry).decode()
    # Every metric has a sample: an empty exposition would pass vacuously.
    assert (
        "complaints_received_total{" in text and "complaint_acknowledgement_seconds_bucket" in text
    )
    result = run_promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )
