"""A real Prometheus (Debian's `prometheus` server, as `make up` runs it) scraping the four
real `serve` processes: every target up, one posted complaint counted by intake, triaged
and acknowledged, all read back through Prometheus's HTTP API; the alert rules of
deploy/prometheus/alerts.yml loaded and evaluating without error.

The server comes from Debian's prometheus package, which `make install` installs
(deploy/local/bootstrap.sh); without it this test fails, it does not skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.local import stack
from tests.support import Infra, ServiceProcess, intake_cli

SERVICES = ("intake", "triage", "resolution", "notifier")
SCRAPE_INTERVAL = "1s"  # the suite's patience, not production's 10 s


@dataclass
class Scraped:
    prometheus: str  # base URL
    intake: str  # base URL
    env: dict[str, str]
    webhook_url: str
    webhooks: list[bytes]


class _Receiver(BaseHTTPRequestHandler):
    """The tenant's webhook endpoint: records each body, answers 200."""

    received: list[bytes]

    def do_POST(self) -> None:  # http.server calls it by this name
        length = int(self.headers.get("Content-Length", "0"))
        self.received.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", received
    finally:
        server.shutdown()
        server.server_close()


def prometheus_binary() -> str:
    binary = stack.prometheus_binary()
    if binary is None:
        pytest.fail(
            "no prometheus server binary: `make install` installs Debian's prometheus "
            "package (deploy/local/bootstrap.sh); or run `apt-get install prometheus`",
            pytrace=False,
        )
    return binary


@contextlib.contextmanager
def running_prometheus(targets: dict[str, str], work_dir: Path) -> Iterator[str]:
    config = work_dir / "prometheus.yml"
    config.write_text(stack.prometheus_config(targets, [stack.ALERT_RULES], SCRAPE_INTERVAL))
    port = stack.free_port()
    log_file = work_dir / "prometheus.log"
    process = stack.start_prometheus(prometheus_binary(), config, work_dir / "data", port, log_file)
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            stack.wait_for_prometheus(base_url, process, timeout=60)
        except SystemExit as error:
            raise AssertionError(f"{error}: {log_file.read_text(errors='replace')}") from None
        yield base_url
    finally:
        stack.stop_process(process)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body
    return body["data"]["result"]


def value_of(prometheus: str, expr: str) -> float | None:
    result = query(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


def eventually(probe: Any, within_s: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scraped(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    work_dir = tmp_path_factory.mktemp("prometheus-scrape")
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "LOG_FORMAT": "json",
    }
    # What `make up` does before `serve`; the four at once, as they own separate schemas.
    migrations = [
        subprocess.Popen(
            [sys.executable, "-m", f"services.{name}", "migrate"],
            cwd=stack.ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name in SERVICES
    ]
    for name, migration in zip(SERVICES, migrations, strict=True):
        _, errors = migration.communicate(timeout=120)
        assert migration.returncode == 0, f"migrating {name}: {errors.decode()}"
    services = {
        name: ServiceProcess(name, env, stack.free_port(), work_dir / f"{name}.log")
        for name in SERVICES
    }
    with contextlib.ExitStack() as started:
        for service in services.values():
            started.callback(service.stop)
        # Started side by side: each start() waits for its /readyz.
        with ThreadPoolExecutor(len(services)) as pool:
            urls = pool.map(ServiceProcess.start, services.values())
            base_urls = dict(zip(services, urls, strict=True))
        targets = {name: url.removeprefix("http://") for name, url in base_urls.items()}
        prometheus = started.enter_context(running_prometheus(targets, work_dir))
        url, received = started.enter_context(webhook_receiver())
        yield Scraped(prometheus, base_urls["intake"], env, url, received)


def test_prometheus_scrapes_every_service_and_sees_it_up(scraped: Scraped) -> None:
    def all_up() -> dict[str, float] | None:
        ups = {r["metric"]["job"]: float(r["value"][1]) for r in query(scraped.prometheus, "up")}
        return ups if set(ups) == set(SERVICES) else None

    ups = eventually(all_up, what="a scrape of every target")
    assert ups == dict.fromkeys(SERVICES, 1.0)
    targets = httpx.get(f"{scraped.prometheus}/api/v1/targets", timeout=10).json()["data"]
    assert {t["health"] for t in targets["activeTargets"]} == {"up"}, targets


def test_a_posted_complaint_is_counted_through_prometheus(scraped: Scraped) -> None:
    tenant = json.loads(
        intake_cli(
            scraped.env, "create-tenant", "Scrape Wallet", "--webhook-url", scraped.webhook_url
        )
    )
    accepted = httpx.post(
        f"{scraped.intake}/v1/complaints",
        json={
            "customer": {"id": f"u-{uuid.uuid4().hex[:8]}"},
            "channel": "app",
            "description": "同一笔交易被扣了两次款，请退还一笔。",
        },
        headers={
            "Authorization": f"Bearer {tenant['api_key']}",
            "Idempotency-Key": str(uuid.uuid4()),
        },
        timeout=10,
    )
    assert accepted.status_code == 202, accepted.text

    p = scraped.prometheus
    received = eventually(
        lambda: value_of(p, 'sum(complaints_received_total{job="intake", channel="app"})'),
        what="complaints_received_total from intake's scrape",
    )
    assert received == 1.0
    triaged = eventually(
        lambda: value_of(p, 'sum(complaints_triaged_total{job="triage"})'),
        what="complaints_triaged_total from triage's scrape",
    )
    assert triaged == 1.0
    # Received to acknowledgement delivered: the notifier's histogram, one observation.
    acknowledged = eventually(
        lambda: value_of(p, 'sum(complaint_acknowledgement_seconds_count{job="notifier"})'),
        what="complaint_acknowledgement_seconds_count from notifier's scrape",
    )
    assert acknowledged == 1.0
    assert scraped.webhooks, "the acknowledgement webhook was counted but never received"
    assert value_of(p, 'sum(up{job=~"intake|triage|resolution|notifier"})') == 4.0


def test_the_alert_rules_are_loaded_and_evaluate(scraped: Scraped) -> None:
    rules_file = yaml.safe_load(stack.ALERT_RULES.read_text(encoding="utf-8"))
    expected = {r["alert"] for g in rules_file["groups"] for r in g["rules"] if "alert" in r}

    def evaluated() -> list[dict[str, Any]] | None:
        answer = httpx.get(f"{scraped.prometheus}/api/v1/rules", timeout=10).json()
        rules = [r for g in answer["data"]["groups"] for r in g["rules"]]
        # An unevaluated rule reports the zero time.
        done = all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return rules if rules and done else None

    rules = eventually(evaluated, what="every rule evaluated once")
    assert {r["name"] for r in rules if r["type"] == "alerting"} == expected
    # Every expression runs against the real services' series without an error.
    assert {r["name"]: r["health"] for r in rules} == dict.fromkeys(expected, "ok")
    # Nothing is down: ServiceDown is neither pending nor firing.
    alerts = httpx.get(f"{scraped.prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "ServiceDown"], alerts
