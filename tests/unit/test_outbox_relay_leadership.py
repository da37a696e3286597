"""The relay gives up the lead the moment its session fails, not after its backoff."""

from __future__ import annotations

import asyncio
import contextlib

from shared.metrics import ServiceMetrics
from shared.outbox import OutboxRelay


class SessionLostRelay(OutboxRelay):
    """Leads, then loses its database session (the server went away)."""

    async def _run_once(self) -> None:
        self._set_leader(True)
        raise ConnectionResetError("the server closed the connection")


async def test_a_relay_that_lost_its_session_does_not_claim_the_lead_while_it_backs_off() -> None:
    metrics = ServiceMetrics("intake")
    relay = SessionLostRelay(
        database_url="postgresql://unused",
        schema="intake",
        producer=None,  # type: ignore[arg-type]  # never reached: the session fails first
        metrics=metrics,
    )
    task = asyncio.create_task(relay.run_forever())
    try:
        await asyncio.sleep(0.05)  # inside the first backoff (0.2 s)
        assert relay.is_leader is False
        leader_gauge = metrics.registry.get_sample_value(
            "outbox_relay_leader", {"service": "intake"}
        )
        assert leader_gauge == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
