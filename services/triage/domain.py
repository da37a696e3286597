"""What triage records and emits, as plain values built by pure functions (no I/O).

The decisions themselves live in classifier.py (category, priority, due times) and
incident_policy.py (when many complaints share one cause)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.triage.classifier import Classification, DueTimes
from shared.event_payloads import ComplaintReceived

IncidentKind = Literal["merchant", "category"]

# Facts carried forward so resolution and notifier never need intake's data.
CARRIED_FACTS = ("channel", "amount", "currency", "transaction_ref", "merchant", "received_at")


@dataclass(frozen=True)
class TriagedComplaint:
    """One row of triage's memory: what duplicate and incident detection look back on."""

    complaint_id: uuid.UUID
    tenant_id: uuid.UUID
    ticket_no: str
    customer_id: str
    transaction_ref: str | None
    merchant: str | None
    merchant_key: str | None
    category: str
    priority: str
    received_at: datetime
    duplicate_of: uuid.UUID | None

    def incident_causes(self) -> list[Cause]:
        """A merchant cluster is looked for before a category spike."""
        causes = [Cause("merchant", self.merchant_key)] if self.merchant_key else []
        causes.append(Cause("category", self.category))
        return causes


@dataclass(frozen=True)
class DuplicateKey:
    """Two complaints with the same key within the window are one matter."""

    tenant_id: uuid.UUID
    customer_id: str
    transaction_ref: str


@dataclass(frozen=True)
class Cause:
    kind: IncidentKind
    value: str  # a merchant key or a category


@dataclass(frozen=True)
class Incident:
    incident_id: uuid.UUID
    kind: IncidentKind
    cause: str
    category: str
    opened_at: datetime
    last_seen_at: datetime
    complaint_count: int


@dataclass(frozen=True)
class IncidentMember:
    complaint_id: uuid.UUID
    ticket_no: str


@dataclass(frozen=True)
class IncidentChange:
    incident_id: uuid.UUID
    event_type: str  # incident.opened | incident.updated
    payload: dict[str, Any]


def triaged_payload(
    received: ComplaintReceived,
    result: Classification,
    due: DueTimes,
    *,
    duplicate_of: uuid.UUID | None,
    incident_id: uuid.UUID | None,
) -> dict[str, Any]:
    """complaint.triaged's payload. Read outside this system: the tenant's jurisdiction
    and locale and the customer's id and locale, never a webhook URL, e-mail or phone."""
    carried = received.model_dump(mode="json", include=set(CARRIED_FACTS))
    return {
        "category": result.category,
        "priority": result.priority,
        "reasons": list(result.reasons),
        "confidence": result.confidence,
        "needs_review": result.needs_review,
        "regulatory_issue": result.regulatory_issue,
        "actions": list(result.actions),
        "first_response_due": due.first_response_due.isoformat(),
        "resolution_due": due.resolution_due.isoformat(),
        "duplicate_of": str(duplicate_of) if duplicate_of else None,
        "incident_id": str(incident_id) if incident_id else None,
        "customer": {"id": received.customer.id, "locale": received.customer.locale},
        "tenant": {
            "jurisdiction": received.tenant.jurisdiction,
            "locale": received.tenant.locale,
        },
        **{key: carried.get(key) for key in CARRIED_FACTS},
    }


def incident_opened(
    incident: Incident,
    complaint: TriagedComplaint,
    members: list[IncidentMember],
    *,
    window_minutes: int,
) -> IncidentChange:
    payload = {
        **_describe(incident, complaint),
        "window_minutes": window_minutes,
        "complaint_ids": [str(m.complaint_id) for m in members],
        "ticket_nos": [m.ticket_no for m in members],
    }
    return IncidentChange(incident.incident_id, "incident.opened", payload)


def incident_updated(incident: Incident, complaint: TriagedComplaint) -> IncidentChange:
    payload = {
        **_describe(incident, complaint),
        "complaint_id": str(complaint.complaint_id),
        "ticket_no": complaint.ticket_no,
    }
    return IncidentChange(incident.incident_id, "incident.updated", payload)


def _describe(incident: Incident, complaint: TriagedComplaint) -> dict[str, Any]:
    # The merchant as the customer wrote it reads better than its normalised key.
    named = incident.kind == "merchant" and complaint.merchant
    return {
        "incident_id": str(incident.incident_id),
        "kind": incident.kind,
        "cause": complaint.merchant if named else incident.cause,
        "category": incident.category,
        "opened_at": incident.opened_at.isoformat(),
        "last_seen_at": incident.last_seen_at.isoformat(),
        "complaint_count": incident.complaint_count,
    }
