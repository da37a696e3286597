"""/openapi.json of the agent API is complete, and schemathesis, driving the real
`python -m services.resolution serve` process over HTTP from that document, finds no
server error and no answer the document does not describe."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
from services.resolution import clock_store
from services.resolution.agents import create_agent
from services.resolution.app import MIGRATIONS, SCHEMA
from services.resolution.settings import ResolutionSettings
from shared.db import connect
from shared.runtime import migrate
from tests.support import Infra, serving

# The agent API's operations, with the answers each one documents.
OPERATIONS = {
    ("get", "/v1/cases"): {200, 401, 422},
    ("get", "/v1/cases/{ticket_no}"): {200, 401, 404},
    ("post", "/v1/cases/{ticket_no}/resolutions"): {201, 400, 401, 404, 409, 413, 415, 422},
    ("post", "/v1/resolutions/{resolution_id}/approve"): {200, 400, 401, 403, 404, 409},
    ("post", "/v1/cases/{ticket_no}/status"): {200, 400, 401, 404, 409, 413, 415, 422},
    ("post", "/v1/cases/{ticket_no}/messages"): {201, 400, 401, 404, 409, 413, 415, 422},
    ("post", "/v1/cases/{ticket_no}/claim"): {200, 401, 404, 409},
    ("post", "/v1/cases/{ticket_no}/assign"): {200, 400, 401, 404, 409, 413, 415, 422},
    ("post", "/v1/cases/{ticket_no}/category"): {200, 400, 401, 404, 409, 413, 415, 422},
}
CLOCK_OPERATIONS = {("post", "/v1/cases/{ticket_no}/clocks/legal_final/extend")}
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
    token: str
    ticket: str  # a real case of the agent's tenant: bodies reach the commands
    resolution_id: str  # a refund of that case waiting for approval

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def server(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    migrate(infra.settings(ResolutionSettings), SCHEMA, MIGRATIONS)
    token, ticket = asyncio.run(_agent_and_case(infra.database_url))
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
    }
    log_path = tmp_path_factory.mktemp("resolution") / "resolution.log"
    with serving("resolution", env, free_port(), log_path) as process:
        pending = httpx.post(
            f"{process.base_url}/v1/cases/{ticket}/resolutions",
            json={"kind": "refund", "amount": "900.00", "currency": "CNY", "note": "big"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "fuzz-pending"},
            timeout=10,
        )
        assert pending.status_code == 201, pending.text
        yield Server(process.base_url, token, ticket, pending.json()["id"])
    # Whatever the fuzzing sent, the service logged no unhandled error.
    assert "unhandled_error" not in log_path.read_text(errors="replace")


async def _agent_and_case(database_url: str) -> tuple[str, str]:
    conn = await connect(database_url, SCHEMA, purpose="test")
    try:
        tenant_id = uuid.uuid4()
        issued = await create_agent(conn, name="fuzz", approver=True, tenant_id=tenant_id)
        now = datetime.now(UTC)
        complaint_id = uuid.uuid4()
        ticket = f"WC-{now:%Y%m%d}-000001"
        await conn.execute(
            "INSERT INTO cases (complaint_id, tenant_id, ticket_no, status, category, priority, "
            "jurisdiction, amount, currency, received_at, first_response_due, resolution_due) "
            "VALUES ($1, $2, $3, 'triaged', 'duplicate_charge', 'P2', 'cn', $4, 'CNY', $5, $6, $7)",
            complaint_id,
            tenant_id,
            ticket,
            Decimal("5000"),
            now,
            now + timedelta(hours=4),
            now + timedelta(hours=72),
        )
        await clock_store.start_clocks(
            conn,
            clock_store.ClockCase(
                complaint_id,
                tenant_id,
                "cn",
                now,
                now + timedelta(hours=4),
                now + timedelta(hours=72),
            ),
            now,
        )
        return issued["token"], ticket
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def openapi(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/openapi.json", timeout=5)
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def schema(server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")


def _fixed(path: str, server: Server) -> dict[str, str] | None:
    if "{ticket_no}" in path:
        return {"ticket_no": server.ticket}
    if "{resolution_id}" in path:
        return {"resolution_id": server.resolution_id}
    return None


FUZZ_RUNS = [
    pytest.param(
        method,
        path,
        mode,
        target,
        id=f"{method} {path} {mode.value} {target}",
    )
    for method, path in sorted(set(OPERATIONS) | CLOCK_OPERATIONS)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # "generated": any ticket or id (mostly 404); "real": requests reach the commands.
    for target in (("generated", "real") if "{" in path else ("none",))
    # A bare string path parameter and no body: no schema-violating request to make.
    if not (
        mode == GenerationMode.NEGATIVE
        and path in ("/v1/cases/{ticket_no}", "/v1/cases/{ticket_no}/claim")
    )
]


# schemathesis' own pytest integration breaks on pytest 9: each strategy is driven here.
@pytest.mark.parametrize(("method", "path", "mode", "target"), FUZZ_RUNS)
def test_fuzzed_requests_get_no_server_error_and_documented_answers(
    schema: Any, server: Server, method: str, path: str, mode: GenerationMode, target: str
) -> None:
    operation = schema[path][method.upper()]
    fixed = _fixed(path, server) if target == "real" else None
    strategy = operation.as_strategy(mode, headers=server.auth, path_parameters=fixed)

    @given(case=strategy)
    @settings(
        max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(base_url=server.base_url, checks=CHECKS, timeout=10)

    fuzz()


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
    assert documented == set(OPERATIONS) | CLOCK_OPERATIONS
    for (method, path), statuses in OPERATIONS.items():
        operation = openapi["paths"][path][method]
        assert operation["summary"] and operation["description"]
        assert operation["security"] == [{"HTTPBearer": []}]
        responses = operation["responses"]
        assert statuses <= {int(code) for code in responses}, (method, path)
        for code in statuses - {200, 201}:
            problem = responses[str(code)]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}
            assert problem["example"]["status"] == code
        assert "WWW-Authenticate" in responses["401"]["headers"]
        success = responses[str(min(statuses))]
        model = _resolve(openapi, success["content"]["application/json"]["schema"]["$ref"])
        assert model["examples"], (method, path)


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/cases/{ticket_no}/resolutions", "ResolutionIn"),
        ("/v1/cases/{ticket_no}/status", "StatusIn"),
        ("/v1/cases/{ticket_no}/messages", "MessageIn"),
        ("/v1/cases/{ticket_no}/assign", "AssignIn"),
        ("/v1/cases/{ticket_no}/category", "RecategoriseIn"),
    ],
)
def test_request_bodies_have_schemas_and_examples_that_validate(
    openapi: dict[str, Any], path: str, model: str
) -> None:
    from services.resolution import requests

    body = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert openapi["components"]["schemas"][model]["additionalProperties"] is False
    assert body["examples"]
    for example in body["examples"].values():
        getattr(requests, model).model_validate(example["value"])


def test_the_money_calls_document_their_idempotency_key(openapi: dict[str, Any]) -> None:
    required = {
        "/v1/cases/{ticket_no}/resolutions": True,
        "/v1/resolutions/{resolution_id}/approve": False,  # an approval is taken once anyway
        "/v1/cases/{ticket_no}/category": False,  # the same correction again changes nothing
    }
    for path, needed in required.items():
        [key] = [
            p
            for p in openapi["paths"][path]["post"]["parameters"]
            if p["name"] == "Idempotency-Key"
        ]
        assert key["required"] is needed and key["in"] == "header"


def test_money_is_documented_as_a_string(openapi: dict[str, Any]) -> None:
    amount = openapi["components"]["schemas"]["ResolutionIn"]["properties"]["amount"]
    assert [option.get("type") for option in amount["anyOf"]] == ["string", "null"]
