"""The event envelope every message on Kafka carries (CONTRACT section 4)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class UnsupportedSchemaVersion(ValueError):
    """The envelope's schema_version is one this consumer does not understand."""


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    event_type: str = Field(min_length=1)
    schema_version: int
    occurred_at: datetime
    producer: str
    tenant_id: uuid.UUID
    complaint_id: uuid.UUID
    ticket_no: str
    correlation_id: uuid.UUID
    payload: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def key(self) -> bytes:
        """The Kafka message key: all events of one complaint stay in order."""
        return str(self.complaint_id).encode()


def new_event(
    event_type: str,
    *,
    producer: str,
    tenant_id: uuid.UUID,
    complaint_id: uuid.UUID,
    ticket_no: str,
    correlation_id: uuid.UUID,
    payload: dict[str, Any],
    occurred_at: datetime | None = None,
) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        event_type=event_type,
        schema_version=SCHEMA_VERSION,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        tenant_id=tenant_id,
        complaint_id=complaint_id,
        ticket_no=ticket_no,
        correlation_id=correlation_id,
        payload=payload,
    )


def follow_up(
    cause: Envelope, event_type: str, *, producer: str, payload: dict[str, Any]
) -> Envelope:
    """A new event about the same complaint, caused by `cause`: same tenant, complaint,
    ticket and correlation id, a new event id."""
    return new_event(
        event_type,
        producer=producer,
        tenant_id=cause.tenant_id,
        complaint_id=cause.complaint_id,
        ticket_no=cause.ticket_no,
        correlation_id=cause.correlation_id,
        payload=payload,
    )


def parse_envelope(raw: bytes) -> Envelope:
    """Parse and check a message; raises ValueError (poison) when it can never be handled."""
    envelope = Envelope.model_validate_json(raw)
    if envelope.schema_version != SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(f"unsupported schema_version {envelope.schema_version}")
    return envelope
