"""Trying again: one helper, and one named policy per kind of failure, so how long the system waits for what is
decided here and nowhere else.

A policy is the waits between tries, in order, the last one repeated: growing so a short outage is ridden out
quickly and a long one does not become a storm of attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """The waits, in seconds, after the first, second, ... failure; the last one for every failure after."""

    what: str  # the kind of failure it is for
    waits: tuple[float, ...]

    def wait(self, failures: int) -> float:
        """The wait after `failures` failures in a row (1: after the first)."""
        return self.waits[min(max(failures, 1), len(self.waits)) - 1]


# A stream created right after one of the same name was deleted: the server is still removing the old store.
STORE_BEING_REMOVED = Backoff("a stream's store still being removed", (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8))
# A JetStream request (a consumer, a KV watch) while NATS is away.
NATS_AWAY = Backoff("NATS unreachable", (0.25, 0.5, 1.0, 2.0, 4.0, 5.0))
# A stream or bucket without a leader (just created, its leader's node lost): an election takes a fraction of a
# second to a few seconds, so the first tries come quickly.
LEADER_ELECTION = Backoff("a stream or bucket electing its leader", (0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
# PostgreSQL unreachable or unavailable (shut down, out of resources, a conflicting transaction).
DATABASE_AWAY = Backoff("PostgreSQL unreachable or unavailable", (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0))
# SSI's hub refusing a stream or silent: a fresh token and stream, more slowly each time.
FEED_AWAY = Backoff("SSI's hub refusing or silent", (1.0, 2.0, 5.0, 10.0, 30.0, 60.0))
# An alert webhook's receiver down, failing or asking to wait (429): tried again for as long as it takes.
WEBHOOK_AWAY = Backoff("an alert webhook's receiver unreachable or failing", (1.0, 2.0, 5.0, 10.0, 30.0))
# A service that exited (its supervisor's restarts).
SERVICE_EXITED = Backoff("a service that exited", (1.0, 2.0, 5.0, 10.0, 30.0))


async def retrying(operation: Callable[[], Awaitable[T]], policy: Backoff, *,
                   retry_on: tuple[type[BaseException], ...] = (Exception,), attempts: int | None = None,
                   deadline_s: float | None = None,
                   on_failure: Callable[[BaseException, int, float], None] | None = None) -> T:
    """`operation()`'s result, tried again after `policy`'s waits while it raises one of `retry_on`; the error is
    raised once `attempts` tries failed, or when the next try would start after `deadline_s` seconds from now.
    `on_failure(error, failures so far, the wait before the next try)` is told of each failure retried."""
    deadline = time.monotonic() + deadline_s if deadline_s is not None else None
    failures = 0
    while True:
        try:
            return await operation()
        except retry_on as err:
            failures += 1
            wait = policy.wait(failures)
            if (attempts is not None and failures >= attempts) or (
                    deadline is not None and time.monotonic() + wait > deadline):
                raise
            if on_failure is not None:
                on_failure(err, failures, wait)
            await asyncio.sleep(wait)
