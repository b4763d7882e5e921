"""Alerts end to end on the recorded day, through `stocktracker up` (its own NATS and PostgreSQL, every service a
process): the day's alerts are listed by REST, streamed to a WebSocket client, stored in PostgreSQL (the history
endpoint) and POSTed to a webhook receiver on loopback, the same alerts everywhere, each once, although the alerts
service is killed with SIGKILL mid-day and the receiver is down until after that. The day replayed into a fresh
stack raises the identical list."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import DAY_ALERTS, REPLAY_DAY, eventually, expected_day
from stack import Up, get
from test_alerts_service import SECRET, Receiver

from launcher.local import free_port

pytestmark = pytest.mark.integration


def key_of(alert: dict[str, Any]) -> str:
    return f"{alert['trading_date']}:{alert['rule']}:{alert['symbol']}:{alert['timestamp']}"


class AlertSocket:
    """A WebSocket client of the `alerts` channel: the snapshot, then every delta, in arrival order."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.snapshots = 0
        self._task: asyncio.Task[None] | None = None

    async def follow(self, url: str) -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/ws") as socket:
            await socket.send_json({"op": "subscribe", "channel": "alerts"})
            async for frame in socket:
                message = frame.json()
                if message.get("channel") != "alerts":
                    continue
                if message["type"] == "snapshot":
                    self.snapshots += 1
                    self.received = []
                self.received += message["data"]["alerts"]

    def start(self, url: str) -> None:
        self._task = asyncio.create_task(self.follow(url))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def alerts_of(up: Up) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(REST's latest alerts in the order raised, the history endpoint's: by time) once both hold the whole day."""
    seen: dict[str, Any] = {}

    async def whole_day() -> bool:
        with contextlib.suppress(OSError):
            _, seen["latest"], _ = await get(f"{up.url}/api/market/alerts", params={"limit": "500"})
            _, seen["stored"], _ = await get(f"{up.url}/api/history/alerts")
            return (isinstance(seen["stored"], list) and len(seen["latest"]) >= DAY_ALERTS
                    and len(seen["stored"]) >= DAY_ALERTS)
        return False

    try:
        await eventually(whole_day, timeout=180, interval=0.5)
    except AssertionError:
        counts = {name: len(value) if isinstance(value, list) else value for name, value in seen.items()}
        raise AssertionError(f"not the whole day: {counts}; log: {up.output()[-3000:]}") from None
    await asyncio.sleep(2)  # nothing more comes
    _, latest, _ = await get(f"{up.url}/api/market/alerts", params={"limit": "500"})
    _, stored, _ = await get(f"{up.url}/api/history/alerts")
    return latest[::-1], stored


def replay(launch: Any, state: Path, **env: str) -> Up:
    return launch(state, free_port(), "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed", "800",
                  basket=expected_day()["vn30_basket"], env=env)


async def test_the_days_alerts_everywhere_each_once_through_a_kill_and_again_in_a_fresh_stack(
        tmp_path: Path, launch: Any) -> None:
    receiver = Receiver(free_port())
    up = replay(launch, tmp_path / "first", ALERT_WEBHOOK_URL=receiver.url, ALERT_WEBHOOK_SECRET=SECRET)
    socket = AlertSocket()
    try:
        await up.read_until("Ready:")
        socket.start(up.url)
        await asyncio.sleep(6)  # the day takes about 27 s: mid-day
        os.kill(up.pid_of("alerts"), signal.SIGKILL)
        await up.read_until("alerts restarted", timeout=30)
        await asyncio.sleep(3)
        await receiver.up()  # down until now: the first alerts were retried, across the kill
        latest, stored = await alerts_of(up)
        await eventually(lambda: len(receiver.got) >= DAY_ALERTS, timeout=60)
        await eventually(lambda: len(socket.received) >= DAY_ALERTS, timeout=30)
        await asyncio.sleep(2)
    finally:
        await socket.stop()
        assert await up.stop() == 0
        await receiver.down()

    keys = [key_of(alert) for alert in stored]
    assert len(keys) == len(set(keys)) == DAY_ALERTS  # none lost, none twice
    assert sorted(latest, key=key_of) == sorted(stored, key=key_of)  # REST's are the stored ones, field for field
    raised = [key_of(alert) for alert in latest]  # in the order raised (DERIVED's)
    assert [key_of(alert) for alert in socket.received] == raised  # streamed in that order, each once
    assert [key for key, _ in receiver.got] == raised  # delivered in that order, each once
    assert receiver.bad_signatures == 0

    again = replay(launch, tmp_path / "second")
    try:
        await again.read_until("Ready:")
        latest_again, stored_again = await alerts_of(again)
    finally:
        assert await again.stop() == 0
    assert stored_again == stored  # the same day raises the identical list
    assert sorted(latest_again, key=key_of) == sorted(latest, key=key_of)
