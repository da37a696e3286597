"""The delivery worker: webhook POSTs (signed) and e-mails (SMTP), in order per
complaint and channel, retried with exponential backoff until delivered or given up;
every attempt in the delivery log, each final outcome an event via the outbox.

The state machine (migrations/0003_delivery_states.sql):

    pending ──▶ retrying ──▶ delivered | failed

One owner per delivery at a time: a claim sets a fresh `lease_id` and moves
`next_attempt_at` to the end of the lease (`delivery_lease_s`); the request (or SMTP
conversation) has a total deadline (`webhook_timeout_s`) that ends before the lease does,
so nobody can claim the delivery again while it is being sent. Every outcome is recorded
only where the row is still open and still holds the lease it was claimed with, and its
event is inserted by the same statement, only when that row changed: no event without
the transition, never two for one delivery. The attempt's log row and its endpoint's
circuit (circuit.py) change in the same transaction.

Channels: a webhook row and its e-mail twin (unit_of_work: _EMAIL_TWINS) are ordered
each within their own channel, and their endpoints have circuits of their own, so a dead
SMTP server never holds back a webhook, nor a dead webhook an e-mail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import aiosmtplib
import asyncpg
import structlog
from prometheus_client import Gauge

from services.notifier import circuit, mail
from services.notifier.planning import ACKNOWLEDGEMENT
from services.notifier.rendering import Rendered, render, render_text, supported_locale
from services.notifier.settings import NotifierSettings
from services.notifier.webhook_client import PoolTimeout, WebhookClient
from shared import jsonutil
from shared.db import connect
from shared.events import Envelope, new_event
from shared.logging import get_logger
from shared.metrics import ServiceMetrics
from shared.outbox import outbox_row
from shared.signing import derive_webhook_secret, sign_webhook
from shared.topics import NOTIFICATIONS
from shared.wakeup import wait_for_wakeup

log = get_logger(__name__)

CHANNEL = "notifier_deliveries"  # NOTIFY'd by the insert trigger (0001_notifier.sql)
_DB_TIMEOUT_S = 10.0  # a hung connection must not stall the loop for ever
_RELEASE_DELAY_S = 0.5  # a claim given back for want of a connection is tried again soon

# The endpoint a claimed row goes to: its recipient's webhook endpoint or the SMTP server
# ($3, NULL when SMTP_URL is unset: e-mail rows then wait).
_ENDPOINT = "CASE WHEN d.channel = 'email' THEN $3::text ELSE r.endpoint END"
_COLUMNS = """d.id, d.lease_id, d.event_id, d.complaint_id, d.tenant_id, d.ticket_no,
    d.correlation_id, d.type, d.template, d.data, d.occurred_at, d.body, d.attempts,
    d.created_at, d.channel, r.webhook_url, r.endpoint AS webhook_endpoint, r.email,
    r.locale, r.received_at"""


def _claim_sql(candidates: str, due: str) -> str:
    """The claim: `candidates` (a query of delivery ids) narrowed to what may go now.
    $4 NULL: due deliveries whose endpoint's circuit is closed (or has none); $4 an
    endpoint: its half-open probe, one delivery."""
    return f"""
