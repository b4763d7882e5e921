"""The alert rules by hand: for each, a crafted sequence that raises it, one that does not, the dedup window and a
new trading date. Times are the feed's own: nothing here reads the wall clock."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import msgspec
import pytest

from services.alerts.core import AlertParams, AlertsCore, AlertsState
from shared import config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import (
    AlertRule,
    AlertType,
    BasisPoint,
    ClassificationRule,
    ClassifiedTrade,
    ForeignFlow,
    RuleKind,
    Severity,
    TradeType,
)

DAY = date(2026, 11, 24)
NEXT_DAY = date(2026, 11, 25)
OPEN = datetime(2026, 11, 24, 9, 15, tzinfo=EXCHANGE_TZ)
BUY, SELL = TradeType.MUA_CHU_DONG, TradeType.BAN_CHU_DONG
DEFAULTS = AlertParams.of(config.load({}))


def params(**changed: float) -> AlertParams:
    """The default parameters (the settings'), with some changed."""
    return msgspec.structs.replace(DEFAULTS, **changed)


class Feed:
    """Trades of one symbol in order, each `step` seconds after the last, with the day's cumulative volume."""

    def __init__(self, core: AlertsCore, symbol: str = "FPT", *, at: datetime = OPEN, day: date = DAY,
                 ref: float | None = 100_000.0, ceiling: float | None = 107_000.0,
                 floor: float | None = 93_000.0) -> None:
        self.core, self.symbol, self.at, self.day, self.total = core, symbol, at, day, 0
        self.ref, self.ceiling, self.floor = ref, ceiling, floor

    def trade(self, volume: int = 100, price: float = 100_000.0, *, step: float = 10.0,
              side: TradeType = BUY) -> list[AlertType]:
        self.at += timedelta(seconds=step)
        self.total += volume
        classified = ClassifiedTrade(
            symbol=self.symbol, trading_date=self.day, timestamp=self.at, price=price, volume=volume,
            value=price * volume, trade_type=side, rule=ClassificationRule.QUOTE, total_volume=self.total,
            ref_price=self.ref, ceiling=self.ceiling, floor=self.floor)
        self.last = self.core.on_trade(classified)
        return [alert.type for alert in self.last]


# --- volume spike --------------------------------------------------------------------------------------------------


def test_a_trade_far_above_the_recent_mean_is_a_spike() -> None:
    feed = Feed(AlertsCore(params(spike_factor=5, spike_minutes=15, spike_min_trades=20)))
    for _ in range(20):
        assert feed.trade(100) == []
    assert feed.trade(500) == []  # five times the mean is not above it
    assert feed.trade(2_000) == [AlertType.VOLUME_SPIKE]
    (alert,) = feed.last
    assert alert.severity is Severity.CRITICAL  # beyond twice the factor
    assert alert.values["mean_volume"] == pytest.approx(2_500 / 21)
    assert (alert.timestamp, alert.trading_date) == (feed.at, DAY)
    assert "FPT" in alert.message_vi
    assert "FPT" in alert.message_en


def test_too_few_trades_make_no_mean() -> None:
    feed = Feed(AlertsCore(params(spike_min_trades=20)))
    for _ in range(19):
        feed.trade(100)
    assert feed.trade(100_000) == []


def test_the_window_forgets_what_is_older() -> None:
    feed = Feed(AlertsCore(params(spike_factor=5, spike_minutes=15, spike_min_trades=20)))
    for _ in range(20):
        feed.trade(10_000)  # big trades, then a quiet twenty minutes
    for _ in range(40):
        feed.trade(100, step=30)
    assert feed.trade(3_000) == [AlertType.VOLUME_SPIKE]  # the big ones are out of the window's mean


def test_a_spike_raises_once_within_the_dedup_window() -> None:
    feed = Feed(AlertsCore(params(spike_min_trades=20, dedup_minutes=5)))
    for _ in range(20):
        feed.trade(100)
    assert feed.trade(5_000) == [AlertType.VOLUME_SPIKE]
    assert feed.trade(5_000, step=60) == []  # a minute later: the same (rule, symbol)
    for _ in range(40):
        feed.trade(100, step=10)
    assert feed.trade(5_000, step=10) == [AlertType.VOLUME_SPIKE]  # over five minutes on


# --- ceiling and floor ---------------------------------------------------------------------------------------------


def test_reaching_and_leaving_the_ceiling_and_the_floor() -> None:
    feed = Feed(AlertsCore(params(dedup_minutes=0)))
    assert feed.trade(price=106_900) == []
    assert feed.trade(price=107_000) == [AlertType.CEILING_HIT]
    assert feed.trade(price=107_000) == []  # still there
    assert feed.trade(price=106_900) == [AlertType.CEILING_LEFT]
    assert feed.trade(price=93_000) == [AlertType.FLOOR_HIT]
    assert feed.trade(price=107_000) == [AlertType.FLOOR_LEFT, AlertType.CEILING_HIT]
    (_, hit) = feed.last
    assert hit.values == {"price": 107_000, "ceiling": 107_000, "floor": 93_000}


def test_no_limits_sent_no_limit_alerts_and_futures_have_none() -> None:
    core = AlertsCore(DEFAULTS)
    assert Feed(core, ceiling=None, floor=None).trade(price=1e6) == []
    assert Feed(core, "VN30F2612", ceiling=1_900.0, floor=1_700.0).trade(price=1_900.0) == []


# --- foreign acceleration ------------------------------------------------------------------------------------------


def flow(symbol: str, buy: float, sell: float, at: datetime, day: date = DAY) -> ForeignFlow:
    return ForeignFlow(symbol=symbol, trading_date=day, timestamp=at, buy_volume=0, sell_volume=0, buy_value=0.0,
                       sell_value=0.0, cumulative_buy_volume=0, cumulative_sell_volume=0,
                       cumulative_buy_value=buy, cumulative_sell_value=sell)


def test_foreign_net_value_moving_fast_is_an_acceleration() -> None:
    core = AlertsCore(params(foreign_pct=50, foreign_minutes=10, foreign_min_value=5e9, dedup_minutes=0))
    assert core.on_foreign(flow("HPG", 4e9, 0, OPEN)) == []  # below the minimum value
    assert core.on_foreign(flow("HPG", 20e9, 0, OPEN + timedelta(minutes=2))) != []  # 20 bn from nil today
    assert core.on_foreign(flow("HPG", 22e9, 0, OPEN + timedelta(minutes=15))) == []  # +2 bn over 10 minutes
    # 10 minutes before minute 20 the net stood at its minute-2 value: 20 bn; -10 bn is 50 % of it
    (alert,) = core.on_foreign(flow("HPG", 10e9, 0, OPEN + timedelta(minutes=20)))
    assert alert.type is AlertType.FOREIGN_ACCELERATION
    assert alert.values["net_value_before"] == 20e9
    assert alert.values["change"] == -10e9
    assert "bán ròng" in alert.message_vi


def test_a_slow_foreign_build_up_raises_nothing() -> None:
    core = AlertsCore(params(foreign_pct=50, foreign_minutes=10, foreign_min_value=5e9))
    alerts = [core.on_foreign(flow("HPG", 4e9 * n, 0, OPEN + timedelta(minutes=5 * n))) for n in range(1, 20)]
    assert any(alerts[:6])  # 8 bn in 10 minutes while the net is 16 bn or less: fast
    assert not any(alerts[6:])  # the same 8 bn once the net is larger: a slow build-up


# --- basis ---------------------------------------------------------------------------------------------------------


def basis(value: float, at: datetime, day: date = DAY, contract: str = "VN30F2612") -> BasisPoint:
    return BasisPoint(trading_date=day, timestamp=at, futures_symbol=contract, futures_price=1_900.0 + value,
                      spot_value=1_900.0, basis=value, basis_pct=value / 19, is_premium=value > 0)


def test_the_basis_turning_and_moving() -> None:
    core = AlertsCore(params(basis_points=3.0, basis_minutes=5, dedup_minutes=0))
    assert core.on_basis(basis(1.0, OPEN)) == []
    assert core.on_basis(basis(0.0, OPEN + timedelta(minutes=1))) == []  # nil is no side
    (flip,) = core.on_basis(basis(-0.5, OPEN + timedelta(minutes=2)))
    assert flip.type is AlertType.BASIS_FLIP
    assert "discount" in flip.message_en
    assert core.on_basis(basis(-2.0, OPEN + timedelta(minutes=4))) == []  # 3 points from 1.0, within 5 minutes
    (move,) = core.on_basis(basis(-3.5, OPEN + timedelta(minutes=6)))  # as it stood 5 minutes before: 0.0
    assert move.type is AlertType.BASIS_MOVE
    assert move.values == {"basis": -3.5, "basis_before": 0.0, "move": -3.5}
    assert core.on_basis(basis(-1.0, OPEN + timedelta(minutes=30))) == []  # half an hour of nothing in between


def test_only_the_active_contract_is_watched() -> None:
    """VN30F2612 is the front month on 2026-11-24 (it expires on 17 December), and VN30F1M stands for it; a later
    month's basis and flow raise nothing. After the December expiry, VN30F2701 is the active one."""
    core = AlertsCore(params(basis_points=3.0, basis_minutes=5, dedup_minutes=0, flow_min_volume=100))
    for contract in ("VN30F2703", "VN30F2701"):
        assert core.on_basis(basis(1.0, OPEN, contract=contract)) == []
        assert core.on_basis(basis(-9.0, OPEN + timedelta(minutes=1), contract=contract)) == []
        far = Feed(core, contract, ceiling=None, floor=None)
        assert [far.trade(500, side=BUY) for _ in range(5)] == [[]] * 5
    assert core.on_basis(basis(1.0, OPEN, contract="VN30F1M")) == []
    assert core.on_basis(basis(-9.0, OPEN + timedelta(minutes=1), contract="VN30F1M")) != []
    after_expiry = date(2026, 12, 18)
    rolled = AlertsCore(params(dedup_minutes=0))
    moment = datetime(2026, 12, 18, 9, 15, tzinfo=EXCHANGE_TZ)
    assert rolled.on_basis(basis(1.0, moment, after_expiry, "VN30F2612")) == []
    assert rolled.on_basis(basis(-1.0, moment + timedelta(minutes=1), after_expiry, "VN30F2612")) == []
    assert rolled.on_basis(basis(1.0, moment, after_expiry, "VN30F2701")) == []
    (flip,) = rolled.on_basis(basis(-1.0, moment + timedelta(minutes=1), after_expiry, "VN30F2701"))
    assert flip.type is AlertType.BASIS_FLIP


# --- futures flow --------------------------------------------------------------------------------------------------


def test_active_buying_dominating_a_contract() -> None:
    feed = Feed(AlertsCore(params(flow_ratio=2.5, flow_minutes=5, flow_min_volume=2_400)), "VN30F2612",
                ceiling=None, floor=None, ref=1_900.0)
    for _ in range(9):
        assert feed.trade(200, 1_900.0, side=BUY) == []  # under the minimum volume
        assert feed.trade(50, 1_900.5, side=SELL) == []
    assert AlertType.FUTURES_FLOW in feed.trade(200, 1_901.0, side=BUY)
    alert = next(a for a in feed.last if a.type is AlertType.FUTURES_FLOW)
    assert alert.values == {"buy_volume": 2_000, "sell_volume": 450, "ratio": pytest.approx(2_000 / 450)}


def test_balanced_flow_raises_nothing() -> None:
    feed = Feed(AlertsCore(params(flow_min_volume=2_000)), "VN30F2612", ceiling=None, floor=None)
    for _ in range(30):
        assert AlertType.FUTURES_FLOW not in feed.trade(100, 1_900.0, side=BUY)
        assert AlertType.FUTURES_FLOW not in feed.trade(100, 1_900.0, side=SELL)


def test_buying_speeding_up_while_the_price_stands_still() -> None:
    chosen = params(flow_ratio=100, flow_minutes=4, flow_min_volume=1_000, absorption_factor=2.0,
                    absorption_flat_points=0.5)
    feed = Feed(AlertsCore(chosen), "VN30F2612", ceiling=None, floor=None)
    for _ in range(6):  # two minutes of steady buying at 1,900
        feed.trade(50, 1_900.0, side=BUY, step=20)
        feed.trade(50, 1_900.2, side=SELL, step=0.5)
    raised = [feed.trade(200, 1_900.2, side=BUY, step=20) for _ in range(6)]
    assert [AlertType.FUTURES_ABSORPTION] in raised
    moving = Feed(AlertsCore(chosen), "VN30F2612", ceiling=None, floor=None)
    for n in range(6):
        moving.trade(50, 1_900.0 + n, side=BUY, step=20)
    assert not any(AlertType.FUTURES_ABSORPTION in moving.trade(200, 1_906.0 + n, side=BUY, step=20)
                   for n in range(6))  # the price runs: no absorption


# --- user rules ----------------------------------------------------------------------------------------------------


def test_user_rules_cross_a_level_a_change_and_a_volume() -> None:
    core = AlertsCore(params(dedup_minutes=0))
    core.set_rules([
        AlertRule(id="fpt-above", symbol="FPT", kind=RuleKind.PRICE_ABOVE, value=101_000, severity=Severity.WARNING),
        AlertRule(id="fpt-below", symbol="FPT", kind=RuleKind.PRICE_BELOW, value=99_000),
        AlertRule(id="fpt-change", symbol="FPT", kind=RuleKind.CHANGE_BEYOND, value=3.0),
        AlertRule(id="fpt-volume", symbol="FPT", kind=RuleKind.VOLUME_BEYOND, value=1_000),
        AlertRule(id="hpg-above", symbol="HPG", kind=RuleKind.PRICE_ABOVE, value=1.0),
    ])
    feed = Feed(core)
    assert feed.trade(100, 100_500) == []
    assert feed.trade(100, 101_000) == [AlertType.PRICE_CROSS]
    assert (feed.last[0].rule, feed.last[0].severity) == ("fpt-above", Severity.WARNING)
    assert feed.trade(100, 101_500) == []  # above already: no cross
    assert feed.trade(900, 103_000) == [AlertType.CHANGE_BEYOND, AlertType.VOLUME_BEYOND]  # +3 %, 1,200 shares
    assert feed.trade(100, 103_100) == []  # still beyond: not again
    assert feed.trade(100, 98_500) == [AlertType.PRICE_CROSS]
    assert feed.last[0].rule == "fpt-below"


# --- days and checkpoints ------------------------------------------------------------------------------------------


def test_a_new_trading_date_starts_afresh_and_an_older_one_is_ignored() -> None:
    core = AlertsCore(params(dedup_minutes=60))
    feed = Feed(core)
    assert feed.trade(price=107_000) == [AlertType.CEILING_HIT]
    tomorrow = Feed(core, day=NEXT_DAY, at=OPEN + timedelta(days=1))
    assert tomorrow.trade(price=107_000) == [AlertType.CEILING_HIT]  # a new day: its own state and dedup
    feed.total = 10**6
    assert feed.trade(price=93_000) == []  # yesterday's trade, late: ignored
    assert core.state.trades["FPT"].trading_date == NEXT_DAY


def test_a_repeated_trade_raises_nothing_again() -> None:
    core = AlertsCore(params(dedup_minutes=0))
    feed = Feed(core)
    assert feed.trade(price=107_000) == [AlertType.CEILING_HIT]
    feed.total -= 100
    feed.at -= timedelta(seconds=10)
    assert feed.trade(price=107_000) == []  # the same TotalVol: read again after a reconnect


def test_the_state_survives_a_checkpoint_exactly() -> None:
    chosen = params(spike_min_trades=20)
    core = AlertsCore(chosen)
    feed = Feed(core)
    for _ in range(20):
        feed.trade(100)
    restored = AlertsCore(chosen, msgspec.json.decode(msgspec.json.encode(core.state), type=AlertsState))
    feed.core = restored
    assert feed.trade(5_000) == [AlertType.VOLUME_SPIKE]  # the window came through the checkpoint


def test_a_symbols_trades_and_foreign_flows_interleaved_any_way_raise_the_same_alerts() -> None:
    """Trades come from the classifier and foreign flows from the foreign tracker: on DERIVED they interleave as
    those ran. A foreign flow of a later minute read before the trades of an earlier one must not change the trades'
    windows (nor a trade the flows'), or a replay would raise other alerts than the live day."""
    chosen = params(spike_factor=5, spike_minutes=15, spike_min_trades=20, foreign_min_value=5e9, dedup_minutes=0)
    start = OPEN + timedelta(seconds=10)
    # 25 trades over the first 10 minutes, then a large one at minute 20: by then the 15-minute window holds too few
    # trades for a mean (no spike), unless the early trades were counted in a later minute than their own
    trades = [ClassifiedTrade(symbol="FPT", trading_date=DAY, timestamp=start + timedelta(seconds=24 * n),
                              price=100_000.0, volume=100, value=1e7, trade_type=BUY, rule=ClassificationRule.QUOTE,
                              total_volume=100 * (n + 1)) for n in range(25)]
    trades.append(msgspec.structs.replace(trades[-1], timestamp=start + timedelta(minutes=20), volume=5_000,
                                          total_volume=7_500))
    flows = [flow("FPT", 3e9 * n, 0, start + timedelta(minutes=n)) for n in range(16)]

    def raised(order: list[ClassifiedTrade | ForeignFlow]) -> list[tuple[AlertType, datetime]]:
        core = AlertsCore(chosen)
        alerts = [alert for event in order for alert in (
            core.on_trade(event) if isinstance(event, ClassifiedTrade) else core.on_foreign(event))]
        return sorted((alert.type, alert.timestamp) for alert in alerts)

    trades_first = raised([*trades, *flows])
    assert {kind for kind, _ in trades_first} == {AlertType.FOREIGN_ACCELERATION}
    assert raised([*flows, *trades]) == trades_first
    assert raised([event for pair in zip(flows, trades, strict=False) for event in pair] + trades[16:]) == trades_first
