"""The Kubernetes manifests (deploy/k8s/), checked without a cluster.

Every document is validated against the Kubernetes OpenAPI schemas bundled by the
`kubernetes-validate` package (strict: unknown fields fail too), for the oldest and the
newest Kubernetes release this project claims. The rest are the rules a schema cannot
express: probes, resources, secrets only through Secret references, the migrations Job
and its ordering before the services, replicas of the consumer services sharing a group.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"

SERVICES = ("intake", "triage", "resolution", "notifier")
IMAGE = "wallet-complaints:latest"
# Kubernetes releases the manifests must validate against (bundled by the validator).
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# Variables that may only come from the Secret, never from a literal or a ConfigMap.
SECRET_VARIABLES = frozenset({"DATABASE_URL", "WEBHOOK_MASTER_KEY", "SMTP_URL"})
_SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|DATABASE_URL|SMTP_URL")

Manifest = dict[str, Any]


# ---- loading -----------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))


def _documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@functools.cache
def _manifests() -> tuple[Manifest, ...]:
    """What `kubectl apply -k deploy/k8s` applies: the kustomization's resources."""
    return tuple(doc for name in _kustomization()["resources"] for doc in _documents(K8S / name))


def _secret_template() -> Manifest:
    (secret,) = _documents(SECRET_TEMPLATE)
    return secret


def _of_kind(kind: str) -> list[Manifest]:
    return [doc for doc in _manifests() if doc["kind"] == kind]


def _named(kind: str, name: str) -> Manifest:
    (doc,) = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    return doc


def _deployment(service: str) -> Manifest:
    return _named("Deployment", service)


def _pod_spec(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _containers(workload: Manifest) -> Iterator[dict[str, Any]]:
    spec = _pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _main_container(service: str) -> dict[str, Any]:
    return _main_container_of(_deployment(service))


def _workloads() -> list[Manifest]:
    return _of_kind("Deployment") + _of_kind("Job")


def _settings_default(service: str, field: str) -> Any:
    module = importlib.import_module(f"services.{service}.settings")
    (settings_class,) = [
        value
        for name, value in vars(module).items()
        if name.endswith("Settings") and getattr(value, "__module__", "") == module.__name__
    ]
    return settings_class.model_fields[field].default


def _command_text(container: dict[str, Any]) -> str:
    return " ".join([*container.get("command", []), *container.get("args", [])])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# ---- layout and schemas ------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = _kustomization()
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {KUSTOMIZATION.name}

    assert kustomization["kind"] == "Kustomization"
    assert all((K8S / name).is_file() for name in listed), listed
    # The template holds placeholders: applying it would overwrite the real Secret.
    assert SECRET_TEMPLATE.name not in listed
    assert listed == on_disk - {SECRET_TEMPLATE.name}


@functools.cache
def _validator() -> Any:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed: it is in pyproject's test extra "
            "(`make install`), and bundles the Kubernetes schemas the manifests are checked "
            "against offline.",
            pytrace=False,
        )


