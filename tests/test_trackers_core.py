"""The foreign, index and derivatives cores, with hand-computed expectations, then the recorded day."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import msgspec
import pytest
from helpers import REPLAY_DAY, expected_day, track_recorded

from services.derivatives.core import DerivativesCore
from services.derivatives.service import DerivativesService
from services.foreign.core import ForeignCore
from services.index.core import IndexCore
from shared.market import EXCHANGE_TZ
from shared.messages.domain import ForeignRoom, IndexUpdate, PriceLevel, Quote, Trade, TradeType

DAY = date(2026, 11, 24)
OPEN = datetime(2026, 11, 24, 9, 15, tzinfo=EXCHANGE_TZ)


def room(symbol: str, buy: int, sell: int, *, at: datetime = OPEN, price: float = 10_000.0,
         day: date = DAY) -> ForeignRoom:
    return ForeignRoom(symbol=symbol, trading_date=day, timestamp=at, buy_volume=buy, sell_volume=sell,
                       buy_value=buy * price, sell_value=sell * price, total_room=1_000_000.0,
                       current_room=500_000.0 - buy + sell)


# --- foreign -------------------------------------------------------------------------------------------------------


def test_first_update_is_a_baseline_then_deltas_are_flows() -> None:
    core = ForeignCore()
    assert core.on_room(room("FPT", 50_000, 20_000)) is None  # mid-day start: the morning is not a spike
    flow = core.on_room(room("FPT", 53_000, 20_500, at=OPEN + timedelta(seconds=30)))
    assert flow is not None
    assert (flow.buy_volume, flow.sell_volume, flow.buy_value, flow.sell_value) == (3_000, 500, 3e7, 5e6)
    assert (flow.cumulative_buy_volume, flow.cumulative_sell_volume) == (53_000, 20_500)
    data = core.symbols["FPT"].data
    assert (data.buy_volume, data.sell_volume, data.net_volume, data.net_value) == (53_000, 20_500, 32_500, 3.25e8)


def test_an_unchanged_update_is_no_flow() -> None:
    core = ForeignCore()
    core.on_room(room("FPT", 100, 0))
    assert core.on_room(room("FPT", 100, 0, at=OPEN + timedelta(seconds=30))) is None


def test_a_counter_going_backwards_reseeds_without_a_negative_flow() -> None:
    core = ForeignCore()
    core.on_room(room("FPT", 50_000, 20_000))
    core.on_room(room("FPT", 60_000, 20_000, at=OPEN + timedelta(seconds=30)))
    assert core.on_room(room("FPT", 1_000, 500, at=OPEN + timedelta(seconds=60))) is None  # feed reset
    assert core.symbols["FPT"].reseeds == 1
    flow = core.on_room(room("FPT", 1_800, 500, at=OPEN + timedelta(seconds=90)))
    assert flow is not None
    assert flow.buy_volume == 800  # counted from the new baseline


def test_a_new_trading_date_starts_from_zero_and_old_dates_are_ignored() -> None:
    core = ForeignCore()
    core.on_room(room("FPT", 50_000, 20_000))  # began mid-day: a baseline
    flow = core.on_room(room("FPT", 100, 0, day=date(2026, 11, 25), at=OPEN + timedelta(days=1)))
    assert flow is not None  # SSI's cumulatives restart at zero: the day's first update is its first flow, whole
    assert (flow.buy_volume, flow.sell_volume, flow.buy_value, flow.cumulative_buy_volume) == (100, 0, 1e6, 100)
    assert core.symbols["FPT"].trading_date == date(2026, 11, 25)
    assert core.on_room(room("FPT", 60_000, 20_000)) is None
    assert core.stale == 1
    assert core.baselines == 1


def test_only_a_core_begun_within_the_day_takes_baselines() -> None:
    core = ForeignCore()
    assert core.on_room(room("FPT", 50_000, 20_000)) is None
    assert core.on_room(room("VNM", 7_000, 0, at=OPEN + timedelta(hours=1))) is None  # the same day: a baseline too
    assert core.baselines == 2
    next_day = OPEN + timedelta(days=1)
    first = core.on_room(room("HPG", 300, 0, day=date(2026, 11, 25), at=next_day))  # never seen: from zero as well
    assert first is not None
    assert first.buy_volume == 300
    restored = ForeignCore(core.symbols, first_day=core.first_day)  # from a checkpoint: still knows when it began
    assert restored.on_room(room("MWG", 10, 0, day=date(2026, 11, 25), at=next_day)) is not None


def test_a_value_falling_while_volumes_grow_is_a_flow_not_a_reseed() -> None:
    core = ForeignCore()
    core.on_room(room("FPT", 50_000, 20_000, price=10_000.0))
    flow = core.on_room(room("FPT", 50_100, 20_000, price=9_900.0, at=OPEN + timedelta(seconds=30)))
    assert flow is not None
    assert flow.buy_volume == 100
    assert flow.buy_value == pytest.approx(50_100 * 9_900.0 - 50_000 * 10_000.0)  # negative: derived, re-priced
    assert core.symbols["FPT"].reseeds == 0


def test_speed_and_acceleration_on_a_minute_by_minute_series() -> None:
    """W = 300 s. Cumulative buy volume at minutes 0..7: 0, 600, 1800, 3000, 3600, 4200, 4800, 6000."""
    core = ForeignCore(window_s=300)
    series = [0, 600, 1_800, 3_000, 3_600, 4_200, 4_800, 6_000]
    expected = [  # (speed per minute, acceleration per minute)
        (0.0, 0.0),
        (600 / 1, (600 - 0) / 1),  # window from the first update (minute 0)
        (1_800 / 2, 900 - 600),
        (3_000 / 3, 1_000 - 900),
        (3_600 / 4, 900 - 1_000),
        (4_200 / 5, 840 - 900),  # minute 0 is exactly 300 s back: the full window
        ((4_800 - 600) / 5, 840 - 840),  # from minute 1
        ((6_000 - 1_800) / 5, 840 - 840),  # from minute 2
    ]
    for minute, (cumulative, (speed, acceleration)) in enumerate(zip(series, expected, strict=True)):
        core.on_room(room("FPT", cumulative, 0, at=OPEN + timedelta(minutes=minute)))
        data = core.symbols["FPT"].data
        assert data.buy_speed_per_min == pytest.approx(speed), minute
        assert data.buy_acceleration == pytest.approx(acceleration), minute
        assert (data.sell_speed_per_min, data.sell_acceleration) == (0.0, 0.0)


def test_summary_totals_and_top_five_with_ties() -> None:
    core = ForeignCore()
    nets = {"AAA": 500, "BBB": 300, "CCC": 300, "DDD": 100, "EEE": 50, "FFF": 10, "GGG": -200, "HHH": -200,
            "III": -50, "OUT": 9_000}
    for symbol, net in nets.items():
        core.on_room(room(symbol, 1_000 + max(net, 0), 1_000 + max(-net, 0)))
    basket = [symbol for symbol in nets if symbol != "OUT"]
    summary = core.summary(basket, DAY)
    assert [d.symbol for d in summary.top_buy] == ["AAA", "BBB", "CCC", "DDD", "EEE"]  # ties by symbol
    assert [d.symbol for d in summary.top_sell] == ["GGG", "HHH", "III"]  # only the negative ones
    assert summary.total_net_volume == sum(net for symbol, net in nets.items() if symbol != "OUT")
    assert summary.total_buy_volume == 9 * 1_000 + 500 + 300 + 300 + 100 + 50 + 10
    assert summary.total_net_value == summary.total_buy_value - summary.total_sell_value


def test_empty_summary() -> None:
    summary = ForeignCore().summary(["ACB"], DAY)
    assert (summary.top_buy, summary.top_sell, summary.total_net_value) == ([], [], 0.0)
    assert summary.last_updated.tzinfo is not None


# --- index ---------------------------------------------------------------------------------------------------------


def index(value: float, at: datetime, *, advances: int = 10, declines: int = 5, index_id: str = "VN30",
          day: date = DAY) -> IndexUpdate:
    return IndexUpdate(index_id=index_id, trading_date=day, timestamp=at, value=value, prior_value=1900.0,
                       change=value - 1900.0, ratio_change=(value - 1900.0) / 19, total_volume=1e6,
                       advances=advances, declines=declines, no_changes=15)


def test_index_data_and_advance_ratio() -> None:
    core = IndexCore()
    point = core.on_update(index(1905.5, OPEN))
    assert point is not None
    assert (point.index_id, point.value, point.timestamp) == ("VN30", 1905.5, OPEN)
    data = core.indices["VN30"].data
    assert (data.value, data.prior_value, data.advances, data.declines, data.no_changes) == (1905.5, 1900.0, 10, 5,
                                                                                          15)
    assert data.advance_ratio == pytest.approx(10 / 15)
    core.on_update(index(1901.0, OPEN + timedelta(seconds=5), advances=0, declines=0))
    assert core.indices["VN30"].data.advance_ratio == 0.0  # no breadth: 0, not a division by zero


def test_intraday_keeps_one_point_per_minute_and_ignores_the_past() -> None:
    core = IndexCore()
    for seconds, value in ((0, 1900.0), (20, 1901.0), (59, 1902.0), (60, 1903.0), (150, 1899.0)):
        core.on_update(index(value, OPEN + timedelta(seconds=seconds)))
    assert core.on_update(index(1800.0, OPEN + timedelta(seconds=10))) is None  # older than the latest
    assert core.stale == 1
    series = core.indices["VN30"].data.intraday
    assert [(p.timestamp - OPEN, p.value) for p in series] == [
        (timedelta(0), 1902.0), (timedelta(minutes=1), 1903.0), (timedelta(minutes=2), 1899.0)]


def test_a_new_day_starts_a_new_series() -> None:
    core = IndexCore()
    core.on_update(index(1900.0, OPEN))
    tomorrow = OPEN + timedelta(days=1)
    core.on_update(index(1910.0, tomorrow, day=date(2026, 11, 25)))
    series = core.indices["VN30"].data.intraday
    assert [(p.timestamp, p.value) for p in series] == [(tomorrow, 1910.0)]


# --- derivatives ---------------------------------------------------------------------------------------------------


def fut(symbol: str, price: float, total: int, at: datetime, *, day: date = DAY, volume: int = 1) -> Trade:
    return Trade(symbol=symbol, exchange="DERIVATIVES", trading_date=day, timestamp=at, price=price, volume=volume,
                 total_volume=total, ref_price=1900.0, session="LO", side=TradeType.MUA_CHU_DONG)


def test_basis_when_the_index_moves_after_the_trade_and_before() -> None:
    core = DerivativesCore()
    core.on_trade(fut("VN30F2612", 1905.0, 1, OPEN))  # no spot yet: no basis
    assert core.data("VN30F2612").basis is None
    assert core.on_index(index(1901.5, OPEN + timedelta(seconds=1))) == (["VN30F2612"], [])
    data = core.data("VN30F2612")
    assert (data.spot_value, data.basis, data.is_premium) == (1901.5, pytest.approx(3.5), True)
    assert data.basis_pct == pytest.approx(3.5 / 1901.5 * 100)
    core.on_trade(fut("VN30F2612", 1899.0, 2, OPEN + timedelta(seconds=2)))  # the index first, then the trade
    data = core.data("VN30F2612")
    assert (data.basis, data.is_premium) == (pytest.approx(-2.5), False)
    assert (data.last_price, data.change, data.volume) == (1899.0, pytest.approx(-1.0), 2)


def test_basis_and_change_are_in_hundredths_of_a_point_without_float_noise() -> None:
    core = DerivativesCore()
    core.on_index(index(1880.32, OPEN))
    core.on_trade(fut("VN30F2612", 1884.3, 1, OPEN + timedelta(seconds=1)))
    assert (1884.3 - 1880.32, 1884.3 - 1900.0) != (3.98, -15.7)  # what bare subtractions give
    assert (core.data("VN30F2612").basis, core.data("VN30F2612").change) == (3.98, -15.7)
    _, released = core.on_trade(fut("VN30F2612", 1884.4, 2, OPEN + timedelta(seconds=2)))
    assert released is not None
    assert released.basis == 3.98


def test_one_basis_point_per_second_the_latest_wins() -> None:
    core = DerivativesCore()
    core.on_index(index(1900.0, OPEN))
    _, released = core.on_trade(fut("VN30F2612", 1901.0, 1, OPEN))
    assert released is None
    _, released = core.on_trade(fut("VN30F2612", 1902.0, 2, OPEN.replace(microsecond=500)))
    assert released is None  # same second: replaces the held one
    _, released = core.on_trade(fut("VN30F2612", 1903.0, 3, OPEN + timedelta(seconds=1)))
    assert released is not None
    assert (released.timestamp, released.basis) == (OPEN.replace(microsecond=500), pytest.approx(2.0))
    (held,) = core.held_points()
    assert held.basis == pytest.approx(3.0)
    core.forget(held)
    assert core.held_points() == []


@pytest.mark.parametrize(
    ("today", "active"),
    [(date(2026, 11, 18), "VN30F2611"), (date(2026, 11, 19), "VN30F2611"), (date(2026, 11, 20), "VN30F2612")],
)
def test_front_month_on_before_and_after_the_expiry_day(today: date, active: str) -> None:
    core = DerivativesCore()
    at = datetime(today.year, today.month, today.day, 10, tzinfo=EXCHANGE_TZ)
    for total, symbol in enumerate(("VN30F2611", "VN30F2612", "VN30F2703"), start=1):
        core.on_trade(fut(symbol, 1900.0, total, at, day=today))
    assert core.active_contract(today) == active
    assert core.data(active).is_active
    assert sum(core.data(s).is_active for s in ("VN30F2611", "VN30F2612", "VN30F2703")) == 1


def test_post_krx_codes_take_their_expiry_from_reference_data() -> None:
    expiries = {"41I1G3000": date(2026, 12, 17), "41I1G1000": date(2027, 1, 21)}
    core = DerivativesCore(expiry_of=lambda symbol, _: expiries.get(symbol))
    at = datetime(2026, 11, 24, 10, tzinfo=EXCHANGE_TZ)
    core.on_trade(fut("41I1G1000", 1905.0, 1, at))
    core.on_trade(fut("41I1G3000", 1903.0, 1, at))
    assert core.active_contract(DAY) == "41I1G3000"


def test_after_a_roll_only_the_new_front_month_says_it_is_active() -> None:
    core = DerivativesCore()
    expiry_day = datetime(2026, 11, 19, 10, tzinfo=EXCHANGE_TZ)
    core.on_trade(fut("VN30F2611", 1900.0, 1, expiry_day, day=date(2026, 11, 19)))
    assert core.data("VN30F2611").is_active
    core.on_trade(fut("VN30F2612", 1905.0, 1, expiry_day + timedelta(days=1), day=date(2026, 11, 20)))
    assert core.data("VN30F2612").is_active
    assert not core.data("VN30F2611").is_active  # yesterday's front month: not the active one today


@pytest.mark.parametrize(("code", "expected"), [("VN30F1M", date(2026, 12, 17)), ("VN30F2M", date(2027, 1, 21)),
                                               ("VN30F1Q", date(2027, 3, 18)), ("VN30F2Q", date(2027, 6, 17))])
def test_generic_codes_have_the_expiry_of_the_contract_they_stand_for(code: str, expected: date) -> None:
    core = DerivativesCore()
    at = datetime(2026, 11, 24, 10, tzinfo=EXCHANGE_TZ)
    core.on_trade(fut(code, 1905.0, 1, at))
    assert core.expiry_of(code, DAY) == expected
    if code == "VN30F1M":  # the front month, traded under its generic code only: the active contract
        assert core.active_contract(DAY) == "VN30F1M"
        assert core.data("VN30F1M").is_active


def test_the_service_trusts_reference_data_then_aliases_then_the_rule() -> None:
    service = DerivativesService()
    service.aliases = {"41I1G3000": "VN30F2612"}
    service.expiries = {"VN30F2612": date(2026, 12, 16)}  # a holiday on the third Thursday: the exchange knows
    assert service.expiry_of("VN30F2612", DAY) == date(2026, 12, 16)
    assert service.expiry_of("41I1G3000", DAY) == date(2026, 12, 17)  # by its alias, the rule of its contract
    assert service.expiry_of("VN30F1M", DAY) == date(2026, 12, 17)  # generic: the front month on that date
    assert service.expiry_of("VN30F2703", DAY) == date(2027, 3, 18)  # the third-Thursday rule
    assert service.expiry_of("41I1G9999", DAY) is None


def test_a_vn30_move_after_the_last_futures_trade_is_a_basis_point() -> None:
    core = DerivativesCore()
    core.on_index(index(1900.0, OPEN))
    core.on_trade(fut("VN30F2612", 1905.0, 1, OPEN))
    moved, released = core.on_index(index(1902.5, OPEN + timedelta(seconds=5)))  # no trade since
    assert moved == ["VN30F2612"]
    assert [(p.timestamp, p.basis) for p in released] == [(OPEN, 5.0)]  # the trade's second, completed
    (held,) = core.held_points()
    assert (held.timestamp, held.basis) == (OPEN + timedelta(seconds=5), 2.5)
    assert held.basis == core.data("VN30F2612").basis  # the trend ends where the snapshot is
    _, released = core.on_index(index(1903.0, OPEN + timedelta(seconds=5, microseconds=500)))
    assert released == []  # the same second: the latest value wins
    assert core.held_points()[0].basis == 2.0


def test_futures_trades_are_classified_against_their_book() -> None:
    core = DerivativesCore()
    core.on_quote(Quote(symbol="VN30F2612", trading_date=DAY, timestamp=OPEN, bids=[PriceLevel(1904.9, 5)],
                        asks=[PriceLevel(1905.0, 3)]))
    trade = fut("VN30F2612", 1905.0, 1, OPEN)
    outcome, _ = core.on_trade(msgspec.structs.replace(trade, side=None))
    assert outcome.classified is not None
    assert outcome.classified.trade_type is TradeType.MUA_CHU_DONG
    assert core.data("VN30F2612").bid_price == 1904.9


# --- the recorded day ----------------------------------------------------------------------------------------------


def test_recorded_day_foreign_index_and_derivatives() -> None:
    expected = expected_day()
    foreign, indices, derivatives, points = track_recorded(REPLAY_DAY)

    for symbol, figures in expected["foreign"]["stocks"].items():
        data = foreign.symbols[symbol].data
        for field, value in figures.items():
            assert getattr(data, field) == (value if field == "symbol" else pytest.approx(value, abs=0.5))
    summary = foreign.summary(expected["vn30_basket"], DAY)
    want = expected["foreign"]["summary"]
    assert [d.symbol for d in summary.top_buy] == want["top_buy"]
    assert [d.symbol for d in summary.top_sell] == want["top_sell"]
    for field in ("total_buy_value", "total_sell_value", "total_net_value", "total_buy_volume",
                  "total_sell_volume", "total_net_volume"):
        assert getattr(summary, field) == pytest.approx(want[field], abs=0.5)
    for index_id, figures in expected["indices"].items():
        data = indices.indices[index_id].data
        for field, value in figures.items():
            assert getattr(data, field) == (value if field == "index_id" else pytest.approx(value, abs=1e-6))
    front = expected["derivatives"]
    data = derivatives.data(front["symbol"])
    for field, value in front.items():
        got = getattr(data, field)
        assert got == (value if isinstance(value, str | bool) else pytest.approx(value, abs=1e-6)), field
    assert [round(p.basis, 2) for p in points if p.futures_symbol == front["symbol"]] == \
        [round(b, 2) for b in expected["basis_points"]]
