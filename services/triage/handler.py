"""Triage of one `complaint.received` event, inside EventConsumer's transaction (see
unit_of_work.bind): classify, set due times, link a duplicate, record it, detect an
incident, and emit `complaint.triaged` (and `incident.opened`/`incident.updated`).

`complaints.triaged.v1` is read by systems outside this one: it carries the tenant's
jurisdiction and locale and the customer's id and locale, never the tenant's webhook URL
or the customer's e-mail or phone (the notifier takes those from `complaint.received`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.triage import domain, incidents
from services.triage.classifier import Classifier, ComplaintFacts
from services.triage.domain import DuplicateKey, TriagedComplaint
from services.triage.incident_policy import IncidentPolicy, merchant_key
from services.triage.unit_of_work import UnitOfWork
from shared.event_payloads import ComplaintReceived
from shared.events import TypedEnvelope, follow_up
from shared.metrics import ServiceMetrics
from shared.topics import COMPLAINTS_TRIAGED, INCIDENTS

PRODUCER = "triage"


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

    async def __call__(self, event: TypedEnvelope[Any], uow: UnitOfWork) -> None:
        if isinstance(event.payload, ComplaintReceived):
            await self._triage(event, event.payload, uow)
        # complaint.message_added / feedback_received need no triage.

    async def _triage(
        self, event: TypedEnvelope[Any], p: ComplaintReceived, uow: UnitOfWork
    ) -> None:
        facts = ComplaintFacts.from_mapping(p.model_dump())
        result = self._classifier.classify(facts)
        due = self._classifier.due_times(result.priority, p.received_at)
        duplicate_of = None
        if facts.transaction_ref:
            key = DuplicateKey(event.tenant_id, p.customer.id, facts.transaction_ref)
            duplicate_of = await uow.duplicates.find_original(
                key, p.received_at, self._duplicate_window
            )
        complaint = TriagedComplaint(
            complaint_id=event.complaint_id,
            tenant_id=event.tenant_id,
            ticket_no=event.ticket_no,
            customer_id=p.customer.id,
            transaction_ref=facts.transaction_ref,
            merchant=facts.merchant,
            merchant_key=merchant_key(facts.merchant),
            category=result.category,
            priority=result.priority,
            received_at=p.received_at,
            duplicate_of=duplicate_of,
        )
        # With the text it was classified on: an agent's correction becomes a labelled
        # example (corrections.py).
        await uow.complaints.add(complaint, facts)
        incident = await incidents.detect(uow, self._incident_policy, complaint)
        payload = domain.triaged_payload(
            p,
            result,
            due,
            duplicate_of=duplicate_of,
            incident_id=incident.incident_id if incident else None,
        )
        uow.emit(
            follow_up(event, "complaint.triaged", producer=PRODUCER, payload=payload),
            COMPLAINTS_TRIAGED,
        )
        if incident is not None:
            # Keyed, like every event, by the complaint that caused it (CONTRACT section 4).
            incident_event = follow_up(
                event, incident.event_type, producer=PRODUCER, payload=incident.payload
            )
            uow.emit(incident_event, INCIDENTS)
        self._metrics.complaints_triaged.labels(result.category, result.priority).inc()
