"""Where an acknowledgement's time goes, hop by hop (`python -m bench.stages`).

Offers STAGES_RATE complaints/s (default 50) for STAGES_SECONDS (default 15), open loop,
waits for every acknowledgement, then reads the hops' timestamps back from the tables
that record them, for the complaints of this run:

- stored -> published: intake's outbox row written (the POST's transaction) until the
  relay marked it published (after the broker acknowledged it);
- published -> consumed: until the notifier's transaction that claimed the event in its
  inbox began (the same transaction queues the acknowledgement's delivery row);
- queued -> attempted: until the delivery loop began the webhook request;
- request: the request's own duration, as the delivery log has it;
- stored -> delivered: the whole path, in the database's clock.

PostgreSQL's `now()` is a transaction's start, so each figure is to the start of the
transaction that recorded the step. Prints p50 and p99 of each, in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os

import asyncpg

from bench.run import (
    DEFAULT_DATABASE_URL,
    AckSink,
    create_tenants,
    offer_until_acknowledged,
    stack_env,
)

RATE = float(os.environ.get("STAGES_RATE", "50"))
SECONDS = float(os.environ.get("STAGES_SECONDS", "15"))

_HOPS = """
WITH hop AS (
  SELECT o.created_at AS stored, o.published_at AS published, i.processed_at AS consumed,
         d.created_at AS queued, a.at AS attempted, a.latency_ms, d.delivered_at
  FROM intake.complaints c
  JOIN intake.outbox o ON o.topic = 'complaints.received.v1'
       AND o.message_key = convert_to(c.id::text, 'UTF8')
  JOIN notifier.inbox i ON i.event_id = o.event_id AND i.consumer = 'notifier'
  JOIN notifier.deliveries d ON d.complaint_id = c.id
       AND d.type = 'complaint.acknowledged' AND d.channel = 'webhook'
  JOIN notifier.delivery_attempts a ON a.delivery_id = d.id AND a.attempt = 1
  WHERE c.ticket_no = ANY($1::text[])
)
SELECT count(*) AS complaints,
  percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
    ORDER BY extract(epoch FROM published - stored) * 1000) AS stored_to_published,
  percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
    ORDER BY extract(epoch FROM consumed - published) * 1000) AS published_to_consumed,
  percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
    ORDER BY extract(epoch FROM attempted - queued) * 1000) AS queued_to_attempted,
  percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY latency_ms) AS request,
  percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
    ORDER BY extract(epoch FROM delivered_at - stored) * 1000) AS stored_to_delivered
FROM hop
"""


async def main() -> None:
    env = stack_env()
    sink = AckSink()
    keys = create_tenants(await sink.start(), env)
    _result, tickets, _ended = await offer_until_acknowledged(keys, sink, RATE, SECONDS)
    conn = await asyncpg.connect(env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    try:
        row = await conn.fetchrow(_HOPS, list(tickets.by_request.values()))
    finally:
        await conn.close()
    report: dict[str, object] = {"offered_per_s": RATE, "seconds": SECONDS}
    for name, value in row.items():
        report[name] = value if name == "complaints" else [round(v, 1) for v in value]
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
