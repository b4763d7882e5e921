"""The board tracker: its pure core on crafted sequences (a repeat, an old trade, a new day, units of futures) and on
the recorded day, whose rows are checked column by column against what the raw SSI frames say; and the service,
through a real nats-server, keeping those rows in KV across a restart."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import msgspec
import pytest
from helpers import REPLAY_DAY, eventually, kv_entries, run_in_process
from nats.aio.client import Client
from test_ingest import replay

from services.board.core import BoardCore
from services.board.service import BoardService
from services.ingest.normalize import Normalized, Normalizer
from shared import config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import BoardRow, PriceLevel, Quote, Trade
from shared.subjects import Bucket

DAY = date(2026, 11, 24)


def at(clock: str, day: date = DAY) -> datetime:
    return datetime.combine(day, datetime.strptime(clock, "%H:%M:%S").time(), EXCHANGE_TZ)


def trade(price: float, volume: int, total: int, clock: str, **more: Any) -> Trade:
    return Trade(symbol="ACB", exchange="HOSE", trading_date=more.pop("day", DAY), timestamp=at(clock),
                 price=price, volume=volume, total_volume=total, ref_price=25_000, ceiling=26_750, floor=23_250,
                 **more)


def test_matches_make_the_row_and_a_repeat_or_old_trade_changes_nothing() -> None:
    core = BoardCore()
    core.on_quote(Quote(symbol="ACB", exchange="HOSE", trading_date=DAY, timestamp=at("09:00:00"),
                        bids=[PriceLevel(24_950, 1_000)], asks=[PriceLevel(25_000, 2_000)]))
    core.on_trade(trade(25_000, 1_000, 1_000, "09:15:00"))
    row = core.on_trade(trade(25_100, 500, 1_500, "09:16:00"))
    assert row is not None
    assert (row.open, row.high, row.low, row.last_price, row.last_volume) == (25_000, 25_100, 25_000, 25_100, 500)
    assert row.total_volume == 1_500
    assert row.total_value == 25_000 * 1_000 + 25_100 * 500
    assert row.avg_price == pytest.approx(row.total_value / 1_500)
    assert (row.change, row.ratio_change) == (100, pytest.approx(0.4))
    assert row.bids == [PriceLevel(24_950, 1_000)]  # a trade keeps the book
    assert (row.ref_price, row.ceiling, row.floor) == (25_000, 26_750, 23_250)
    assert core.on_trade(trade(25_100, 500, 1_500, "09:16:00")) is None  # the same match again
    assert core.on_trade(trade(24_000, 100, 1_100, "09:15:30")) is None  # older than one counted
    assert core.rows["ACB"].total_volume == 1_500
    assert core.stale == 2
    book = core.on_quote(Quote(symbol="ACB", exchange="HOSE", trading_date=DAY, timestamp=at("09:17:00"),
                               bids=[PriceLevel(25_000, 300)], asks=[]))
    assert book is not None
    assert (book.bids, book.asks, book.last_price) == ([PriceLevel(25_000, 300)], [], 25_100)


def test_the_exchanges_figures_win_and_a_new_day_starts_afresh() -> None:
    core = BoardCore()
    core.on_trade(trade(25_000, 1_000, 1_000, "09:15:00", highest=25_400, lowest=24_800, avg_price=25_050,
                        total_value=25_050_000))
    row = core.rows["ACB"]
    assert (row.high, row.low, row.avg_price, row.total_value) == (25_400, 24_800, 25_050, 25_050_000)
    core.on_trade(trade(26_000, 10, 10, "09:15:00", day=date(2026, 11, 25)))
    row = core.rows["ACB"]
    assert (row.trading_date, row.open, row.total_volume, row.high) == (date(2026, 11, 25), 26_000, 10, 26_000)
    assert core.on_trade(trade(25_000, 5, 2_000, "14:00:00")) is None  # of the day before: stale
    assert core.stale == 1


def test_a_futures_average_is_in_index_points() -> None:
    """SSI's futures AvgPrice and TotalVal are VND with the multiplier (100,000 VND a point): the board's average is
    index points, like the contract's prices."""
    core = BoardCore()
    row = core.on_trade(Trade(symbol="VN30F2612", exchange="DERIVATIVES", trading_date=DAY, timestamp=at("09:00:00"),
                              price=1905.4, volume=75, total_volume=75, total_value=14_290_500_000,
                              avg_price=190_540_000))
    assert row is not None
    assert row.avg_price == pytest.approx(1905.4)
    computed = BoardCore().on_trade(Trade(symbol="VN30F2612", exchange="DERIVATIVES", trading_date=DAY,
                                          timestamp=at("09:00:00"), price=1905.4, volume=75, total_volume=75))
    assert computed is not None
    assert computed.total_value == pytest.approx(1905.4 * 75 * 100_000)
    assert computed.avg_price == pytest.approx(1905.4)


