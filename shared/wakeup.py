"""Waiting for a wake-up event with a timeout, in a way that never loses a cancellation.

Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11, when the task waiting is
cancelled just as the event is set, wait_for returns the event's result and the
cancellation is lost (python/cpython#86296, fixed in 3.12), so a worker told to stop runs
on. `asyncio.timeout` tells its own cancellation from the caller's."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_for_wakeup(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` has passed, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
