"""Per-endpoint circuit breakers, kept in PostgreSQL (table `circuits`) so that every
notifier instance shares them. An endpoint is a webhook's scheme://host:port
(recipients.endpoint) or the SMTP server (mail.SmtpServer.endpoint).

    closed ──N consecutive failures──▶ open ──cool-down──▶ half_open (one probe)
    half_open ──the endpoint answered──▶ closed
    half_open ──failure──▶ open again, the cool-down doubled (up to the maximum)

A failure is an attempt the endpoint did not answer (refused, reset, timed out, SMTP 421)
or answered with a 5xx (webhooks only: an SMTP 5xx is about the address, not the
server). Any other answer (2xx, a 4xx, an SMTP 451/550) shows the endpoint is up.
While a circuit is not closed its deliveries are not claimed (no attempt counted) and
are kept; once it closes they go out in order. This replaces the tenant back-off of
migration 0002: one dead endpoint costs N attempts, then one probe per cool-down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from services.notifier.settings import NotifierSettings

Result = Literal["up", "down", "unknown"]  # unknown: our bug, no address: says nothing


@dataclass(frozen=True)
class Circuit:
    state: str = "closed"
    failures: int = 0
    opened: int = 0
    open_until: datetime | None = None
    probe_until: datetime | None = None
    last_error: str | None = None


def cooldown_s(opened: int, settings: NotifierSettings) -> float:
    """The cool-down after the circuit opened for the `opened`-th time (0: the first)."""
    return min(settings.circuit_cooldown_s * 2**opened, settings.circuit_max_cooldown_s)


def after(
    circuit: Circuit, result: Result, error: str | None, now: datetime, s: NotifierSettings
) -> Circuit:
    """The circuit once one attempt's outcome is known."""
    if result == "up":
        return Circuit()
    if result == "unknown":
        if circuit.state == "half_open":  # the probe proved nothing: probe again soon
            return replace(circuit, state="open", open_until=now, probe_until=None)
        return circuit
    if circuit.state == "open":  # a request that was in flight when it opened
        return replace(circuit, last_error=error)
    failures = circuit.failures + 1
    if circuit.state == "half_open" or failures >= s.circuit_failure_threshold:
        return Circuit(
            state="open",
            failures=failures,
            opened=circuit.opened + 1,
            open_until=now + timedelta(seconds=cooldown_s(circuit.opened, s)),
            last_error=error,
        )
    return replace(circuit, failures=failures, last_error=error)


_LOCK = "SELECT * FROM circuits WHERE endpoint = ANY($1::text[]) ORDER BY endpoint FOR UPDATE"
_SAVE = """
INSERT INTO circuits (endpoint, channel, state, failures, opened, open_until, probe_until,
    last_error, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
ON CONFLICT (endpoint) DO UPDATE SET state = $3, failures = $4, opened = $5,
    open_until = $6, probe_until = $7, last_error = $8, updated_at = now()
"""
# A circuit that closes again: the deliveries it kept go now, whatever their own back-off.
_RESUME = """
UPDATE deliveries d SET next_attempt_at = now(), parked = false
FROM recipients r
WHERE r.complaint_id = d.complaint_id AND d.state IN ('pending', 'retrying')
  AND d.lease_id IS NULL AND d.next_attempt_at > now()
  AND CASE WHEN d.channel = 'email' THEN $2::text = $1 ELSE r.endpoint = $1 END
"""


async def apply(
    conn: asyncpg.Connection,
    results: dict[str, list[tuple[str, Result, str | None]]],
    now: datetime,
    settings: NotifierSettings,
    smtp_endpoint: str | None,
) -> None:
    """In the caller's transaction: each endpoint's outcomes (channel, result, error), in
    the order they were recorded. Rows are locked in endpoint order (no deadlock between
    instances); an endpoint that has only ever been up needs no row."""
    endpoints = sorted(results)
    stored = {r["endpoint"]: r for r in await conn.fetch(_LOCK, endpoints)}
    for endpoint in endpoints:
        row = stored.get(endpoint)
        before = (
            Circuit(
                row["state"],
                row["failures"],
                row["opened"],
                row["open_until"],
                row["probe_until"],
                row["last_error"],
            )
            if row
            else Circuit()
        )
        circuit = before
        channel = results[endpoint][0][0]
        for _channel, result, error in results[endpoint]:
            circuit = after(circuit, result, error, now, settings)
        if circuit == before:
            continue
        await conn.execute(
            _SAVE,
            endpoint,
            channel,
            circuit.state,
            circuit.failures,
            circuit.opened,
            circuit.open_until,
            circuit.probe_until,
            circuit.last_error,
        )
        if before.state != "closed" and circuit.state == "closed":
            await conn.execute(_RESUME, endpoint, smtp_endpoint)


# Circuits whose cool-down is over become half-open, each with a probe lease; the caller
# claims one delivery per endpoint in the same transaction.
PROBE = """
UPDATE circuits
SET state = 'half_open', probe_until = $1::timestamptz + make_interval(secs => $2),
    updated_at = now()
WHERE state <> 'closed' AND open_until <= $1::timestamptz
  AND (state = 'open' OR probe_until <= $1::timestamptz)
RETURNING endpoint
"""
# Nothing to probe with yet (its deliveries wait for their back-off): look again later.
NO_PROBE = """
UPDATE circuits
SET state = 'open', probe_until = NULL, open_until = $2::timestamptz + make_interval(secs => $3)
WHERE endpoint = $1 AND state = 'half_open'
"""
OPEN_COUNT = "SELECT channel, count(*) AS n FROM circuits WHERE state <> 'closed' GROUP BY channel"
