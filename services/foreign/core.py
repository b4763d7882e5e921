"""The foreign tracker's pure core: foreign investors' cumulative buy/sell per symbol (SSI channel R) into flows,
speed and acceleration, and the VN30 summary. No I/O.

SSI sends cumulative figures since the open, which start again from zero every trading day. Per symbol and date:
- the day's first update is a flow from zero, whole: a symbol's first foreign trades of the day are flows like any
  other. Only a core that began within that very day (a tracker started mid-day without a checkpoint: `first_day`)
  takes the first update of each symbol as a baseline instead, since it holds a morning it did not see flow (it
  says so: `baselines` counts them);
- each later update yields a flow event: the difference to the previous one (only when something changed);
- a cumulative volume that goes backwards (a feed reset, a reconnect) re-seeds the baseline instead of producing a
  negative flow. Values alone may fall while volumes grow (HOSE derives them, volume × price): that is a flow, its
  value delta negative.

Speed and acceleration, over exchange time (W = FOREIGN_SPEED_WINDOW_S):
    speed(t) = (V(t) - V(t0)) / ((t - t0) / 60)      volume per minute
where V is the cumulative buy (or sell) volume and t0 the time of the latest update at or before t - W; when no
update is that old yet, t0 is the first update of the day (the window is shorter); 0 while t = t0.
    acceleration(t) = (speed(t) - speed(t1)) / ((t - t1) / 60)      speed change per minute
where t1 is the time of the latest update at or before t - 60 s (0 while there is none).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import msgspec

from shared.market import exchange_datetime
from shared.messages.domain import ForeignFlow, ForeignInvestorData, ForeignRoom, ForeignSummary

TOP_N = 5
ACCELERATION_SPAN_S = 60.0


class Sample(msgspec.Struct, array_like=True):
    at: datetime
    buy_volume: int
    sell_volume: int
    buy_speed: float
    sell_speed: float


class SymbolForeign(msgspec.Struct, kw_only=True):
    symbol: str
    trading_date: date
    last: ForeignRoom
    data: ForeignInvestorData
    samples: list[Sample] = msgspec.field(default_factory=list)
    reseeds: int = 0


def investor_data(room: ForeignRoom, buy_speed: float, sell_speed: float, buy_acceleration: float,
                  sell_acceleration: float) -> ForeignInvestorData:
    return ForeignInvestorData(
        symbol=room.symbol, trading_date=room.trading_date,
        buy_volume=room.buy_volume, sell_volume=room.sell_volume, net_volume=room.buy_volume - room.sell_volume,
        buy_value=room.buy_value, sell_value=room.sell_value, net_value=room.buy_value - room.sell_value,
        total_room=room.total_room, current_room=room.current_room,
        buy_speed_per_min=buy_speed, sell_speed_per_min=sell_speed,
        buy_acceleration=buy_acceleration, sell_acceleration=sell_acceleration,
        last_updated=room.timestamp,
    )


def _went_backwards(previous: ForeignRoom, room: ForeignRoom) -> bool:
    return room.buy_volume < previous.buy_volume or room.sell_volume < previous.sell_volume


def _opening(room: ForeignRoom) -> ForeignRoom:
    """The figures a day starts from: zero (at the update's own time, so no window spans the night)."""
    return msgspec.structs.replace(room, buy_volume=0, sell_volume=0, buy_value=0.0, sell_value=0.0)


def _latest_at_or_before(samples: list[Sample], moment: datetime) -> Sample | None:
    found = None
    for sample in samples:
        if sample.at > moment:
            break
        found = sample
    return found


class ForeignCore:
    def __init__(self, symbols: dict[str, SymbolForeign] | None = None, *, window_s: float = 300.0,
                 first_day: date | None = None) -> None:
        self.symbols: dict[str, SymbolForeign] = symbols or {}
        self.window_s = window_s
        self.first_day = first_day  # the trading date this core began in (None: it has seen nothing yet)
        self.stale = 0
        self.baselines = 0

    def on_room(self, room: ForeignRoom) -> ForeignFlow | None:
        """Take one update; returns the flow it represents, if any."""
        state = self.symbols.get(room.symbol)
        if state is not None and room.trading_date < state.trading_date:
            self.stale += 1
            return None
        if self.first_day is None:
            self.first_day = room.trading_date
        if state is None or room.trading_date != state.trading_date:
            if room.trading_date == self.first_day:  # begun within this day: the morning so far is not a flow
                self.symbols[room.symbol] = self._baseline(room)
                self.baselines += 1
                return None
            state = self.symbols[room.symbol] = self._baseline(_opening(room))
        previous = state.last
        if room.timestamp < previous.timestamp:
            self.stale += 1
            return None
        if _went_backwards(previous, room):
            state.reseeds += 1
            state.samples.clear()
            self._update(state, room)
            return None
        self._update(state, room)
        if (room.buy_volume, room.sell_volume, room.buy_value, room.sell_value) == (
                previous.buy_volume, previous.sell_volume, previous.buy_value, previous.sell_value):
            return None
        return ForeignFlow(
            symbol=room.symbol, trading_date=room.trading_date, timestamp=room.timestamp,
            buy_volume=room.buy_volume - previous.buy_volume, sell_volume=room.sell_volume - previous.sell_volume,
            buy_value=room.buy_value - previous.buy_value, sell_value=room.sell_value - previous.sell_value,
            cumulative_buy_volume=room.buy_volume, cumulative_sell_volume=room.sell_volume,
            cumulative_buy_value=room.buy_value, cumulative_sell_value=room.sell_value,
        )

    def _baseline(self, room: ForeignRoom) -> SymbolForeign:
        state = SymbolForeign(symbol=room.symbol, trading_date=room.trading_date, last=room,
                              data=investor_data(room, 0.0, 0.0, 0.0, 0.0))
        state.samples.append(Sample(room.timestamp, room.buy_volume, room.sell_volume, 0.0, 0.0))
        return state

    def _update(self, state: SymbolForeign, room: ForeignRoom) -> None:
        samples = state.samples
        now = room.timestamp
        if not samples:
            samples.append(Sample(now, room.buy_volume, room.sell_volume, 0.0, 0.0))
        start = _latest_at_or_before(samples, now - timedelta(seconds=self.window_s)) or samples[0]
        elapsed_min = (now - start.at).total_seconds() / 60
        buy_speed = (room.buy_volume - start.buy_volume) / elapsed_min if elapsed_min > 0 else 0.0
        sell_speed = (room.sell_volume - start.sell_volume) / elapsed_min if elapsed_min > 0 else 0.0
        earlier = _latest_at_or_before(samples, now - timedelta(seconds=ACCELERATION_SPAN_S))
        if earlier is not None and now > earlier.at:
            span_min = (now - earlier.at).total_seconds() / 60
            buy_acceleration = (buy_speed - earlier.buy_speed) / span_min
            sell_acceleration = (sell_speed - earlier.sell_speed) / span_min
        else:
            buy_acceleration = sell_acceleration = 0.0
        if samples[-1].at == now:
            samples[-1] = Sample(now, room.buy_volume, room.sell_volume, buy_speed, sell_speed)
        else:
            samples.append(Sample(now, room.buy_volume, room.sell_volume, buy_speed, sell_speed))
        horizon = now - timedelta(seconds=self.window_s + ACCELERATION_SPAN_S)
        while len(samples) > 2 and samples[1].at <= horizon:
            samples.pop(0)  # keep one sample at or before the horizon: the window's start
        state.last = room
        state.data = investor_data(room, buy_speed, sell_speed, buy_acceleration, sell_acceleration)

    def summary(self, basket: list[str], trading_date: date) -> ForeignSummary:
        """Totals over the basket's symbols seen on `trading_date`; top buyers (net value > 0, highest first) and
        sellers (< 0, lowest first), ties by symbol."""
        members = [state.data for symbol in basket
                   if (state := self.symbols.get(symbol)) is not None and state.trading_date == trading_date]
        buyers = sorted((d for d in members if d.net_value > 0), key=lambda d: (-d.net_value, d.symbol))
        sellers = sorted((d for d in members if d.net_value < 0), key=lambda d: (d.net_value, d.symbol))
        buy_value = sum(d.buy_value for d in members)
        sell_value = sum(d.sell_value for d in members)
        buy_volume = sum(d.buy_volume for d in members)
        sell_volume = sum(d.sell_volume for d in members)
        updated = max((d.last_updated for d in members), default=exchange_datetime(trading_date, time(0)))
        return ForeignSummary(
            trading_date=trading_date, total_buy_value=buy_value, total_sell_value=sell_value,
            total_net_value=buy_value - sell_value, total_buy_volume=buy_volume, total_sell_volume=sell_volume,
            total_net_volume=buy_volume - sell_volume, top_buy=buyers[:TOP_N], top_sell=sellers[:TOP_N],
            last_updated=updated,
        )

    def latest_date(self) -> date | None:
        return max((state.trading_date for state in self.symbols.values()), default=None)
