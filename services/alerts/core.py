"""The alert rules: a pure core fed DERIVED events (classified trades, foreign flows, basis points) in stream order,
returning the alerts they raise. Every window is counted on the feed's own clock (each event's exchange timestamp),
in whole minutes, so the same day replayed raises the same alerts, whatever the wall clock says.

Windows are kept per minute (a bucket a minute: counts, sums, the last value), so a checkpoint of a whole market's
state stays small; "the last W minutes" of an event in minute m are the buckets of minutes m-W .. m-1 and what came
before it in minute m.

Each input (trades, foreign flows, basis points) keeps its own state per symbol (AlertsState says why). A (rule,
symbol) raises at most once per `dedup_minutes`; a symbol's first event of an input on a later trading date starts
that input's windows, limit state and dedup afresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from functools import lru_cache

import msgspec

from shared.config import Settings
from shared.market import front_month, is_vn30_future, resolve_contract_alias
from shared.messages.domain import (
    Alert,
    AlertRule,
    AlertType,
    BasisPoint,
    ClassifiedTrade,
    ForeignFlow,
    RuleKind,
    Severity,
    TradeType,
)


class AlertParams(msgspec.Struct, frozen=True, kw_only=True):
    """The built-in rules' parameters: the settings ALERT_* (their defaults and meanings: shared/config.py)."""

    spike_factor: float
    spike_minutes: int
    spike_min_trades: int
    foreign_pct: float
    foreign_minutes: int
    foreign_min_value: float
    basis_points: float
    basis_minutes: int
    flow_ratio: float
    flow_minutes: int
    flow_min_volume: int
    absorption_factor: float
    absorption_flat_points: float
    dedup_minutes: int

    @classmethod
    def of(cls, settings: Settings) -> AlertParams:
        return cls(**{field: getattr(settings, f"alert_{field}") for field in cls.__struct_fields__})


class _Minute(msgspec.Struct, array_like=True, gc=False):
    """One minute of one symbol's inputs."""

    minute: int  # minutes since the epoch, exchange time
    trades: int = 0
    volume: int = 0
    buy_volume: int = 0
    sell_volume: int = 0
    high: float = 0.0
    low: float = 0.0
    foreign_net: float | None = None  # the last cumulative foreign net value of the minute
    basis: float | None = None  # the last basis of the minute


class SymbolState(msgspec.Struct, gc=False):
    trading_date: date
    minutes: list[_Minute] = msgspec.field(default_factory=list)  # oldest first, the last kept window's worth
    at_limit: str | None = None  # "ceiling" | "floor": where its last trade stood
    last_price: float | None = None
    last_total: int = 0
    basis_sign: int = 0
    raised: dict[str, float] = msgspec.field(default_factory=dict)  # rule -> when it last raised (POSIX seconds)


class AlertsState(msgspec.Struct):
    """Each input's own per-symbol state. Kept apart because the inputs come from different trackers: a symbol's
    trades (the classifier) and its foreign flows (the foreign tracker) interleave on DERIVED in whatever order those
    trackers ran, which differs from run to run; each one's own sequence does not. A rule reads one input only, so
    each input's windows, day and dedup depend on that input's order alone and a replay raises the same alerts."""

    trades: dict[str, SymbolState] = msgspec.field(default_factory=dict)
    foreign: dict[str, SymbolState] = msgspec.field(default_factory=dict)
    basis: dict[str, SymbolState] = msgspec.field(default_factory=dict)


# (limit, what the trade did) -> the alert: its type, severity and message (Vietnamese, English) before the price
_LIMIT_ALERTS = {
    ("ceiling", "hit"): (AlertType.CEILING_HIT, Severity.WARNING, "chạm giá trần", "at its ceiling,"),
    ("ceiling", "left"): (AlertType.CEILING_LEFT, Severity.INFO, "rời giá trần,", "off its ceiling,"),
    ("floor", "hit"): (AlertType.FLOOR_HIT, Severity.WARNING, "chạm giá sàn", "at its floor,"),
    ("floor", "left"): (AlertType.FLOOR_LEFT, Severity.INFO, "rời giá sàn,", "off its floor,"),
}


@lru_cache(maxsize=1024)
def is_active_contract(symbol: str, trading_date: date) -> bool:
    """Whether a futures code is the active (front-month) VN30F contract on `trading_date`: the nearest one not
    expired by the third-Thursday rule, from the calendar alone, so a replay decides as the live day did. The basis
    and futures-flow rules watch that contract only."""
    return resolve_contract_alias(symbol, trading_date) == front_month(trading_date)


