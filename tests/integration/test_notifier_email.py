"""notifier's e-mail channel against a real SMTP server (aiosmtpd) this suite starts,
on real PostgreSQL: notifications queued by the real handlers in their transactions,
sent by DeliveryWorkers as in test_notifier_delivery_states.py."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from services.notifier import handlers
from services.notifier.app import MIGRATIONS, SCHEMA
from services.notifier.settings import NotifierSettings
from services.notifier.unit_of_work import NotifierUnitOfWork
from shared.db import connect
from shared.events import Envelope, new_event
from shared.runtime import migrate
from tests.integration.events import received_event
from tests.integration.test_notifier_delivery_states import Receiver, settings_for, workers
from tests.support import eventually

ADDRESS = "kunde@example.test"


@dataclass
class Mailbox:
    """An aiosmtpd handler: answers DATA with the scripted replies first ("451 ...",
    "550 ..."), then accepts; keeps every DATA it saw, refused or accepted."""

    refusals: list[str] = field(default_factory=list)
    seen: list[tuple[str, bytes]] = field(default_factory=list)  # (reply, content)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.refusals.pop(0) if self.refusals else "250 Message accepted"
        self.seen.append((reply, envelope.original_content or envelope.content))
        return reply

    def accepted(self) -> list[EmailMessage]:
        return [_parse(raw) for reply, raw in self.seen if reply.startswith("250")]


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, port: int) -> Iterator[Controller]:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def case_opened(received: Envelope) -> Envelope:
    return new_event(
        "complaint.status_changed",
        producer="resolution",
        tenant_id=received.tenant_id,
        complaint_id=received.complaint_id,
        ticket_no=received.ticket_no,
        correlation_id=received.correlation_id,
        payload={
            "status": "triaged",
            "reason": "case_opened",
            "category": "fraud",
            "priority": "P1",
            "first_response_due": "2026-11-23T12:00:00+00:00",
            "resolution_due": "2026-11-25T12:00:00+00:00",
        },
    )


def received_with(webhook_url: str, address: str | None) -> Envelope:
    customer = {"id": "u-1", "locale": "en", **({"email": address} if address else {})}
    return received_event(webhook_url=webhook_url, customer=customer)


async def handle(conn: asyncpg.Connection, event: Envelope, *, email_on: bool) -> None:
    """As EventConsumer would: the bound handler's work in one transaction."""
    async with conn.transaction():
        uow = NotifierUnitOfWork(conn, email=email_on)
        if event.event_type == "complaint.received":
            await handlers.on_received(event.typed(), uow)
        else:
            await handlers.on_resolution_topic(event.typed(), uow)
        await uow.flush()


async def rows_of(db: asyncpg.Connection, complaint_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, event_id::text, channel, type, state, attempts, last_error, source_id "
        "FROM deliveries WHERE complaint_id = $1 ORDER BY id",
        complaint_id,
    )


def all_delivered(db: asyncpg.Connection, complaint_id: uuid.UUID) -> Any:
    async def probe() -> bool:
        rows = await rows_of(db, complaint_id)
        return bool(rows) and all(r["state"] == "delivered" for r in rows)

    return probe


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> str:
    await asyncio.to_thread(
        migrate, NotifierSettings(database_url=database_url), SCHEMA, MIGRATIONS
    )
    return database_url


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(migrated, SCHEMA)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_a_refused_email_is_retried_as_the_same_multipart_message(
    migrated: str,
    db: asyncpg.Connection,
    receiver: Receiver,
) -> None:
    port = free_port()
    mailbox = Mailbox(refusals=["451 4.3.0 Try again later", "550 5.7.1 Not now"])
    received = received_with(receiver.url, ADDRESS)
    # The race: the case event is handled before complaint.received; the e-mail rows
    # are made when the recipient (with the address) arrives with its acknowledgement.
    await handle(db, case_opened(received), email_on=True)
    assert [r["channel"] for r in await rows_of(db, received.complaint_id)] == ["webhook"]
    await handle(db, received, email_on=True)
    await handle(db, received, email_on=True)  # redelivered: no second set of e-mails
    rows = await rows_of(db, received.complaint_id)
    webhooks = [r for r in rows if r["channel"] == "webhook"]
    emails = [r for r in rows if r["channel"] == "email"]
    assert [r["source_id"] for r in emails] == [r["id"] for r in webhooks]  # same order
    assert {r["event_id"] for r in emails}.isdisjoint({r["event_id"] for r in webhooks})
    # Written after the triage news, the acknowledgement still goes first on both channels.
    assert [r["type"] for r in emails] == ["complaint.triaged", "complaint.acknowledged"]
    ack_mail = next(r for r in emails if r["type"] == "complaint.acknowledged")

    settings = settings_for(migrated, smtp_url=f"smtp://127.0.0.1:{port}")
    with smtp_server(mailbox, port):
        async with workers(settings):
            await eventually(all_delivered(db, received.complaint_id), within_s=20)

    # The acknowledgement was refused twice, then accepted; the triaged one followed it.
    assert [reply[:3] for reply, _raw in mailbox.seen] == ["451", "550", "250", "250"]
    ack_ids = {_parse(raw)["Message-ID"] for _reply, raw in mailbox.seen[:3]}
    assert ack_ids == {f"<{ack_mail['event_id']}@notifier.complaints.invalid>"}
    assert len({raw for _reply, raw in mailbox.seen[:3]}) == 1  # the very same bytes
    ack, triaged = mailbox.accepted()
    assert received.ticket_no in ack["Subject"] and received.ticket_no in triaged["Subject"]
    assert ack["To"] == ADDRESS and ack["From"] == settings.email_from
    assert ack.get_content_type() == "multipart/alternative"
    text, html = ack.get_body(("plain",)), ack.get_body(("html",))
    assert text is not None and html is not None
    assert received.ticket_no in text.get_content() and "<" in html.get_content()

    log = await db.fetch(
        "SELECT a.attempt, a.channel, a.endpoint, a.status_code, a.error, a.latency_ms "
        "FROM delivery_attempts a WHERE a.delivery_id = $1 ORDER BY a.attempt",
        ack_mail["id"],
    )
    assert [(r["attempt"], r["status_code"], r["error"]) for r in log] == [
        (1, 451, "SMTP 451"),
        (2, 550, "SMTP 550"),
        (3, 250, None),
    ]
    assert {r["endpoint"] for r in log} == {f"smtp://127.0.0.1:{port}"}  # never the address
    assert all(r["latency_ms"] >= 0 for r in log)
    ids = {r["event_id"] for r in rows}
    sent = [json.loads(m) for (m,) in await db.fetch("SELECT message FROM outbox")]
    sent = [m for m in sent if m["payload"].get("notification_id") in ids]
    assert sorted((m["payload"]["channel"], m["payload"]["type"]) for m in sent) == sorted(
        (r["channel"], r["type"]) for r in rows
    )  # one notification.sent per row, with its channel
    # The webhook went once per notification, unaffected by the refusals.
    assert len(receiver.delivered()) == 2


