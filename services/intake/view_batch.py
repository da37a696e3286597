"""One consumer transaction's changes to the complaints' view, written at once.

intake's read model handles about four events per complaint (triaged, a status change,
two notifications); each event read the status under a lock, set columns and added a
timeline line: about three statements per event. Inside a consumer transaction (a
batch, or one record) the handlers now talk to a `BufferedReadModel`: one locking read
for every complaint of the transaction when it opens; the status changes and timeline
lines kept in memory, the status the next event reads included; on the way out one
UPDATE and one INSERT for all of them, before the commit. The handlers are the same
(they see the `ReadModel` protocol); the rarer writes (outcome, clocks, resolutions)
still go straight to the database, and touch other columns and tables.

The unit of work finds the open batch through a context variable
(`unit_of_work.open_read_model`): handlers take `(connection, envelope)` from the
consumer, which opens the batch around them (`shared.consumer.TransactionScope`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from services.intake import repository
from services.intake.unit_of_work import (
    ClockState,
    PgReadModel,
    ResolutionView,
    ViewUpdate,
    open_read_model,
)
from shared.events import Envelope


class BufferedReadModel:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._direct = PgReadModel(conn)
        self._status: dict[uuid.UUID, str] = {}
        self._updates: dict[uuid.UUID, dict[str, Any]] = {}
        self._timeline: list[tuple[uuid.UUID, datetime, str, str]] = []

    async def lock(self, complaint_ids: Sequence[uuid.UUID]) -> None:
        """Lock every complaint the transaction's events are about (in id order) and
        remember their statuses."""
        wanted = sorted(set(complaint_ids) - self._status.keys())
        if wanted:
            for row in await repository.lock_complaints(self.conn, wanted):
                self._status[row["id"]] = str(row["status"])

    async def lock_status(self, complaint_id: uuid.UUID) -> str | None:
        if complaint_id not in self._status:
            await self.lock([complaint_id])
        return self._status.get(complaint_id)

    async def update(self, complaint_id: uuid.UUID, update: ViewUpdate) -> None:
        self._updates.setdefault(complaint_id, {}).update(update.changed())
        self._status[complaint_id] = update.status

    async def add_timeline(
        self, complaint_id: uuid.UUID, at: datetime, status: str, detail: str
    ) -> None:
        self._timeline.append((complaint_id, at, status, detail))

    async def record_resolution(self, resolution: ResolutionView) -> None:
        await self._direct.record_resolution(resolution)

    async def set_outcome(
        self, complaint_id: uuid.UUID, outcome: str | None, company_response: str | None
    ) -> None:
        await self._direct.set_outcome(complaint_id, outcome, company_response)

    async def set_clocks(
        self, complaint_id: uuid.UUID, clocks: list[ClockState], at: datetime
    ) -> bool:
        return await self._direct.set_clocks(complaint_id, clocks, at)

    async def flush(self) -> None:
        updates, self._updates = self._updates, {}
        timeline, self._timeline = self._timeline, []
        await repository.update_read_models(
            self.conn, [{"id": complaint_id, **fields} for complaint_id, fields in updates.items()]
        )
        await repository.add_timelines(self.conn, timeline)


@asynccontextmanager
async def view_batch(
    conn: asyncpg.Connection, envelopes: Sequence[Envelope]
) -> AsyncIterator[None]:
    """The consumer's transaction scope for intake (shared.consumer.TransactionScope)."""
    batch = BufferedReadModel(conn)
    await batch.lock([envelope.complaint_id for envelope in envelopes])
    token = open_read_model.set((conn, batch))
    try:
        yield
    finally:
        open_read_model.reset(token)
    await batch.flush()  # not reached when a handler raised: the transaction rolls back