def _all_documents() -> list[tuple[str, Manifest]]:
    docs = [(f"{d['kind']}/{d['metadata']['name']}", d) for d in _manifests()]
    return [*docs, ("Secret template", _secret_template())]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(version: str) -> None:
    kubernetes_validate = _validator()
    errors = []
    for label, doc in _all_documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{label}: {exc.message} at {'/'.join(map(str, exc.path))}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_what_kubernetes_would() -> None:
    kubernetes_validate = _validator()
    deployment = yaml.safe_load(yaml.safe_dump(_deployment("intake")))
    _main_container_of(deployment)["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def _main_container_of(deployment: Manifest) -> dict[str, Any]:
    name = deployment["metadata"]["name"]
    (container,) = [c for c in _pod_spec(deployment)["containers"] if c["name"] == name]
    return container


def test_everything_is_in_the_one_namespace() -> None:
    (namespace,) = _of_kind("Namespace")
    name = namespace["metadata"]["name"]

    assert _kustomization()["namespace"] == name
    for label, doc in _all_documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == name, label
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- the services ------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_one_deployment_per_service_serving_on_its_port(service: str) -> None:
    container = _main_container(service)
    port = _settings_default(service, "http_port")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}

    assert container["image"] == IMAGE
    assert _command_text(container).split() == ["python", "-m", f"services.{service}", "serve"]
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in container["ports"]
    assert env[f"{service.upper()}_HTTP_PORT"] == str(port)
    assert env[f"{service.upper()}_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - inside the pod


def test_the_image_is_the_one_deploy_dockerfile_builds() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    compose_image = compose["x-app-image"]["image"]

    assert compose["x-app-image"]["build"]["dockerfile"] == "deploy/Dockerfile"
    for workload in _workloads():
        for container in _containers(workload):
            assert container["image"] == IMAGE, workload["metadata"]["name"]
    assert compose_image.split(":")[0] == IMAGE.split(":")[0]
    (image,) = _kustomization()["images"]
    assert image["name"] == IMAGE.split(":")[0]


@pytest.mark.parametrize("service", SERVICES)
def test_readiness_probes_readyz_and_liveness_healthz(service: str) -> None:
    container = _main_container(service)

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert http_get["port"] in {"http", _settings_default(service, "http_port")}, probe
    # serve migrates and connects before it listens: liveness must not kill it meanwhile.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_every_container_has_requests_and_limits() -> None:
    for workload in _workloads():
        for container in _containers(workload):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{workload['metadata']['name']}/{container['name']}: {bound}"
                )


def test_every_pod_runs_non_root_with_a_read_only_root_filesystem() -> None:
    dockerfile_users = [
        line.split()[1]
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("USER ")
    ]
    image_uid = int(dockerfile_users[-1].split(":")[0])
    for workload in _workloads():
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == image_uid, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        # Kubernetes' Service links would add <SERVICE>_* variables beside the settings'.
        assert pod["enableServiceLinks"] is False, name
        for container in _containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_and_a_disruption_budget_per_deployment(service: str) -> None:
    deployment = _deployment(service)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in _main_container(service)["ports"]}
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)

    services = [s for s in _of_kind("Service") if _selects(s["spec"]["selector"], pod_labels)]
    assert [s["metadata"]["name"] for s in services] == [service]
    for port in services[0]["spec"]["ports"]:
        assert port["targetPort"] in port_names | {_settings_default(service, "http_port")}

    budgets = [
        b
        for b in _of_kind("PodDisruptionBudget")
        if _selects(b["spec"]["selector"]["matchLabels"], pod_labels)
    ]
    assert len(budgets) == 1, service
    budget = budgets[0]["spec"]
    replicas = deployment["spec"]["replicas"]
    assert budget.get("maxUnavailable", 0) >= 1 or budget["minAvailable"] < replicas
    assert budget.get("maxUnavailable", 0) < replicas or "minAvailable" in budget


def _consumer_services() -> list[str]:
    """Services whose app registers a topic handler (`runtime.on(...)`)."""
    return [
        service
        for service in SERVICES
        if "runtime.on(" in (REPO_ROOT / "services" / service / "app.py").read_text()
    ]


def test_the_consumer_group_id_is_the_service_name() -> None:
    # Why replicas share one group: the group id is the service's name, never the host's.
    runtime = (REPO_ROOT / "shared" / "runtime.py").read_text(encoding="utf-8")
    assert "group_id=self.name" in runtime
    assert "self.name = settings.service_name" in runtime
    for service in SERVICES:
        assert _settings_default(service, "service_name") == service


