"""Market rules against the live feed's quirks, end to end (`stocktracker up`, real NATS and PostgreSQL): two simulated
trading days, the VN30F2612 expiry day and the day after, whose auction prints carry no session code. The auction
prints stay neutral (by the exchange's schedule), so every symbol's buy / sell split is exactly the one the same days
give with their session codes; the front month rolls to VN30F2701 and only it says it is active; each symbol's first
foreign flow of the second day is published and recorded; the basis trend ends at the snapshot's basis."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from helpers import eventually, kv_entries
from stack import get
from test_drills import database_url_of
from test_poison import nats_url_of

from launcher.local import free_port
from services.foreign.core import ForeignCore
from services.ingest.simulator import MarketSimulator
from shared.aggressor import Classifier
from shared.market import is_futures
from shared.messages.domain import ForeignRoom, Quote, Trade
from shared.messages.ssi import Decoded, decode_frame
from shared.subjects import Bucket

pytestmark = pytest.mark.integration
EXPIRY_DAY, NEXT_DAY = date(2026, 12, 17), date(2026, 12, 18)  # VN30F2612's last trading day, then VN30F2701's turn
INTENSITY = 0.3


def two_days() -> list[bytes]:
    return [frame.payload for day in (EXPIRY_DAY, NEXT_DAY)
            for frame in MarketSimulator(seed=day.toordinal(), trading_date=day, intensity=INTENSITY).day()]


def without_auction_sessions(payload: bytes) -> tuple[bytes, bool]:
    """The frame with the session code of an auction print taken away, as captures of the live feed show them."""
    envelope = json.loads(payload)
    content = json.loads(envelope["Content"])
    if envelope["DataType"] != "X-TRADE" or content.get("TradingSession") not in ("ATO", "ATC"):
        return payload, False
    content["TradingSession"] = None
    return json.dumps({"DataType": envelope["DataType"], "Content": json.dumps(content)}).encode(), True


def messages(frames: list[bytes]) -> list[Any]:
    return [message for frame in frames if isinstance(result := decode_frame(frame), Decoded)
            for message in result.messages]


def classified(frames: list[bytes]) -> Classifier:
    core = Classifier()
    for message in messages(frames):
        if isinstance(message, Quote | Trade) and not is_futures(message.symbol, message.exchange):
            (core.on_quote if isinstance(message, Quote) else core.on_trade)(message)
    return core


def foreign_flows(frames: list[bytes]) -> int:
    core, flows = ForeignCore(), 0
    for message in messages(frames):
        if isinstance(message, ForeignRoom):
            flows += core.on_room(message) is not None
    return flows


async def test_null_session_auctions_a_roll_and_a_second_day(tmp_path: Path, launch: Any) -> None:
    with_sessions = two_days()
    stripped = [without_auction_sessions(frame) for frame in with_sessions]
    assert sum(taken for _, taken in stripped) > 100  # the auction prints of two days, stocks and futures
    day = tmp_path / "two-days.jsonl"
    day.write_bytes(b"\n".join(frame for frame, _ in stripped) + b"\n")
    reference = classified(with_sessions)  # what the days give with their session codes
    assert classified([frame for frame, _ in stripped]).days.keys() == reference.days.keys()

    up = launch(tmp_path / "state", free_port(), "--source", "replay", "--replay-file", str(day), "--speed", "0")
    try:
        await up.read_until("Ready:")

        async def split_as_with_sessions() -> bool:
            _, snapshot, _ = await get(f"{up.url}/api/market/snapshot")
            quotes = (snapshot or {}).get("quotes") or {}
            return set(quotes) == set(reference.days) and all(
                quotes[symbol]["trading_date"] == NEXT_DAY.isoformat()
                and quotes[symbol]["mua_chu_dong_volume"] == day_.stats.mua_chu_dong_volume
                and quotes[symbol]["ban_chu_dong_volume"] == day_.stats.ban_chu_dong_volume
                and quotes[symbol]["neutral_volume"] == day_.stats.neutral_volume
                for symbol, day_ in reference.days.items())

        await eventually(split_as_with_sessions, timeout=180, interval=1.0)
        _, snapshot, _ = await get(f"{up.url}/api/market/snapshot")
        for symbol, stats in snapshot["quotes"].items():  # by phase: HNX and UPCOM have no opening auction
            phases = reference.days[symbol].stats.phases
            assert set(stats["phases"]) == set(phases), symbol
            for phase, figures in phases.items():
                assert stats["phases"][phase]["neutral_volume"] == figures.neutral_volume, (symbol, phase)

        # The auction prints, on the tape (once the recorder has the day's last one): neutral, by the schedule.
        ticks: list[dict[str, Any]] = []

        async def day_recorded() -> bool:
            _, body, _ = await get(f"{up.url}/api/history/ACB/ticks?start={NEXT_DAY}&end={NEXT_DAY}&limit=50000")
            ticks[:] = body or []
            return bool(ticks) and ticks[-1]["timestamp"] >= f"{NEXT_DAY}T14:45:00"

        await eventually(day_recorded, timeout=120, interval=0.5)
        opening = ticks[0]
        assert opening["timestamp"].endswith("T09:15:00+07:00")
        assert (opening["trade_type"], opening["rule"]) == ("neutral", "schedule")
        closing = [tick for tick in ticks if tick["timestamp"] >= f"{NEXT_DAY}T14:30:00"]
        assert closing
        assert all((tick["trade_type"], tick["rule"]) == ("neutral", "schedule") for tick in closing)

        # The roll: VN30F2701 is the front month on the 18th, and the expired contract no longer says it is active.
        async def rolled() -> bool:
            _, body, _ = await get(f"{up.url}/api/market/snapshot")
            return (body["derivatives"] or {}).get("symbol") == "VN30F2701"

        await eventually(rolled, timeout=60)

        async def trend_ends_at_the_basis() -> bool:  # once the last second's point is out (idle for a second)
            _, body, _ = await get(f"{up.url}/api/market/snapshot")
            _, trend, _ = await get(f"{up.url}/api/market/basis-trend?minutes=120")
            return bool(trend) and trend[-1]["futures_symbol"] == "VN30F2701" and (
                trend[-1]["basis"] == body["derivatives"]["basis"])

        await eventually(trend_ends_at_the_basis, timeout=30, interval=0.5)
        contracts = await _contracts(nats_url_of(up))
        assert {"VN30F2612", "VN30F2701"} <= set(contracts)
        assert [symbol for symbol, data in contracts.items() if data and data["is_active"]] == ["VN30F2701"]

        # Foreign flows: the second day's first update of each symbol is a flow from zero, recorded.
        expected_flows = foreign_flows([frame for frame, _ in stripped])

        async def flows_recorded() -> bool:
            return await _count(database_url_of(up), "foreign_flows") == expected_flows

        await eventually(flows_recorded, timeout=120, interval=0.5)
        assert await _first_flow_is_whole(database_url_of(up), NEXT_DAY)
    finally:
        assert await up.stop() == 0


async def _contracts(nats_url: str) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    try:
        return {key: json.loads(value) for key, value in
                (await kv_entries(nc.jetstream(), str(Bucket.DERIVATIVES))).items()}
    finally:
        await nc.close()


async def _count(database_url: str, table: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


async def _first_flow_is_whole(database_url: str, day: date) -> bool:
    """On `day`, each symbol's first recorded flow carries its whole cumulative figures: counted from zero."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (symbol) symbol, buy_volume, sell_volume, cumulative_buy_volume, "
            "cumulative_sell_volume FROM foreign_flows WHERE trading_date = $1 ORDER BY symbol, ts, "
            "cumulative_buy_volume", day)
    finally:
        await conn.close()
    whole = [(row["buy_volume"], row["sell_volume"]) == (row["cumulative_buy_volume"], row["cumulative_sell_volume"])
             for row in rows]
    return bool(whole) and all(whole)
