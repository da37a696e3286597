"""intake's unit of work for its read model: the repository the read-model handlers
write through, on the connection and transaction EventConsumer opened for one event.

Its SQL stays in repository.py, shared with the HTTP side (a follow-up moves the status,
accepting a complaint starts the timeline). Handlers are written against the
`UnitOfWork` protocol, take `(envelope, uow)`, and are adapted to the runtime's
`(conn, envelope)` signature by `bind`; the unit tests run them on a fake. (The same
`bind` shape is in resolution, triage and notifier: a candidate for shared/.)
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from services.intake import repository
from shared.consumer import Handler
from shared.events import TypedEnvelope
from shared.topics import COMPLAINTS_RECEIVED
from shared.unit_of_work import OutboxUnitOfWork
from shared.unit_of_work import bind as bind_handler


@dataclass(frozen=True)
class ViewUpdate:
    """New values for a complaint's view; None leaves a column as it is."""

    status: str
    category: str | None = None
    priority: str | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None

    def changed(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class ResolutionView:
    resolution_id: uuid.UUID
    complaint_id: uuid.UUID
    kind: str
    amount: Decimal | None
    currency: str | None
    status: str  # recorded | pending_approval | approved
    recorded_at: datetime  # occurred_at of the event that brought it
    compensation_type: str | None = None
    reverses: uuid.UUID | None = None  # kind reversal: the entry it corrects
    decided_by: str | None = None  # "agent" or "auto": the wallet app never sees agent ids


@dataclass(frozen=True)
class ClockState:
    """One of the case's clocks as the customer's app shows it."""

    name: str
    due_at: datetime
    state: str  # running | paused | met | breached

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "due_at": self.due_at.isoformat(), "state": self.state}


class ReadModel(Protocol):
    async def lock_status(self, complaint_id: uuid.UUID) -> str | None:
        """The complaint's status, its row locked until the transaction ends (ordering
        this update against a follow-up racing with it); None: intake never had it."""

    async def update(self, complaint_id: uuid.UUID, update: ViewUpdate) -> None: ...

    async def add_timeline(
        self, complaint_id: uuid.UUID, at: datetime, status: str, detail: str
    ) -> None: ...

    async def record_resolution(self, resolution: ResolutionView) -> None:
        """Insert it, or move an existing one forward (pending_approval, recorded, approved;
        never back)."""

    async def set_outcome(
        self, complaint_id: uuid.UUID, outcome: str | None, company_response: str | None
    ) -> None:
        """The outcome and its company_response words (both None: no outcome any more)."""

    async def set_clocks(
        self, complaint_id: uuid.UUID, clocks: list[ClockState], at: datetime
    ) -> bool:
        """Replace the clocks unless newer ones (by the events' occurred_at) are stored;
        False when these were older and left alone."""


class UnitOfWork(Protocol):
    complaints: ReadModel


class PgReadModel:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock_status(self, complaint_id: uuid.UUID) -> str | None:
        row = await repository.lock_complaint(self._conn, complaint_id)
        return str(row["status"]) if row is not None else None

    async def update(self, complaint_id: uuid.UUID, update: ViewUpdate) -> None:
        await repository.update_read_model(self._conn, complaint_id, **update.changed())

    async def add_timeline(
        self, complaint_id: uuid.UUID, at: datetime, status: str, detail: str
    ) -> None:
        await repository.add_timeline(self._conn, complaint_id, at, status, detail)

    async def record_resolution(self, resolution: ResolutionView) -> None:
        r = resolution
        await repository.upsert_resolution(
            self._conn,
            {
                "resolution_id": r.resolution_id,
                "complaint_id": r.complaint_id,
                "kind": r.kind,
                "amount": r.amount,
                "currency": r.currency,
                "status": r.status,
                "recorded_at": r.recorded_at,
                "compensation_type": r.compensation_type,
                "reverses": r.reverses,
                "decided_by": r.decided_by,
            },
        )

    async def set_outcome(
        self, complaint_id: uuid.UUID, outcome: str | None, company_response: str | None
    ) -> None:
        await repository.set_outcome(self._conn, complaint_id, outcome, company_response)

    async def set_clocks(
        self, complaint_id: uuid.UUID, clocks: list[ClockState], at: datetime
    ) -> bool:
        return await repository.set_clocks(
            self._conn, complaint_id, [c.to_json() for c in clocks], at
        )


# The read model a consumer transaction opened on a connection (services.intake.view_batch
# sets it around the transaction's handlers), so that its events share one.
open_read_model: ContextVar[tuple[asyncpg.Connection, ReadModel] | None] = ContextVar(
    "intake_open_read_model", default=None
)


class IntakeUnitOfWork(OutboxUnitOfWork):
    """Built from the connection whose transaction the caller owns: the read model the
    transaction has open on it, else one that writes at once. The read model emits
    nothing, so its flush writes nothing."""

    default_topic = COMPLAINTS_RECEIVED

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__(conn)
        opened = open_read_model.get()
        self.complaints: ReadModel = (
            opened[1] if opened is not None and opened[0] is conn else PgReadModel(conn)
        )


UowHandler = Callable[[TypedEnvelope[Any], UnitOfWork], Awaitable[None]]


def bind(handler: UowHandler) -> Handler:
    """The runtime's handler for `handler(typed_envelope, IntakeUnitOfWork)`."""
    return bind_handler(IntakeUnitOfWork, handler)
