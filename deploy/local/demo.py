"""`make demo` (`python -m deploy.local.demo`, after `make up`): creates a demo tenant whose
webhook points at a small receiver started here, posts sample complaints in Chinese and
English, prints each ticket's 202 answer and every webhook as it arrives (signature
checked), then what `GET /v1/complaints/{ticket_no}` shows."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import httpx

from deploy.local.stack import ROOT, read_stack_env
from deploy.local.webhook_receiver import webhook_handler
from shared.signing import verify_webhook

INTAKE = "http://127.0.0.1:8080"
RECEIVER_PORT = 8099
WAIT_S = 30
LINGER_S = 3  # after that, a little longer for follow-ups (an automatic refund, say)
# A ticket is done for the demo once its customer heard both of these.
WANTED = frozenset({"complaint.acknowledged", "complaint.triaged"})
SAMPLES = [
    {
        "customer": {"id": "demo-001", "locale": "zh-CN"},
        "channel": "app",
        "description": "我的账户昨晚被盗刷了三笔，共 2999 元，都不是我本人操作的！",
        "amount": "2999.00",
        "currency": "CNY",
    },
    {
        "customer": {"id": "demo-002", "locale": "zh-CN"},
        "channel": "app",
        "description": "同一笔外卖订单被重复扣款两次，请退还多扣的 86.50 元。",
        "amount": "86.50",
        "currency": "CNY",
        "transaction_ref": "T20261123-0042",
        "merchant": "Example Mart",
    },
    {
        "customer": {"id": "demo-003", "locale": "en"},
        "channel": "social_media",
        "description": "My transfer to my sister left my wallet three days ago and never arrived.",
        "amount": "800.00",
        "currency": "USD",
    },
    {
        "customer": {"id": "demo-004", "locale": "en"},
        "channel": "web",
        "description": "My wallet account was frozen without any notice and I cannot withdraw.",
    },
]


def create_tenant(webhook_url: str) -> dict[str, str]:
    """`python -m services.intake create-tenant`, against the database `make up` chose."""
    out = subprocess.run(  # noqa: S603 - our own CLI
        [
            *(sys.executable, "-m", "services.intake", "create-tenant", "Demo Wallet"),
            *("--webhook-url", webhook_url, "--locale", "zh-CN"),
        ],
        cwd=ROOT,
        env={**os.environ, **read_stack_env()},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


class Receiver:
    """A minimal HTTP/1.1 webhook endpoint: prints what arrives, answers 200."""

    def __init__(self) -> None:
        self.webhook_secret = ""
        self.seen: dict[str, set[str]] = {}

    def show(self, headers: dict[str, str], body: bytes) -> int:
        """Print the webhook; answer 200 (the demo accepts whatever arrives)."""
        try:
            hook = json.loads(body)
            valid = verify_webhook(
                self.webhook_secret,
                int(headers.get("x-complaints-timestamp", "0")),
                body,
                headers.get("x-complaints-signature", ""),
                now=int(time.time()),
            )
        except ValueError:
            print(f"  webhook that is not JSON: {body[:200]!r}")
            return 200
        self.seen.setdefault(hook.get("ticket_no", "?"), set()).add(hook.get("type", "?"))
        print(
            f"  webhook {hook.get('type', '?'):<31} {hook.get('ticket_no', '?')}  "
            f"signature {'OK' if valid else 'BAD'}\n      {hook.get('message', '')}"
        )
        return 200

    def done(self, tickets: list[str]) -> bool:
        return all(WANTED.issubset(self.seen.get(ticket, ())) for ticket in tickets)


async def start_receiver(receiver: Receiver) -> tuple[asyncio.Server, int]:
    # 8099 as documented; a free port when something else holds it.
    try:
        server = await asyncio.start_server(
            webhook_handler(receiver.show), "127.0.0.1", RECEIVER_PORT
        )
    except OSError:
        server = await asyncio.start_server(webhook_handler(receiver.show), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def post_samples(client: httpx.AsyncClient) -> list[str]:
    # Fresh customer ids per run: a customer's second duplicate charge within 30 days is
    # not refunded automatically, and a rerun of the demo should show what the first did.
    run = uuid.uuid4().hex[:6]
    tickets = []
    for template in SAMPLES:
        customer = {**template["customer"], "id": f"{template['customer']['id']}-{run}"}
        sample = {**template, "customer": customer}
        response = await client.post(
            "/v1/complaints", json=sample, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        answer = response.json()
        print(f"POST /v1/complaints -> {response.status_code}  {sample['description'][:44]}")
        print(f"  {json.dumps(answer, ensure_ascii=False)}")
        if response.status_code == 202:
            tickets.append(answer["ticket_no"])
    return tickets


async def show_tickets(client: httpx.AsyncClient, tickets: list[str]) -> None:
    print("\nwhat GET /v1/complaints/{ticket_no} shows now:")
    for ticket in tickets:
        view = (await client.get(f"/v1/complaints/{ticket}")).json()
        print(
            f"  {ticket}  status={view.get('status')}  category={view.get('category')}  "
            f"priority={view.get('priority')}  timeline={len(view.get('timeline', []))} entries"
        )


def intake_ready() -> bool:
    try:
        return httpx.get(f"{INTAKE}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def main() -> int:
    receiver = Receiver()
    server, port = await start_receiver(receiver)
    tenant = create_tenant(f"http://127.0.0.1:{port}/hooks")
    receiver.webhook_secret = tenant["webhook_secret"]
    print(f"tenant {tenant['tenant_id']} created, webhooks to http://127.0.0.1:{port}/hooks\n")
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    async with httpx.AsyncClient(base_url=INTAKE, headers=headers, timeout=10) as client:
        tickets = await post_samples(client)
        print(f"\nwebhooks as they arrive (up to {WAIT_S} s):")
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not receiver.done(tickets):
            await asyncio.sleep(0.2)
        await asyncio.sleep(LINGER_S if receiver.done(tickets) else 0.5)
        await show_tickets(client, tickets)
    server.close()
    if not tickets or not receiver.done(tickets):
        print("\nnot every ticket was acknowledged and triaged in time: see .run/*.log")
        return 1
    return 0


def run() -> int:
    if not intake_ready():
        print(f"intake does not answer at {INTAKE}: run `make up` first", file=sys.stderr)
        return 1
    return asyncio.run(main())


if __name__ == "__main__":
    raise SystemExit(run())
