"""Building envelopes as the upstream services would publish them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from shared.events import Envelope, new_event


def received_event(
    *,
    tenant_id: uuid.UUID | None = None,
    description: str = "我的账户被盗刷了，不是我本人操作",
    customer_id: str = "u-1",
    webhook_url: str = "http://127.0.0.1:9/hooks",
    **fields: Any,
) -> Envelope:
    received_at = fields.pop("received_at", datetime.now(UTC))
    return new_event(
        "complaint.received",
        producer="intake",
        tenant_id=tenant_id or uuid.uuid4(),
        complaint_id=uuid.uuid4(),
        ticket_no=f"WC-20261123-{uuid.uuid4().int % 10**6:06d}",
        correlation_id=uuid.uuid4(),
        occurred_at=received_at,
        payload={
            "customer": {"id": customer_id, "locale": "zh-CN"},
            "channel": "app",
            "description": description,
            "received_at": received_at.isoformat(),
            "first_response_due": received_at.isoformat(),
            "tenant": {"jurisdiction": "cn", "locale": "zh-CN", "webhook_url": webhook_url},
            **fields,
        },
    )


def as_bytes(envelope: Envelope) -> bytes:
    return envelope.model_dump_json().encode()


def uncontracted_event(
    event_type: str = "test.happened", *, complaint_id: uuid.UUID | None = None, **payload: Any
) -> Envelope:
    """An event of a `test.` type (no payload contract) for the event core's own tests;
    a fresh complaint id unless given, so events spread over the partitions."""
    return new_event(
        event_type,
        producer="test",
        tenant_id=uuid.uuid4(),
        complaint_id=complaint_id or uuid.uuid4(),
        ticket_no="WC-T",
        correlation_id=uuid.uuid4(),
        payload=payload,
    )
