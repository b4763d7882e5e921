"""The classifier's pure core, rule by rule with hand-computed expectations, then the recorded day to the share."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from helpers import REPLAY_DAY, classify_recorded, expected_day, stock_feed

from shared.aggressor import Classifier, Decision, classify_by_book, phase_key
from shared.market import EXCHANGE_TZ, Phase
from shared.messages.domain import ClassificationRule, PriceLevel, Quote, Trade, TradeType

DAY = date(2026, 11, 24)
BUY, SELL, NEUTRAL = TradeType.MUA_CHU_DONG, TradeType.BAN_CHU_DONG, TradeType.NEUTRAL


def at(clock: str, day: date = DAY) -> datetime:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, seconds, tzinfo=EXCHANGE_TZ)


def trade(price: float, volume: int, total: int, *, clock: str = "10:00:00", session: str | None = "LO",
          side: TradeType | None = None, ref: float | None = 24_500.0, symbol: str = "ACB",
          day: date = DAY, exchange: str | None = "HOSE") -> Trade:
    return Trade(symbol=symbol, exchange=exchange, trading_date=day, timestamp=at(clock, day), price=price,
                 volume=volume, total_volume=total, ref_price=ref, ceiling=26_200.0, floor=22_800.0,
                 session=session, side=side)


def quote(bid: float, ask: float, *, symbol: str = "ACB", day: date = DAY) -> Quote:
    return Quote(symbol=symbol, trading_date=day, timestamp=at("10:00:00", day),
                 bids=[PriceLevel(bid, 1000)] if bid else [], asks=[PriceLevel(ask, 1000)] if ask else [])


def classify(core: Classifier, message: Trade) -> tuple[TradeType, Decision]:
    outcome = core.on_trade(message)
    assert outcome.classified is not None, outcome
    assert outcome.decision is not None
    return outcome.classified.trade_type, outcome.decision


# --- rule 3, the book -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "bid", "ask", "expected"),
    [
        (24_550, 24_500, 24_550, (BUY, Decision.AT_OR_ABOVE_ASK)),  # at the ask
        (24_600, 24_500, 24_550, (BUY, Decision.AT_OR_ABOVE_ASK)),  # through the ask (stale book)
        (24_500, 24_500, 24_550, (SELL, Decision.AT_OR_BELOW_BID)),  # at the bid
        (24_450, 24_500, 24_550, (SELL, Decision.AT_OR_BELOW_BID)),  # through the bid
        (24_580, 24_500, 24_600, (BUY, Decision.INSIDE_ABOVE_MID)),  # inside, above the mid 24,550
        (24_520, 24_500, 24_600, (SELL, Decision.INSIDE_BELOW_MID)),  # inside, below the mid
        (24_550, 24_500, 24_600, None),  # exactly at the mid: the book does not decide
        (26_200, 26_200, 0, (SELL, Decision.AT_OR_BELOW_BID)),  # ceiling, ask side empty, at the bid
        (26_200, 26_150, 0, None),  # only a bid, above it: undecided
        (22_800, 0, 22_800, (BUY, Decision.AT_OR_ABOVE_ASK)),  # floor, bid side empty, at the ask
        (22_850, 0, 22_900, None),  # only an ask, below it: undecided
        (24_550, 24_600, 24_550, None),  # crossed book: no book
        (24_550, 24_550, 24_550, None),  # locked book: no book
        (24_550, 0, 0, None),  # no book at all
    ],
)
def test_book_rule(price: float, bid: float, ask: float, expected: tuple[TradeType, Decision] | None) -> None:
    assert classify_by_book(price, bid, ask) == expected


# --- the rules in order -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("session", ["ATO", "ATC", "PT", "atc"])
def test_auction_and_put_through_prints_are_neutral_whatever_else(session: str) -> None:
    core = Classifier()
    core.on_quote(quote(24_500, 24_550))
    result = core.on_trade(trade(24_550, 1000, 1000, session=session, side=BUY))
    assert result.classified is not None
    assert (result.classified.trade_type, result.decision) == (NEUTRAL, Decision.AUCTION)
    assert result.classified.rule is ClassificationRule.AUCTION


def test_the_exchange_flag_beats_the_book() -> None:
    core = Classifier()
    core.on_quote(quote(24_500, 24_550))
    assert classify(core, trade(24_550, 100, 100, side=SELL)) == (SELL, Decision.SIDE)  # at the ask, flagged SD
    assert classify(core, trade(24_500, 100, 200, side=BUY)) == (BUY, Decision.SIDE)


def test_book_before_the_trade_decides_when_no_flag() -> None:
    core = Classifier()
    core.on_quote(quote(24_500, 24_550))
    assert classify(core, trade(24_550, 100, 100)) == (BUY, Decision.AT_OR_ABOVE_ASK)
    core.on_quote(quote(24_550, 24_600))  # the book after that buy: the remainder rests as the new bid
    assert classify(core, trade(24_550, 100, 200)) == (SELL, Decision.AT_OR_BELOW_BID)


def test_tick_rule_when_the_book_is_silent() -> None:
    core = Classifier()
    # no quote yet: ref 24,500 -> 24,550 is an uptick
    assert classify(core, trade(24_550, 100, 100)) == (BUY, Decision.TICK)
    assert classify(core, trade(24_500, 100, 200)) == (SELL, Decision.TICK)  # downtick
    assert classify(core, trade(24_500, 100, 300)) == (SELL, Decision.TICK)  # zero tick: the last non-zero one
    core.on_quote(quote(24_400, 24_600))  # mid 24,500: exactly at the mid goes to the tick rule
    assert classify(core, trade(24_500, 100, 400)) == (SELL, Decision.TICK)
    assert classify(core, trade(24_550, 100, 500)) == (BUY, Decision.INSIDE_ABOVE_MID)
    core.on_quote(quote(24_600, 24_500))  # crossed: tick rule, 24,550 -> 24,600 is up
    assert classify(core, trade(24_600, 100, 600)) == (BUY, Decision.TICK)


def test_auction_prints_move_the_tick_sequence() -> None:
    core = Classifier()
    assert classify(core, trade(24_600, 5000, 5000, session="ATO")) == (NEUTRAL, Decision.AUCTION)
    assert classify(core, trade(24_600, 100, 5100)) == (BUY, Decision.TICK)  # zero tick after ref -> ATO uptick


def test_no_reference_and_no_book_is_neutral() -> None:
    core = Classifier()
    assert classify(core, trade(24_550, 100, 100, ref=None)) == (NEUTRAL, Decision.NO_TICK)
    assert classify(core, trade(24_550, 100, 200, ref=None)) == (NEUTRAL, Decision.NO_TICK)  # zero tick, none before
    assert classify(core, trade(24_600, 100, 300, ref=None)) == (BUY, Decision.TICK)


def test_first_trade_at_the_reference_price_is_neutral() -> None:
    core = Classifier()
    assert classify(core, trade(24_500, 100, 100)) == (NEUTRAL, Decision.NO_TICK)


# --- detection, dedup, gaps --------------------------------------------------------------------------------------


def test_duplicates_and_out_of_order_trades_are_ignored_and_counted() -> None:
    core = Classifier()
    core.on_trade(trade(24_550, 100, 100))
    core.on_trade(trade(24_600, 200, 300))
    assert core.on_trade(trade(24_600, 200, 300)).ignored == "duplicate"
    assert core.on_trade(trade(24_550, 100, 100)).ignored == "out_of_order"
    day = core.days["ACB"]
    assert (day.duplicates, day.out_of_order) == (1, 1)
    assert day.stats.total_volume == 300
    assert day.stats.mua_chu_dong_volume == 300


def test_a_gap_is_unseen_neutral_volume_so_totals_match_the_exchange() -> None:
    core = Classifier()
    core.on_trade(trade(24_550, 1_000, 1_000))  # buy (uptick from ref)
    outcome = core.on_trade(trade(24_600, 500, 3_000))  # TotalVol +2,000 but LastVol 500: 1,500 never seen
    assert outcome.classified is not None
    assert outcome.classified.volume == 500
    assert outcome.classified.unseen_volume == 1_500
    stats = core.days["ACB"].stats
    assert stats.total_volume == 3_000
    assert (stats.mua_chu_dong_volume, stats.neutral_volume) == (1_500, 1_500)
    assert stats.mua_chu_dong_value == 24_550 * 1_000 + 24_600 * 500
    assert stats.neutral_value == 0  # the unseen trades' prices are unknown
    assert core.days["ACB"].gaps == 1


def test_the_first_trade_after_a_mid_day_start_reveals_the_earlier_volume() -> None:
    core = Classifier()
    outcome = core.on_trade(trade(24_550, 100, 50_000))
    assert outcome.classified is not None
    assert outcome.classified.unseen_volume == 49_900
    assert core.days["ACB"].stats.total_volume == 50_000


def test_values_are_price_times_volume_in_vnd() -> None:
    core = Classifier()
    outcome = core.on_trade(trade(24_550, 1_200, 1_200))
    assert outcome.classified is not None
    assert outcome.classified.value == 29_460_000.0  # 24,550 VND × 1,200 shares, never ×1000


def test_per_phase_breakdown() -> None:
    core = Classifier()
    core.on_trade(trade(24_600, 5_000, 5_000, session="ATO", clock="09:15:00"))
    core.on_trade(trade(24_650, 100, 5_100))
    core.on_trade(trade(24_600, 3_000, 8_100, session="ATC", clock="14:45:00"))
    phases = core.days["ACB"].stats.phases
    assert set(phases) == {"ato", "continuous", "atc"}
    assert phases["ato"].neutral_volume == 5_000
    assert phases["continuous"].mua_chu_dong_volume == 100
    assert phases["atc"].neutral_volume == 3_000
    assert phase_key("PT") == "pt"


# --- rule 1 by the schedule: auctions the feed sent without a session code ---------------------------------------


def test_hose_auction_prints_without_a_session_code_are_neutral_by_the_schedule() -> None:
    core = Classifier()
    core.on_quote(quote(24_500, 24_550))
    assert classify(core, trade(24_550, 5_000, 5_000, session=None, clock="09:15:00")) == (NEUTRAL, Decision.SCHEDULE)
    # the same instant, after the opening print: continuous trading, the book decides
    assert classify(core, trade(24_550, 100, 5_100, session=None, clock="09:15:00")) == (BUY,
                                                                                          Decision.AT_OR_ABOVE_ASK)
    assert classify(core, trade(24_550, 100, 5_200, session=None, clock="10:30:00")) == (BUY,
                                                                                          Decision.AT_OR_ABOVE_ASK)
    assert classify(core, trade(24_550, 9_000, 14_200, session="C", clock="14:45:00")) == (NEUTRAL,
                                                                                            Decision.SCHEDULE)
    assert classify(core, trade(24_550, 300, 14_500, session=None, clock="14:52:00")) == (NEUTRAL, Decision.SCHEDULE)
    outcome = core.on_trade(trade(24_550, 100, 14_600, session="", clock="14:58:00"))
    assert outcome.classified is not None
    assert outcome.classified.rule is ClassificationRule.SCHEDULE  # which rule decided stays visible
    phases = core.days["ACB"].stats.phases
    assert phases["ato"].neutral_volume == 5_000
    assert phases["atc"].neutral_volume == 9_000
    assert phases["post_close"].neutral_volume == 400
    assert phase_key("C", Phase.POST_CLOSE) == "post_close"  # a code naming no phase: the schedule's name
    assert phase_key(None, Phase.CONTINUOUS) == "continuous"
    assert phases["continuous"].mua_chu_dong_volume == 200


def test_a_session_code_naming_a_phase_still_decides() -> None:
    core = Classifier()
    core.on_quote(quote(24_500, 24_550))
    assert classify(core, trade(24_550, 100, 100, session="LO", clock="14:45:00")) == (BUY, Decision.AT_OR_ABOVE_ASK)
    assert classify(core, trade(24_550, 100, 200, session="ATC", clock="10:00:00")) == (NEUTRAL, Decision.AUCTION)


@pytest.mark.parametrize(("exchange", "clock", "expected"), [
    ("HNX", "09:00:00", (BUY, Decision.AT_OR_ABOVE_ASK)),  # no opening auction: continuous from 09:00
    ("HNX", "14:40:00", (NEUTRAL, Decision.SCHEDULE)),  # the closing auction
    ("HNX", "14:50:00", (NEUTRAL, Decision.SCHEDULE)),  # post-close
    ("UPCOM", "14:40:00", (BUY, Decision.AT_OR_ABOVE_ASK)),  # no auctions at all
    ("DERIVATIVES", "08:50:00", (NEUTRAL, Decision.SCHEDULE)),  # the opening auction
    ("DERIVATIVES", "14:45:12", (NEUTRAL, Decision.SCHEDULE)),  # the closing print, seconds after the close
    (None, "14:40:00", (BUY, Decision.AT_OR_ABOVE_ASK)),  # no exchange named: no schedule to go by
])
def test_the_schedule_of_each_exchange(exchange: str | None, clock: str, expected: tuple) -> None:
    core = Classifier()
    core.on_quote(quote(24_500, 24_550))
    assert classify(core, trade(24_550, 100, 100, session=None, clock=clock, exchange=exchange)) == expected


def test_price_data_against_the_reference() -> None:
    core = Classifier()
    core.on_trade(trade(24_350, 100, 100))
    price = core.days["ACB"].price
    assert price is not None
    assert (price.last_price, price.change, price.ref_price, price.ceiling, price.floor) == (
        24_350, -150, 24_500, 26_200, 22_800)
    assert price.change_pct == pytest.approx(-0.6122448979591837)


def test_a_new_trading_date_resets_the_day() -> None:
    core = Classifier()
    core.on_quote(quote(24_500, 24_550))
    core.on_trade(trade(24_550, 1_000, 90_000))
    next_day = date(2026, 11, 25)
    outcome = core.on_trade(trade(24_550, 100, 100, day=next_day))
    assert outcome.classified is not None
    assert outcome.decision is Decision.TICK  # yesterday's book is gone; ref 24,500 -> 24,550 up
    stats = core.days["ACB"].stats
    assert (stats.trading_date, stats.total_volume, stats.mua_chu_dong_volume) == (next_day, 100, 100)
    assert core.on_trade(trade(24_550, 100, 95_000)).ignored == "out_of_order"  # yesterday's, late


# --- the recorded day ----------------------------------------------------------------------------------------------


def test_recorded_day_to_the_share() -> None:
    expected = expected_day()
    core = classify_recorded(REPLAY_DAY)
    assert set(core.days) == set(expected["quotes"])
    for symbol, figures in expected["quotes"].items():
        stats = core.days[symbol].stats
        for field, value in figures.items():
            if field != "symbol":
                assert getattr(stats, field) == pytest.approx(value, abs=0.5), (symbol, field)
    for symbol, figures in expected["prices"].items():
        price = core.days[symbol].price
        assert price is not None
        for field, value in figures.items():
            assert getattr(price, field) == pytest.approx(value, abs=1e-6), (symbol, field)
    tally = core.tally()
    assert (tally.duplicates, tally.out_of_order, tally.gaps, tally.unseen_volume) == (
        expected["counts"]["duplicate"], expected["counts"]["out_of_order"], expected["counts"]["gap"],
        expected["counts"]["gap_unseen_volume"])
    assert {symbol: day.unseen_volume for symbol, day in core.days.items() if day.unseen_volume} == \
        expected["unseen_volume"]


def test_recorded_day_classes_and_rules() -> None:
    expected = expected_day()
    core = Classifier()
    classes, rules = {}, {}
    for message in stock_feed(REPLAY_DAY):
        if isinstance(message, Quote):
            core.on_quote(message)
        else:
            outcome = core.on_trade(message)
            if outcome.classified is not None:
                classes[f"{message.symbol}:{message.total_volume}"] = outcome.classified.trade_type.value
                rules[outcome.decision] = rules.get(outcome.decision, 0) + 1
    stock_classes = {key: value for key, value in expected["classes"].items() if not key.startswith("VN30F")}
    assert classes == stock_classes
    assert sum(rules.values()) == len(stock_classes)