def _minute_of(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def _fmt(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


class AlertsCore:
    def __init__(self, params: AlertParams, state: AlertsState | None = None) -> None:
        self.params = params
        self.state = state or AlertsState()
        self.rules: dict[str, list[AlertRule]] = {}  # user rules, by symbol
        self._keep = max(self.params.spike_minutes, self.params.foreign_minutes, self.params.basis_minutes,
                         self.params.flow_minutes) + 1

    def set_rules(self, rules: Iterable[AlertRule]) -> None:
        self.rules = {}
        for rule in rules:
            self.rules.setdefault(rule.symbol, []).append(rule)

    # --- inputs ------------------------------------------------------------------------------------------------------

    def on_trade(self, trade: ClassifiedTrade) -> list[Alert]:
        state = self._symbol(self.state.trades, trade.symbol, trade.trading_date)
        if state is None or trade.total_volume <= state.last_total:
            return []  # an earlier day's, or a repeat
        now = _minute_of(trade.timestamp)
        alerts = [*self._volume_spike(trade, state, now), *self._limits(trade, state),
                  *self._user_rules(trade, state)]
        if is_vn30_future(trade.symbol) and is_active_contract(trade.symbol, trade.trading_date):
            alerts += self._futures_flow(trade, state, now)
        bucket = self._bucket(state, now)
        bucket.trades += 1
        bucket.volume += trade.volume
        if trade.trade_type is TradeType.MUA_CHU_DONG:
            bucket.buy_volume += trade.volume
        elif trade.trade_type is TradeType.BAN_CHU_DONG:
            bucket.sell_volume += trade.volume
        bucket.high = max(bucket.high, trade.price) if bucket.trades > 1 else trade.price
        bucket.low = min(bucket.low, trade.price) if bucket.trades > 1 else trade.price
        state.last_price, state.last_total = trade.price, trade.total_volume
        return alerts

    def on_foreign(self, flow: ForeignFlow) -> list[Alert]:
        state = self._symbol(self.state.foreign, flow.symbol, flow.trading_date)
        if state is None:
            return []
        now = _minute_of(flow.timestamp)
        net = flow.cumulative_buy_value - flow.cumulative_sell_value
        p = self.params
        # the net value W minutes ago; none recorded yet today: the day's start, when it was nil
        then = self._last_before(state, now - p.foreign_minutes + 1, "foreign_net") or 0.0
        change = net - then
        size = max(abs(then), p.foreign_min_value)
        alerts = []
        if abs(change) >= p.foreign_min_value and abs(change) * 100 >= p.foreign_pct * size:
            side_vi, side_en = ("mua ròng", "net buying") if change > 0 else ("bán ròng", "net selling")
            alerts = self._raise(
                state, AlertType.FOREIGN_ACCELERATION, Severity.WARNING, flow.symbol, flow.trading_date,
                flow.timestamp, {"net_value": net, "net_value_before": then, "change": change,
                                 "change_pct": change * 100 / size},
                f"{flow.symbol}: khối ngoại tăng tốc {side_vi}, {_fmt(change / 1e9)} tỷ trong "
                f"{p.foreign_minutes} phút",
                f"{flow.symbol}: foreign {side_en} accelerating, {_fmt(change / 1e9)} bn VND in "
                f"{p.foreign_minutes} min")
        self._bucket(state, now).foreign_net = net
        return alerts

    def on_basis(self, point: BasisPoint) -> list[Alert]:
        symbol = point.futures_symbol
        if not is_active_contract(symbol, point.trading_date):
            return []  # a later month's basis: thinly traded, and not what the market reads
        state = self._symbol(self.state.basis, symbol, point.trading_date)
        if state is None:
            return []
        now = _minute_of(point.timestamp)
        p = self.params
        alerts = []
        sign = (point.basis > 0) - (point.basis < 0)
        if sign and state.basis_sign and sign != state.basis_sign:
            vi, en = ("chuyển sang cộng (premium)", "turns premium") if sign > 0 else (
                "chuyển sang trừ (discount)", "turns discount")
            alerts += self._raise(state, AlertType.BASIS_FLIP, Severity.WARNING, symbol, point.trading_date,
                                  point.timestamp, {"basis": point.basis, "futures_price": point.futures_price,
                                                    "spot_value": point.spot_value},
                                  f"{symbol}: basis {vi}, {_fmt(point.basis)} điểm",
                                  f"{symbol}: basis {en}, {_fmt(point.basis)} points")
        if sign:
            state.basis_sign = sign
        then = self._last_before(state, now - p.basis_minutes + 1, "basis")
        if then is not None and abs(point.basis - then) >= p.basis_points:
            move = point.basis - then
            alerts += self._raise(state, AlertType.BASIS_MOVE, Severity.INFO, symbol, point.trading_date,
                                  point.timestamp, {"basis": point.basis, "basis_before": then, "move": move},
                                  f"{symbol}: basis đổi {_fmt(move)} điểm trong {p.basis_minutes} phút",
                                  f"{symbol}: basis moved {_fmt(move)} points in {p.basis_minutes} min")
        self._bucket(state, now).basis = point.basis
        return alerts

    # --- the rules --------------------------------------------------------------------------------------------------

    def _volume_spike(self, trade: ClassifiedTrade, state: SymbolState, now: int) -> list[Alert]:
        p = self.params
        window = [m for m in state.minutes if m.minute > now - p.spike_minutes]
        trades = sum(m.trades for m in window)
        if trades < p.spike_min_trades:
            return []
        mean = sum(m.volume for m in window) / trades
        if trade.volume <= p.spike_factor * mean:
            return []
        severity = Severity.CRITICAL if trade.volume > 2 * p.spike_factor * mean else Severity.WARNING
        return self._raise(state, AlertType.VOLUME_SPIKE, severity, trade.symbol, trade.trading_date,
                           trade.timestamp, {"volume": trade.volume, "mean_volume": mean,
                                             "ratio": trade.volume / mean, "price": trade.price},
                           f"{trade.symbol}: lệnh {trade.volume:,} cp, gấp {_fmt(trade.volume / mean)} lần "
                           f"trung bình {p.spike_minutes} phút",
                           f"{trade.symbol}: a {trade.volume:,}-share trade, {_fmt(trade.volume / mean)}x the "
                           f"{p.spike_minutes}-min mean")

    def _limits(self, trade: ClassifiedTrade, state: SymbolState) -> list[Alert]:
        ceiling, floor = trade.ceiling, trade.floor
        if is_vn30_future(trade.symbol) or (ceiling is None and floor is None):
            return []
        at = ("ceiling" if ceiling is not None and trade.price >= ceiling else
              "floor" if floor is not None and trade.price <= floor else None)
        before, state.at_limit = state.at_limit, at
        if at == before:
            return []
        values = {"price": trade.price, **({"ceiling": ceiling} if ceiling is not None else {}),
                  **({"floor": floor} if floor is not None else {})}
        alerts = []
        for limit, event in ((before, "left"), (at, "hit")):  # off one limit first, then onto the other
            if limit is not None:
                kind, severity, vi, en = _LIMIT_ALERTS[limit, event]
                alerts += self._raise(state, kind, severity, trade.symbol, trade.trading_date, trade.timestamp,
                                      values, f"{trade.symbol}: {vi} {_fmt(trade.price)}",
                                      f"{trade.symbol}: {en} {_fmt(trade.price)}")
        return alerts

    def _futures_flow(self, trade: ClassifiedTrade, state: SymbolState, now: int) -> list[Alert]:
        p = self.params
        window = [m for m in state.minutes if m.minute > now - p.flow_minutes]
        buy = sum(m.buy_volume for m in window) + (trade.volume if trade.trade_type is TradeType.MUA_CHU_DONG else 0)
        sell = sum(m.sell_volume for m in window) + (
            trade.volume if trade.trade_type is TradeType.BAN_CHU_DONG else 0)
        alerts = []
        if buy + sell >= p.flow_min_volume and (buy >= p.flow_ratio * max(sell, 1) or
                                                 sell >= p.flow_ratio * max(buy, 1)):
            buying = buy > sell
            ratio = buy / max(sell, 1) if buying else sell / max(buy, 1)
            side_vi, side_en = ("mua", "buying") if buying else ("bán", "selling")
            alerts += self._raise(state, AlertType.FUTURES_FLOW, Severity.WARNING, trade.symbol, trade.trading_date,
                                  trade.timestamp, {"buy_volume": buy, "sell_volume": sell, "ratio": ratio},
                                  f"{trade.symbol}: dòng {side_vi} chủ động áp đảo, {_fmt(ratio)} lần trong "
                                  f"{p.flow_minutes} phút",
                                  f"{trade.symbol}: active {side_en} dominates, {_fmt(ratio)}x over "
                                  f"{p.flow_minutes} min")
        half = p.flow_minutes / 2
        earlier = sum(m.buy_volume for m in window if m.minute < now - half)
        later = buy - earlier
        prices = [price for m in window if m.trades for price in (m.high, m.low)] + [trade.price]
        if (earlier > 0 and later >= p.absorption_factor * earlier and later + earlier >= p.flow_min_volume
                and max(prices) - min(prices) <= p.absorption_flat_points):
            alerts += self._raise(state, AlertType.FUTURES_ABSORPTION, Severity.INFO, trade.symbol,
                                  trade.trading_date, trade.timestamp,
                                  {"buy_volume_before": earlier, "buy_volume_after": later,
                                   "price_range": max(prices) - min(prices), "price": trade.price},
                                  f"{trade.symbol}: mua chủ động tăng tốc ({_fmt(later / earlier)} lần) nhưng giá "
                                  f"đứng yên quanh {_fmt(trade.price)}",
                                  f"{trade.symbol}: active buying speeds up ({_fmt(later / earlier)}x) while the "
                                  f"price stands still near {_fmt(trade.price)}")
        return alerts

    def _user_rules(self, trade: ClassifiedTrade, state: SymbolState) -> list[Alert]:
        alerts = []
        before = state.last_price
        for rule in self.rules.get(trade.symbol, ()):
            value = rule.value
            if rule.kind is RuleKind.PRICE_ABOVE:
                hit = before is not None and before < value <= trade.price
                kind, vi, en = AlertType.PRICE_CROSS, f"vượt lên {_fmt(value)}", f"crosses above {_fmt(value)}"
            elif rule.kind is RuleKind.PRICE_BELOW:
                hit = before is not None and before > value >= trade.price
                kind, vi, en = AlertType.PRICE_CROSS, f"xuống dưới {_fmt(value)}", f"crosses below {_fmt(value)}"
            elif rule.kind is RuleKind.CHANGE_BEYOND:
                ref = trade.ref_price
                change = (trade.price - ref) * 100 / ref if ref else 0.0
                was = (before - ref) * 100 / ref if ref and before is not None else 0.0
                hit = abs(change) >= value > abs(was)
                kind, vi, en = (AlertType.CHANGE_BEYOND, f"thay đổi {_fmt(change)}% so với tham chiếu",
                                f"changes {_fmt(change)}% from the reference")
            else:
                hit = state.last_total < value <= trade.total_volume
                kind, vi, en = (AlertType.VOLUME_BEYOND, f"khối lượng vượt {_fmt(value)}",
                                f"volume passes {_fmt(value)}")
            if hit:
                alerts += self._raise(state, kind, rule.severity, trade.symbol, trade.trading_date, trade.timestamp,
                                      {"price": trade.price, "total_volume": trade.total_volume, "level": value},
                                      f"{trade.symbol}: {vi} ({_fmt(trade.price)})",
                                      f"{trade.symbol}: {en} ({_fmt(trade.price)})", rule=rule.id)
        return alerts

    # --- state ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _symbol(states: dict[str, SymbolState], symbol: str, trading_date: date) -> SymbolState | None:
        """The symbol's state of one input for the day (a later day starts afresh); None for an earlier day's
        event."""
        state = states.get(symbol)
        if state is None or trading_date > state.trading_date:
            state = states[symbol] = SymbolState(trading_date)
        elif trading_date < state.trading_date:
            return None
        return state

    def _bucket(self, state: SymbolState, minute: int) -> _Minute:
        """The bucket of `minute` (an event of an earlier minute than the last, out of order, joins the last)."""
        if not state.minutes or state.minutes[-1].minute < minute:
            state.minutes.append(_Minute(minute))
            while state.minutes[0].minute < minute - self._keep:
                gone, oldest = state.minutes.pop(0), state.minutes[0]
                # what stood at the oldest kept minute: the values carried over from the minutes dropped
                oldest.foreign_net = gone.foreign_net if oldest.foreign_net is None else oldest.foreign_net
                oldest.basis = gone.basis if oldest.basis is None else oldest.basis
        return state.minutes[-1]

    @staticmethod
    def _last_before(state: SymbolState, minute: int, field: str) -> float | None:
        """The last `field` recorded in a minute before `minute` (None: none today)."""
        for bucket in reversed(state.minutes):
            if bucket.minute < minute and getattr(bucket, field) is not None:
                return getattr(bucket, field)  # type: ignore[no-any-return]
        return None

    def _raise(self, state: SymbolState, kind: AlertType, severity: Severity, symbol: str, trading_date: date,
               moment: datetime, values: dict[str, float], message_vi: str, message_en: str,
               rule: str | None = None) -> list[Alert]:
        name = rule or str(kind)
        at = moment.timestamp()
        last = state.raised.get(name)
        if last is not None and at - last < self.params.dedup_minutes * 60:
            return []
        state.raised[name] = at
        return [Alert(type=kind, severity=severity, symbol=symbol, trading_date=trading_date, timestamp=moment,
                      rule=name, values=values, message_vi=message_vi, message_en=message_en)]
