"""One bad message never stops the recorder, against a real nats-server and a real PostgreSQL: a row PostgreSQL
refuses is kept in recorder_rejects while the rest of its batch and the batches after it are recorded (candles
exact); messages that cannot be their type, are misaddressed or carry a date outside the market's era are
dead-lettered and the next one recorded; while PostgreSQL is down the lag gauges count what is held up."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from helpers import dead_letters, eventually, run_in_process
from nats.aio.client import Client
from prometheus_client import REGISTRY
from test_recorder import candle_mismatches

from launcher.local import PostgresServer
from services.recorder.service import Recorder
from shared import config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import ClassificationRule, ClassifiedTrade, IndexPoint, TradeType
from shared.subjects import DERIVED

pytestmark = pytest.mark.integration
DAY = date(2026, 11, 24)
NINE_FIFTEEN = datetime(2026, 11, 24, 9, 15, tzinfo=EXCHANGE_TZ)
encode = msgspec.json.Encoder().encode


def trade(symbol: str, total: int, *, day: date = DAY, session: str = "LO") -> ClassifiedTrade:
    """The trade that brought `symbol`'s TotalVol to `total` (100 shares each, one a second)."""
    return ClassifiedTrade(symbol=symbol, trading_date=day, timestamp=NINE_FIFTEEN + timedelta(seconds=total // 100),
                           price=25_000.0 + total % 700, volume=100, value=(25_000.0 + total % 700) * 100,
                           trade_type=TradeType.MUA_CHU_DONG if total % 300 else TradeType.BAN_CHU_DONG,
                           rule=ClassificationRule.TICK, total_volume=total, session=session)


def point(seconds: int, **changes: Any) -> IndexPoint:
    return msgspec.structs.replace(IndexPoint(index_id="VN30", trading_date=DAY,
                                              timestamp=NINE_FIFTEEN + timedelta(seconds=seconds), value=1_300.0),
                                   **changes)


async def publish(nc: Client, subject: str, payload: bytes) -> int:
    """Straight onto DERIVED, as a tracker would (without its checks); the message's stream sequence."""
    return (await nc.jetstream().publish(subject, payload, stream=DERIVED.name)).seq


def recorder_settings(settings: config.Settings, database_url: str, **overrides: Any) -> config.Settings:
    return msgspec.structs.replace(settings, database_url=database_url, metrics_port=0, **overrides)


async def record_until(settings: config.Settings, positions: dict[str, int]) -> Recorder:
    """Run a recorder until each family's committed position reaches `positions`; then stop it."""
    recorder = Recorder()
    task, stop = await run_in_process(recorder, settings)
    families = {family.table: family for family in recorder.families}
    try:
        await eventually(lambda: all(families[table].position >= sequence for table, sequence in positions.items()),
                         timeout=30)
    finally:
        stop.set()
        assert await task == 0
    return recorder


def sample(name: str, table: str) -> float:
    return REGISTRY.get_sample_value(name, {"table": table}) or 0.0


async def test_a_row_postgresql_refuses_is_kept_aside_and_everything_else_recorded(
        nc: Client, settings: config.Settings, scratch_database_url: str) -> None:
    run = recorder_settings(settings, scratch_database_url, recorder_batch=20)
    acb = [trade("ACB", 100 * n) for n in range(1, 31)]
    fpt = [trade("FPT", 100 * n) for n in range(1, 11)]
    nul = trade("ACB", 1_550, session="L\u0000O")  # PostgreSQL: invalid byte sequence for encoding "UTF8": 0x00
    for message in acb[:15]:
        await publish(nc, f"trade.classified.{message.symbol}", encode(message))
    nul_sequence = await publish(nc, "trade.classified.ACB", encode(nul))  # in the first batch of 20
    for message in [*acb[15:], *fpt]:
        await publish(nc, f"trade.classified.{message.symbol}", encode(message))
    far = point(1, timestamp=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))))  # beyond what the driver encodes
    far_sequence = await publish(nc, "index.point.VN30", encode(far))
    last_point = await publish(nc, "index.point.VN30", encode(point(2)))
    rejected_before = sample("stocktracker_recorder_rejected_total", "ticks")

    first = Recorder()
    task, stop = await run_in_process(first, run)
    try:
        await eventually(lambda: first.families[0].position == nul_sequence + 25 and
                         first.families[2].position == last_point, timeout=30)
        later = [trade("ACB", 100 * n) for n in range(31, 61)]  # the batches after it
        for message in later:
            last_trade = await publish(nc, "trade.classified.ACB", encode(message))
        await eventually(lambda: first.families[0].position == last_trade, timeout=30)
    finally:
        stop.set()
        assert await task == 0
    assert first.status()["ticks"] == {"recorded": 70, "position": last_trade, "pending": 0, "retries": 0,
                                       "rejected": 1, "dead_letters": 0}
    assert sample("stocktracker_recorder_rejected_total", "ticks") == rejected_before + 1

    conn = await asyncpg.connect(scratch_database_url)
    try:
        async def stored() -> tuple[Any, ...]:
            rejects = await conn.fetch("SELECT family, subject, stream_sequence, error, message FROM recorder_rejects "
                                       "ORDER BY stream_sequence")
            return (await conn.fetchval("SELECT count(*) FROM ticks"), await conn.fetchval(
                "SELECT count(*) FROM index_points"), [tuple(row) for row in rejects])

        ticks, points, rejects = await stored()
        assert (ticks, points) == (70, 1)
        assert [row[:3] for row in rejects] == [("ticks", "trade.classified.ACB", nul_sequence),
                                                ("index_points", "index.point.VN30", far_sequence)]
        assert "0x00" in rejects[0][3]
        assert "\\u0000" in rejects[0][4]  # the NUL as JSON escapes it
        assert msgspec.json.decode(rejects[0][4], type=ClassifiedTrade) == nul
        assert msgspec.json.decode(rejects[1][4], type=IndexPoint) == far
        assert await candle_mismatches(conn) == []
        assert await conn.fetchval("SELECT sum(volume) FROM candles_1m") == 70 * 100

        await conn.execute("DELETE FROM recorder_positions")  # read everything again: nothing stored twice
        await record_until(run, {"ticks": last_trade, "index_points": last_point})
        assert await stored() == (ticks, points, rejects)
        assert await candle_mismatches(conn) == []
    finally:
        await conn.close()


