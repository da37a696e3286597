"""The docker-compose stack, checked without a Docker engine.

`docker-compose config` validates docker-compose.yml against Compose's schema and prints
the file as Compose would run it: YAML anchors merged, `${VAR:-default}` interpolated,
relative paths resolved. The tests assert on that rendering rather than on the raw file,
so they see what the engine would see.
"""

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = "deploy/Dockerfile"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA_PROVISIONING = REPO_ROOT / "deploy" / "grafana" / "provisioning"

APP_PORTS = {"intake": 8080, "triage": 8081, "resolution": 8082, "notifier": 8083}
MIGRATE = "migrate"
# Inside a container the services must listen beyond loopback to be reachable at all.
CONTAINER_LISTEN_HOST = "0.0.0.0"  # noqa: S104


@functools.cache
def _rendered_compose() -> dict[str, Any]:
    """`docker-compose config` output, parsed; fails the calling test when unavailable."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not on PATH, so docker-compose.yml cannot be validated. "
            "`make install` installs Debian's docker-compose (apt package docker-compose).",
            pytrace=False,
        )
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"`docker-compose config` exited {result.returncode}:\n{result.stderr}"
    )
    return yaml.safe_load(result.stdout)


def _services() -> dict[str, dict[str, Any]]:
    return _rendered_compose()["services"]


def _published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs from short ("127.0.0.1:8080:8080/tcp") or long syntax."""
    pairs = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.add((int(entry["published"]), int(entry["target"])))
        else:
            published, target = str(entry).split("/")[0].rsplit(":", 2)[-2:]
            pairs.add((int(published), int(target)))
    return pairs


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a host path or a named volume), short or long syntax."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry["source"]
        else:
            source, target = str(entry).split(":")[:2]
            mounts[target] = source
    return mounts


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition; the list form means `service_started`."""
    depends_on = service.get("depends_on", {})
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends_on.items()}


def _waits_until_healthy(services: dict[str, Any], name: str, dependency: str) -> bool:
    """Whether `name` can only start once `dependency` is healthy.

    Either it depends on `dependency` with `service_healthy`, or on another service (such
    as the migrate job) that does: Compose starts nothing before its own conditions hold.
    """
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        seen.add(current)
        for dep, condition in _depends_on(services[current]).items():
            if dep == dependency:
                if condition == "service_healthy":
                    return True
            elif dep not in seen:
                pending.append(dep)
    return False


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service.get("healthcheck", {}).get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


def test_compose_file_is_valid() -> None:
    services = _services()
    assert set(APP_PORTS) | {MIGRATE, "postgres", "kafka", "prometheus", "grafana"} <= set(services)


@pytest.mark.parametrize(("name", "port"), APP_PORTS.items())
def test_app_service_serves_on_its_port(name: str, port: int) -> None:
    service = _services()[name]
    env = service["environment"]

    assert _command_text(service).split() == ["python", "-m", f"services.{name}", "serve"]
    assert env[f"{name.upper()}_HTTP_PORT"] == str(port)
    assert env[f"{name.upper()}_HTTP_HOST"] == CONTAINER_LISTEN_HOST
    assert (port, port) in _published_ports(service)
    assert service.get("restart") in {"always", "unless-stopped", "on-failure"}


@pytest.mark.parametrize(("name", "port"), APP_PORTS.items())
def test_app_service_healthcheck_probes_readyz(name: str, port: int) -> None:
    service = _services()[name]

    assert not service["healthcheck"].get("disable", False)
    assert f"127.0.0.1:{port}/readyz" in _healthcheck_text(service)


@pytest.mark.parametrize("name", APP_PORTS)
def test_app_service_starts_after_migrations_and_healthy_infrastructure(name: str) -> None:
    services = _services()

    assert _depends_on(services[name]).get(MIGRATE) == "service_completed_successfully"
    for dependency in ("postgres", "kafka"):
        assert _waits_until_healthy(services, name, dependency), (
            f"{name} may start before {dependency} is healthy"
        )


@pytest.mark.parametrize("name", [*APP_PORTS, MIGRATE])
def test_app_container_environment(name: str) -> None:
    env = _services()[name]["environment"]

    # Real Apache Kafka in this stack implements the idempotent producer.
    assert str(env["KAFKA_ENABLE_IDEMPOTENCE"]).lower() == "true"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert re.fullmatch(r"postgresql://[^@]+@postgres:5432/complaints", env["DATABASE_URL"])
    assert env["LOG_FORMAT"] == "json"
    assert env["WEBHOOK_MASTER_KEY"]


def test_every_dependency_on_health_has_a_healthcheck() -> None:
    # Compose refuses to start a service whose service_healthy dependency has none.
    services = _services()
    for name, service in services.items():
        for dep, condition in _depends_on(service).items():
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                )


def test_kafka_is_pinned_apache_kafka_with_cli_healthcheck() -> None:
    kafka = _services()["kafka"]

    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag and tag != "latest", "pin the Kafka image to a release"
    assert "/opt/kafka/bin/" in _healthcheck_text(kafka)
    # KRaft: no ZooKeeper anywhere.
    assert "broker" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "zookeeper" not in _services()


def test_postgres_is_15_with_healthcheck_and_named_volume() -> None:
    compose = _rendered_compose()
    postgres = compose["services"]["postgres"]

    assert re.fullmatch(r"postgres:15([.-].*)?", postgres["image"])
    assert "pg_isready" in _healthcheck_text(postgres)
    data_volume = _mounts(postgres)["/var/lib/postgresql/data"]
    assert data_volume in compose.get("volumes", {})


def test_migrate_job_migrates_every_schema_and_creates_topics() -> None:
    services = _services()
    migrate = services[MIGRATE]
    command = _command_text(migrate)

    for name in APP_PORTS:
        assert f"python -m services.{name} migrate" in command
    assert "python -m shared.kafka_admin create-topics" in command
    # The services wait for it to exit 0; restarting it would never let that happen.
    assert migrate.get("restart", "no") == "no"
    assert _depends_on(migrate) == {"postgres": "service_healthy", "kafka": "service_healthy"}


def test_every_built_service_uses_the_project_dockerfile() -> None:
    services = _services()
    built = {name for name, service in services.items() if "build" in service}

    assert set(APP_PORTS) | {MIGRATE} <= built
    for name in built:
        build = services[name]["build"]
        assert build["dockerfile"] == DOCKERFILE, name
        assert Path(build["context"]).resolve() == REPO_ROOT, name


def test_prometheus_scrapes_every_service() -> None:
    services = _services()
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))

    scraped = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                scraped[target] = job.get("metrics_path", "/metrics")
    for name, port in APP_PORTS.items():
        assert scraped.get(f"{name}:{port}") == "/metrics", f"{name}:{port} is not scraped"

    mounts = _mounts(services["prometheus"])
    assert Path(mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_CONFIG
    # rule_files are relative to the config file: the rules sit beside it in the container.
    assert config["rule_files"] == ["alerts.yml"]
    assert Path(mounts["/etc/prometheus/alerts.yml"]).resolve() == PROMETHEUS_RULES


def test_grafana_is_provisioned_with_the_prometheus_datasource() -> None:
    datasource_file = GRAFANA_PROVISIONING / "datasources" / "prometheus.yml"
    datasources = yaml.safe_load(datasource_file.read_text(encoding="utf-8"))["datasources"]

    assert any(
        ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" for ds in datasources
    )
    mounts = _mounts(_services()["grafana"])
    assert Path(mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA_PROVISIONING


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / DOCKERFILE).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    args = dict(
        line.removeprefix("ARG ").split("=", 1)
        for line in lines
        if line.startswith("ARG ") and "=" in line
    )
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), line.split()[1])
        for line in lines
        if line.startswith("FROM ")
    ]

    assert len(bases) >= 2, "expected a build stage and a runtime stage"
    assert all(base.startswith("python:3.11-slim") for base in bases), bases
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the runtime stage must drop root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any("PYTHONUNBUFFERED=1" in line for line in lines)


def test_the_compose_kafka_is_the_release_the_suite_runs() -> None:
    """The suite proves the services against deploy/kafka/pom.xml's Kafka: compose runs it."""
    from deploy.local.kafka import kafka_version

    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
