"""A hostile day through the whole system (`stocktracker up`, real NATS and PostgreSQL): the recorded day with every
class of hostile frame mixed in ends exactly as the clean day (snapshot, history, rows), every hostile frame counted
as rejected by its reason, no service restarted; then poison published straight onto the MARKET subjects is
dead-lettered while the next valid message is counted, and a row PostgreSQL refuses reaches the rejects table while
the trade after it is recorded; then each tracker, killed with SIGKILL, resumes exactly."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
import pytest
from helpers import eventually, expected_day
from hostile import HOSTILE, hostile_day
from stack import Up, exact, get, history_complete
from test_drills import ROWS, database_url_of, ends_exact, rows
from test_tracker_poison import AFTER_THE_DAY, VALID_AFTER, dead_letters

from launcher.local import free_port
from launcher.stack import remembered_nats_url
from shared.market import EXCHANGE_TZ
from shared.messages.domain import ClassificationRule, ClassifiedTrade, TradeType
from shared.subjects import DERIVED, MARKET

pytestmark = pytest.mark.integration
TRACKERS = ("classifier", "foreign", "index", "derivatives")
# On the bus, whatever the trackers must refuse; a VN30 of 5e-324 is left out: the index tracker takes a value that
# small (it is within its bound) and the snapshot would no longer be the clean day's.
BUS_POISON = [entry for entry in AFTER_THE_DAY if entry[3] != "non_finite"]


def classified(symbol: str, session: str) -> bytes:
    return msgspec.json.encode(ClassifiedTrade(
        symbol=symbol, trading_date=date(2026, 11, 24), timestamp=datetime(2026, 11, 24, 14, 50, tzinfo=EXCHANGE_TZ),
        price=10000.0, volume=100, value=1e6, trade_type=TradeType.NEUTRAL, rule=ClassificationRule.AUCTION,
        total_volume=100, session=session))


def nats_url_of(up: Up) -> str:
    """The NATS `up` runs on: its own as its operator user (its servers have users), or the one NATS_URL named."""
    return remembered_nats_url(up.state_dir) or next(
        line.split()[1] for line in up.lines if line.strip().startswith("NATS "))


async def status_of(nc: Any, service: str) -> dict[str, Any]:
    """The service's status, once it answers (a service just restarted registers within a second or two)."""
    answer: dict[str, Any] = {}

    async def answered() -> bool:
        try:
            answer.update(json.loads((await nc.request(f"stocktracker.{service}.status", b"", timeout=2)).data))
        except nats.errors.Error:
            return False
        return True

    await eventually(answered, timeout=30, interval=0.2)
    return answer


async def test_a_hostile_day_ends_exactly_as_the_clean_one(tmp_path: Path, launch: Any) -> None:
    day = hostile_day(tmp_path / "hostile-day.jsonl")
    up = launch(tmp_path / "state", free_port(), "--source", "replay", "--replay-file", str(day), "--speed", "1500",
                basket=expected_day()["vn30_basket"])
    await up.read_until("Ready:")
    nc = None
    try:
        database_url = database_url_of(up)
        await ends_exact(up, database_url)
        nc = await nats.connect(nats_url_of(up))
        ingest = await status_of(nc, "ingest")
        clean = {key.removeprefix("rejected:"): count for key, count in expected_day()["counts"].items()
                 if key.startswith("rejected:")}
        assert ingest["rejections"] == dict(Counter(clean) + Counter(reason for reason, _ in HOSTILE))
        assert ingest["frames_rejected"] == sum(clean.values()) + len(HOSTILE)
        assert not [line for line in up.lines if " exited with code " in line]  # no service restarted

        js = nc.jetstream()
        for subject, payload in [*[(s, p) for s, p, _, _ in BUS_POISON], VALID_AFTER]:
            await js.publish(subject, payload, stream=MARKET.name, headers={"Nats-Msg-Id": f"bus-{hash(payload)}"})
        letters = sum(len(services) for _, _, services, _ in BUS_POISON)

        async def poison_handled() -> bool:
            _, snapshot, _ = await get(f"{up.url}/api/market/snapshot")
            return (len(await dead_letters(nc)) == letters and "ZZZ" in snapshot["quotes"]
                    and snapshot["quotes"]["ZZZ"]["total_volume"] == 700)

        await eventually(poison_handled, timeout=60, interval=0.5)
        assert await exact(up.url)
        await js.publish("trade.classified.ZZY", classified("ZZY", "L\u0000O"), stream=DERIVED.name)  # a poison row
        await js.publish("trade.classified.ZZX", classified("ZZX", "PT"), stream=DERIVED.name)  # and the next one
        await eventually(lambda: _rows_are(database_url, {**ROWS, "ticks": ROWS["ticks"] + 2}), timeout=60)
        assert await _rejects(database_url) == [("ticks", "trade.classified.ZZY")]
        assert sorted((d.service, d.reason) for d in await dead_letters(nc)) == sorted(
            (service, reason) for _, _, services, reason in BUS_POISON for service in services)

        for service in TRACKERS:
            os.kill(up.pid_of(service), signal.SIGKILL)
            await up.read_until(f"{service} restarted", timeout=30)
        await eventually(lambda: exact(up.url), timeout=120, interval=0.5)
        await eventually(lambda: history_complete(up.url), timeout=120, interval=0.5)
        for service in TRACKERS:
            resumed = await status_of(nc, service)
            assert resumed["restored_from"] > 0, (service, resumed)  # from its checkpoint, not rebuilt
            assert not resumed["rebuilt"], (service, resumed)
        assert len(await dead_letters(nc)) == letters  # read again after the restarts, set aside once
        await eventually(lambda: _rows_are(database_url, {**ROWS, "ticks": ROWS["ticks"] + 2}), timeout=60)
        assert await _rejects(database_url) == [("ticks", "trade.classified.ZZY")]
        _, snapshot, _ = await get(f"{up.url}/api/market/snapshot")
        assert snapshot["quotes"]["ZZZ"]["total_volume"] == 700
    finally:
        if nc is not None:
            await nc.close()
        assert await up.stop() == 0


async def _rejects(database_url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await conn.fetch("SELECT family, subject FROM recorder_rejects")]
    finally:
        await conn.close()


async def _rows_are(database_url: str, expected: dict[str, int]) -> bool:
    try:
        return await rows(database_url) == expected
    except OSError:
        return False
