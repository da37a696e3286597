"""Waiting for a wake-up never loses the caller's cancellation (shared/wakeup.py): the
outbox relay and the notifier's delivery loop wait this way, and a stopping service
cancels them. The race that asyncio.wait_for loses on Python 3.11 is set up exactly: the
event is set and the waiting task cancelled before the loop runs either."""

from __future__ import annotations

import asyncio
import sys

import pytest

from shared.wakeup import wait_for_wakeup


async def _set_and_cancel_at_once(waiting: object) -> asyncio.Task[None]:
    event = asyncio.Event()
    task = asyncio.ensure_future(waiting(event))  # type: ignore[operator]
    await asyncio.sleep(0)  # the task now waits on the event
    event.set()
    task.cancel()
    return task


async def test_a_cancellation_as_the_event_is_set_is_not_lost() -> None:
    task = await _set_and_cancel_at_once(lambda event: wait_for_wakeup(event, 5))
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_asyncio_wait_for_loses_it_before_python_3_12() -> None:
    # Why wait_for_wakeup exists: the same race, and wait_for returns as if woken.
    task = await _set_and_cancel_at_once(lambda event: asyncio.wait_for(event.wait(), 5))
    if sys.version_info < (3, 12):
        assert await task is True
    else:
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_it_returns_when_the_event_is_set_or_the_time_is_up() -> None:
    event = asyncio.Event()
    event.set()
    await wait_for_wakeup(event, 5)  # at once
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for_wakeup(asyncio.Event(), 0.05)
    assert loop.time() - started >= 0.05
