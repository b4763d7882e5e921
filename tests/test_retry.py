"""The one retry helper and its policies: waits in order, the last repeated; tries until success, a limit of tries
or a deadline; only the errors it is told to retry."""

from __future__ import annotations

import pytest

from shared import retry
from shared.retry import Backoff, retrying

QUICK = Backoff("a test's failure", (0.001, 0.002))


def test_waits_grow_then_stay_at_the_last() -> None:
    assert [retry.DATABASE_AWAY.wait(n) for n in (1, 2, 7, 8, 100)] == [0.5, 1.0, 30.0, 30.0, 30.0]
    assert retry.SERVICE_EXITED.waits == (1.0, 2.0, 5.0, 10.0, 30.0)  # what the README promises for restarts
    for policy in (retry.STORE_BEING_REMOVED, retry.NATS_AWAY, retry.DATABASE_AWAY, retry.FEED_AWAY,
                   retry.SERVICE_EXITED):
        assert list(policy.waits) == sorted(policy.waits), policy.what  # never shorter after a longer one


async def test_tries_until_it_succeeds_saying_each_failure() -> None:
    outcomes = iter([OSError("down"), OSError("still down"), "up"])
    told: list[tuple[str, int, float]] = []

    async def operation() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await retrying(operation, QUICK, retry_on=(OSError,),
                          on_failure=lambda err, failures, wait: told.append((str(err), failures, wait))) == "up"
    assert told == [("down", 1, 0.001), ("still down", 2, 0.002)]


async def test_gives_up_after_its_tries_or_its_deadline_and_never_retries_other_errors() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        await retrying(failing, QUICK, retry_on=(OSError,), attempts=3)
    assert calls == 3
    with pytest.raises(OSError, match="down"):
        await retrying(failing, Backoff("slow", (10.0,)), retry_on=(OSError,), deadline_s=1.0)
    assert calls == 4  # the next wait would end after the deadline: no second try

    async def wrong() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retrying(wrong, QUICK, retry_on=(OSError,))