def test_the_auctions_projected_price_stands_until_the_auction_matches() -> None:
    """SSI's X frames carry EstMatchedPrice: the board shows it while an ATO/ATC book stands, not otherwise."""
    core = BoardCore()

    def book(clock: str, session: str, projected: float) -> float | None:
        row = core.on_quote(Quote(symbol="ACB", exchange="HOSE", trading_date=DAY, timestamp=at(clock),
                                  session=session, bids=[PriceLevel(25_000, 900)], asks=[PriceLevel(25_050, 400)],
                                  projected_price=projected))
        assert row is not None
        return row.projected_price

    assert book("09:05:00", "ATO", 25_050) == 25_050
    assert book("09:10:00", "ATO", 25_000) == 25_000
    matched = core.on_trade(trade(25_000, 5_000, 5_000, "09:15:00", session="ATO"))
    assert matched is not None
    assert matched.projected_price is None
    assert book("09:15:01", "LO", 25_000) is None  # not an auction
    assert book("14:31:00", "ATC", 25_100) == 25_100


def test_an_x_frames_estimated_match_price_reaches_the_quote() -> None:
    envelope = {"DataType": "X", "Content": json.dumps({
        "RType": "X", "TradingDate": "24/11/2026", "Time": "09:05:00", "Symbol": "ACB", "Exchange": "HOSE",
        "TradingSession": "ATO", "BidPrice1": 25_000, "BidVol1": 900, "AskPrice1": 25_050, "AskVol1": 400,
        "EstMatchedPrice": 25_050, "LastPrice": 0, "TotalVol": 0})}
    quote_only = {"DataType": "X-QUOTE", "Content": json.dumps({
        "RType": "X-QUOTE", "TradingDate": "24/11/2026", "Time": "09:20:00", "Symbol": "ACB", "Exchange": "HOSE",
        "TradingSession": "LO", "BidPrice1": 25_000, "BidVol1": 900})}
    quotes = []
    normalizer = Normalizer(today=lambda: DAY)
    for frame in (envelope, quote_only):
        result = normalizer.normalize(json.dumps(frame).encode())
        assert isinstance(result, Normalized)
        quotes += [msgspec.json.decode(m.payload, type=Quote) for m in result.messages if ".quote." in m.subject]
    assert [q.projected_price for q in quotes] == [25_050, None]


def _board_of_the_day() -> BoardCore:
    """The recorded day through ingest's normalizer, each message once (as JetStream keeps it), into the core."""
    normalizer, seen, core = Normalizer(), set(), BoardCore()
    for line in REPLAY_DAY.read_bytes().splitlines():
        result = normalizer.normalize(line)
        for message in result.messages if isinstance(result, Normalized) else ():
            if message.msg_id in seen:
                continue
            seen.add(message.msg_id)
            family = message.subject.rsplit(".", 1)[0]
            if family in ("md.trade", "md.futures.trade"):
                core.on_trade(msgspec.json.decode(message.payload, type=Trade))
            elif family in ("md.quote", "md.futures.quote"):
                core.on_quote(msgspec.json.decode(message.payload, type=Quote))
    return core