WITH due AS (
    SELECT d.id FROM deliveries d
    JOIN recipients r ON r.complaint_id = d.complaint_id
    LEFT JOIN circuits c ON c.endpoint = {_ENDPOINT}
    -- By primary key from the candidates' ids: joined as a row source instead, the
    -- planner's generic plan hashed every open delivery for each claim.
    WHERE d.id = ANY(ARRAY({candidates}))
      AND d.state IN ('pending', 'retrying') AND {due}
      AND (d.channel = 'webhook' OR $3::text IS NOT NULL)
      AND CASE WHEN $4::text IS NULL THEN c.state IS NULL OR c.state = 'closed'
               ELSE c.endpoint = $4::text END
      AND NOT EXISTS (  -- in order per channel: an earlier open notification goes first
          SELECT 1 FROM deliveries e
          WHERE e.complaint_id = d.complaint_id AND e.channel = d.channel
            AND (e.precedence, e.id) < (d.precedence, d.id)
            AND e.state IN ('pending', 'retrying'))
    ORDER BY d.next_attempt_at
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1,
    lease_id = gen_random_uuid(), parked = false
FROM due, recipients r
WHERE d.id = due.id AND r.complaint_id = d.complaint_id
RETURNING {_COLUMNS}
"""


# The soonest-due rows, read from the index deliveries_due alone and capped, before any
# join: PostgreSQL's estimate of how many rows are due is no use (next_attempt_at is in
# the past for every finished row too), and with it the planner hashed every recipient
# for each claim. Capped at ten times the batch, so rows that cannot go yet (an earlier
# notification open, a circuit not yet parked) leave room for those that can.
_CLAIM = _claim_sql(
    "SELECT id FROM deliveries WHERE state IN ('pending', 'retrying') "
    "AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1 * 10",
    "d.next_attempt_at <= now()",
)
# A probe may take a parked delivery: parking only keeps it out of the due set. The
# endpoint's oldest open rows, read in age order until ten times the batch are found.
_PROBE_CLAIM = _claim_sql(
    "SELECT d0.id FROM deliveries d0 JOIN recipients r0 ON r0.complaint_id = d0.complaint_id "
    "WHERE d0.state IN ('pending', 'retrying') "
    "AND CASE WHEN d0.channel = 'email' THEN $3::text ELSE r0.endpoint END = $4::text "
    "ORDER BY d0.created_at LIMIT $1 * 10",
    "(d.next_attempt_at <= now() OR d.parked)",
)

# Deliveries kept behind a circuit that is still not closed past the give-up time: taken
# under a lease (no attempt counted) to be recorded as failed with the circuit's reason.
_EXPIRED = f"""
WITH due AS (
    SELECT d.id, c.last_error AS circuit_error FROM deliveries d
    JOIN recipients r ON r.complaint_id = d.complaint_id
    JOIN circuits c ON c.endpoint = {_ENDPOINT} AND c.state <> 'closed'
    WHERE d.state IN ('pending', 'retrying') AND d.created_at <= $4
      AND (d.lease_id IS NULL OR d.next_attempt_at <= now())
    ORDER BY d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), lease_id = gen_random_uuid()
FROM due, recipients r
WHERE d.id = due.id AND r.complaint_id = d.complaint_id
RETURNING {_COLUMNS}, due.circuit_error
"""
# Due deliveries whose endpoint's circuit is not closed: moved out of the due set for $2
# seconds, so that the claim does not read them again and again while the endpoint is
# down. Nothing waits on that time: the probe takes parked rows, a closing circuit
# resumes them (circuit._RESUME), the give-up (_EXPIRED) goes by their age.
_PARK = f"""
UPDATE deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), parked = true, lease_id = NULL
FROM recipients r, circuits c
WHERE d.id = ANY(ARRAY(  -- from the index alone, as the claim's candidates
        SELECT id FROM deliveries
        WHERE state IN ('pending', 'retrying') AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT 5000))
  AND r.complaint_id = d.complaint_id
  AND c.endpoint = {_ENDPOINT.replace("$3", "$1")}
  AND c.state <> 'closed' AND d.state IN ('pending', 'retrying') AND d.next_attempt_at <= now()
"""
# Every outcome below changes a row only where it is open and holds the caller's lease.
_OWNED = "id = $1 AND lease_id = $2 AND state IN ('pending', 'retrying')"
# Final: the new state and its event in one statement; no changed row, no event.
_FINAL = f"""
WITH done AS (
    UPDATE deliveries SET state = $3, last_error = $4, body = coalesce(body, $5),
        lease_id = NULL, delivered_at = CASE WHEN $3 = 'delivered' THEN now() END
    WHERE {_OWNED}
    RETURNING id),
announced AS (
    INSERT INTO outbox (event_id, topic, message_key, message) SELECT $6, $7, $8, $9 FROM done)
SELECT id FROM done
"""
_RETRY = f"""
UPDATE deliveries SET state = 'retrying', next_attempt_at = now() + make_interval(secs => $3),
    last_error = $4, body = coalesce(body, $5), lease_id = NULL
