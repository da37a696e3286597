"""The webhook delivery worker: signed POSTs, in order per complaint, retried with
exponential backoff until delivered or given up; each outcome is an event via the outbox.

A claim pushes `next_attempt_at` past the request timeout, so a second notifier process
never sends the same delivery at the same moment, and a crashed one's claims come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from services.notifier.messages import render, supported_locale
from services.notifier.settings import NotifierSettings
from shared import jsonutil
from shared.db import connect
from shared.events import Envelope, new_event
from shared.logging import get_logger
from shared.metrics import ServiceMetrics
from shared.outbox import outbox_row
from shared.signing import derive_webhook_secret, sign_webhook
from shared.topics import NOTIFICATIONS

log = get_logger(__name__)

_CLAIM = """
WITH due AS (
    SELECT d.id FROM deliveries d
    JOIN recipients r ON r.complaint_id = d.complaint_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (  -- in order: an earlier undelivered notification goes first
          SELECT 1 FROM deliveries e
          WHERE e.complaint_id = d.complaint_id AND e.id < d.id AND e.state = 'pending')
    ORDER BY d.next_attempt_at
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM due, recipients r
WHERE d.id = due.id AND r.complaint_id = d.complaint_id
RETURNING d.id, d.event_id, d.complaint_id, d.tenant_id, d.ticket_no, d.correlation_id, d.type,
          d.template, d.data, d.occurred_at, d.body, d.attempts, d.created_at,
          r.webhook_url, r.locale, r.received_at
"""


# A final outcome: the delivery's state and its notification event, in one statement.
_FINAL = """
WITH done AS (
    UPDATE deliveries SET state = $2, last_error = $3, body = coalesce(body, $4),
        delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
    WHERE id = $1)
INSERT INTO outbox (event_id, topic, message_key, message) VALUES ($5, $6, $7, $8)
"""
# An endpoint that cannot be reached at all: its tenant's other pending deliveries wait
# too, so one dead webhook with a backlog costs one attempt per backoff, not thousands,
# and never starves other tenants' deliveries.
_POSTPONE_TENANT = """
UPDATE deliveries SET next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs => $2))
WHERE tenant_id = $1 AND state = 'pending'
"""
_RETRY = """
UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3,
    body = coalesce(body, $4)
WHERE id = $1
"""


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None
    error: str | None


def backoff_s(attempts: int, first_s: float, max_s: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: first_s, 2x, 4x ... max_s."""
    return min(first_s * 2 ** max(attempts - 1, 0), max_s)


def webhook_body(row: asyncpg.Record) -> bytes:
    locale = supported_locale(row["locale"])
    data: dict[str, Any] = {"ticket_no": row["ticket_no"], **row["data"]}
    return jsonutil.dumps(
        {
            "event_id": str(row["event_id"]),
            "type": row["type"],
            "ticket_no": row["ticket_no"],
            "complaint_id": str(row["complaint_id"]),
            "occurred_at": row["occurred_at"].isoformat(),
            "locale": locale,
            "message": render(row["template"], locale, data),
            "data": row["data"],
        }
    )


