"""The event envelope every message on Kafka carries (CONTRACT section 4), and the
payload contracts checked when an event is written and when it is read."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from shared.event_payloads import PAYLOAD_MODELS, EventPayload

SCHEMA_VERSION = 1

# Event types of the test suite's own topics (consumer and relay tests): no contract.
UNCONTRACTED_PREFIX = "test."

P = TypeVar("P", bound=EventPayload)


class UnsupportedSchemaVersion(ValueError):
    """The envelope's schema_version is one this consumer does not understand."""


class UnknownEventType(ValueError):
    """No payload model is registered for this event type and schema version."""


class InvalidEventPayload(ValueError):
    """The payload does not match its event type's model. The message names the fields
    and the rule broken, never the values (it goes into dead-letter headers)."""


class EnvelopeHeader(BaseModel):
    """Everything of an envelope but its payload."""

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

    @property
    def key(self) -> bytes:
        """The Kafka message key: all events of one complaint stay in order."""
        return str(self.complaint_id).encode()


class Envelope(EnvelopeHeader):
    """What travels: the payload stays a plain JSON object on the wire."""

    payload: dict[str, Any]
    # The payload as its contract's model, when parse_envelope already validated it.
    _contract_payload: EventPayload | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # The kept contract payload derives from the fields: equal fields, equal envelopes.
        if not isinstance(other, Envelope):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = EnvelopeHeader.__hash__

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def typed(self, model: type[P] | None = None) -> TypedEnvelope[P]:
        """This envelope with its payload as its contract's model (or `model`)."""
        contract = PAYLOAD_MODELS.get((self.event_type, self.schema_version))
        # No model given and none registered: payload_model raises UnknownEventType.
        model = model or contract or payload_model(self.event_type, self.schema_version)  # type: ignore[assignment]
        assert model is not None
        header = {name: getattr(self, name) for name in EnvelopeHeader.model_fields}
        cached = self._contract_payload
        if model is contract and cached is not None:
            payload = cached
        else:
            payload = validate_payload(self.event_type, model, self.payload)
        # Fields already validated: construct without checking them again.
        return typed_envelope(model).model_construct(**header, payload=payload)


class TypedEnvelope(EnvelopeHeader, Generic[P]):
    """An envelope whose payload is its event type's model: what handlers receive."""

    payload: P


# pydantic keeps its parametrised classes in a weak cache: a class nothing else holds is
# freed by the next full garbage collection and built again (milliseconds) by the next
# event of its type. Held here for the process's life.
_TYPED_ENVELOPES: dict[type[EventPayload], type[TypedEnvelope[Any]]] = {}


def typed_envelope(model: type[P]) -> type[TypedEnvelope[P]]:
    """TypedEnvelope[model], built once per model."""
    cls = _TYPED_ENVELOPES.get(model)
    if cls is None:
        cls = _TYPED_ENVELOPES[model] = TypedEnvelope[model]  # type: ignore[valid-type]
    return cls


def payload_model(event_type: str, schema_version: int = SCHEMA_VERSION) -> type[EventPayload]:
    try:
        return PAYLOAD_MODELS[(event_type, schema_version)]
    except KeyError:
        raise UnknownEventType(
            f"no contract for event type {event_type!r} version {schema_version}"
        ) from None


def validate_payload(event_type: str, model: type[P], payload: Mapping[str, Any]) -> P:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEventPayload(_describe(event_type, exc)) from None


def _describe(event_type: str, exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    ]
    return f"invalid {event_type} payload: " + "; ".join(problems)


def _checked_payload(event_type: str, payload: Mapping[str, Any] | EventPayload) -> dict[str, Any]:
    if event_type.startswith(UNCONTRACTED_PREFIX):
        assert not isinstance(payload, EventPayload)
        return dict(payload)
    model = payload_model(event_type)
    if isinstance(payload, EventPayload):
        if not isinstance(payload, model):
            raise InvalidEventPayload(f"{type(payload).__name__} is not a {event_type} payload")
        return payload.model_dump(mode="json", exclude_unset=True)
    validate_payload(event_type, model, payload)
    return dict(payload)  # kept as given: validation must not reformat what producers write


def new_event(
    event_type: str,
    *,
    producer: str,
    tenant_id: uuid.UUID,
    complaint_id: uuid.UUID,
    ticket_no: str,
    correlation_id: uuid.UUID,
    payload: Mapping[str, Any] | EventPayload,
    occurred_at: datetime | None = None,
) -> Envelope:
    """A new event; its payload is checked against its event type's model (raises
    UnknownEventType or InvalidEventPayload), so no invalid event reaches the outbox."""
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
        payload=_checked_payload(event_type, payload),
    )


def follow_up(
    cause: EnvelopeHeader,
    event_type: str,
    *,
    producer: str,
    payload: Mapping[str, Any] | EventPayload,
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
    """Parse and check a message; raises ValueError (poison) when it can never be handled:
    bad JSON, an unsupported schema version, a payload that breaks its model.

    An event type with no contract passes unchecked: a producer may add a new type to a
    topic before its consumers know it, and they skip it rather than dead-letter it."""
    envelope = Envelope.model_validate_json(raw)
    if envelope.schema_version != SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(f"unsupported schema_version {envelope.schema_version}")
    model = PAYLOAD_MODELS.get((envelope.event_type, envelope.schema_version))
    if model is not None:
        # Kept, so that handing the handler its typed envelope validates nothing twice.
        envelope._contract_payload = validate_payload(envelope.event_type, model, envelope.payload)
    return envelope
