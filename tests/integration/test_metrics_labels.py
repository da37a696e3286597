"""Labels from closed vocabularies only (CONTRACT section 8): one complaint with
distinctive tenant, customer and text goes through all four services (in this process,
real PostgreSQL and Kafka), and then no /metrics output carries any of it, nor a ticket
number, a UUID or an e-mail address; every known label's value is in its vocabulary.
"""

from __future__ import annotations

import re
import uuid
from typing import get_args

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.intake.domain import Channel
from services.resolution.clocks import ClockName
from services.triage.rules import CATEGORIES
from shared.event_payloads import Priority, ResolutionKind
from shared.housekeeping import TABLE_VOCABULARY
from shared.topics import ALL_TOPICS
from tests.integration.test_metrics_contract import (
    Stack,
    new_agent,
    new_tenant,
    opened_case,
    post_complaint,
    stack,
)
from tests.support import Infra, WebhookSink, eventually

__all__ = ["stack"]  # the module's four services (a fixture of the contract tests)

TENANT = "tenant-zebra-77"
CUSTOMER = "cust-unicorn-99"
EMAIL = "giraffe.owner@example.org"
DESCRIPTION = "A purple giraffe charged my wallet twice for one ride, please refund it."
DISTINCTIVE = (TENANT, CUSTOMER, EMAIL, "purple giraffe", "giraffe", "zebra", "unicorn")

SERVICES = ("intake", "triage", "resolution", "notifier")
VOCABULARIES: dict[str, set[str]] = {
    "service": set(SERVICES),
    "group": set(SERVICES),
    "topic": set(ALL_TOPICS),
    "channel": {c.value for c in Channel} | {"webhook"},  # intake's, and the notifier's
    "category": set(CATEGORIES),
    "priority": set(get_args(Priority)),
    "kind": set(get_args(ResolutionKind)),
    "clock": {c.value for c in ClockName},
    "partition": {str(p) for p in range(64)},
    "table": set(TABLE_VOCABULARY),  # table_dead_tuples: the churning tables housekeeping VACUUMs
    "outcome": {
        # events_consumed_total
        "processed",
        "duplicate",
        "retried",
        "dead_lettered",
        "ignored",  # a type the service does not act on, passed over by its header
        # notifications_sent_total
        "delivered",
        "retrying",
        "failed",
        "deferred",
        "stale",
    },
    # notifications_sent_total: the webhook types of CONTRACT section 7
    "type": {
        "complaint.acknowledged",
        "complaint.triaged",
        "complaint.agent_message",
        "complaint.clock_extended",
        "complaint.sla_breached",
        "complaint.resolution_recorded",
        "complaint.resolved",
        "complaint.survey",
        "complaint.reopened",
    },
    "le": set(),  # histogram buckets: numbers, checked below
}
TICKET = re.compile(r"WC-\d", re.IGNORECASE)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
MAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", re.IGNORECASE)


def labels_of(text: str) -> list[tuple[str, str, str]]:
    """(metric, label, value) of every sample of one exposition."""
    return [
        (sample.name, label, value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for label, value in sample.labels.items()
    ]


async def test_no_identifier_or_free_text_in_any_label(
    infra: Infra, stack: Stack, webhook_sink: WebhookSink
) -> None:
    tenant = await new_tenant(infra, webhook_sink.url, name=TENANT)
    agent = await new_agent(infra, tenant)
    accepted = await post_complaint(
        stack.clients["intake"],
        tenant,
        customer={"id": CUSTOMER, "locale": "en", "email": EMAIL},
        description=DESCRIPTION,
        channel="web",
    )
    ticket_no = accepted["ticket_no"]
    resolution = stack.clients["resolution"]
    await opened_case(resolution, agent, ticket_no)
    as_agent = {"Authorization": f"Bearer {agent['token']}"}
    recorded = await resolution.post(
        f"/v1/cases/{ticket_no}/resolutions",
        json={"kind": "explanation", "note": f"Told {CUSTOMER} about the purple giraffe."},
        headers={**as_agent, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert recorded.status_code == 201, recorded.text
    resolved = await resolution.post(
        f"/v1/cases/{ticket_no}/status",
        json={"status": "resolved", "note": "Explained.", "outcome": "explanation"},
        headers=as_agent,
    )
    assert resolved.status_code == 200, resolved.text

    async def told_of_the_resolution() -> bool:
        return any(b"complaint.resolved" in hook.body for hook in webhook_sink.delivered())

    await eventually(told_of_the_resolution)

    seen: dict[str, set[str]] = {}
    for name in SERVICES:
        client: httpx.AsyncClient = stack.clients[name]
        text = (await client.get("/metrics")).text
        for piece in (*DISTINCTIVE, ticket_no, accepted["complaint_id"], tenant["tenant_id"]):
            assert piece.lower() not in text.lower(), (name, piece)
        for metric, label, value in labels_of(text):
            where = (name, metric, label, value)
            assert not TICKET.search(value) and not UUID.search(value), where
            assert not MAIL.search(value), where
            seen.setdefault(label, set()).add(value)
            if label == "le":
                assert value == "+Inf" or float(value) >= 0, where
            else:
                assert label in VOCABULARIES, f"a label of no known vocabulary: {where}"
                assert value in VOCABULARIES[label], where
    # The complaint's own values are among them: the scan looked at a real journey.
    assert "web" in seen["channel"] and "explanation" in seen["kind"]
    assert {"intake", "triage", "resolution", "notifier"} <= seen["service"]
