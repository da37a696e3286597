"""The webhook delivery worker: signed POSTs, in order per complaint, retried with
exponential backoff until delivered or given up; each outcome is an event via the outbox.

A claim pushes `next_attempt_at` past the request timeout, so a second notifier process
never sends the same delivery at the same moment, and a crashed one's claims come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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
    def __init__(
        self,
        pool_getter: Any,
        settings: NotifierSettings,
        metrics: ServiceMetrics,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._pool_getter = pool_getter
        self._settings = settings
        self._metrics = metrics
        self._client = client
        self._wakeup = asyncio.Event()

    async def run_forever(self) -> None:
        s = self._settings
        own_client = self._client is None
        self._client = self._client or httpx.AsyncClient(
            timeout=s.webhook_timeout_s,
            limits=httpx.Limits(max_connections=s.delivery_batch_size),
        )
        listener = await connect(s.database_url, "notifier")
        await listener.add_listener("notifier_deliveries", lambda *_: self._wakeup.set())
        try:
            while True:
                try:
                    handled = await self.run_once()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("delivery_round_failed", error=repr(exc))
                    handled = 0
                    await asyncio.sleep(1)
                if handled == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), s.delivery_poll_interval_s)
                    self._wakeup.clear()
        finally:
            with contextlib.suppress(Exception):
                await listener.close()
            if own_client:
                await self._client.aclose()

    async def run_once(self) -> int:
        """Claim the due deliveries and attempt them concurrently; returns how many."""
        s = self._settings
        pool: asyncpg.Pool = self._pool_getter()
        rows = await pool.fetch(_CLAIM, s.delivery_batch_size, s.webhook_timeout_s + 5)
        await asyncio.gather(*(self._deliver(pool, row) for row in rows))
        return len(rows)

    async def _deliver(self, pool: asyncpg.Pool, row: asyncpg.Record) -> None:
        # The body is rendered deterministically from the row and kept with the outcome,
        # so every retry sends exactly the bytes of the first attempt.
        body = bytes(row["body"]) if row["body"] is not None else webhook_body(row)
        outcome = await self._post(row, body)
        await self._record(pool, row, body, outcome)

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

    async def _record(
        self, pool: asyncpg.Pool, row: asyncpg.Record, body: bytes, outcome: Outcome
    ) -> None:
        """One statement (so one transaction): the delivery's new state and, when final,
        its notification event in the outbox."""
        s = self._settings
        now = datetime.now(UTC)
        give_up = now - row["created_at"] >= timedelta(hours=s.retry_give_up_hours)
        if outcome.delivered or give_up:
            state = "delivered" if outcome.delivered else "failed"
            event_type = "notification.sent" if outcome.delivered else "notification.failed"
            event = self._event(row, event_type, _payload(row, outcome))
            await pool.execute(
                """
                WITH done AS (
                    UPDATE deliveries SET state = $2, last_error = $3, body = coalesce(body, $4),
                        delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
                    WHERE id = $1)
                INSERT INTO outbox (event_id, topic, message_key, message)
                VALUES ($5, $6, $7, $8)
                """,
                row["id"],
                state,
                outcome.error,
                body,
                *outbox_row(NOTIFICATIONS, event),
            )
        else:
            state = "retrying"
            await pool.execute(
                "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2), "
                "last_error = $3, body = coalesce(body, $4) WHERE id = $1",
                row["id"],
                backoff_s(row["attempts"], s.retry_first_s, s.retry_max_backoff_s),
                outcome.error,
                body,
            )
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
