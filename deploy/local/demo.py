"""`make demo`: posts sample complaints (Chinese and English) to the running stack and
prints each ticket's webhooks as they arrive, with their signatures checked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import httpx

from deploy.local.stack import ROOT, RUN_DIR
from shared.signing import verify_webhook

INTAKE = "http://127.0.0.1:8080"
SAMPLES = [
    {
        "customer": {"id": "demo-001", "locale": "zh-CN"},
        "channel": "app",
        "description": "我的账户昨晚被盗刷了三笔，共 2999 元，都不是我本人操作的！",
        "amount": "2999.00",
        "currency": "CNY",
    },
    {
        "customer": {"id": "demo-002", "locale": "en"},
        "channel": "web",
        "description": "I was charged twice for the same coffee order this morning.",
        "amount": "4.50",
        "currency": "USD",
        "transaction_ref": "T20261123-0042",
        "merchant": "Example Coffee",
    },
    {
        "customer": {"id": "demo-003", "locale": "zh-CN"},
        "channel": "social_media",
        "description": "转账给家人已经三天了还没到账，客服一直说在处理。",
        "amount": "800.00",
        "currency": "CNY",
    },
    {
        "customer": {"id": "demo-004", "locale": "en"},
        "channel": "app",
        "description": "My wallet account was frozen without any notice and I cannot withdraw.",
    },
]


def create_tenant(webhook_url: str) -> dict[str, str]:
    env_file = RUN_DIR / "stack.env"
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    out = subprocess.run(  # noqa: S603 - our own CLI
        [
            *(sys.executable, "-m", "services.intake", "create-tenant", "Demo Wallet"),
            *("--webhook-url", webhook_url, "--locale", "zh-CN"),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


class Receiver:
    """A minimal webhook endpoint on 127.0.0.1: prints what arrives, answers 200."""

    def __init__(self, secret_holder: dict[str, str]) -> None:
        self.secret = secret_holder
        self.seen: dict[str, set[str]] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.show(headers, body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            # A closed or, at exit, cancelled keep-alive connection: nothing to answer.
            pass
        finally:
            writer.close()

    def show(self, headers: dict[str, str], body: bytes) -> None:
        hook = json.loads(body)
        valid = verify_webhook(
            self.secret["webhook_secret"],
            int(headers["x-complaints-timestamp"]),
            body,
            headers["x-complaints-signature"],
            now=int(time.time()),
        )
        self.seen.setdefault(hook["ticket_no"], set()).add(hook["type"])
        print(
            f"  webhook {hook['type']:<28} {hook['ticket_no']}  "
            f"signature {'OK' if valid else 'BAD'}\n      {hook['message']}"
        )


async def main() -> None:
    tenant: dict[str, str] = {}
    receiver = Receiver(tenant)
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tenant.update(create_tenant(f"http://127.0.0.1:{port}/hooks"))
    print(f"tenant {tenant['tenant_id']} created; posting {len(SAMPLES)} complaints\n")
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    tickets = []
    async with httpx.AsyncClient(base_url=INTAKE, headers=headers) as client:
        for sample in SAMPLES:
            response = await client.post(
                "/v1/complaints", json=sample, headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            answer = response.json()
            tickets.append(answer["ticket_no"])
            print(f"{response.status_code} {answer['ticket_no']}: {sample['description'][:40]}")
        print()
        deadline = time.monotonic() + 30
        wanted = {"complaint.acknowledged", "complaint.triaged"}
        while time.monotonic() < deadline and any(
            not wanted <= receiver.seen.get(t, set()) for t in tickets
        ):
            await asyncio.sleep(0.2)
        print("\nwhat GET /v1/complaints/{ticket_no} shows now:")
        for ticket in tickets:
            view = (await client.get(f"/v1/complaints/{ticket}")).json()
            print(
                f"  {ticket}  status={view['status']}  category={view['category']}  "
                f"priority={view['priority']}  timeline={len(view['timeline'])} entries"
            )
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