WHERE {_OWNED}
RETURNING id
"""
# Our own capacity ran out (every webhook connection busy): give the claim back, uncounted.
_RELEASE = f"""
UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $3),
    attempts = attempts - 1, lease_id = NULL
WHERE {_OWNED}
RETURNING id
"""
_LOG = """
INSERT INTO delivery_attempts (delivery_id, attempt, at, channel, endpoint, status_code,
    error, latency_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (delivery_id, attempt) DO NOTHING
"""
_HOUSEKEEPING_S = 1.0  # how often expired deliveries are failed and the gauge refreshed


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None  # the HTTP status or the SMTP reply code
    error: str | None  # by type: "HTTP 503", "SMTP 451", "SocketTimeoutError", "PoolTimeout"
    unreachable: bool = False  # no answer from the endpoint at all
    ours: bool = False  # our own capacity ran out: not an attempt at the endpoint
    final: bool = False  # can never succeed (no address left): failed at once
    skipped: bool = False  # not attempted (given up behind an open circuit): no log row
    latency_ms: int | None = None
    started_at: datetime | None = None


def failure(exc: Exception) -> Outcome:
    """What an exception from one attempt means, and whose fault it is."""
    if isinstance(exc, PoolTimeout):  # all our connections busy: not the tenant's doing
        return Outcome(False, None, "PoolTimeout", ours=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):  # the address, not the server
        code = exc.recipients[0].code if exc.recipients else None
        return Outcome(False, code, f"SMTP {code}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # 421: the server is shutting the conversation down, as good as unreachable.
        return Outcome(False, exc.code, f"SMTP {exc.code}", unreachable=exc.code == 421)
    # Before TimeoutError: aiohttp's per-phase timeouts (connect, read) are TimeoutErrors.
    if isinstance(exc, aiohttp.ClientConnectionError):  # refused, reset, cut, a slow phase
        return Outcome(False, None, type(exc).__name__, unreachable=True)
    if isinstance(exc, TimeoutError):  # the total deadline: the endpoint is too slow
        return Outcome(False, None, "DeadlineExceeded", unreachable=True)
    if isinstance(exc, OSError):  # no answer at all (SMTP's, or below aiohttp)
        return Outcome(False, None, type(exc).__name__, unreachable=True)
    return Outcome(False, None, type(exc).__name__)  # a bug, an odd URL: retried all the same


def circuit_result(channel: str, outcome: Outcome) -> circuit.Result:
    """What an attempt says about its endpoint (circuit.py's rules)."""
    if outcome.unreachable:
        return "down"
    if channel == "webhook" and outcome.status_code is not None and outcome.status_code >= 500:
        return "down"
    if outcome.delivered or outcome.status_code is not None:
        return "up"
    return "unknown"


def backoff_s(attempts: int, first_s: float, max_s: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: first_s, 2x, 4x ... max_s."""
    return min(first_s * 2 ** max(attempts - 1, 0), max_s)


def rendered(row: asyncpg.Record) -> Rendered:
    """The notification in the recipient's locale. Deterministic; a template that lacks a
    variable raises, which is recorded and retried like any failed attempt."""
    return render(*_template_of(row), ticket_no=row["ticket_no"])


def rendered_text(row: asyncpg.Record) -> str:
    """rendered(row).text, without rendering the subject and the HTML part."""
    return render_text(*_template_of(row), ticket_no=row["ticket_no"])


def _template_of(row: asyncpg.Record) -> tuple[str, str, dict[str, Any]]:
    """(template, locale, data) of a delivery row."""
    data: dict[str, Any] = {"ticket_no": row["ticket_no"], **row["data"]}
    return row["template"], supported_locale(row["locale"]), data


def webhook_body(row: asyncpg.Record) -> bytes:
    return jsonutil.dumps(
        {
            "event_id": str(row["event_id"]),
            "type": row["type"],
            "ticket_no": row["ticket_no"],
            "complaint_id": str(row["complaint_id"]),
            "occurred_at": row["occurred_at"].isoformat(),
            "locale": supported_locale(row["locale"]),
            "message": rendered_text(row),
            "data": row["data"],
        }
    )


def email_body(row: asyncpg.Record, sender: str) -> bytes:
    parts = rendered(row)
    return mail.build_message(
        event_id=row["event_id"],
        sender=sender,
        to=row["email"],
        subject=parts.subject,
        text=parts.text,
        html=parts.html,
        occurred_at=row["occurred_at"],
    )


Attempt = tuple[asyncpg.Record, bytes | None, Outcome]
Clock = Callable[[], datetime]


def _story(row: asyncpg.Record) -> dict[str, str]:
    """What a delivery's log lines are bound to: its complaint and the event it tells of."""
    return {
        "service": "notifier",
        "ticket_no": row["ticket_no"],
        "event_id": str(row["event_id"]),
        "correlation_id": str(row["correlation_id"]),
    }


class DeliveryWorker:
    """Keeps up to `delivery_batch_size` webhook requests and SMTP conversations in
    flight. Each runs on its own, so one tenant's slow endpoint never holds back
    another's; outcomes are recorded in batches (one transaction each) by a single
    recorder. `clock` is the time the give-up and the circuits go by (a test's own)."""

    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        settings: NotifierSettings,
        metrics: ServiceMetrics,
        client: WebhookClient | None = None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self._pool_getter = pool_getter
        self._settings = settings
        self._metrics = metrics
        self._client = client
        self._clock = clock
        self._smtp = mail.smtp_server(settings.smtp_url) if settings.smtp_url else None
        self._smtp_endpoint = self._smtp.endpoint if self._smtp else None
        # A count per channel, never an endpoint: labels come from closed vocabularies.
        self._circuits_open = Gauge(
            "notifier_circuits_open",
            "Endpoints whose circuit breaker is open or half-open",
            ["channel"],
            registry=metrics.registry,
        )
        self._housekeeping_at = 0.0
        # Whether some circuit may be open or half-open, as of the last housekeeping or
        # a failure recorded since: while none is, a claim round takes no probe (which
        # costs a transaction of its own). Another instance's circuit opened meanwhile is
        # seen at the next housekeeping, within _HOUSEKEEPING_S.
        self._circuit_not_closed = True
        self._wakeup = asyncio.Event()
        self._outcomes: asyncio.Queue[Attempt] = asyncio.Queue()
        self._requests: set[asyncio.Task[None]] = set()
        self._listener: asyncpg.Connection | None = None
        self._listen_again_at = 0.0
        self._running = False
        self._recorder: asyncio.Task[None] | None = None
        self._loop_at = 0.0  # monotonic time of the loop's last iteration
        self._record_failing_since: float | None = None
        self.errors = 0  # database and recording errors survived so far

    # -- health ------------------------------------------------------------------------

    def health(self) -> dict[str, bool]:
        """What /readyz should show: the loop runs and iterates, the recorder keeps up."""
        now = time.monotonic()
        stale_s = max(30.0, 5 * self._settings.delivery_poll_interval_s)
        recorder_alive = self._recorder is not None and not self._recorder.done()
        failing_since = self._record_failing_since
        return {
            "running": self._running,
            "loop_iterating": now - self._loop_at < stale_s,
            "recorder_alive": recorder_alive,
            "recorder_keeping_up": failing_since is None or now - failing_since < stale_s,
        }

    def is_healthy(self) -> bool:
        return all(self.health().values())

    # -- the loop ----------------------------------------------------------------------

    async def run_forever(self) -> None:
        s = self._settings
        own_client = self._client is None
        self._client = self._client or WebhookClient(
            timeout_s=s.webhook_timeout_s,
            pool_timeout_s=s.webhook_pool_timeout_s,
            connections=s.webhook_connections,
        )
        recorder = asyncio.create_task(self._record_forever(), name="delivery-recorder")
        self._recorder = recorder
        self._running = True
        pause = 0.2
        try:
            while True:
                self._loop_at = time.monotonic()
                await self._listen()
                try:
                    claimed = await self._claim_and_send()
                    pause = 0.2
                except Exception as exc:  # the database is down or restarting: keep trying
                    log.warning("delivery_claim_failed", error=repr(exc))
                    self.errors += 1
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                if claimed == 0:
                    await wait_for_wakeup(self._wakeup, s.delivery_poll_interval_s)
                    self._wakeup.clear()
        finally:
            self._running = False
            for task in (*self._requests, recorder):
                task.cancel()
            await self._close_listener()
            if own_client:
                await self._client.close()

    async def _listen(self) -> None:
        """(Re)open the LISTEN connection; the poll covers the time it is down."""
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._close_listener()
        if time.monotonic() < self._listen_again_at:
            return
        self._listen_again_at = time.monotonic() + 1.0
        conn: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout(_DB_TIMEOUT_S):
                conn = await connect(self._settings.database_url, "notifier")
                await conn.add_listener(CHANNEL, lambda *_: self._wakeup.set())
                # Lost, it is re-opened at once rather than at the next poll.
                conn.add_termination_listener(lambda _conn: self._wakeup.set())
        except Exception as exc:
            log.warning("delivery_listen_failed", error=repr(exc))
            self.errors += 1
            if conn is not None:
                conn.terminate()
            return
        self._listener = conn
        self._wakeup.set()  # what was inserted while nobody listened is due now

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            try:
                await asyncio.wait_for(listener.close(), 2)
            except Exception:
                listener.terminate()

    async def _claim_and_send(self) -> int:
        """Claim as many due deliveries as there are free slots and start sending them."""
        s = self._settings
        if time.monotonic() - self._housekeeping_at >= _HOUSEKEEPING_S:
            self._housekeeping_at = time.monotonic()
            await self.housekeeping()
        free = s.delivery_batch_size - len(self._requests)
        if free <= 0:
            await asyncio.sleep(0.01)
            return 1  # busy: come back without waiting for a notification
        # Taken before the claim is sent, so the deadline (deadline_at) ends at least
        # lease_s - webhook_timeout_s before the lease the database grants (now() + lease_s).
        deadline_at = asyncio.get_running_loop().time() + s.webhook_timeout_s
        rows = await self.claim_probes() if self._circuit_not_closed else []
        rows += await self.claim(free - len(rows)) if free > len(rows) else []
        for row in rows:
            task = asyncio.create_task(self._send(row, deadline_at))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        return len(rows)

    async def claim(self, limit: int) -> list[asyncpg.Record]:
        """Up to `limit` due deliveries whose endpoint's circuit is closed, each under a
        fresh lease of `lease_s` seconds."""
        return await self._pool_getter().fetch(
            _CLAIM, limit, self._settings.lease_s, self._smtp_endpoint, None, timeout=_DB_TIMEOUT_S
        )

    async def claim_probes(self) -> list[asyncpg.Record]:
        """One delivery for each endpoint whose cool-down is over: its half-open probe.
        The circuit's probe lease and the delivery's are taken in one transaction."""
        s, now = self._settings, self._clock()
        probes: list[asyncpg.Record] = []
        async with self._pool_getter().acquire() as conn, conn.transaction():
            for (endpoint,) in await conn.fetch(circuit.PROBE, now, s.lease_s):
                rows = await conn.fetch(
                    _PROBE_CLAIM,
                    1,
                    s.lease_s,
                    self._smtp_endpoint,
                    endpoint,
                    timeout=_DB_TIMEOUT_S,
                )
                if rows:
                    probes += rows
                else:
                    await conn.execute(circuit.NO_PROBE, endpoint, now, s.circuit_cooldown_s)
        return probes

    async def housekeeping(self) -> None:
        """Park what waits behind a circuit that is not closed; fail what waited there
        past the give-up time; refresh the open-circuits gauge."""
        s, now = self._settings, self._clock()
        cutoff = now - timedelta(hours=s.retry_give_up_hours)
        pool = self._pool_getter()
        await pool.execute(
            _PARK, self._smtp_endpoint, s.circuit_max_cooldown_s, timeout=_DB_TIMEOUT_S
        )
        rows = await pool.fetch(
            _EXPIRED, 500, s.lease_s, self._smtp_endpoint, cutoff, timeout=_DB_TIMEOUT_S
        )
        if rows:
            await self.record(
                [
                    (
                        row,
                        None,
                        Outcome(False, None, f"CircuitOpen ({row['circuit_error']})", skipped=True),
                    )
                    for row in rows
                ]
            )
        counts = {r["channel"]: r["n"] for r in await pool.fetch(circuit.OPEN_COUNT)}
        self._circuit_not_closed = any(counts.values())
        for channel in ("webhook", "email"):
            self._circuits_open.labels(channel).set(counts.get(channel, 0))

    async def _send(self, row: asyncpg.Record, deadline_at: float) -> None:
        """Attempt one delivery; whatever happens becomes an outcome for the recorder."""
        structlog.contextvars.bind_contextvars(**_story(row))  # this task's own context
        body: bytes | None = None
        started_at, started = datetime.now(UTC), time.monotonic()
        try:
            # The body is rendered from the row at the first attempt and kept with the
            # outcome, so every retry sends exactly the bytes of the first attempt.
            if row["channel"] == "email":
                if row["email"] is None:  # purged (retention) before it could go
                    outcome = Outcome(False, None, "NoAddress", final=True)
                else:
                    body = self._stored(row) or email_body(row, self._settings.email_from)
                    async with asyncio.timeout_at(deadline_at):
                        outcome = await self._mail(row, body)
            else:
                body = self._stored(row) or webhook_body(row)
                async with asyncio.timeout_at(deadline_at):
                    outcome = await self._post(row, body)
        except Exception as exc:  # whatever it is, it is recorded and retried
            outcome = failure(exc)
            if not (outcome.ours or outcome.unreachable or outcome.status_code):
                # No address in here: only the exception's type and message.
                log.warning(
                    "delivery_attempt_raised",
                    ticket_no=row["ticket_no"],
                    channel=row["channel"],
                    error=repr(exc),
                )
        latency_ms = round((time.monotonic() - started) * 1000)
        outcome = replace(outcome, latency_ms=latency_ms, started_at=started_at)
        self._outcomes.put_nowait((row, body, outcome))

    @staticmethod
    def _stored(row: asyncpg.Record) -> bytes | None:
        return bytes(row["body"]) if row["body"] is not None else None

    async def _mail(self, row: asyncpg.Record, body: bytes) -> Outcome:
        assert self._smtp is not None  # e-mail rows are claimed only with SMTP_URL set
        s = self._settings
        code = await mail.send(self._smtp, s.email_from, row["email"], body, s.webhook_timeout_s)
        return Outcome(True, code, None)

    async def _post(self, row: asyncpg.Record, body: bytes) -> Outcome:
        assert self._client is not None
        secret = derive_webhook_secret(self._settings.webhook_master_key, str(row["tenant_id"]))
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Complaints-Event-Id": str(row["event_id"]),
            "X-Complaints-Timestamp": str(timestamp),
            "X-Complaints-Signature": sign_webhook(secret, timestamp, body),
            # The id the complaint's POST started (or was given): not signed, informative.
            "X-Correlation-Id": str(row["correlation_id"]),
        }
        status = await self._client.post(row["webhook_url"], body, headers)
        if 200 <= status < 300:
            return Outcome(True, status, None)
        return Outcome(False, status, f"HTTP {status}")

    # -- outcomes ----------------------------------------------------------------------

    async def _record_forever(self) -> None:
        while True:
            batch = [await self._outcomes.get()]
            while not self._outcomes.empty() and len(batch) < 500:
                batch.append(self._outcomes.get_nowait())
            pause = 0.2
            while True:
                try:
                    await self.record(batch)
                    self._record_failing_since = None
                    break
                except Exception as exc:
                    # The requests were made; their outcome must not be lost. A delivery
                    # whose lease ran out meanwhile may be sent once more (receivers
                    # deduplicate on the event id) and this outcome is then discarded.
                    log.warning("delivery_record_failed", error=repr(exc))
                    self.errors += 1
                    self._record_failing_since = self._record_failing_since or time.monotonic()
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
            self._wakeup.set()  # the next notification of these complaints may go now

    def endpoint(self, row: asyncpg.Record) -> str:
        """Where a claimed row goes, as the circuits and the log name it."""
        if row["channel"] == "email":
            return self._smtp_endpoint or "smtp://unset"
        return row["webhook_endpoint"] or "unknown"

    async def record(self, batch: list[Attempt]) -> set[int]:
        """One transaction: each delivery's new state and, when final, its event; each
        attempt's log row; the circuits of the endpoints attempted. Returns the ids that
        changed; an outcome whose lease is no longer current changes nothing."""
        s = self._settings
        now = self._clock()
        final: list[tuple[Any, ...]] = []
        retry: list[tuple[Any, ...]] = []
        release: list[tuple[Any, ...]] = []
        states: list[str] = []
        for row, body, outcome in batch:
            key = (row["id"], row["lease_id"])
            give_up = now - row["created_at"] >= timedelta(hours=s.retry_give_up_hours)
            if outcome.ours:
                state = "deferred"
                release.append((*key, _RELEASE_DELAY_S))
            elif outcome.delivered or outcome.final or give_up:
                state = "delivered" if outcome.delivered else "failed"
                event_type = "notification.sent" if outcome.delivered else "notification.failed"
                event = self._event(row, event_type, _payload(row, outcome))
                final.append((*key, state, outcome.error, body, *outbox_row(NOTIFICATIONS, event)))
            else:
                state = "retrying"
                delay = backoff_s(row["attempts"], s.retry_first_s, s.retry_max_backoff_s)
                retry.append((*key, delay, outcome.error, body))
            states.append(state)
        changed: set[int] = set()
        async with self._pool_getter().acquire() as conn, conn.transaction():
            for query, args in ((_FINAL, final), (_RETRY, retry), (_RELEASE, release)):
                if args:
                    rows = await conn.fetchmany(query, args, timeout=_DB_TIMEOUT_S)
                    changed.update(r["id"] for r in rows)
            attempts: list[tuple[Any, ...]] = []
            results: dict[str, list[tuple[str, circuit.Result, str | None]]] = {}
            for row, _body, outcome in batch:
                if row["id"] not in changed or outcome.ours or outcome.skipped:
                    continue  # not an attempt at the endpoint, or no longer ours to record
                endpoint = self.endpoint(row)
                attempts.append(
                    (
                        row["id"],
                        row["attempts"],
                        outcome.started_at or now,
                        row["channel"],
                        endpoint,
                        outcome.status_code,
                        outcome.error,
                        outcome.latency_ms or 0,
                    )
                )
                result = circuit_result(row["channel"], outcome)
                results.setdefault(endpoint, []).append((row["channel"], result, outcome.error))
                if result == "down":  # may have opened a circuit: probe from now on
                    self._circuit_not_closed = True
            if attempts:
                await conn.executemany(_LOG, attempts)
            if results:
                await circuit.apply(conn, results, now, s, self._smtp_endpoint)
        for (row, _body, outcome), state in zip(batch, states, strict=True):
            self._observe(row, outcome, state if row["id"] in changed else "stale", now)
        return changed

    def _observe(self, row: asyncpg.Record, outcome: Outcome, state: str, now: datetime) -> None:
        channel = row["channel"]
        self._metrics.notifications_sent.labels(row["type"], channel, state).inc()
        if not (outcome.ours or outcome.skipped) and outcome.latency_ms is not None:
            # The attempts the delivery log keeps: how long endpoints take to answer.
            self._metrics.notification_delivery_seconds.labels(channel).observe(
                outcome.latency_ms / 1000
            )
        # Once per complaint: its acknowledgement's webhook row is delivered once.
        if (
            outcome.delivered
            and state == "delivered"
            and channel == "webhook"
            and row["type"] == ACKNOWLEDGEMENT
        ):
            self._metrics.acknowledgement_seconds.observe(
                (now - row["received_at"]).total_seconds()
            )
        log_at = log.debug if state in ("delivered", "deferred") else log.warning
        with structlog.contextvars.bound_contextvars(**_story(row)):
            log_at(
                "delivery_attempt",
                notification_type=row["type"],
                channel=channel,
                attempt=row["attempts"],
                outcome=state,  # "stale": the lease was lost meanwhile, nothing recorded
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
        "channel": row["channel"],
        "attempts": row["attempts"],
        "status_code": outcome.status_code,
        "error": outcome.error,
    }
