"""The market simulator: SSI's wire format, the market rules of shared.market on HOSE, HNX, UPCOM and VN30F, and the
consistency a tracker relies on (book before trade, running totals, index formula, foreign room, the auctions'
projected price), checked over whole simulated days."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import date, time
from itertools import islice, pairwise
from typing import Any, NamedTuple

import msgspec
import pytest

from services.ingest.normalize import Normalized, Normalizer, TradeVerdict
from services.ingest.service import make_source
from services.ingest.simulator import (
    EXTRA_STOCKS,
    HNX30_BASKET,
    HNX_STOCKS,
    MARKET_SIZES,
    UPCOM_STOCKS,
    MarketSimulator,
    SimFrame,
)
from services.ingest.sources import SimSource
from shared import config
from shared.market import (
    DEFAULT_VN30_BASKET,
    EXCHANGE_TZ,
    FUTURES_MULTIPLIER,
    Exchange,
    contract_expiry,
    exchange_datetime,
    is_on_tick,
    listed_contracts,
    normalize_index_id,
    parse_clock,
    parse_exchange,
    parse_trading_date,
    price_limits,
)
from shared.messages.domain import IndexBasket, Quote, Rejection, Trade
from shared.messages.ssi import decode_frame

TUESDAY = date(2026, 11, 24)
STOCKS = (*DEFAULT_VN30_BASKET, *EXTRA_STOCKS)  # HOSE's
LISTED = {"HOSE": STOCKS, "HNX": HNX_STOCKS, "UPCOM": UPCOM_STOCKS}
ALL_STOCKS = (*STOCKS, *HNX_STOCKS, *UPCOM_STOCKS)
DATA_TYPES = {"X-TRADE", "X-QUOTE", "X", "R", "MI", "B", "F"}
INDEX_IDS = {"VN30", "VNINDEX", "HNX30", "HNXINDEX", "UPCOMINDEX"}
# Each exchange's call auctions, [start, end) exchange time: UPCOM has none, HNX no opening one.
AUCTIONS = {
    "HOSE": {"ATO": (time(9, 0), time(9, 15)), "ATC": (time(14, 30), time(14, 45))},
    "HNX": {"ATC": (time(14, 30), time(14, 45))},
    "UPCOM": {},
    "DERIVATIVES": {"ATO": (time(8, 45), time(9, 0)), "ATC": (time(14, 30), time(14, 45))},
}


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


def trades_on(day: list[Parsed], exchange: str) -> list[Parsed]:
    return [item for item in of_type(day, "X-TRADE") if item.content["Exchange"] == exchange]


def exchange_of(item: Parsed) -> str:
    """The exchange a frame belongs to; a B frame names none, its symbol tells."""
    if "Exchange" in item.content:
        return str(item.content["Exchange"])
    symbol = item.content["Symbol"]
    return next((exchange for exchange, symbols in LISTED.items() if symbol in symbols), "DERIVATIVES")


def in_auction(exchange: str, clock: time) -> bool:
    return any(start <= clock < end for start, end in AUCTIONS[exchange].values())


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
    assert {index["IndexId"] for index in (item.content for item in of_type(day, "MI"))} == INDEX_IDS


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
    assert set(refs) == {*ALL_STOCKS, *sim.contracts}
    for symbol in STOCKS:
        assert 10_000 <= refs[symbol] <= 150_000
        assert is_on_tick(Exchange.HOSE, refs[symbol])
    for symbol in (*HNX_STOCKS, *UPCOM_STOCKS):
        assert 5_000 <= refs[symbol] <= 150_000
        assert refs[symbol] % 100 == 0
    assert len(set(refs.values())) > 40


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


@pytest.mark.parametrize(("exchange", "limit_pct"), [("HNX", 10), ("UPCOM", 15)])
def test_hnx_and_upcom_trades_respect_their_ticks_limits_and_running_totals(
    sim: MarketSimulator, day: list[Parsed], exchange: str, limit_pct: int
) -> None:
    refs = sim.ref_prices
    total_vol: Counter[str] = Counter()
    at_limit: Counter[str] = Counter()
    for item in trades_on(day, exchange):
        trade = item.content
        symbol, price, volume = trade["Symbol"], trade["LastPrice"], trade["LastVol"]
        ref = refs[symbol]
        ceiling, floor = price_limits(Exchange(exchange), ref)
        assert (trade["MarketId"], trade["RefPrice"]) == (exchange, ref)
        assert (trade["Ceiling"], trade["Floor"]) == (ceiling, floor)
        # The last 100-VND ticks inside ref ± the limit (whole numbers times 100: exact).
        assert ref * (100 + limit_pct) - 100 * 100 < ceiling * 100 <= ref * (100 + limit_pct)
        assert ref * (100 - limit_pct) <= floor * 100 < ref * (100 - limit_pct) + 100 * 100
        assert price % 100 == 0, trade
        assert floor <= price <= ceiling
        assert volume > 0
        assert volume % 100 == 0
        total_vol[symbol] += int(volume)
        assert trade["TotalVol"] == total_vol[symbol]
        at_limit["ceiling"] += price == ceiling
        at_limit["floor"] += price == floor
    assert set(total_vol) == set(LISTED[exchange])
    assert at_limit["ceiling"] >= 1  # the exchange's runners reach its limits
    assert at_limit["floor"] >= 1


def test_books_are_as_deep_as_ssi_sends_them(sim: MarketSimulator, day: list[Parsed]) -> None:
    """HOSE books have 3 levels; HNX, UPCOM (and futures) 10, fewer only where the price limit leaves no room."""
    refs = sim.ref_prices
    depths: defaultdict[str, Counter[int]] = defaultdict(Counter)
    for item in day:
        if item.data_type not in ("X-QUOTE", "X"):
            continue
        content, exchange = item.content, item.content["Exchange"]
        for side, outward in (("Bid", -1), ("Ask", 1)):
            prices = [content[f"{side}Price{level}"] for level in range(1, 11)]
            levels = [price for price in prices if price]
            assert prices[:len(levels)] == levels  # best first, no gaps
            depths[exchange][len(levels)] += 1
            if exchange == "HOSE":
                assert len(levels) <= 3
            if exchange not in ("HNX", "UPCOM") or not levels:
                continue
            ceiling, floor = price_limits(Exchange(exchange), refs[content["Symbol"]])
            assert all(floor <= price <= ceiling and price % 100 == 0 for price in levels)
            assert levels == [levels[0] + outward * 100 * step for step in range(len(levels))]  # tick by tick
            room = (levels[0] - floor if outward < 0 else ceiling - levels[0]) // 100 + 1
            assert len(levels) == min(10, room)
    assert max(depths["HOSE"]) == 3
    assert depths["HNX"][10] > 100
    assert depths["UPCOM"][10] > 100
    assert depths["DERIVATIVES"][10] > 100


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


def test_status_frames_follow_each_exchanges_schedule(day: list[Parsed]) -> None:
    statuses: dict[str, list[tuple[time, str]]] = defaultdict(list)
    for item in of_type(day, "F"):
        exchange = item.content["Exchange"]
        assert item.content["Symbol"] in LISTED[exchange]
        assert (item.content["MarketId"], item.content["TradingStatus"]) == (exchange, "N")
        statuses[item.content["Symbol"]].append((item.clock, item.content["TradingSession"]))
    lunch = [(time(9, 0), "LO"), (time(11, 30), "BREAK"), (time(13, 0), "LO")]
    hose = [(time(9, 0), "ATO"), (time(9, 15), "LO"), (time(11, 30), "BREAK"), (time(13, 0), "LO"),
            (time(14, 30), "ATC"), (time(14, 45), "C")]
    hnx = [*lunch, (time(14, 30), "ATC"), (time(14, 45), "C")]  # no ATO; post-close after the ATC
    upcom = [*lunch, (time(15, 0), "C")]  # no auctions
    assert statuses == {**dict.fromkeys(STOCKS, hose), **dict.fromkeys(HNX_STOCKS, hnx),
                        **dict.fromkeys(UPCOM_STOCKS, upcom)}


def test_nothing_but_status_after_the_close(day: list[Parsed]) -> None:
    # HOSE, HNX and the futures are done at 14:45; UPCOM trades until 15:00, then only says it closed.
    after = [item for item in day if item.clock > time(14, 45)]
    assert {exchange_of(item) for item in after if item.data_type != "F"} == {"UPCOM"}
    assert {item.data_type for item in after if item.clock == time(15, 0)} == {"F"}
    assert all(item.clock >= time(9, 0) for item in day if item.data_type in ("X-TRADE", "R", "F"))


def test_hnx_trades_from_nine_without_an_opening_auction_and_ends_with_a_closing_one(day: list[Parsed]) -> None:
    by_symbol: dict[str, list[str]] = defaultdict(list)
    for item in trades_on(day, "HNX"):
        session = item.content["TradingSession"]
        by_symbol[item.content["Symbol"]].append(session)
        if session == "LO":
            assert time(9, 0) <= item.clock < time(11, 30) or time(13, 0) <= item.clock < time(14, 30)
        else:
            assert (session, item.clock) == ("ATC", time(14, 45))
    assert set(by_symbol) == set(HNX_STOCKS)
    for symbol, sessions in by_symbol.items():
        assert sessions.count("ATC") == 1, symbol
        assert sessions[-1] == "ATC"
        assert "ATO" not in sessions
    assert min(item.clock for item in trades_on(day, "HNX")) < time(9, 15)  # before HOSE's continuous session


def test_upcom_trades_continuously_until_three_without_auctions(day: list[Parsed]) -> None:
    trades = trades_on(day, "UPCOM")
    assert {item.content["TradingSession"] for item in trades} == {"LO"}
    assert all(time(9, 0) <= item.clock < time(11, 30) or time(13, 0) <= item.clock < time(15, 0) for item in trades)
    assert max(item.clock for item in trades) > time(14, 45)
    assert not [item for item in day if item.data_type == "X" and item.content["Exchange"] == "UPCOM"]


# --- auctions: the projected price ------------------------------------------------------------------------------


def test_auction_books_are_x_frames_with_the_projected_price(sim: MarketSimulator, day: list[Parsed]) -> None:
    refs = sim.ref_prices
    total_vol: Counter[str] = Counter()
    auctions: Counter[tuple[str, str]] = Counter()
    for item in day:
        content = item.content
        if item.data_type == "X-TRADE":
            total_vol[content["Symbol"]] = int(content["TotalVol"])
        if item.data_type == "X-QUOTE":
            assert not in_auction(content["Exchange"], item.clock), content  # an auction's book is an X frame
            assert "EstMatchedPrice" not in content
        if item.data_type != "X":
            continue
        symbol, exchange, session = content["Symbol"], content["Exchange"], content["TradingSession"]
        start, end = AUCTIONS[exchange][session]
        assert start <= item.clock < end
        assert content["MarketId"] == exchange
        assert content["TotalVol"] == total_vol[symbol]  # not grown: the frame carries no trade
        if not total_vol[symbol]:
            assert content["LastPrice"] == content["LastVol"] == content["TotalVal"] == 0.0
        market = parse_exchange(exchange)
        assert market is not None
        ceiling, floor = price_limits(market, refs[symbol])
        assert (content["RefPrice"], content["Ceiling"], content["Floor"]) == (refs[symbol], ceiling, floor)
        projected = content["EstMatchedPrice"]
        assert floor <= projected <= ceiling
        assert is_on_tick(market, projected), content
        bid, ask = content["BidPrice1"], content["AskPrice1"]
        assert (bid or floor) <= projected <= (ask or ceiling)  # inside the book it projects from
        auctions[exchange, session] += 1
    assert set(auctions) == {(exchange, session) for exchange, sessions in AUCTIONS.items() for session in sessions}
    assert all(count >= 10 for count in auctions.values())


def test_auction_books_reach_the_bus_as_one_quote_each_and_no_trade(day: list[Parsed]) -> None:
    normalizer = Normalizer()
    verdicts: Counter[TradeVerdict | None] = Counter()
    for item in day:
        result = normalizer.normalize(item.frame.payload)
        assert isinstance(result, Normalized)
        if item.data_type == "X-TRADE":  # every match, the auctions' prints included, is a trade of its own
            assert result.trade_verdict is TradeVerdict.NEW
            assert [message.subject.split(".")[-2] for message in result.messages] == ["trade"]
        if item.data_type not in ("X", "X-QUOTE"):
            continue
        (message,) = result.messages
        assert message.subject.rsplit(".", 1)[0] in ("md.quote", "md.futures.quote")
        quote = msgspec.json.decode(message.payload, type=Quote)
        assert quote.projected_price == item.content.get("EstMatchedPrice")  # X-QUOTE: none
        if item.data_type == "X":
            assert quote.session == item.content["TradingSession"]
            verdicts[result.trade_verdict] += 1
    # The ATC books repeat the day's last match (a repeat, dropped); the opening auctions' have none yet.
    assert set(verdicts) == {TradeVerdict.REPEAT, None}


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


def test_indices_are_the_documented_cap_weighted_formula_over_the_listed_shares(
    sim: MarketSimulator, day: list[Parsed]
) -> None:
    # The share counts are the securities' listed_shares; everything else is recomputed from the frames.
    shares = {security.symbol: security.listed_shares for security in sim.securities
              if security.listed_shares is not None}  # the stocks'; contracts have none
    members = {
        "VN30": [symbol for symbol in STOCKS if symbol in DEFAULT_VN30_BASKET], "VNINDEX": list(STOCKS),
        "HNX30": [symbol for symbol in HNX_STOCKS if symbol in HNX30_BASKET], "HNXINDEX": list(HNX_STOCKS),
        "UPCOMINDEX": list(UPCOM_STOCKS),
    }
    assert set(members["HNX30"]) == set(HNX30_BASKET) < set(HNX_STOCKS)
    refs = sim.ref_prices
    last = dict(refs)
    total_vol: Counter[str] = Counter()
    checked: Counter[str] = Counter()
    for item in day:
        content = item.content
        if item.data_type == "X-TRADE":
            last[content["Symbol"]] = content["LastPrice"]
            total_vol[content["Symbol"]] = int(content["TotalVol"])
            continue
        if item.data_type != "MI":
            continue
        index = members[content["IndexId"]]
        advances = sum(last[symbol] > refs[symbol] for symbol in index)
        declines = sum(last[symbol] < refs[symbol] for symbol in index)
        assert (content["Advances"], content["Declines"]) == (advances, declines)
        assert content["Advances"] + content["Declines"] + content["NoChanges"] == len(index)
        assert content["TotalQtty"] == sum(total_vol[symbol] for symbol in index) == content["AllQty"]
        assert content["Change"] == pytest.approx(content["IndexValue"] - content["PriorIndexValue"], abs=1e-9)
        expected = content["PriorIndexValue"] * sum(shares[s] * last[s] for s in index) / sum(
            shares[s] * refs[s] for s in index)
        assert content["IndexValue"] == pytest.approx(expected, abs=0.01)
        checked[content["IndexId"]] += 1
    assert set(checked) == INDEX_IDS
    assert min(checked.values()) > 1000


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


@pytest.mark.parametrize(
    ("index_id", "name", "exchange", "prior", "closing", "count"),
    [
        # HNX: every 5 s of 09:00-11:30 and 13:00-14:30, then once at the closing print
        ("HNX30", "HNX30", "HNX", (450, 550), (time(14, 45), "ATC"), (150 + 90) * 12 + 1),
        ("HNXINDEX", "HNXIndex", "HNX", (220, 260), (time(14, 45), "ATC"), (150 + 90) * 12 + 1),
        ("UPCOMINDEX", "HNXUpcomIndex", "UPCOM", (95, 110), (time(14, 59, 55), "LO"), (150 + 120) * 12),
    ],
)
def test_hnx_and_upcom_indices_priors_cadence_and_codes(
    day: list[Parsed], index_id: str, name: str, exchange: str, prior: tuple[float, float],
    closing: tuple[time, str], count: int,
) -> None:
    updates = [item for item in of_type(day, "MI") if item.content["IndexId"] == index_id]
    assert {(item.content["IndexName"], item.content["Exchange"]) for item in updates} == {(name, exchange)}
    assert normalize_index_id(name) == index_id  # SSI's spelling folds to the id
    assert len({item.content["PriorIndexValue"] for item in updates}) == 1
    assert prior[0] <= updates[0].content["PriorIndexValue"] <= prior[1]
    assert updates[0].clock == time(9, 0)
    assert (updates[-1].clock, updates[-1].content["TradingSession"]) == closing
    assert len(updates) == count
    assert all(item.clock.second % 5 == 0 for item in updates)


# --- foreign room -------------------------------------------------------------------------------------------------


def test_foreign_room_is_cumulative_bounded_and_paced(day: list[Parsed]) -> None:
    previous: dict[str, dict[str, Any]] = {}
    first: dict[str, dict[str, Any]] = {}
    traded: Counter[str] = Counter()
    # Sent while the stock's exchange trades, from its first match on.
    opens = {"HOSE": time(9, 15), "HNX": time(9, 0), "UPCOM": time(9, 0)}
    closes = {"HOSE": time(14, 45), "HNX": time(14, 45), "UPCOM": time(14, 59, 59)}
    for item in day:
        content = item.content
        if item.data_type == "X-TRADE":
            traded[content["Symbol"]] = int(content["TotalVol"])
        if item.data_type != "R":
            continue
        symbol, exchange = content["Symbol"], content["Exchange"]
        assert symbol in LISTED[exchange]
        assert content["MarketId"] == exchange
        assert opens[exchange] <= item.clock < time(11, 30) or time(13, 0) <= item.clock <= closes[exchange]
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
    assert len(first) == len(ALL_STOCKS)
    assert any(content["CurrentRoom"] < 0.001 * content["TotalRoom"] for content in previous.values())


# --- determinism and intensity ------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(day: list[Parsed]) -> None:
    again = [frame.payload for frame in MarketSimulator(seed=1, trading_date=TUESDAY).day()]
    assert again == [item.frame.payload for item in day]
    other = MarketSimulator(seed=2, trading_date=TUESDAY)
    assert [frame.payload for frame in islice(other.day(), 2000)] != again[:2000]
    assert other.ref_prices != MarketSimulator(seed=1, trading_date=TUESDAY).ref_prices


def test_hnx_and_upcom_leave_the_hose_and_futures_day_as_it_was(sim: MarketSimulator, day: list[Parsed]) -> None:
    """They draw from generators of their own: the HOSE and VN30F frames are the very bytes of a day without them."""
    alone = [frame.payload for frame in MarketSimulator(seed=1, trading_date=TUESDAY, hnx_stocks=[],
                                                        upcom_stocks=[]).day()]
    hose_and_futures = {*STOCKS, *sim.contracts, "VN30", "VNINDEX"}
    ours = [item.frame.payload for item in day
            if (item.content.get("Symbol") or item.content.get("IndexId")) in hose_and_futures]
    assert ours == alone


def bus_messages(frames: list[bytes]) -> tuple[list[Trade], list[tuple[Any, ...]], list[bytes]]:
    """What ingest publishes of a day: its trades, its books (a symbol's book only when it changed), everything
    else."""
    normalizer = Normalizer()
    trades: list[Trade] = []
    books: list[tuple[Any, ...]] = []
    others: list[bytes] = []
    for frame in frames:
        result = normalizer.normalize(frame)
        assert isinstance(result, Normalized)
        for message in result.messages:
            kind = message.subject.split(".")[-2]
            if kind == "trade":
                trades.append(msgspec.json.decode(message.payload, type=Trade))
            elif kind == "quote":
                quote = msgspec.json.decode(message.payload, type=Quote)
                books.append((quote.timestamp, quote.symbol, quote.session, quote.projected_price,
                              *(tuple((level.price, level.volume) for level in side)
                                for side in (quote.bids, quote.asks))))
            else:
                others.append(message.payload)
    return trades, books, others


def test_the_combined_channel_carries_the_same_day_in_x_frames(day: list[Parsed]) -> None:
    """X:ALL's day is the split channels' day: the same trades in the same order, the same continuous books in the
    same order (a match's frame repeats the book when the match left it unchanged), the same bars, indices and
    rooms."""
    combined = [parse(frame) for frame in MarketSimulator(seed=1, trading_date=TUESDAY, combined=True).day()]
    kinds = Counter(item.data_type for item in combined)
    assert not kinds.keys() & {"X-TRADE", "X-QUOTE"}
    assert kinds["X"] > 0.5 * len(combined)
    assert all(item.content.get("BidPrice1") is not None for item in of_type(combined, "X"))
    trades, books, others = bus_messages([item.frame.payload for item in day])
    assert len(trades) == len(of_type(day, "X-TRADE")) > 1000
    on_x = bus_messages([item.frame.payload for item in combined])
    assert on_x[0] == trades
    assert on_x[2] == others
    continuous = [book for book in books if book[2] == "LO"]
    assert [book for book in on_x[1] if book[2] == "LO"] == continuous
    assert len(continuous) > 1000
    # An auction's match shows the last book with the matched price: one book more per print.
    auctions = [book for book in on_x[1] if book[2] != "LO"]
    assert set(auctions) >= {book for book in books if book[2] != "LO"}


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
    simulator = MarketSimulator(seed=3, trading_date=TUESDAY, stocks=["fpt", "DIG", "FPT"], hnx_stocks=["shs"],
                                upcom_stocks=[])
    assert set(simulator.ref_prices) == {"FPT", "DIG", "SHS", *simulator.contracts}
    contents = [parse(frame).content for frame in simulator.day()]
    symbols = {content.get("Symbol") for content in contents}
    assert symbols == {"FPT", "DIG", "SHS", *simulator.contracts, None}  # None: MI frames name an IndexId instead
    assert {content["IndexId"] for content in contents if "IndexId" in content} == {
        "VN30", "VNINDEX", "HNX30", "HNXINDEX"}  # an exchange left out has no index either


def test_a_weekend_is_silent_and_bad_arguments_are_refused() -> None:
    assert list(MarketSimulator(seed=1, trading_date=date(2026, 11, 28)).day()) == []
    with pytest.raises(ValueError, match="intensity"):
        MarketSimulator(seed=1, trading_date=TUESDAY, intensity=0)
    with pytest.raises(ValueError, match="no stocks"):
        MarketSimulator(seed=1, trading_date=TUESDAY, stocks=[])
    with pytest.raises(ValueError, match="FPT"):
        MarketSimulator(seed=1, trading_date=TUESDAY, hnx_stocks=["FPT"])  # already a HOSE stock
    with pytest.raises(ValueError, match="universe"):
        MarketSimulator(seed=1, trading_date=TUESDAY, universe="everything")  # type: ignore[arg-type]


# --- reference data -----------------------------------------------------------------------------------------------


def test_securities_describe_every_instrument_with_its_share_count(sim: MarketSimulator) -> None:
    securities = {security.symbol: security for security in sim.securities}
    assert set(securities) == set(sim.ref_prices)
    assert all(security.trading_date == TUESDAY for security in securities.values())
    for exchange, symbols in LISTED.items():
        for symbol in symbols:
            security = securities[symbol]
            assert (security.exchange, security.sec_type, security.lot_size) == (exchange, "ST", 100)
            assert security.listed_shares is not None
            assert 1e11 <= security.listed_shares * sim.ref_prices[symbol] <= 1e15  # a market cap, VND
    for symbol in sim.contracts:
        security = securities[symbol]
        assert (security.exchange, security.sec_type, security.underlying) == ("DERIVATIVES", "FU", "VN30")
        assert security.last_trading_date == contract_expiry(symbol)
        assert security.listed_shares is None


async def test_the_sim_source_serves_the_first_days_securities() -> None:
    basket = IndexBasket(index_id="VN30", symbols=list(DEFAULT_VN30_BASKET), source="builtin", trading_date=TUESDAY)
    source = SimSource(seed=4, first_day=TUESDAY, intensity=1.0, basket=basket, universe="market")
    reference = await source.reference()
    simulator = MarketSimulator(seed=4 + TUESDAY.toordinal(), trading_date=TUESDAY, universe="market")
    assert reference.securities == simulator.securities
    assert reference.basket.trading_date == TUESDAY
    (hnx30,) = reference.baskets  # VN30's is the configured one
    assert (hnx30.index_id, hnx30.trading_date, hnx30.symbols) == ("HNX30", TUESDAY, sorted(HNX30_BASKET))


async def test_sim_channel_x_feeds_ingest_the_combined_frames() -> None:
    """SIM_CHANNEL=x: the sim source sends trades and books as X:ALL does, one X frame each."""
    source = make_source(config.load({"SIM_CHANNEL": "x", "SIM_DATE": TUESDAY.isoformat(), "SIM_INTENSITY": "0.2"}))
    assert isinstance(source, SimSource)
    kinds: Counter[str] = Counter()
    async for frame in source.frames():
        if source.day != TUESDAY:
            break
        kinds[json.loads(frame)["DataType"]] += 1
    assert kinds["X"] > 1000
    assert not kinds.keys() & {"X-TRADE", "X-QUOTE"}
    assert config.load({}).sim_channel == "split"


# --- the whole market ---------------------------------------------------------------------------------------------


def test_the_whole_market_universe() -> None:
    market = MarketSimulator(seed=1, trading_date=TUESDAY, universe="market")
    securities = market.securities
    assert len(securities) >= 1500
    assert Counter(security.exchange for security in securities) == {
        **{str(exchange): size for exchange, size in MARKET_SIZES.items()}, "DERIVATIVES": 2}
    symbols = {security.symbol for security in securities}
    assert len(symbols) == len(securities)
    assert set(ALL_STOCKS) <= symbols
    generated = symbols - set(ALL_STOCKS) - set(market.contracts)
    assert all(len(symbol) == 3 and symbol.isalpha() and symbol.isupper() for symbol in generated)
    assert {security.symbol for security in MarketSimulator(seed=2, trading_date=TUESDAY,
                                                            universe="market").securities} == symbols

    frames = [frame.payload for frame in market.day()]
    assert frames[:20_000] == [frame.payload for frame in islice(market.day(), 20_000)]
    assert not [decoded for frame in frames if isinstance(decoded := decode_frame(frame), Rejection)]
    trades: Counter[str] = Counter()
    for payload in frames:
        if payload.startswith(b'{"DataType":"X-TRADE"'):
            trades[json.loads(json.loads(payload)["Content"])["Symbol"]] += 1
    small = sorted(trades[symbol] for symbol in generated)
    assert small[len(small) // 2] <= 20  # most small caps trade rarely (their auction prints included)
    assert sum(trades[symbol] for symbol in STOCKS) > sum(small) / 2  # the blue chips still carry the day
    assert 100_000 <= len(frames) <= 400_000