async def test_messages_that_cannot_be_recorded_are_dead_lettered_and_the_next_recorded(
        nc: Client, settings: config.Settings, scratch_database_url: str) -> None:
    run = recorder_settings(settings, scratch_database_url)
    first = await publish(nc, "trade.classified.ACB", encode(trade("ACB", 100)))
    refused = {
        await publish(nc, "trade.classified.ACB", b'{"symbol": "ACB", "trading_date": '): "undecodable",
        await publish(nc, "trade.classified.ACB", encode(trade("ACB", 200, day=date(9999, 12, 31)))):
            "implausible_date",
        await publish(nc, "trade.classified.ACB", encode(trade("FPT", 300))): "subject_mismatch",
        await publish(nc, "trade.classified.acb", encode(trade("acb", 400))): "bad_subject",
        await publish(nc, "trade.classified.ACB", encode(trade("ACB", 500)).replace(b'"price":25500.0',
                                                                                    b'"price":1e999')): "invalid",
        await publish(nc, "index.point.VN30", encode(point(1, trading_date=date(1999, 12, 31)))): "implausible_date",
    }
    last = await publish(nc, "trade.classified.ACB", encode(trade("ACB", 600)))
    last_point = await publish(nc, "index.point.VN30", encode(point(2)))

    recorder = await record_until(run, {"ticks": last, "index_points": last_point})
    assert recorder.status()["ticks"]["dead_letters"] == 5
    assert recorder.status()["ticks"]["retries"] == 0  # no date outside the era ever reached partition creation
    letters = await dead_letters(nc, "recorder")
    assert {sequence: letter.reason for sequence, letter in letters.items()} == refused
    assert all(letter.stream == "DERIVED" and letter.service == "recorder" for letter in letters.values())
    assert letters[first + 4].subject == "trade.classified.acb"
    conn = await asyncpg.connect(scratch_database_url)
    try:
        assert [row["total_volume"] for row in await conn.fetch("SELECT total_volume FROM ticks ORDER BY 1")] == [
            100, 600]
        assert await conn.fetchval("SELECT count(*) FROM index_points") == 1
        assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname ~ '_p(9999|1999)'") == 0

        await conn.execute("DELETE FROM recorder_positions")  # read again: each dead letter is there once
        await record_until(run, {"ticks": last, "index_points": last_point})
        assert len(await dead_letters(nc, "recorder")) == len(refused)
        assert await conn.fetchval("SELECT count(*) FROM ticks") == 2
    finally:
        await conn.close()


async def test_lag_counts_what_is_held_while_postgresql_is_down(nc: Client, settings: config.Settings,
                                                                tmp_path: Path) -> None:
    postgres = PostgresServer(tmp_path / "pg", durable=False)
    postgres.start()
    recorder = Recorder()
    task, stop = await run_in_process(recorder, recorder_settings(settings, postgres.url, recorder_batch=10))
    ticks = recorder.families[0]
    try:
        await eventually(lambda: ticks.reader is not None)
        for n in range(1, 11):
            sequence = await publish(nc, "trade.classified.ACB", encode(trade("ACB", 100 * n)))
        await eventually(lambda: ticks.position == sequence)
        assert (sample("stocktracker_recorder_lag_messages", "ticks"),
                sample("stocktracker_recorder_lag_seconds", "ticks")) == (0, 0)

        await asyncio.to_thread(postgres.stop)
        for n in range(11, 36):  # 25 more: a batch held by the retries, a buffer, and the stream's rest
            await publish(nc, "trade.classified.ACB", encode(trade("ACB", 100 * n)))
        await eventually(lambda: ticks.retries > 0 and sample("stocktracker_recorder_lag_messages", "ticks") == 25)
        held = sample("stocktracker_recorder_lag_seconds", "ticks")
        await asyncio.sleep(1.5)
        assert sample("stocktracker_recorder_lag_messages", "ticks") == 25
        assert sample("stocktracker_recorder_lag_seconds", "ticks") >= held + 1.4  # nothing commits: it grows

        await asyncio.to_thread(postgres.start)
        await eventually(lambda: ticks.position == sequence + 25, timeout=60)
        assert (sample("stocktracker_recorder_lag_messages", "ticks"),
                sample("stocktracker_recorder_lag_seconds", "ticks")) == (0, 0)
        assert ticks.recorded == 35
    finally:
        stop.set()
        assert await task == 0
        await asyncio.to_thread(postgres.stop)
