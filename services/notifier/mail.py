"""The e-mail channel: a multipart text+HTML message per notification, sent over SMTP.

The message is built once, at the first attempt, and its bytes are kept in
deliveries.body like a webhook's: a retry sends the same message, with the same
Message-ID (derived from the e-mail delivery's own event id) and the same MIME boundary,
so a mail client that saw the first copy shows the second as the same message.
"""

from __future__ import annotations

import email.policy
import email.utils
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

MESSAGE_ID_DOMAIN = "notifier.complaints.invalid"


@dataclass(frozen=True)
class SmtpServer:
    hostname: str
    port: int
    use_tls: bool  # smtps:// (implicit TLS); smtp:// upgrades with STARTTLS if offered
    username: str | None = None
    password: str | None = None

    @property
    def endpoint(self) -> str:
        """The circuit breaker's and the delivery log's name for it: no credentials."""
        return f"{'smtps' if self.use_tls else 'smtp'}://{self.hostname}:{self.port}"


def smtp_server(url: str) -> SmtpServer:
    """SMTP_URL, e.g. smtp://127.0.0.1:1025 or smtps://user:secret@mail.example:465."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SMTP_URL must look like smtp://host:port or smtps://host:port")
    use_tls = parts.scheme == "smtps"
    return SmtpServer(
        hostname=parts.hostname,
        port=parts.port or (465 if use_tls else 25),
        use_tls=use_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def message_id(event_id: uuid.UUID | str) -> str:
    return f"<{event_id}@{MESSAGE_ID_DOMAIN}>"


def build_message(
    *,
    event_id: uuid.UUID | str,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    occurred_at: datetime,
) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = email.utils.format_datetime(occurred_at)  # when it happened, not sent
    msg["Message-ID"] = message_id(event_id)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


async def send(server: SmtpServer, sender: str, to: str, message: bytes, timeout_s: float) -> int:
    """One SMTP conversation; the server's final reply code (250) when accepted. A refusal
    raises aiosmtplib's SMTPResponseException (with its code) or SMTPRecipientsRefused."""
    _name, envelope_from = email.utils.parseaddr(sender)
    _errors, _reply = await aiosmtplib.send(
        message,
        sender=envelope_from or sender,
        recipients=[to],
        hostname=server.hostname,
        port=server.port,
        use_tls=server.use_tls,
        username=server.username,
        password=server.password,
        timeout=timeout_s,
    )
    return 250
