"""The Grafana dashboard (deploy/grafana/dashboards/): a valid, provisioned dashboard whose
every PromQL query names only metrics the services export.

The exported names are collected two ways and must agree: statically, from every metric
definition under services/ and shared/ (prometheus_client's Counter, Gauge, Histogram,
Summary, Info, Enum and the *MetricFamily classes of custom collectors), and at run time,
from the text exposition of shared.metrics.ServiceMetrics. A metric a helper adds (such
as consumer lag) becomes queryable here as soon as it is defined in the code.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from shared.metrics import ServiceMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DASHBOARD_FILE = DASHBOARDS / "complaints.json"
PROVISIONING = GRAFANA / "provisioning"
CODE_DIRS = (REPO_ROOT / "services", REPO_ROOT / "shared")

# Series Prometheus itself writes for every target; nothing else is allowed without a
# definition in the code.
PROMETHEUS_BUILTIN = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
)

# The suffixes each metric type adds in the text exposition (prometheus_client).
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "Enum": ("",),
    "CounterMetricFamily": ("_total", "_created"),
    "GaugeMetricFamily": ("",),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count", "_created"),
    "SummaryMetricFamily": ("", "_sum", "_count", "_created"),
    "InfoMetricFamily": ("_info",),
    "GaugeHistogramMetricFamily": ("_bucket", "_gsum", "_gcount"),
    "StateSetMetricFamily": ("",),
}

# PromQL words that look like metric names but are not.
_PROMQL_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
        "group_right", "bool", "offset", "inf", "nan",
    }
)  # fmt: skip
_GROUPING_CLAUSE = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")


# ---- what the services export ------------------------------------------------------


def _metric_definitions() -> Iterator[tuple[str, str, Path]]:
    """(type, name, file) for every metric constructed with a literal name in the code."""
    for root in CODE_DIRS:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if kind not in _SUFFIXES:
                    continue
                name_arg = node.args[0] if node.args else None
                for keyword in node.keywords:
                    if keyword.arg == "name":
                        name_arg = keyword.value
                if isinstance(name_arg, ast.Constant) and isinstance(name_arg.value, str):
                    yield kind, name_arg.value, path


def _series_names(kind: str, name: str) -> set[str]:
    base = name
    if kind in {"Counter", "CounterMetricFamily"}:
        base = name.removesuffix("_total")
    elif kind in {"Info", "InfoMetricFamily"}:
        base = name.removesuffix("_info")
    return {base + suffix for suffix in _SUFFIXES[kind]}


@functools.cache
def exported_from_code() -> frozenset[str]:
    names: set[str] = set()
    for kind, name, _path in _metric_definitions():
        names |= _series_names(kind, name)
    return frozenset(names)


def exported_at_run_time() -> frozenset[str]:
    """Series names in the text exposition of one service's ServiceMetrics."""
    text = _exposition_with_children(ServiceMetrics("intake"))
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE ") or line.startswith("# HELP "):
            continue
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return frozenset(names)


def _exposition_with_children(metrics: ServiceMetrics) -> str:
    """Labelled metrics expose no series until a child exists: make one for each."""
    for attribute in vars(metrics).values():
        label_names = getattr(attribute, "_labelnames", ())
        if label_names and not getattr(attribute, "_labelvalues", ()):
            child = attribute.labels(*("x" for _ in label_names))
            if hasattr(child, "inc"):
                child.inc()
            elif hasattr(child, "observe"):
                child.observe(0.1)
        elif hasattr(attribute, "observe"):
            attribute.observe(0.1)
    return generate_latest(metrics.registry).decode()


# ---- what the dashboard queries ----------------------------------------------------


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Removes what cannot be a metric name (string literals, label matchers, range and
    subquery brackets, grouping clauses, Grafana variables, numbers), then keeps every
    identifier not called as a function and not a PromQL keyword.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING_CLAUSE.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<![\w:])\d[\w.]*", " ", text)  # numbers, 1e3, 0x1f, durations
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def _all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))


def _query_panels() -> list[dict[str, Any]]:
    return [p for p in _all_panels(_dashboard()["panels"]) if p.get("type") != "row"]


