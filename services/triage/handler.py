"""Triage of one `complaint.received` event, inside EventConsumer's transaction:
classify, set due times, link a duplicate, record it, and emit `complaint.triaged`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.triage import duplicates, incidents
from services.triage.classifier import Classifier, ComplaintFacts
from services.triage.incident_policy import IncidentPolicy, merchant_key
from shared import outbox
from shared.events import Envelope, follow_up
from shared.metrics import ServiceMetrics
from shared.topics import COMPLAINTS_TRIAGED, INCIDENTS

# Facts carried forward so resolution and notifier never need intake's data.
_CARRIED = ("channel", "amount", "currency", "transaction_ref", "merchant", "received_at")


class TriageHandler:
    def __init__(
        self,
        classifier: Classifier,
        metrics: ServiceMetrics,
        duplicate_window: timedelta,
        incident_policy: IncidentPolicy,
    ) -> None:
        self._classifier = classifier
        self._metrics = metrics
        self._duplicate_window = duplicate_window
        self._incident_policy = incident_policy

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        if envelope.event_type == "complaint.received":
            await self._triage(conn, envelope)
        # complaint.message_added / feedback_received need no triage.

    async def _triage(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        p = envelope.payload
        facts = ComplaintFacts.from_mapping(p)
        result = self._classifier.classify(facts)
        received_at = datetime.fromisoformat(p["received_at"])
        due = self._classifier.due_times(result.priority, received_at)
        customer = p["customer"]
        duplicate_of = await duplicates.find_original(
            conn,
            tenant_id=envelope.tenant_id,
            customer_id=customer["id"],
            transaction_ref=facts.transaction_ref,
            received_at=received_at,
            window=self._duplicate_window,
        )
        await conn.execute(
            """
            INSERT INTO triaged_complaints (complaint_id, tenant_id, ticket_no, customer_id,
                transaction_ref, merchant, category, priority, received_at, duplicate_of,
                merchant_key)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            """,
            envelope.complaint_id,
            envelope.tenant_id,
            envelope.ticket_no,
            customer["id"],
            facts.transaction_ref,
            facts.merchant,
            result.category,
            result.priority,
            received_at,
            duplicate_of,
            merchant_key(facts.merchant),
        )
        incident = await incidents.detect(
            conn,
            self._incident_policy,
            incidents.Triaged(
                tenant_id=envelope.tenant_id,
                complaint_id=envelope.complaint_id,
                ticket_no=envelope.ticket_no,
                category=result.category,
                merchant=facts.merchant,
                merchant_key=merchant_key(facts.merchant),
                received_at=received_at,
            ),
        )
        payload: dict[str, Any] = {
            "category": result.category,
            "priority": result.priority,
            "reasons": list(result.reasons),
            "regulatory_issue": result.regulatory_issue,
            "actions": list(result.actions),
            "first_response_due": due.first_response_due.isoformat(),
            "resolution_due": due.resolution_due.isoformat(),
            "duplicate_of": str(duplicate_of) if duplicate_of else None,
            "incident_id": str(incident.incident_id) if incident else None,
            "customer": {"id": customer["id"], "locale": customer.get("locale")},
            "tenant": p.get("tenant", {}),
            **{key: p.get(key) for key in _CARRIED},
        }
        events = [
            (
                COMPLAINTS_TRIAGED,
                follow_up(envelope, "complaint.triaged", producer="triage", payload=payload),
            )
        ]
        if incident is not None:
            # Keyed, like every event, by the complaint that caused it (CONTRACT section 4).
            incident_event = follow_up(
                envelope, incident.event_type, producer="triage", payload=incident.payload
            )
            events.append((INCIDENTS, incident_event))
        await outbox.enqueue_many(conn, events)
        self._metrics.complaints_triaged.labels(result.category, result.priority).inc()
