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
from shared import jsonutil, outbox
from shared.db import connect
from shared.events import new_event
from shared.logging import get_logger
from shared.metrics import ServiceMetrics
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
        body = bytes(row["body"]) if row["body"] is not None else await _render_once(pool, row)
        outcome = await self._post(row, body)
        await self._record(pool, row, outcome)

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

    async def _record(self, pool: asyncpg.Pool, row: asyncpg.Record, outcome: Outcome) -> None:
        s = self._settings
        now = datetime.now(UTC)
        give_up = now - row["created_at"] >= timedelta(hours=s.retry_give_up_hours)
        async with pool.acquire() as conn, conn.transaction():
            if outcome.delivered:
                await conn.execute(
                    "UPDATE deliveries SET state = 'delivered', delivered_at = now(), "
                    "last_error = NULL WHERE id = $1",
                    row["id"],
                )
                await self._emit(conn, row, "notification.sent", outcome)
            elif give_up:
                await conn.execute(
                    "UPDATE deliveries SET state = 'failed', last_error = $2 WHERE id = $1",
                    row["id"],
                    outcome.error,
                )
                await self._emit(conn, row, "notification.failed", outcome)
            else:
                delay = backoff_s(row["attempts"], s.retry_first_s, s.retry_max_backoff_s)
                await conn.execute(
                    "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2), "
                    "last_error = $3 WHERE id = $1",
                    row["id"],
                    delay,
                    outcome.error,
                )
        result = "delivered" if outcome.delivered else ("failed" if give_up else "retrying")
        self._metrics.notifications_sent.labels(row["type"], "webhook", result).inc()
        if outcome.delivered and row["type"] == "complaint.acknowledged":
            self._metrics.acknowledgement_seconds.observe(
                (now - row["received_at"]).total_seconds()
            )
        log.info(
            "webhook_attempt",
            notification_type=row["type"],
            ticket_no=row["ticket_no"],
            attempt=row["attempts"],
            outcome=result,
            error=outcome.error,
        )

    async def _emit(
        self, conn: asyncpg.Connection, row: asyncpg.Record, event_type: str, outcome: Outcome
    ) -> None:
        event = new_event(
            event_type,
            producer="notifier",
            tenant_id=row["tenant_id"],
            complaint_id=row["complaint_id"],
            ticket_no=row["ticket_no"],
            correlation_id=row["correlation_id"],
            payload={
                "notification_id": str(row["event_id"]),
                "type": row["type"],
                "channel": "webhook",
                "attempts": row["attempts"],
                "status_code": outcome.status_code,
                "error": outcome.error,
            },
        )
        await outbox.enqueue(conn, NOTIFICATIONS, event)


async def _render_once(pool: asyncpg.Pool, row: asyncpg.Record) -> bytes:
    """Render and keep the body, so every retry sends exactly these bytes."""
    body = webhook_body(row)
    stored = await pool.fetchval(
        "UPDATE deliveries SET body = coalesce(body, $2) WHERE id = $1 RETURNING body",
        row["id"],
        body,
    )
    return bytes(stored)