def _queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every panel target and every query variable."""
    queries = [
        (panel["title"], target["expr"])
        for panel in _query_panels()
        for target in panel.get("targets", [])
    ]
    for variable in _dashboard().get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            expr = query.get("query", "") if isinstance(query, dict) else str(query or "")
            inner = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", expr)
            queries.append((f"variable {variable['name']}", inner[1] if inner else expr))
    return queries


def _provisioned_datasources() -> list[dict[str, Any]]:
    files = sorted((PROVISIONING / "datasources").glob("*.y*ml"))
    return [
        ds for f in files for ds in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]
    ]


def _prometheus_datasource_uid() -> str:
    (uid,) = [ds["uid"] for ds in _provisioned_datasources() if ds["type"] == "prometheus"]
    return str(uid)


# ---- the extractor and the exported names ------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'sum by (channel) (rate(complaints_received_total{channel!="web"}[5m]))',
            {"complaints_received_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, service) "
            "(rate(event_handling_seconds_bucket[$__rate_interval])))",
            {"event_handling_seconds_bucket"},
        ),
        ("a_total / ignoring(outcome) group_left b_count > bool 0.5", {"a_total", "b_count"}),
        ('label_replace(x_seconds offset 1h, "dst", "$1", "src", "(.*)")', {"x_seconds"}),
        ("max_over_time(q:ratio:rate5m[1h:5m]) * 1e3", {"q:ratio:rate5m"}),
        ("sum without (instance) (g) unless on (job) h", {"g", "h"}),
    ],
)
def test_metric_names_in_extracts_only_selected_metrics(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


def test_code_definitions_cover_the_run_time_exposition() -> None:
    # Guards the static collection: it must at least see what ServiceMetrics exports.
    at_run_time = exported_at_run_time()
    assert "complaints_received_total" in at_run_time
    assert at_run_time <= exported_from_code(), sorted(at_run_time - exported_from_code())


def test_an_unknown_metric_in_a_query_is_caught() -> None:
    unknown = metric_names_in("rate(http_requests_total[5m])") - exported_from_code()
    assert unknown == {"http_requests_total"}


# ---- the dashboard -----------------------------------------------------------------


def test_dashboard_is_a_valid_grafana_dashboard() -> None:
    dashboard = _dashboard()

    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None, "provisioned dashboards have no id"
    panels = list(_all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["type"] and panel["title"], panel
        grid = panel["gridPos"]
        assert grid["w"] >= 1 and grid["h"] >= 1, panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    uid = _prometheus_datasource_uid()
    panels = _query_panels()

    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        targets = panel.get("targets")
        assert targets, f"panel {panel['title']!r} has no targets"
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]


def test_every_query_names_only_exported_metrics() -> None:
    exported = exported_from_code() | PROMETHEUS_BUILTIN
    unknown = {
        (title, name)
        for title, expr in _queries()
        for name in metric_names_in(expr)
        if name not in exported
    }
    assert not unknown, f"queries name metrics no service exports: {sorted(unknown)}"


def test_every_query_names_some_metric() -> None:
    for title, expr in _queries():
        assert metric_names_in(expr), f"{title}: no metric found in {expr!r}"


@pytest.mark.parametrize(
    "metric",
    [
        "complaints_received_total",
        "events_consumed_total",
        "complaint_acknowledgement_seconds_bucket",
        "event_handling_seconds_bucket",
        "kafka_consumer_lag",
        "notification_delivery_seconds_bucket",
        "clocks_due_soon",
        "outbox_pending_events",
        "outbox_oldest_pending_age_seconds",
        "events_dead_lettered_total",
        "sla_breaches_total",
        "notifications_sent_total",
        "resolutions_recorded_total",
    ],
)
def test_the_panels_on_call_opens_first_are_there(metric: str) -> None:
    assert any(metric in metric_names_in(expr) for _title, expr in _queries()), metric


def test_latency_panels_are_percentiles_of_the_histograms() -> None:
    exprs = [expr for _title, expr in _queries()]
    for histogram in ("complaint_acknowledgement_seconds", "event_handling_seconds"):
        assert any(
            "histogram_quantile(" in expr and f"{histogram}_bucket" in expr and "le" in expr
            for expr in exprs
        ), histogram


# ---- provisioning ------------------------------------------------------------------


def test_dashboards_provider_loads_the_mounted_folder_in_compose() -> None:
    providers = [
        provider
        for f in sorted((PROVISIONING / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]
    ]
    (provider,) = [p for p in providers if p["type"] == "file"]
    container_path = provider["options"]["path"]

    compose = _rendered_compose()
    mounts = _mounts(compose["services"]["grafana"])
    assert Path(mounts[container_path]).resolve() == DASHBOARDS
    assert Path(mounts["/etc/grafana/provisioning"]).resolve() == PROVISIONING


def test_provisioned_datasource_is_the_compose_prometheus() -> None:
    (prometheus,) = [ds for ds in _provisioned_datasources() if ds["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in _rendered_compose()["services"]


@functools.cache
def _rendered_compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not on PATH (`make install` installs it)", pytrace=False)
    result = subprocess.run(
        [binary, "-f", str(REPO_ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry["source"]
        else:
            source, target = str(entry).split(":")[:2]
            mounts[target] = source
    return mounts