def _frames(symbol: str) -> list[dict[str, Any]]:
    """The symbol's X-TRADE / X-QUOTE / X contents as SSI sent them, in order."""
    frames = []
    for line in REPLAY_DAY.read_bytes().splitlines():
        try:
            envelope = json.loads(line)
            content = json.loads(envelope["Content"])
        except (ValueError, TypeError, KeyError):
            continue
        if not isinstance(content, dict) or content.get("Symbol") != symbol:
            continue
        kind = str(content.get("RType") or envelope.get("DataType") or "").upper()  # SSI sends either, any case
        if kind.startswith("X"):
            frames.append({**content, "RType": kind})
    return frames


def _numbers(content: dict[str, Any]) -> dict[str, Any]:
    """SSI sends some numbers as strings: as numbers here (what cannot be one stays as it is)."""
    out = {}
    for key, value in content.items():
        try:
            out[key] = float(value) if isinstance(value, str) and key not in ("Symbol", "RType") else value
        except ValueError:
            out[key] = value
    return out


@pytest.mark.parametrize("symbol", ["ACB", "FPT", "TCB", "VN30F2612"])
def test_the_recorded_days_rows_are_what_the_frames_say(symbol: str) -> None:
    row = _board_of_the_day().rows[symbol]
    frames = [_numbers(frame) for frame in _frames(symbol)]
    trades = [f for f in frames if f["RType"] in ("X-TRADE", "X") and (f.get("LastVol") or 0) > 0
              and (f.get("TotalVol") or 0) > 0]
    last = max(trades, key=lambda f: f["TotalVol"])
    first = min(trades, key=lambda f: f["TotalVol"])
    assert row.last_price == last["LastPrice"]
    assert row.last_volume == last["LastVol"]
    assert row.total_volume == last["TotalVol"]
    assert row.open == first["LastPrice"]
    assert row.high == (last.get("Highest") or max(f["LastPrice"] for f in trades))
    assert row.low == (last.get("Lowest") or min(f["LastPrice"] for f in trades))
    assert (row.ref_price, row.ceiling, row.floor) == (last["RefPrice"], last["Ceiling"], last["Floor"])
    quotes = [f for f in frames if f["RType"] in ("X-QUOTE", "X") and f.get("BidPrice1") is not None]
    book = quotes[-1]
    levels = 3 if symbol != "VN30F2612" else 10
    assert row.bids == [PriceLevel(book[f"BidPrice{n}"], int(book[f"BidVol{n}"])) for n in range(1, levels + 1)
                        if book.get(f"BidPrice{n}")]
    assert row.asks == [PriceLevel(book[f"AskPrice{n}"], int(book[f"AskVol{n}"])) for n in range(1, levels + 1)
                        if book.get(f"AskPrice{n}")]
    if last.get("AvgPrice"):
        divisor = 100_000 if symbol.startswith("VN30F") else 1
        assert row.avg_price == pytest.approx(last["AvgPrice"] / divisor)


@pytest.mark.integration
async def test_the_board_service_keeps_every_row_in_kv_and_resumes_exactly(nc: Client,
                                                                          settings: config.Settings) -> None:
    """Through a real nats-server: the recorded day replayed, the board service's KV rows are the core's; stopped
    and started again, it resumes from its checkpoint and ends with the same rows, nothing counted twice."""
    run = msgspec.structs.replace(settings, metrics_port=0)
    await replay(run, REPLAY_DAY)
    expected = _board_of_the_day().rows
    for attempt in range(2):
        actor = BoardService()
        task, stop = await run_in_process(actor, run)
        await eventually(lambda actor=actor: bool(actor.processed or actor.restored_from) and actor.pending == 0)
        stop.set()
        assert await task == 0
        rows = {key: msgspec.json.decode(value, type=BoardRow)
                for key, value in (await kv_entries(nc.jetstream(), str(Bucket.BOARD))).items()}
        assert rows == expected, f"run {attempt + 1}"
        if attempt:
            assert actor.restored_from > 0  # the second run resumed from its checkpoint