class DeliveryWorker:
    """Keeps up to `delivery_batch_size` webhook requests in flight. Each request runs on
    its own, so one tenant's slow endpoint never holds back another's; outcomes are
    recorded in batches (one transaction each) by a single recorder."""

    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        settings: NotifierSettings,
        metrics: ServiceMetrics,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._pool_getter = pool_getter
        self._settings = settings
        self._metrics = metrics
        self._client = client
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.delivery_batch_size)
        self._outcomes: asyncio.Queue[tuple[asyncpg.Record, bytes, Outcome]] = asyncio.Queue()
        self._requests: set[asyncio.Task[None]] = set()

    async def run_forever(self) -> None:
        s = self._settings
        own_client = self._client is None
        self._client = self._client or httpx.AsyncClient(
            timeout=s.webhook_timeout_s,
            # httpx checks every pooled connection on each request: a small pool is cheaper.
            limits=httpx.Limits(max_connections=s.webhook_connections),
        )
        listener = await connect(s.database_url, "notifier")
        await listener.add_listener("notifier_deliveries", lambda *_: self._wakeup.set())
        recorder = asyncio.create_task(self._record_forever(), name="delivery-recorder")
        try:
            while True:
                try:
                    claimed = await self._claim_and_send()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("delivery_claim_failed", error=repr(exc))
                    claimed = 0
                    await asyncio.sleep(1)
                if claimed == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), s.delivery_poll_interval_s)
                    self._wakeup.clear()
        finally:
            recorder.cancel()
            for task in (*self._requests, recorder):
                task.cancel()
            with contextlib.suppress(Exception):
                await listener.close()
            if own_client:
                await self._client.aclose()

    async def _claim_and_send(self) -> int:
        """Claim as many due deliveries as there are free slots and start sending them."""
        s = self._settings
        free = s.delivery_batch_size - len(self._requests)
        if free <= 0:
            await asyncio.sleep(0.01)
            return 1  # busy: come back without waiting for a notification
        rows = await self._pool_getter().fetch(_CLAIM, free, s.webhook_timeout_s + 5)
        for row in rows:
            task = asyncio.create_task(self._send(row))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        return len(rows)

    async def _send(self, row: asyncpg.Record) -> None:
        # The body is rendered deterministically from the row and kept with the outcome,
        # so every retry sends exactly the bytes of the first attempt.
        body = bytes(row["body"]) if row["body"] is not None else webhook_body(row)
        outcome = await self._post(row, body)
        self._outcomes.put_nowait((row, body, outcome))

    async def _post(self, row: asyncpg.Record, body: bytes) -> Outcome:
        assert self._client is not None
        secret = derive_webhook_secret(self._settings.webhook_master_key, str(row["tenant_id"]))
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Complaints-Event-Id": str(row["event_id"]),
            "X-Complaints-Timestamp": str(timestamp),
            "X-Complaints-Signature": sign_webhook(secret, timestamp, body),
        }
        try:
            response = await self._client.post(row["webhook_url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(False, None, type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Outcome(True, response.status_code, None)
        return Outcome(False, response.status_code, f"HTTP {response.status_code}")

    async def _record_forever(self) -> None:
        while True:
            batch = [await self._outcomes.get()]
            while not self._outcomes.empty() and len(batch) < 500:
                batch.append(self._outcomes.get_nowait())
            while True:
                try:
                    await self.record(batch)
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    # The requests were made; their outcome must not be lost. A delivery
                    # whose lease ran out meanwhile may be sent once more: receivers
                    # deduplicate on the event id.
                    log.warning("delivery_record_failed", error=repr(exc))
                    await asyncio.sleep(1)
            self._wakeup.set()  # the next notification of these complaints may go now

    async def record(self, batch: list[tuple[asyncpg.Record, bytes, Outcome]]) -> None:
        """One transaction: each delivery's new state and, when final, its event."""
        s = self._settings
        now = datetime.now(UTC)
        final: list[tuple[Any, ...]] = []
        retry: list[tuple[Any, ...]] = []
        unreachable: dict[Any, float] = {}  # tenant -> delay
        states: list[str] = []
        for row, body, outcome in batch:
            give_up = now - row["created_at"] >= timedelta(hours=s.retry_give_up_hours)
            if outcome.delivered or give_up:
                state = "delivered" if outcome.delivered else "failed"
                event_type = "notification.sent" if outcome.delivered else "notification.failed"
                event = self._event(row, event_type, _payload(row, outcome))
                final.append(
                    (row["id"], state, outcome.error, body, *outbox_row(NOTIFICATIONS, event))
                )
            else:
                state = "retrying"
                delay = backoff_s(row["attempts"], s.retry_first_s, s.retry_max_backoff_s)
                retry.append((row["id"], delay, outcome.error, body))
                if outcome.status_code is None:  # no answer at all, not an error answer
                    unreachable[row["tenant_id"]] = max(delay, unreachable.get(row["tenant_id"], 0))
            states.append(state)
        async with self._pool_getter().acquire() as conn, conn.transaction():
            if final:
                await conn.executemany(_FINAL, final)
            if retry:
                await conn.executemany(_RETRY, retry)
            if unreachable:
                await conn.executemany(_POSTPONE_TENANT, list(unreachable.items()))
        for (row, _body, outcome), state in zip(batch, states, strict=True):
            self._observe(row, outcome, state, now)

    def _observe(self, row: asyncpg.Record, outcome: Outcome, state: str, now: datetime) -> None:
        self._metrics.notifications_sent.labels(row["type"], "webhook", state).inc()
        if outcome.delivered and row["type"] == "complaint.acknowledged":
            self._metrics.acknowledgement_seconds.observe(
                (now - row["received_at"]).total_seconds()
            )
        log_at = log.debug if outcome.delivered else log.warning
        log_at(
            "webhook_attempt",
            notification_type=row["type"],
            ticket_no=row["ticket_no"],
            attempt=row["attempts"],
            outcome=state,
            error=outcome.error,
        )

    @staticmethod
    def _event(row: asyncpg.Record, event_type: str, payload: dict[str, Any]) -> Envelope:
        return new_event(
            event_type,
            producer="notifier",
            tenant_id=row["tenant_id"],
            complaint_id=row["complaint_id"],
            ticket_no=row["ticket_no"],
            correlation_id=row["correlation_id"],
            payload=payload,
        )


def _payload(row: asyncpg.Record, outcome: Outcome) -> dict[str, Any]:
    return {
        "notification_id": str(row["event_id"]),
        "type": row["type"],
        "channel": "webhook",
        "attempts": row["attempts"],
        "status_code": outcome.status_code,
        "error": outcome.error,
    }
