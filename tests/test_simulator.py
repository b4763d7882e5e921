"""The market simulator: SSI's wire format, the market rules of shared.market, and the consistency a tracker relies on
(book before trade, running totals, index formula, foreign room), checked over whole simulated days."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import date, time
from itertools import islice, pairwise
from typing import Any, NamedTuple

import pytest

from services.ingest.simulator import EXTRA_STOCKS, MarketSimulator, SimFrame
from shared.market import (
    DEFAULT_VN30_BASKET,
    EXCHANGE_TZ,
    FUTURES_MULTIPLIER,
    Exchange,
    exchange_datetime,
    is_on_tick,
    listed_contracts,
    parse_clock,
    parse_trading_date,
    price_limits,
)
from shared.messages.domain import Rejection
from shared.messages.ssi import decode_frame

TUESDAY = date(2026, 11, 24)
STOCKS = (*DEFAULT_VN30_BASKET, *EXTRA_STOCKS)
DATA_TYPES = {"X-TRADE", "X-QUOTE", "R", "MI", "B", "F"}


class Parsed(NamedTuple):
    frame: SimFrame
    data_type: str
    content: dict[str, Any]

    @property
    def clock(self) -> time:
        return self.frame.at.time()


def parse(frame: SimFrame) -> Parsed:
    envelope = json.loads(frame.payload)
    assert isinstance(envelope["Content"], str), "Content must be double-encoded like SSI's"
    return Parsed(frame, envelope["DataType"], json.loads(envelope["Content"]))


@pytest.fixture(scope="module")
def sim() -> MarketSimulator:
    return MarketSimulator(seed=1, trading_date=TUESDAY)


@pytest.fixture(scope="module")
def day(sim: MarketSimulator) -> list[Parsed]:
    return [parse(frame) for frame in sim.day()]


def of_type(day: list[Parsed], data_type: str) -> list[Parsed]:
    return [item for item in day if item.data_type == data_type]


def stock_trades(day: list[Parsed]) -> list[Parsed]:
    return [item for item in of_type(day, "X-TRADE") if item.content["Exchange"] == "HOSE"]


def futures_trades(day: list[Parsed]) -> list[Parsed]:
    return [item for item in of_type(day, "X-TRADE") if item.content["Exchange"] == "DERIVATIVES"]


# --- wire format and time ---------------------------------------------------------------------------------------


def test_every_frame_decodes_and_every_data_type_occurs(day: list[Parsed]) -> None:
    rejected = [decoded for item in day if isinstance(decoded := decode_frame(item.frame.payload), Rejection)]
    assert rejected == []
    assert {item.data_type for item in day} == DATA_TYPES
    assert all(item.content.get("RType") == item.data_type for item in day)


def test_frames_use_ssi_field_sets_and_json_floats(day: list[Parsed]) -> None:
    trade = stock_trades(day)[0].content
    assert set(trade) == {  # what SSI sends but its nulls (here Side), which the decoder reads alike when missing
        "RType", "TradingDate", "Time", "Isin", "Symbol", "Ceiling", "Floor", "RefPrice", "AvgPrice", "PriorVal",
        "LastPrice", "LastVol", "TotalVal", "TotalVol", "MarketId", "Exchange", "TradingSession", "TradingStatus",
        "Change", "RatioChange", "EstMatchedPrice", "Highest", "Lowest",
    }
    assert all(isinstance(trade[key], float) for key in ("LastPrice", "LastVol", "TotalVol", "TotalVal", "Highest"))
    assert trade.get("Side") is None
    assert trade["Isin"] == trade["Symbol"]
    room = of_type(day, "R")[0].content
    assert {"BuyVol", "SellVol", "BuyVal", "SellVal", "TotalRoom", "CurrentRoom"} <= room.keys()
    assert not any(key.startswith("F") for key in room)
    assert len(of_type(day, "X-QUOTE")[0].content) == 8 + 40
    assert set(of_type(day, "B")[0].content) == {
        "RType", "TradingDate", "Time", "Symbol", "Open", "High", "Low", "Close", "Volume", "Value",
    }
    index = of_type(day, "MI")[0].content
    assert index.get("MarketId") is None
    assert index["IndexType"] == "Main"
    assert {index["IndexId"] for index in (item.content for item in of_type(day, "MI"))} == {"VN30", "VNINDEX"}


def test_frame_time_is_its_trading_date_and_time_in_order_within_the_day(day: list[Parsed]) -> None:
    for item in day:
        stamp = exchange_datetime(parse_trading_date(item.content["TradingDate"]), parse_clock(item.content["Time"]))
        assert item.frame.at == stamp
        assert item.frame.at.utcoffset() == EXCHANGE_TZ.utcoffset(None)
        assert item.frame.at.date() == TUESDAY
        assert time(8, 45) <= item.clock <= time(15, 0)
    assert all(earlier.frame.at <= later.frame.at for earlier, later in pairwise(day))


def test_a_day_has_a_realistic_size(day: list[Parsed]) -> None:
    assert 50_000 <= len(day) <= 100_000


# --- stocks -------------------------------------------------------------------------------------------------------


def test_reference_prices_are_plausible_and_on_tick(sim: MarketSimulator) -> None:
    refs = sim.ref_prices
    assert set(refs) == {*STOCKS, *sim.contracts}
    for symbol in STOCKS:
        assert 10_000 <= refs[symbol] <= 150_000
        assert is_on_tick(Exchange.HOSE, refs[symbol])
    assert len(set(refs.values())) > 20


def test_stock_trades_respect_ticks_limits_lots_and_running_totals(sim: MarketSimulator, day: list[Parsed]) -> None:
    total_vol: Counter[str] = Counter()
    total_val: Counter[str] = Counter()
    for item in stock_trades(day):
        trade = item.content
        symbol, price, volume = trade["Symbol"], trade["LastPrice"], trade["LastVol"]
        ceiling, floor = price_limits(Exchange.HOSE, sim.ref_prices[symbol])
        assert (trade["RefPrice"], trade["Ceiling"], trade["Floor"]) == (sim.ref_prices[symbol], ceiling, floor)
        assert is_on_tick(Exchange.HOSE, price), trade
        assert floor <= price <= ceiling
        assert volume > 0
        assert volume % 100 == 0
        assert trade["TotalVol"] > total_vol[symbol]
        total_vol[symbol] += int(volume)
        total_val[symbol] += int(price) * int(volume)
        assert trade["TotalVol"] == total_vol[symbol]
        assert trade["TotalVal"] == total_val[symbol]
        assert trade["AvgPrice"] == pytest.approx(total_val[symbol] / total_vol[symbol], abs=0.0051)
        assert trade["Change"] == price - trade["RefPrice"]
        assert trade["RatioChange"] == round((price - trade["RefPrice"]) / trade["RefPrice"] * 100, 2)
        assert trade["Lowest"] <= price <= trade["Highest"]
        assert trade["EstMatchedPrice"] == price
        assert trade["PriorVal"] == trade["RefPrice"]
        assert trade["TradingStatus"] == "N"
    assert set(total_vol) == set(STOCKS)


def test_every_trade_is_followed_by_its_bar(day: list[Parsed]) -> None:
    for position, item in enumerate(day):
        if item.data_type != "X-TRADE":
            continue
        bar = day[position + 1]
        price = item.content["LastPrice"]
        assert bar.data_type == "B"
        assert bar.frame.at == item.frame.at
        assert bar.content["Symbol"] == item.content["Symbol"]
        assert (bar.content["Open"], bar.content["High"], bar.content["Low"], bar.content["Close"]) == (price,) * 4
        assert bar.content["Volume"] == item.content["LastVol"]
        assert bar.content["Value"] == 0.0


def test_continuous_trades_execute_at_the_best_price_of_the_book_before_them(
    sim: MarketSimulator, day: list[Parsed]
) -> None:
    latest_quote: dict[str, Parsed] = {}
    at_limit: Counter[str] = Counter()
    checked = 0
    for item in day:
        symbol = item.content.get("Symbol")
        if item.data_type == "X-QUOTE":
            latest_quote[symbol] = item
            levels = [item.content[f"{side}Price{level}"] for side in ("Bid", "Ask") for level in range(1, 11)]
            depth = 3 if item.content["Exchange"] == "HOSE" else 10
            assert all(price == 0.0 for price in levels[depth:10] + levels[10 + depth:])
            continue
        if item.data_type != "X-TRADE" or item.content["TradingSession"] != "LO":
            continue
        quote = latest_quote[symbol].content
        assert latest_quote[symbol].frame.at <= item.frame.at
        price = item.content["LastPrice"]
        assert price in (quote["AskPrice1"], quote["BidPrice1"]), (quote, item.content)
        assert quote["AskPrice1"] == 0.0 or quote["BidPrice1"] == 0.0 or quote["BidPrice1"] < quote["AskPrice1"]
        checked += 1
        ceiling, floor = price_limits(Exchange.HOSE, sim.ref_prices[symbol]) if symbol in STOCKS else (None, None)
        if price == ceiling and quote["AskPrice1"] == 0.0:
            at_limit["ceiling, no sellers"] += 1
        if price == floor and quote["BidPrice1"] == 0.0:
            at_limit["floor, no buyers"] += 1
    assert checked > 10_000
    assert at_limit["ceiling, no sellers"] >= 1
    assert at_limit["floor, no buyers"] >= 1


def test_lunch_break_is_silent(day: list[Parsed]) -> None:
    at_lunch = [item for item in day if time(11, 30) <= item.clock < time(13, 0)]
    assert {item.data_type for item in at_lunch} == {"F"}
    assert {item.content["TradingSession"] for item in at_lunch} == {"BREAK"}


def test_one_opening_and_one_closing_auction_print_per_stock(day: list[Parsed]) -> None:
    by_symbol: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in stock_trades(day):
        by_symbol[item.content["Symbol"]].append(item.content)
        session = item.content["TradingSession"]
        if session == "LO":
            assert time(9, 15) <= item.clock < time(11, 30) or time(13, 0) <= item.clock < time(14, 30)
        else:
            assert (session, item.clock) in {("ATO", time(9, 15)), ("ATC", time(14, 45))}
    for symbol, trades in by_symbol.items():
        sessions = [trade["TradingSession"] for trade in trades]
        assert sessions.count("ATO") == 1, symbol
        assert sessions.count("ATC") == 1, symbol
        assert sessions[0] == "ATO"
        assert sessions[-1] == "ATC"


def test_status_frames_follow_the_hose_schedule(day: list[Parsed]) -> None:
    statuses: dict[str, list[tuple[time, str]]] = defaultdict(list)
    for item in of_type(day, "F"):
        assert (item.content["MarketId"], item.content["Exchange"], item.content["TradingStatus"]) == (
            "HOSE", "HOSE", "N")
        statuses[item.content["Symbol"]].append((item.clock, item.content["TradingSession"]))
    expected = [(time(9, 0), "ATO"), (time(9, 15), "LO"), (time(11, 30), "BREAK"), (time(13, 0), "LO"),
                (time(14, 30), "ATC"), (time(14, 45), "C")]
    assert statuses == dict.fromkeys(STOCKS, expected)


def test_nothing_but_status_after_the_close(day: list[Parsed]) -> None:
    assert {item.data_type for item in day if item.clock > time(14, 45)} <= {"F"}
    assert all(item.clock >= time(9, 0) for item in day if item.data_type in ("X-TRADE", "R", "F"))


# --- futures ------------------------------------------------------------------------------------------------------


def test_futures_trade_the_two_nearest_contracts_on_tick_near_vn30(sim: MarketSimulator, day: list[Parsed]) -> None:
    assert sim.contracts == listed_contracts(TUESDAY)[:2]
    vn30 = None
    total_vol: Counter[str] = Counter()
    total_val: defaultdict[str, float] = defaultdict(float)
    prints = []
    for item in day:
        content = item.content
        if item.data_type == "MI" and content["IndexId"] == "VN30":
            vn30 = content["IndexValue"]
        if item.data_type != "X-TRADE" or content["Exchange"] != "DERIVATIVES":
            continue
        symbol, price, volume = content["Symbol"], content["LastPrice"], content["LastVol"]
        assert symbol in sim.contracts
        assert content["MarketId"] == "DERIVATIVES"
        assert is_on_tick(Exchange.DER, price)
        ceiling, floor = price_limits(Exchange.DER, sim.ref_prices[symbol])
        assert (content["Ceiling"], content["Floor"]) == (ceiling, floor)
        assert floor <= price <= ceiling
        assert vn30 is not None
        assert abs(price - vn30) < 30
        assert 1 <= volume <= 50
        assert volume == int(volume)
        total_vol[symbol] += int(volume)
        total_val[symbol] += price * volume * FUTURES_MULTIPLIER
        assert content["TotalVol"] == total_vol[symbol]
        assert content["TotalVal"] == pytest.approx(total_val[symbol], rel=1e-12)
        assert content["AvgPrice"] == pytest.approx(total_val[symbol] / total_vol[symbol], abs=0.01)
        if content["TradingSession"] != "LO":
            prints.append((symbol, content["TradingSession"], item.clock))
        else:
            assert time(9, 0) <= item.clock < time(11, 30) or time(13, 0) <= item.clock < time(14, 30)
    assert sorted(prints) == sorted(
        [(symbol, "ATO", time(9, 0)) for symbol in sim.contracts]
        + [(symbol, "ATC", time(14, 45)) for symbol in sim.contracts]
    )
    busiest_stock = Counter(item.content["Symbol"] for item in stock_trades(day)).most_common(1)[0][1]
    front_trades = [item for item in futures_trades(day) if item.content["Symbol"] == sim.contracts[0]]
    assert len(front_trades) > busiest_stock


def test_futures_books_are_ten_levels_deep(day: list[Parsed]) -> None:
    books = [item.content for item in of_type(day, "X-QUOTE") if item.content["Exchange"] == "DERIVATIVES"]
    assert books
    assert all(book["BidPrice10"] > 0 and book["AskPrice10"] > 0 for book in books)
    assert all(is_on_tick(Exchange.DER, book["BidPrice1"]) for book in books)


# --- indices ------------------------------------------------------------------------------------------------------


def test_vn30_is_the_documented_cap_weighted_formula(sim: MarketSimulator, day: list[Parsed]) -> None:
    # The share counts are the simulator's seeded constants; everything else is recomputed from the frames.
    shares = {stock.symbol: stock.shares for stock in sim._market.vn30.members}
    assert set(shares) == set(DEFAULT_VN30_BASKET)
    refs = sim.ref_prices
    last = dict(refs)
    total_vol: Counter[str] = Counter()
    checked = 0
    for item in day:
        content = item.content
        if item.data_type == "X-TRADE":
            last[content["Symbol"]] = content["LastPrice"]
            total_vol[content["Symbol"]] = int(content["TotalVol"])
            continue
        if item.data_type != "MI":
            continue
        members = list(shares) if content["IndexId"] == "VN30" else list(STOCKS)
        advances = sum(last[symbol] > refs[symbol] for symbol in members)
        declines = sum(last[symbol] < refs[symbol] for symbol in members)
        assert (content["Advances"], content["Declines"]) == (advances, declines)
        assert content["Advances"] + content["Declines"] + content["NoChanges"] == len(members)
        assert content["TotalQtty"] == sum(total_vol[symbol] for symbol in members) == content["AllQty"]
        assert content["Change"] == pytest.approx(content["IndexValue"] - content["PriorIndexValue"], abs=1e-9)
        if content["IndexId"] == "VN30":
            expected = content["PriorIndexValue"] * sum(shares[s] * last[s] for s in shares) / sum(
                shares[s] * refs[s] for s in shares)
            assert content["IndexValue"] == pytest.approx(expected, abs=0.01)
            checked += 1
    assert checked > 1000


def test_index_priors_and_cadence(day: list[Parsed]) -> None:
    vn30 = [item for item in of_type(day, "MI") if item.content["IndexId"] == "VN30"]
    vnindex = [item for item in of_type(day, "MI") if item.content["IndexId"] == "VNINDEX"]
    assert len(vn30) == len(vnindex)
    assert 1850 <= vn30[0].content["PriorIndexValue"] <= 1950
    assert 1650 <= vnindex[0].content["PriorIndexValue"] <= 1710
    clocks = [item.clock for item in vn30]
    assert clocks[0] == time(8, 45)
    assert time(9, 15) in clocks
    assert clocks[-1] == time(14, 45)
    continuous = [clock for clock in clocks if time(9, 15) < clock < time(14, 30)]
    assert all(clock.second % 5 == 0 for clock in continuous)
    assert len(continuous) == (2 * 3600 + 15 * 60 + 90 * 60) // 5 - 1  # every 5 s, 09:15:00 being the ATO one


# --- foreign room -------------------------------------------------------------------------------------------------


def test_foreign_room_is_cumulative_bounded_and_paced(day: list[Parsed]) -> None:
    previous: dict[str, dict[str, Any]] = {}
    first: dict[str, dict[str, Any]] = {}
    traded: Counter[str] = Counter()
    for item in day:
        content = item.content
        if item.data_type == "X-TRADE":
            traded[content["Symbol"]] = int(content["TotalVol"])
        if item.data_type != "R":
            continue
        symbol = content["Symbol"]
        assert time(9, 15) <= item.clock < time(11, 30) or time(13, 0) <= item.clock <= time(14, 45)
        assert 0 <= content["CurrentRoom"] <= content["TotalRoom"]
        assert content["BuyVol"] % 100 == 0
        assert content["SellVol"] % 100 == 0
        assert content["BuyVol"] <= traded[symbol]
        assert content["SellVol"] <= traded[symbol]
        start = first.setdefault(symbol, content)
        assert content["TotalRoom"] == start["TotalRoom"]
        # Room left = room at the open - net foreign buying (the same for every frame of a symbol).
        opening = content["CurrentRoom"] + content["BuyVol"] - content["SellVol"]
        assert opening == start["CurrentRoom"] + start["BuyVol"] - start["SellVol"]
        if symbol in previous:
            before = previous[symbol]
            assert all(content[key] >= before[key] for key in ("BuyVol", "SellVol", "BuyVal", "SellVal"))
            assert any(content[key] != before[key] for key in ("BuyVol", "SellVol"))
            assert (item.frame.at - before["at"]).total_seconds() >= 30
        previous[symbol] = {**content, "at": item.frame.at}
    assert len(first) == len(STOCKS)
    assert any(content["CurrentRoom"] < 0.001 * content["TotalRoom"] for content in previous.values())


# --- determinism and intensity ------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(day: list[Parsed]) -> None:
    again = [frame.payload for frame in MarketSimulator(seed=1, trading_date=TUESDAY).day()]
    assert again == [item.frame.payload for item in day]
    other = MarketSimulator(seed=2, trading_date=TUESDAY)
    assert [frame.payload for frame in islice(other.day(), 2000)] != again[:2000]
    assert other.ref_prices != MarketSimulator(seed=1, trading_date=TUESDAY).ref_prices


def test_a_day_can_be_iterated_again(sim: MarketSimulator, day: list[Parsed]) -> None:
    first = [frame.payload for frame in islice(sim.day(), 5000)]
    assert first == [item.frame.payload for item in day[:5000]]


def trades_until(simulator: MarketSimulator, end: time) -> int:
    count = 0
    for frame in simulator.day():
        if frame.at.time() >= end:
            break
        count += b'"DataType":"X-TRADE"' in frame.payload
    return count


def test_intensity_scales_the_trading(sim: MarketSimulator) -> None:
    calm = trades_until(sim, time(9, 45))
    busy = trades_until(MarketSimulator(seed=1, trading_date=TUESDAY, intensity=10.0), time(9, 45))
    assert busy > 5 * calm > 0


def test_chosen_stocks_only() -> None:
    simulator = MarketSimulator(seed=3, trading_date=TUESDAY, stocks=["fpt", "DIG", "FPT"])
    assert set(simulator.ref_prices) == {"FPT", "DIG", *simulator.contracts}
    symbols = {parse(frame).content.get("Symbol") for frame in simulator.day()}
    assert symbols == {"FPT", "DIG", *simulator.contracts, None}  # None: MI frames name an IndexId instead


def test_a_weekend_is_silent_and_bad_arguments_are_refused() -> None:
    assert list(MarketSimulator(seed=1, trading_date=date(2026, 11, 28)).day()) == []
    with pytest.raises(ValueError, match="intensity"):
        MarketSimulator(seed=1, trading_date=TUESDAY, intensity=0)
    with pytest.raises(ValueError, match="no stocks"):
        MarketSimulator(seed=1, trading_date=TUESDAY, stocks=[])
