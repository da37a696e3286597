"""The OpenAPI documents, built from each app without starting it: /docs served offline by
every service, intake's webhooks (one per notification type the notifier can send, with
the payload it really sends and the X-Complaints-* headers), the category and channel
enums, and the agent API on resolution."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from services.intake.app import create_app as create_intake
from services.intake.domain import Channel
from services.notifier.app import create_app as create_notifier
from services.notifier.delivery import webhook_body
from services.notifier.planning import acknowledgement, plan
from services.notifier.rendering import LOCALES
from services.resolution import api as resolution_api
from services.resolution.app import create_app as create_resolution
from services.triage import rules as triage_rules
from services.triage.app import create_app as create_triage
from shared.api_docs_assets import ASSETS_PATH
from shared.api_vocabulary import CATEGORIES, CHANNELS
from shared.events import TypedEnvelope, new_event

ROOT = Path(__file__).resolve().parents[2]
APPS: dict[str, Callable[[], FastAPI]] = {
    "intake": create_intake,
    "triage": create_triage,
    "resolution": create_resolution,
    "notifier": create_notifier,
}
WEBHOOK_TYPES = {
    "complaint.acknowledged",
    "complaint.triaged",
    "complaint.agent_message",
    "complaint.resolution_recorded",
    "complaint.resolved",
    "complaint.sla_breached",
    "complaint.clock_extended",
    "complaint.reopened",
    "complaint.survey",
}
WEBHOOK_HEADERS = {
    "X-Complaints-Event-Id": True,
    "X-Complaints-Timestamp": True,
    "X-Complaints-Signature": True,
    "X-Correlation-Id": False,
}
ENVELOPE_KEYS = {
    "event_id",
    "type",
    "ticket_no",
    "complaint_id",
    "occurred_at",
    "locale",
    "message",
    "data",
}


@pytest.fixture(scope="module")
def intake_doc() -> dict[str, Any]:
    return create_intake().openapi()


@pytest.fixture(scope="module")
def resolution_doc() -> dict[str, Any]:
    return create_resolution().openapi()


def _schema(doc: dict[str, Any], ref_or_schema: dict[str, Any]) -> dict[str, Any]:
    ref = ref_or_schema.get("$ref")
    if ref is None:
        return ref_or_schema
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]


def _enum_of(doc: dict[str, Any], prop: dict[str, Any]) -> list[str]:
    """The enum of a property, through a $ref and an `anyOf [..., null]`."""
    for option in prop.get("anyOf", [prop]):
        option = _schema(doc, option)
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"no enum in {prop}")


# ------------------------------------------------------------------ /docs offline


@pytest.mark.parametrize("service", sorted(APPS))
def test_docs_load_every_asset_from_the_service(service: str) -> None:
    # No lifespan: the docs routes need neither the database nor Kafka.
    client = TestClient(APPS[service]())
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200, page
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html.text)
        assert urls, page
        # Nothing from a CDN or any other host: the page works with no network at all.
        assert not [u for u in urls if "//" in u], (page, urls)
        assert "googleapis" not in html.text and "jsdelivr" not in html.text
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 100, url
    assert (
        client.get(f"{ASSETS_PATH}/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    # The docs routes stay out of the API's own document.
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


# ------------------------------------------------------------------ webhooks


def test_intake_documents_one_webhook_per_type_the_notifier_sends(
    intake_doc: dict[str, Any],
) -> None:
    assert intake_doc["openapi"].startswith("3.1")
    assert set(intake_doc["webhooks"]) == WEBHOOK_TYPES
    # Every type planning.py can plan is documented (and nothing it cannot).
    planning = (ROOT / "services/notifier/planning.py").read_text()
    planned = set(re.findall(r'PlannedNotification\(\s*"(complaint\.[a-z_]+)"', planning))
    assert planned == WEBHOOK_TYPES
    # The README names them all.
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{t}`" in readme for t in WEBHOOK_TYPES)


@pytest.mark.parametrize("webhook_type", sorted(WEBHOOK_TYPES))
def test_each_webhook_documents_its_headers_and_payload(
    intake_doc: dict[str, Any], webhook_type: str
) -> None:
    operation = intake_doc["webhooks"][webhook_type]["post"]
    assert operation["summary"] and operation["description"]
    headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
    assert {name: p["required"] for name, p in headers.items()} == WEBHOOK_HEADERS
    assert all(p["description"] for p in headers.values())
    signature = headers["X-Complaints-Signature"]["description"]
    assert "HMAC-SHA256" in signature and "{X-Complaints-Timestamp}.{raw body}" in signature
    assert headers["X-Complaints-Timestamp"]["schema"]["type"] == "integer"
    assert "2XX" in {k.upper() for k in operation["responses"]} or "200" in operation["responses"]
    assert "422" not in operation["responses"]

    body = operation["requestBody"]["content"]["application/json"]["schema"]
    payload = _schema(intake_doc, body)
    assert set(payload["properties"]) == ENVELOPE_KEYS
    assert set(payload["required"]) == ENVELOPE_KEYS
    assert payload["properties"]["type"]["const"] == webhook_type
    assert set(payload["properties"]["locale"]["enum"]) == set(LOCALES)
    data = _schema(intake_doc, payload["properties"]["data"])
    assert data["properties"], webhook_type
    # The example validates against the schema it illustrates.
    [example] = payload["examples"]
    _validator(intake_doc, body).validate(example)


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(
        {**schema, "components": doc["components"]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


TENANT = uuid.uuid4()
AT = "2026-11-22T02:00:00+00:00"
LATER = "2026-11-25T02:00:00+00:00"


def _event(event_type: str, **payload: object) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer="resolution",
        tenant_id=TENANT,
        complaint_id=uuid.uuid4(),
        ticket_no="WC-20261122-000042",
        correlation_id=uuid.uuid4(),
        payload=payload,
    ).typed()


DUES = {
    "category": "duplicate_charge",
    "priority": "P2",
    "first_response_due": AT,
    "resolution_due": LATER,
}
# Events that, planned, produce every webhook type (with as many keys as they can carry).
RECEIVED = _event(
    "complaint.received",
    customer={"id": "u-1"},
    channel="app",
    description="charged twice",
    received_at="2026-11-22T02:00:00+00:00",
    first_response_due="2026-11-23T02:00:00+00:00",
    tenant={"webhook_url": "https://tenant.example/hooks"},
)
EVENTS = [
    _event("complaint.status_changed", status="triaged", reason="case_opened", **DUES),
    _event(
        "complaint.status_changed",
        status="triaged",
        reason="duplicate_linked",
        duplicate_of=str(uuid.uuid4()),
        duplicate_of_ticket_no="WC-20261121-000007",
        **DUES,
    ),
    _event(
        "complaint.agent_message",
        message_id=str(uuid.uuid4()),
        text="Please send the bank statement.",
        request_information=True,
        agent_id=str(uuid.uuid4()),
    ),
    _event(
        "resolution.recorded",
        resolution_id=str(uuid.uuid4()),
        kind="refund",
        amount="86.50",
        currency="CNY",
        status="recorded",
    ),
    _event(
        "resolution.recorded",
        resolution_id=str(uuid.uuid4()),
        kind="compensation",
        compensation_type="coupon",
        amount="10.00",
        currency="CNY",
        status="recorded",
    ),
    _event(
        "resolution.recorded",
        resolution_id=str(uuid.uuid4()),
        kind="reversal",
        amount="10.00",
        currency="CNY",
        reverses=str(uuid.uuid4()),
        status="recorded",
    ),
    _event(
        "complaint.sla_breached",
        clock="first_response",
        due_at=AT,
        new_estimate=LATER,
        priority="P2",
    ),
    _event(
        "complaint.clock_extended",
        clock="legal_final",
        previous_due_at=AT,
        due_at=LATER,
        approved_by=str(uuid.uuid4()),
        reason="Waiting for the merchant.",
    ),
    _event("complaint.status_changed", status="resolved", outcome="monetary_relief"),
    _event(
        "complaint.status_changed",
        status="reopened",
        previous_status="resolved",
        reason="customer_feedback",
        clocks=[{"name": "resolution", "due_at": LATER, "state": "running"}],
    ),
]


@pytest.mark.parametrize("locale", LOCALES)
def test_what_the_notifier_sends_validates_against_the_documented_webhook(
    intake_doc: dict[str, Any], locale: str
) -> None:
    seen: set[str] = set()
    planned = [(RECEIVED, acknowledgement(RECEIVED.payload))]
    planned += [(event, note) for event in EVENTS for note in plan(event)]
    for event, note in planned:
        row = {
            "event_id": uuid.uuid4(),
            "type": note.type,
            "ticket_no": event.ticket_no,
            "complaint_id": event.complaint_id,
            "occurred_at": datetime(2026, 11, 22, 2, tzinfo=UTC),
            "locale": locale,
            "template": note.template,
            "data": note.data,
        }
        body = orjson.loads(webhook_body(row))  # type: ignore[arg-type]
        operation = intake_doc["webhooks"][note.type]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        _validator(intake_doc, schema).validate(body)
        # Every key the notifier puts in `data` is documented for that type.
        data_schema = _schema(intake_doc, _schema(intake_doc, schema)["properties"]["data"])
        assert set(body["data"]) <= set(data_schema["properties"]), note.type
        seen.add(note.type)
    assert seen == WEBHOOK_TYPES


# ------------------------------------------------------------------ enums


def test_the_vocabularies_agree_with_every_services_own_copy() -> None:
    assert triage_rules.CATEGORIES == CATEGORIES
    assert set(CHANNELS) == triage_rules.CHANNELS
    assert tuple(c.value for c in Channel) == CHANNELS
    assert resolution_api.Category.__args__ == CATEGORIES  # type: ignore[attr-defined]


def test_intake_documents_channel_and_category_as_enums(intake_doc: dict[str, Any]) -> None:
    schemas = intake_doc["components"]["schemas"]
    complaint_in = schemas["ComplaintIn"]["properties"]
    assert _enum_of(intake_doc, complaint_in["channel"]) == list(CHANNELS)
    assert _enum_of(intake_doc, complaint_in["category_hint"]) == list(CATEGORIES)
    for name in ("ComplaintSummary", "ComplaintView"):
        props = schemas[name]["properties"]
        assert _enum_of(intake_doc, props["category"]) == list(CATEGORIES)
        assert _enum_of(intake_doc, props["channel"]) == list(CHANNELS)
    for name in ("TriagedData",):
        props = schemas[name]["properties"]
        assert _enum_of(intake_doc, props["category"]) == list(CATEGORIES)


def test_resolution_documents_category_and_channel_as_enums(
    resolution_doc: dict[str, Any],
) -> None:
    schemas = resolution_doc["components"]["schemas"]
    for name in ("CaseSummary", "CaseView"):
        props = schemas[name]["properties"]
        assert _enum_of(resolution_doc, props["category"]) == list(CATEGORIES)
        assert _enum_of(resolution_doc, props["channel"]) == list(CHANNELS)
    queue = resolution_doc["paths"]["/v1/cases"]["get"]["parameters"]
    [category] = [p for p in queue if p["name"] == "category"]
    assert _enum_of(resolution_doc, category["schema"]) == list(CATEGORIES)


# ------------------------------------------------------------------ the agent API

# CONTRACT section 6, plus the legal extension; the request body each POST takes.
AGENT_API = {
    ("get", "/v1/cases"): None,
    ("get", "/v1/cases/{ticket_no}"): None,
    ("post", "/v1/cases/{ticket_no}/resolutions"): "ResolutionIn",
    ("post", "/v1/resolutions/{resolution_id}/approve"): None,
    ("post", "/v1/cases/{ticket_no}/status"): "StatusIn",
    ("post", "/v1/cases/{ticket_no}/messages"): "MessageIn",
    ("post", "/v1/cases/{ticket_no}/claim"): None,
    ("post", "/v1/cases/{ticket_no}/assign"): "AssignIn",
    ("post", "/v1/cases/{ticket_no}/category"): "RecategoriseIn",
    ("post", "/v1/cases/{ticket_no}/clocks/legal_final/extend"): "ExtendIn",
}


def test_the_agent_api_is_documented_whole(resolution_doc: dict[str, Any]) -> None:
    operations = {
        (method, path): op
        for path, item in resolution_doc["paths"].items()
        for method, op in item.items()
    }
    assert set(operations) == set(AGENT_API)
    assert "HTTPBearer" in resolution_doc["components"]["securitySchemes"]
    for key, body_model in AGENT_API.items():
        op = operations[key]
        assert op["summary"] and op["description"], key
        assert op.get("security") == [{"HTTPBearer": []}], key
        assert "401" in op["responses"], key
        success = [s for s in op["responses"] if s.startswith("2")]
        assert success, key
        for status in success:
            content = op["responses"][status]["content"]["application/json"]
            assert "$ref" in content["schema"], key
        if body_model is not None:
            body = op["requestBody"]["content"]["application/json"]
            assert body["schema"] == {"$ref": f"#/components/schemas/{body_model}"}, key
            assert body["examples"], key
            assert body_model in resolution_doc["components"]["schemas"]
    # Refunds require the key; an approval takes one (it is taken once without one too).
    for key, required in (
        (("post", "/v1/cases/{ticket_no}/resolutions"), True),
        (("post", "/v1/resolutions/{resolution_id}/approve"), False),
        (("post", "/v1/cases/{ticket_no}/category"), False),
    ):
        names = {p["name"]: p.get("required") for p in operations[key]["parameters"]}
        assert names.get("Idempotency-Key") is required, key
    resolution_in = resolution_doc["components"]["schemas"]["ResolutionIn"]["properties"]
    assert {"refund", "compensation", "explanation", "rejection"} <= set(
        _enum_of(resolution_doc, resolution_in["kind"])
    )
    status_in = resolution_doc["components"]["schemas"]["StatusIn"]["properties"]
    assert {"monetary_relief", "non_monetary_relief", "explanation", "no_relief"} <= set(
        _enum_of(resolution_doc, status_in["outcome"])
    )


def test_the_service_documents_are_valid_json() -> None:
    for create in APPS.values():
        assert orjson.loads(orjson.dumps(create().openapi()))["openapi"].startswith("3.1")