@pytest.mark.parametrize("service", SERVICES)
def test_consumer_services_run_replicas_that_share_one_group(service: str) -> None:
    deployment = _deployment(service)
    assert _consumer_services(), "no service registers a topic handler: the check is stale"
    if service in _consumer_services():
        assert deployment["spec"]["replicas"] >= 2
        # Nothing per replica may rename the service (and so its group).
        env = {e["name"] for e in _main_container(service).get("env", [])}
        assert f"{service.upper()}_SERVICE_NAME" not in env
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


# ---- secrets and configuration ------------------------------------------------------


def test_secrets_come_only_from_secret_references() -> None:
    secret = _secret_template()
    secret_name = secret["metadata"]["name"]
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert secret_keys == SECRET_VARIABLES

    for workload in _workloads():
        name = workload["metadata"]["name"]
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                assert set(source) <= {"configMapRef", "secretRef", "prefix"}, name
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if variable["name"] in SECRET_VARIABLES or _SECRET_LOOKING.search(variable["name"]):
                    assert "value" not in variable, f"{name}: {variable['name']} is a literal"
                    assert reference, f"{name}: {variable['name']} is not from a Secret"
                if reference:
                    assert reference["name"] == secret_name, name
                    assert reference["key"] in secret_keys, name


def test_every_service_gets_the_database_url_from_the_secret() -> None:
    for workload in _workloads():
        for container in _pod_spec(workload)["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL"


def test_the_secret_template_holds_no_real_value() -> None:
    for key, value in _secret_template()["stringData"].items():
        assert value == "" or "REPLACE" in value, key
    assert not _of_kind("Secret"), "Secrets are created out of band, never applied from git"


def test_config_maps_hold_no_secret() -> None:
    for config_map in _of_kind("ConfigMap"):
        for key in config_map.get("data", {}):
            assert key not in SECRET_VARIABLES, key
            assert not _SECRET_LOOKING.search(key), key
        for value in config_map.get("data", {}).values():
            assert "postgresql://" not in value or "@" not in value


# ---- migrations ---------------------------------------------------------------------


def _migrations_job() -> Manifest:
    (job,) = _of_kind("Job")
    return job


def test_the_job_migrates_every_schema_and_creates_the_topics() -> None:
    job = _migrations_job()
    (container,) = _pod_spec(job)["containers"]
    command = _command_text(container)

    for service in SERVICES:
        assert f"python -m services.{service} migrate" in command, service
    assert "python -m shared.kafka_admin create-topics" in command
    assert command.index("create-topics") > command.index("services.notifier migrate")
    assert _pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}
    # The init containers look for the succeeded Job: it must not be garbage-collected.
    assert "ttlSecondsAfterFinished" not in job["spec"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_deployment_waits_for_the_migrations_job(service: str) -> None:
    job_name = _migrations_job()["metadata"]["name"]
    pod = _pod_spec(_deployment(service))
    waits = [
        c
        for c in pod.get("initContainers", [])
        if {"name": "JOB_NAME", "value": job_name} in c.get("env", [])
    ]
    assert len(waits) == 1, "an init container must wait for the migrations Job"

    # The script it runs is mounted from a ConfigMap of the kustomization.
    (mount,) = waits[0]["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    script = Path(_command_text(waits[0]).split()[-1])
    assert script.parent == Path(mount["mountPath"])
    config_map = _named("ConfigMap", volume["configMap"]["name"])
    source = config_map["data"][script.name]
    compile(source, script.name, "exec")
    assert "JOB_NAME" in source and "succeeded" in source

    # Its service account may read that Job, and only that.
    account = pod["serviceAccountName"]
    bindings = [
        b
        for b in _of_kind("RoleBinding")
        if {"kind": "ServiceAccount", "name": account, "namespace": "wallet-complaints"}
        in b["subjects"]
    ]
    rules = [
        rule
        for binding in bindings
        for rule in _named(binding["roleRef"]["kind"], binding["roleRef"]["name"])["rules"]
    ]
    assert rules == [
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "resourceNames": [job_name],
            "verbs": ["get"],
        }
    ]
