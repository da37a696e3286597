"""notifier's delivery rules that need no I/O: the lease invariant, whose fault a failure
is, what it says about the endpoint, the circuit breaker's rules, SMTP_URL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiohttp
import aiosmtplib
import pytest
from pydantic import ValidationError
from yarl import URL

from services.notifier import circuit, mail
from services.notifier.delivery import DeliveryWorker, Outcome, circuit_result, failure
from services.notifier.settings import NotifierSettings
from services.notifier.webhook_client import PoolTimeout
from shared.metrics import ServiceMetrics


def test_the_lease_outlives_the_request_deadline_by_default() -> None:
    assert NotifierSettings().lease_s > NotifierSettings().webhook_timeout_s
    slow = NotifierSettings(webhook_timeout_s=30)
    assert slow.lease_s == 40  # follows a longer deadline rather than failing start-up


@pytest.mark.parametrize("lease_s", [5.0, 4.0])
def test_a_lease_no_longer_than_the_deadline_is_refused(lease_s: float) -> None:
    # A lease ending first would let a second worker send while the first still sends.
    with pytest.raises(ValidationError, match="delivery_lease_s"):
        NotifierSettings(webhook_timeout_s=5.0, delivery_lease_s=lease_s)


def test_the_lease_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_DELIVERY_LEASE_S", "3")
    monkeypatch.setenv("NOTIFIER_WEBHOOK_TIMEOUT_S", "2")
    monkeypatch.setenv("NOTIFIER_WEBHOOK_POOL_TIMEOUT_S", "0.5")
    assert NotifierSettings().lease_s == 3


def test_waiting_for_our_own_pool_must_fit_in_the_deadline() -> None:
    with pytest.raises(ValidationError, match="webhook_pool_timeout_s"):
        NotifierSettings(webhook_timeout_s=1.0, webhook_pool_timeout_s=1.0)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PoolTimeout("full"), Outcome(False, None, "PoolTimeout", ours=True)),
        (TimeoutError(), Outcome(False, None, "DeadlineExceeded", unreachable=True)),
        (
            ConnectionRefusedError(),
            Outcome(False, None, "ConnectionRefusedError", unreachable=True),
        ),
        (
            aiohttp.ServerDisconnectedError(),
            Outcome(False, None, "ServerDisconnectedError", unreachable=True),
        ),
        (
            aiohttp.SocketTimeoutError("slow"),
            Outcome(False, None, "SocketTimeoutError", unreachable=True),
        ),
        (
            aiohttp.InvalidUrlClientError(URL("http://")),
            Outcome(False, None, "InvalidUrlClientError"),
        ),
        (ExceptionGroup("x", [OverflowError()]), Outcome(False, None, "ExceptionGroup")),
        (KeyError("template"), Outcome(False, None, "KeyError")),
    ],
)
def test_every_exception_is_an_outcome_and_only_ours_is_not_an_attempt(
    exc: Exception, expected: Outcome
) -> None:
    assert failure(exc) == expected


def test_a_worker_that_does_not_run_is_not_healthy() -> None:
    worker = DeliveryWorker(lambda: None, NotifierSettings(), ServiceMetrics("notifier"))  # type: ignore[arg-type,return-value]
    assert not worker.is_healthy()
    assert worker.health()["running"] is False


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiosmtplib.SMTPResponseException(451, "later"), Outcome(False, 451, "SMTP 451")),
        (
            aiosmtplib.SMTPResponseException(421, "closing"),
            Outcome(False, 421, "SMTP 421", unreachable=True),
        ),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a")]),
            Outcome(False, 550, "SMTP 550"),
        ),
        (
            aiosmtplib.SMTPConnectError("refused"),
            Outcome(False, None, "SMTPConnectError", unreachable=True),
        ),
    ],
)
def test_smtp_failures_carry_their_reply_code(exc: Exception, expected: Outcome) -> None:
    assert failure(exc) == expected


@pytest.mark.parametrize(
    ("channel", "outcome", "result"),
    [
        ("webhook", Outcome(True, 200, None), "up"),
        ("webhook", Outcome(False, 404, "HTTP 404"), "up"),  # it answered
        ("webhook", Outcome(False, 503, "HTTP 503"), "down"),
        ("webhook", Outcome(False, None, "ConnectError", unreachable=True), "down"),
        ("email", Outcome(False, 550, "SMTP 550"), "up"),  # the address, not the server
        ("email", Outcome(False, 421, "SMTP 421", unreachable=True), "down"),
        ("webhook", Outcome(False, None, "UndefinedError"), "unknown"),
    ],
)
def test_what_an_attempt_says_about_its_endpoint(
    channel: str, outcome: Outcome, result: str
) -> None:
    assert circuit_result(channel, outcome) == result


def test_the_circuit_opens_after_n_failures_probes_and_backs_off_longer() -> None:
    s = NotifierSettings(
        circuit_failure_threshold=3, circuit_cooldown_s=10, circuit_max_cooldown_s=25
    )
    t0 = datetime(2026, 11, 23, tzinfo=UTC)
    c = circuit.Circuit()
    for _ in range(2):
        c = circuit.after(c, "down", "ConnectError", t0, s)
    assert (c.state, c.failures) == ("closed", 2)
    assert circuit.after(c, "up", None, t0, s) == circuit.Circuit()  # consecutive only
    c = circuit.after(c, "down", "ConnectError", t0, s)
    assert (c.state, c.open_until, c.opened) == ("open", t0 + timedelta(seconds=10), 1)
    assert circuit.after(c, "down", "late", t0, s).open_until == c.open_until  # in flight
    probing = replace(c, state="half_open", probe_until=t0 + timedelta(seconds=20))
    again = circuit.after(probing, "down", "ConnectError", t0, s)
    assert (again.state, again.open_until) == ("open", t0 + timedelta(seconds=20))  # doubled
    third = circuit.after(replace(again, state="half_open"), "down", "x", t0, s)
    assert third.open_until == t0 + timedelta(seconds=25)  # capped
    assert circuit.after(probing, "up", None, t0, s).state == "closed"
    unknown = circuit.after(probing, "unknown", None, t0, s)
    assert (unknown.state, unknown.open_until, unknown.probe_until) == ("open", t0, None)


def test_the_smtp_url_names_the_endpoint_without_credentials() -> None:
    server = mail.smtp_server("smtps://user:s%40cret@mail.example:2465")
    assert (server.hostname, server.port, server.use_tls, server.password) == (
        "mail.example",
        2465,
        True,
        "s@cret",
    )
    assert server.endpoint == "smtps://mail.example:2465"
    assert mail.smtp_server("smtp://127.0.0.1").port == 25
    with pytest.raises(ValueError, match="SMTP_URL"):
        mail.smtp_server("http://127.0.0.1:25")