async def test_a_server_that_is_down_is_retried_and_holds_back_no_webhook(
    migrated: str,
    db: asyncpg.Connection,
    receiver: Receiver,
) -> None:
    port = free_port()  # nothing listens here until the server comes up
    received = received_with(receiver.url, ADDRESS)
    await handle(db, received, email_on=True)
    await handle(db, case_opened(received), email_on=True)
    settings = settings_for(migrated, smtp_url=f"smtp://127.0.0.1:{port}", circuit_cooldown_s=0.5)
    mailbox = Mailbox()
    async with workers(settings):

        async def webhooks_done_emails_retried() -> bool:
            rows = await rows_of(db, received.complaint_id)
            hooks = [r for r in rows if r["channel"] == "webhook"]
            mails = [r for r in rows if r["channel"] == "email"]
            return all(r["state"] == "delivered" for r in hooks) and mails[0]["attempts"] >= 2

        await eventually(webhooks_done_emails_retried, within_s=20)
        rows = await rows_of(db, received.complaint_id)
        first_mail = next(r for r in rows if r["channel"] == "email")
        assert (first_mail["state"], first_mail["last_error"]) == (
            "retrying",
            "SMTPConnectError",
        )
        attempts_while_down = first_mail["attempts"]
        with smtp_server(mailbox, port):
            await eventually(all_delivered(db, received.complaint_id), within_s=20)
    assert attempts_while_down >= 2  # retried while down
    assert len(mailbox.accepted()) == 2 and len(receiver.delivered()) == 2
    subjects = [m["Subject"] for m in mailbox.accepted()]
    assert all(received.ticket_no in s for s in subjects)


@pytest.mark.parametrize(("email_on", "address"), [(False, ADDRESS), (True, None)])
async def test_no_email_rows_without_smtp_or_without_an_address(
    db: asyncpg.Connection,
    email_on: bool,
    address: str | None,
) -> None:
    received = received_with("http://127.0.0.1:9/hooks", address)
    await handle(db, case_opened(received), email_on=email_on)
    await handle(db, received, email_on=email_on)
    await handle(db, case_opened(received), email_on=email_on)  # a later event too
    rows = await rows_of(db, received.complaint_id)
    assert {r["channel"] for r in rows} == {"webhook"} and len(rows) == 3
    # Parked: these tests send nothing.
    await db.execute(
        "UPDATE deliveries SET state = 'failed' WHERE complaint_id = $1", received.complaint_id
    )


async def test_the_email_of_each_notification_is_queued_once_whatever_comes_first(
    db: asyncpg.Connection,
) -> None:
    # The recipient first, then two case events: each notification gets its twin at once.
    received = received_with("http://127.0.0.1:9/hooks", ADDRESS)
    await handle(db, received, email_on=True)
    await handle(db, case_opened(received), email_on=True)
    await handle(db, case_opened(received), email_on=True)
    rows = await rows_of(db, received.complaint_id)
    hooks = [r["id"] for r in rows if r["channel"] == "webhook"]
    assert [r["source_id"] for r in rows if r["channel"] == "email"] == hooks
    assert len(hooks) == 3  # the acknowledgement, then one triage news per case event
    await db.execute(
        "UPDATE deliveries SET state = 'failed' WHERE complaint_id = $1", received.complaint_id
    )
