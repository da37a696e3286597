"""/openapi.json is complete, and schemathesis, driving the real service process over HTTP
from that document, finds no server error and no answer the document does not describe."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.local.stack import free_port
from shared.events import new_event
from shared.topics import COMPLAINTS_RESOLUTION
from tests.integration.events import as_bytes
from tests.support import Infra, eventually, intake_cli, produce, serving_intake

# Every operation of the API, with the answers each one documents.
OPERATIONS = {
    ("post", "/v1/complaints"): {202, 400, 401, 409, 413, 415, 422, 429},
    ("get", "/v1/complaints"): {200, 401, 422, 429},
    ("get", "/v1/complaints/{ticket_no}"): {200, 401, 404, 429},
    ("post", "/v1/complaints/{ticket_no}/messages"): {202, 400, 401, 404, 409, 413, 415, 422, 429},
    ("post", "/v1/complaints/{ticket_no}/feedback"): {202, 400, 401, 404, 409, 413, 415, 422, 429},
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Server:
    base_url: str
    api_key: str
    resolved_ticket: str  # a real complaint of this tenant, resolved (feedback accepted)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def _env(infra: Infra, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "INTAKE_HTTP_PORT": str(port),
        # schemathesis sends far more than a wallet app would: keep the limit out of the way
        "INTAKE_RATE_LIMIT_PER_S": "100000",
        "INTAKE_RATE_LIMIT_BURST": "100000",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
    }


@pytest.fixture(scope="module")
def intake_server(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real service: `python -m services.intake serve`, on a free port."""
    port = free_port()
    env = _env(infra, port)
    tenant = json.loads(
        intake_cli(env, "create-tenant", "Fuzz Wallet", "--webhook-url", "http://127.0.0.1:9/hooks")
    )
    log_path = tmp_path_factory.mktemp("intake") / "intake.log"
    with serving_intake(env, port, log_path) as base_url:
        ticket = asyncio.run(_resolved_complaint(infra, base_url, tenant))
        yield Server(base_url, tenant["api_key"], ticket)
    # Whatever the fuzzing sent, the service logged no unhandled error.
    assert "unhandled_error" not in log_path.read_text(errors="replace")


async def _resolved_complaint(infra: Infra, base_url: str, tenant: dict[str, str]) -> str:
    """File a complaint over HTTP and resolve it the way the resolution service does."""
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        accepted = (
            await client.post(
                "/v1/complaints",
                json={"customer": {"id": "u-fuzz"}, "channel": "app", "description": "fuzz"},
                headers={"Idempotency-Key": "fuzz-target"},
            )
        ).json()
        event = new_event(
            "complaint.status_changed",
            producer="resolution",
            tenant_id=uuid.UUID(tenant["tenant_id"]),
            complaint_id=uuid.UUID(accepted["complaint_id"]),
            ticket_no=accepted["ticket_no"],
            correlation_id=uuid.uuid4(),
            payload={"status": "resolved", "note": "Refunded.", "actor": "a-1"},
        )
        await produce(infra.kafka_bootstrap, COMPLAINTS_RESOLUTION, as_bytes(event), event.key)

        async def resolved() -> bool:
            view = await client.get(accepted["links"]["self"])
            return view.json()["status"] == "resolved"

        await eventually(resolved)
        return str(accepted["ticket_no"])


@pytest.fixture(scope="module")
def openapi(intake_server: Server) -> dict[str, Any]:
    response = httpx.get(f"{intake_server.base_url}/openapi.json", timeout=5)
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def intake_schema(intake_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{intake_server.base_url}/openapi.json")


FUZZ_RUNS = [
    pytest.param(method, path, mode, ticket, id=f"{method} {path} {mode.value} {ticket}")
    for method, path in sorted(OPERATIONS)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # "generated": any ticket number (mostly 404); "real": bodies reach validation and storage.
    for ticket in (("generated", "real") if "{ticket_no}" in path else ("none",))
    # A bare string path parameter: there is no schema-violating request to make.
    if not (path == "/v1/complaints/{ticket_no}" and mode == GenerationMode.NEGATIVE)
]


# schemathesis' own pytest integration (`from_fixture` + `parametrize`) breaks on pytest 9
# (it reads a removed private attribute), so each operation's strategy is driven here.
@pytest.mark.parametrize(("method", "path", "mode", "ticket"), FUZZ_RUNS)
def test_fuzzed_requests_get_no_server_error_and_documented_answers(
    intake_schema: Any,
    intake_server: Server,
    method: str,
    path: str,
    mode: GenerationMode,
    ticket: str,
) -> None:
    """Schema-valid (positive) and schema-violating (negative) requests, with a valid key."""
    operation = intake_schema[path][method.upper()]
    fixed = {"ticket_no": intake_server.resolved_ticket} if ticket == "real" else None
    strategy = operation.as_strategy(mode, headers=intake_server.auth, path_parameters=fixed)

    @given(case=strategy)
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(base_url=intake_server.base_url, checks=CHECKS, timeout=10)

    fuzz()


def test_the_documented_complaint_examples_are_accepted(
    openapi: dict[str, Any], intake_server: Server
) -> None:
    examples = openapi["paths"]["/v1/complaints"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    for name, example in examples.items():
        response = httpx.post(
            f"{intake_server.base_url}/v1/complaints",
            json=example["value"],
            headers={**intake_server.auth, "Idempotency-Key": f"example-{name}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text


# ------------------------------------------------------------------ the document itself


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_operation_documents_its_answers_and_errors(openapi: dict[str, Any]) -> None:
    documented = {
        (method, path)
        for path, item in openapi["paths"].items()
        for method in item
        if path.startswith("/v1/")
    }
    assert documented == set(OPERATIONS)
    for (method, path), statuses in OPERATIONS.items():
        operation = openapi["paths"][path][method]
        assert operation["summary"] and operation["description"]
        assert operation["security"] == [{"HTTPBearer": []}]
        responses = operation["responses"]
        assert statuses <= {int(code) for code in responses}, (method, path)
        for code in statuses - {200, 202}:
            problem = responses[str(code)]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}
            assert problem["example"]["status"] == code
        assert "Retry-After" in responses["429"]["headers"]
        success = responses["200" if method == "get" else "202"]
        model = _resolve(openapi, success["content"]["application/json"]["schema"]["$ref"])
        assert model["examples"], (method, path)


@pytest.mark.parametrize(
    ("path", "model", "required_header"),
    [
        ("/v1/complaints", "ComplaintIn", True),
        ("/v1/complaints/{ticket_no}/messages", "MessageIn", False),
        ("/v1/complaints/{ticket_no}/feedback", "FeedbackIn", False),
    ],
)
def test_request_bodies_have_schemas_and_examples_that_validate(
    openapi: dict[str, Any], path: str, model: str, required_header: bool
) -> None:
    operation = openapi["paths"][path]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": f"#/components/schemas/{model}"}
    schema_ = openapi["components"]["schemas"][model]
    assert schema_["additionalProperties"] is False  # unknown fields are rejected
    assert len(body["examples"]) >= 2
    from services.intake import domain

    for example in body["examples"].values():
        getattr(domain, model).model_validate(example["value"])  # the examples are valid
    [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["required"] is required_header and key["in"] == "header"


def test_money_is_documented_as_a_string(openapi: dict[str, Any]) -> None:
    amount = openapi["components"]["schemas"]["ComplaintIn"]["properties"]["amount"]
    assert [option["type"] for option in amount["anyOf"]] == ["string", "null"]
    assert amount["anyOf"][0]["pattern"]
