"""Noticing a Kafka consumer that died inside aiokafka.

aiokafka runs a consumer's group coordination and its fetches as background tasks. When
one of them fails on an error aiokafka does not expect (aio-libs/aiokafka#1038: under
uvloop, a write to a connection the broker's restart closed raises RuntimeError, not
OSError), the task ends, every later fetch re-raises that error, and faststream only
logs "Kafka error occurred" every 5 s: the service looks alive and consumes nothing.
These checks read aiokafka's task handles (private attributes, hence the getattr
guards); the runtime reports a dead consumer in /readyz and restarts its subscriber.
"""

from __future__ import annotations

import asyncio
from typing import Any


def _failed(task: Any) -> BaseException | None:
    if not isinstance(task, asyncio.Task) or not task.done() or task.cancelled():
        return None
    return task.exception()


def dead_consumer_error(subscriber: Any) -> BaseException | None:
    """The error that killed this subscriber's consumer's background work, if any."""
    consumer = getattr(subscriber, "consumer", None)
    if consumer is None:
        return None
    coordinator = getattr(consumer, "_coordinator", None)
    fetcher = getattr(consumer, "_fetcher", None)
    for task in (
        getattr(coordinator, "_coordination_task", None),
        getattr(fetcher, "_fetch_task", None),
    ):
        if (error := _failed(task)) is not None:
            return error
    return None
