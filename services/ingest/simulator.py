"""A deterministic simulated HOSE + VN30F trading day, emitted in SSI FastConnect's exact wire format.

Why: every service must run end to end (ingest -> trackers -> recorder) without SSI credentials, at market speed or
faster, and tests need whole days whose properties are known. Each frame is the bytes of one Broadcast payload,
`{"DataType": ..., "Content": "<JSON string>"}`, built from the very wire Structs the decoder reads
(`shared.messages.ssi`: SSI's field names are written there only) with the units and number formats SSI sends
(docs/ssi.md, "Frames and field names"), so a simulated day takes the same decoding path as the live feed; a field
SSI sends as null is left out (the decoder reads both alike). Market rules (schedule, ticks, limits, contracts) come
from `shared.market`.

The model; all randomness comes from one `random.Random(seed)`, drawn in a fixed order:
- Stocks: fair value `ref * exp(beta * M(t) + e(t))`, M a market-wide Brownian motion (so stocks, indices and futures
  move together) and e a per-stock Brownian motion; two seeded "runners" carry a drift of ln(1.12) over four hours,
  enough to reach the ceiling and the floor. Trades arrive as a Poisson process (U-shaped intraday activity, scaled
  by `intensity`). At each trade the book stands on the HOSE tick grid between floor and ceiling: best bid = highest
  grid price <= fair, best ask one tick above (sometimes two). A fair value at or above the ceiling locks the book
  there with no asks; below the floor, at the floor with no bids. The trade is buyer-initiated (at AskPrice1) with
  probability (fair - bid) / (ask - bid) clipped to [0.15, 0.85], else seller-initiated (at BidPrice1).
- Indices, cap-weighted over fixed seeded share counts s_i:
  `IndexValue = round(PriorIndexValue * sum(s_i * p_i) / sum(s_i * ref_i), 2)`, p_i the last traded price (ref_i
  before the first trade). VN30 is over the simulated stocks of DEFAULT_VN30_BASKET, VNINDEX over all of them.
- Futures: fair = VN30 (unrounded) + basis, the basis an Ornstein-Uhlenbeck process around a seeded mean of a few
  points per contract (10-minute reversion time, 2-point spread); books and trades on the 0.1-point grid within ±7%
  of the contract's reference.
- Foreign room: a seeded share of trades has a foreign buyer or seller for part of the volume. Foreigners never buy
  more than the remaining room nor sell more than they hold, so CurrentRoom = initial room - net foreign buying
  stays within [0, TotalRoom]; one seeded stock starts almost out of room ("het room").
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from itertools import accumulate

import msgspec

from shared.market import (
    BOARD_LOT,
    DEFAULT_VN30_BASKET,
    FUTURES_MULTIPLIER,
    Exchange,
    Phase,
    exchange_datetime,
    listed_contracts,
    phase_at,
    price_limits,
    tick_size,
)
from shared.messages.ssi import BOOK_KEYS, MI, B, F, R, XQuote, XTrade

EXTRA_STOCKS = ("DIG", "DXG", "NVL", "PDR", "VND")  # volatile non-VN30 HOSE names simulated by default

FIRST_SECOND = 8 * 3600 + 45 * 60  # derivatives pre-open: the day's first frame
LAST_SECOND = 15 * 3600
DAY_SECONDS = 6 * 3600  # the span over which daily volatilities are quoted

STOCK_TRADES_PER_SECOND = 0.026  # a typical VN30 stock at average activity, intensity 1: ~350 trades a day
FRONT_TRADES_PER_SECOND = 0.3
NEXT_TRADES_PER_SECOND = 0.03
STOCK_AUCTION_QUOTES = 4 / 900  # per stock per second of an auction
FUTURES_AUCTION_QUOTES = 10 / 900
POST_TRADE_QUOTE = 0.8  # how often a trade is followed by the book it left
WIDE_SPREAD = 0.3  # how often the best ask stands two ticks above the best bid
LIMIT_QUEUE = 10  # the locked side's best level holds this many times a normal level's volume
MI_EVERY = 5
R_EVERY = 30

MARKET_DAILY_SD = 0.012
RUNNER_DRIFT = math.log(1.12) / (4 * 3600)
BASIS_REVERSION = 1 / 600
BASIS_SD = 2.0

VN30_PRIOR = (1880.0, 1920.0)
VNINDEX_PRIOR = (1660.0, 1700.0)

_AUCTIONS = (Phase.ATO, Phase.ATC)
_SESSION_CODES = {
    Phase.ATO: "ATO",
    Phase.CONTINUOUS: "LO",
    Phase.LUNCH: "BREAK",
    Phase.ATC: "ATC",
    Phase.POST_CLOSE: "C",
    Phase.CLOSED: "C",
}
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class SimFrame:
    """One frame of the simulated feed, stamped with the exchange time it carries."""

    at: datetime  # exchange time of the frame (tz-aware, shared.market.EXCHANGE_TZ); equals its TradingDate+Time
    payload: bytes  # the Broadcast payload JSON


def _activity(second: int) -> float:
    """Intraday U shape: busiest after the 09:15 open and before the 14:30 close of continuous trading."""
    opening, closing = 9 * 3600 + 15 * 60, 14 * 3600 + 30 * 60
    return 0.6 + 1.2 * math.exp((opening - second) / 2700) + 0.8 * math.exp((second - closing) / 2700)


# --- random processes ---------------------------------------------------------------------------------------------


class _Walk:
    """A Brownian motion with drift, advanced only when read: exact at any spacing, so a quiet stock costs nothing."""

    def __init__(self, rng: random.Random, drift: float, daily_sd: float) -> None:
        self._rng = rng
        self._drift = drift
        self._sigma = daily_sd / math.sqrt(DAY_SECONDS)
        self._value = 0.0
        self._at = FIRST_SECOND

    def at(self, second: int) -> float:
        elapsed = second - self._at
        if elapsed > 0:
            self._value += self._drift * elapsed + self._sigma * math.sqrt(elapsed) * self._rng.gauss(0.0, 1.0)
            self._at = second
        return self._value


class _Basis:
    """A futures basis in points: Ornstein-Uhlenbeck, so it wanders but keeps returning to its mean."""

    def __init__(self, rng: random.Random, mean: float) -> None:
        self._rng = rng
        self._mean = mean
        self._value = mean + rng.gauss(0.0, BASIS_SD)
        self._at = FIRST_SECOND

    def at(self, second: int) -> float:
        elapsed = second - self._at
        if elapsed > 0:
            keep = math.exp(-BASIS_REVERSION * elapsed)
            noise = BASIS_SD * math.sqrt(1 - keep * keep) * self._rng.gauss(0.0, 1.0)
            self._value = self._mean + (self._value - self._mean) * keep + noise
            self._at = second
        return self._value


class _Arrivals:
    """A Poisson process read second by second. After a pause (lunch, auctions) it restarts instead of catching up."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next = -1.0

    def count(self, second: int, rate: float) -> int:
        if self._next < second:
            self._next = second + self._rng.expovariate(rate)
        events = 0
        while self._next < second + 1:
            events += 1
            self._next += self._rng.expovariate(rate)
        return events


# --- instruments --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Book:
    """Best-first [grid index, volume] levels per side. An empty side means the price limit on that side is reached."""

    bids: list[list[int]]
    asks: list[list[int]]


class _Instrument(ABC):
    """One symbol's price grid, order book and day totals.

    Prices are integers in units of 1/`scale` of the quoted unit (VND for stocks, tenths of a point for futures), so
    ticks, totals and changes stay exact; `value_per_unit` turns price units × volume into VND."""

    market = "HOSE"
    scale = 1
    depth = 3
    value_per_unit = 1

    def __init__(self, symbol: str, rng: random.Random, exchange: Exchange, ref: int) -> None:
        self.symbol = symbol
        self._rng = rng
        self.ref = ref
        ceiling, floor = price_limits(exchange, ref / self.scale)
        self.ceiling = round(ceiling * self.scale)
        self.floor = round(floor * self.scale)
        self.grid = [self.floor]
        while self.grid[-1] < self.ceiling:
            self.grid.append(self.grid[-1] + int(tick_size(exchange, self.grid[-1] / self.scale) * self.scale))
        self.last = ref  # the reference until the first trade, as an index counts it
        self.total_vol = 0
        self.total_val = 0  # VND
        self.highest = 0
        self.lowest = 0

    def quoted(self, units: int) -> float:
        return units / self.scale

    @abstractmethod
    def level_volume(self) -> int:
        """The volume resting at one book level."""

    @abstractmethod
    def trade_volume(self) -> int:
        """The volume a continuous-session order wants (capped by the level it hits)."""

    @abstractmethod
    def auction_volume(self) -> int:
        """The volume an opening or closing auction matches."""

    def book(self, fair: float) -> _Book:
        """The book around `fair` (in price units), locked at a limit when `fair` is beyond it."""
        top = len(self.grid) - 1
        below = bisect_right(self.grid, fair) - 1
        best_bid: int | None
        best_ask: int | None
        if below >= top:  # at or above the ceiling: buyers queue, nobody sells
            best_bid, best_ask = top, None
        elif below < 0:  # below the floor: sellers queue, nobody buys
            best_bid, best_ask = None, 0
        else:
            best_bid, best_ask = below, min(top, below + (2 if self._rng.random() < WIDE_SPREAD else 1))
        bids, asks = self._levels(best_bid, -1), self._levels(best_ask, 1)
        if not asks:
            bids[0][1] *= LIMIT_QUEUE
        if not bids:
            asks[0][1] *= LIMIT_QUEUE
        return _Book(bids, asks)

    def _levels(self, best: int | None, outward: int) -> list[list[int]]:
        if best is None:
            return []
        indices = range(best, best + outward * self.depth, outward)
        return [[i, self.level_volume()] for i in indices if 0 <= i < len(self.grid)]

    def buyer_initiated(self, book: _Book, fair: float) -> bool:
        """Whether the next trade lifts the ask: the nearer `fair` is to the ask, the likelier."""
        if not book.asks:
            return False
        if not book.bids:
            return True
        bid, ask = self.grid[book.bids[0][0]], self.grid[book.asks[0][0]]
        return self._rng.random() < min(0.85, max(0.15, (fair - bid) / (ask - bid)))

    def take(self, levels: list[list[int]], volume: int, outward: int) -> None:
        """Remove a trade's volume from the best level; an emptied level makes way for one further out."""
        best = levels[0]
        best[1] -= volume
        if best[1]:
            return
        levels.pop(0)
        beyond = (levels[-1][0] if levels else best[0]) + outward
        if 0 <= beyond < len(self.grid):
            levels.append([beyond, self.level_volume()])

    def nearest(self, fair: float) -> int:
        """The grid index of the valid price closest to `fair`: where an auction matches."""
        above = min(bisect_right(self.grid, fair), len(self.grid) - 1)
        below = max(above - 1, 0)
        return below if fair - self.grid[below] <= self.grid[above] - fair else above

    def record(self, price: int, volume: int) -> None:
        self.last = price
        self.total_vol += volume
        self.total_val += price * volume * self.value_per_unit
        self.highest = max(self.highest, price)
        self.lowest = min(self.lowest, price) if self.lowest else price


class _ForeignRoom:
    """A stock's cumulative foreign buying and selling since the open, and the room foreigners have left."""

    def __init__(self, rng: random.Random, shares: int, *, scarce: bool) -> None:
        self._rng = rng
        self.total_room = shares * rng.choice((30, 49, 49, 100)) // 100
        if scarce:
            self.current_room = rng.randint(20, 300) * BOARD_LOT
            self._buy_bias = 0.75
        else:
            self.current_room = int(self.total_room * rng.uniform(0.05, 0.7)) // BOARD_LOT * BOARD_LOT
            self._buy_bias = rng.uniform(0.35, 0.65)
        self._participation = rng.uniform(0.1, 0.35)
        self.buy_vol = self.sell_vol = self.buy_val = self.sell_val = 0
        self.changed = False
        self.sent_at = -R_EVERY

    def on_trade(self, price: int, volume: int) -> None:
        if self._rng.random() >= self._participation:
            return
        part = self._rng.randint(1, volume // BOARD_LOT) * BOARD_LOT
        if self._rng.random() < self._buy_bias:
            part = min(part, self.current_room // BOARD_LOT * BOARD_LOT)
            self.buy_vol += part
            self.buy_val += part * price
            self.current_room -= part
        else:  # foreigners can only sell what they hold
            part = min(part, (self.total_room - self.current_room) // BOARD_LOT * BOARD_LOT)
            self.sell_vol += part
            self.sell_val += part * price
            self.current_room += part
        self.changed = self.changed or part > 0


class _Stock(_Instrument):
    """A HOSE stock: the instrument, its fair-value path, share count (index weight) and foreign room."""

    def __init__(self, symbol: str, rng: random.Random, *, large_cap: bool, drift: float, scarce_room: bool) -> None:
        raw = math.exp(rng.uniform(math.log(15_000), math.log(130_000)))
        tick = int(tick_size(Exchange.HOSE, raw))
        super().__init__(symbol, rng, Exchange.HOSE, round(raw / tick) * tick)
        cap_range = (3e13, 4e14) if large_cap else (3e12, 3e13)  # VND
        self.shares = round(math.exp(rng.uniform(*map(math.log, cap_range))) / self.ref / 1000) * 1000
        self.weight = rng.lognormvariate(0.0, 0.5) * (1.0 if large_cap else 0.35)  # trading rate, typical VN30 = 1
        self._mean_lots = max(1, round(rng.uniform(0.5, 2.0) * 1e8 / (self.ref * BOARD_LOT)))  # ~100M VND a trade
        self._beta = rng.uniform(0.6, 1.4)
        self._path = _Walk(rng, drift, rng.uniform(0.01, 0.025))
        self.foreign = _ForeignRoom(rng, self.shares, scarce=scarce_room)
        self.indices: tuple[_Index, ...] = ()

    def fair(self, second: int, market: float) -> float:
        return self.ref * math.exp(self._beta * market + self._path.at(second))

    def level_volume(self) -> int:
        return self._rng.randint(self._mean_lots, 8 * self._mean_lots) * BOARD_LOT

    def trade_volume(self) -> int:
        return (1 + int(self._rng.expovariate(1 / self._mean_lots))) * BOARD_LOT

    def auction_volume(self) -> int:
        return round(self._mean_lots * self._rng.uniform(5, 25)) * BOARD_LOT

    def record(self, price: int, volume: int) -> None:
        move = self.shares * (price - self.last)
        super().record(price, volume)
        for index in self.indices:
            index.on_trade(move, volume, price * volume)
        self.foreign.on_trade(price, volume)


class _Contract(_Instrument):
    """A VN30F contract: priced off VN30 plus its own basis, in tenths of a point, 10 book levels, VND values."""

    market = "DERIVATIVES"
    scale = 10
    depth = 10
    value_per_unit = FUTURES_MULTIPLIER // 10

    def __init__(self, symbol: str, rng: random.Random, *, vn30_prior: float, front: bool) -> None:
        super().__init__(symbol, rng, Exchange.DER, round((vn30_prior + rng.uniform(-5, 5)) * self.scale))
        spread = 4.0 if front else 8.0
        self.basis = _Basis(rng, rng.uniform(-spread, spread))
        self.rate = FRONT_TRADES_PER_SECOND if front else NEXT_TRADES_PER_SECOND

    def level_volume(self) -> int:
        return self._rng.randint(5, 120)

    def trade_volume(self) -> int:
        return min(50, 1 + int(self._rng.expovariate(1 / 5)))

    def auction_volume(self) -> int:
        return self._rng.randint(20, 50)


class _Index:
    """A cap-weighted index: prior * sum(shares * last price) / sum(shares * ref), kept as exact integer sums."""

    def __init__(self, index_id: str, name: str, prior: float, members: list[_Stock]) -> None:
        self.index_id = index_id
        self.name = name
        self.prior = prior
        self.members = members
        self._base = sum(stock.shares * stock.ref for stock in members)
        self._cap = self._base
        self._total_vol = 0
        self._total_val = 0

    @property
    def value(self) -> float:
        # An index none of whose stocks is simulated stays at its prior value.
        return self.prior * self._cap / self._base if self._base else self.prior

    def on_trade(self, cap_move: int, volume: int, value: int) -> None:
        self._cap += cap_move
        self._total_vol += volume
        self._total_val += value

    def content(self, trading_date: str, clock: str, session: str) -> MI:
        advances = declines = ceilings = floors = 0
        for stock in self.members:
            advances += stock.last > stock.ref
            declines += stock.last < stock.ref
            ceilings += stock.last == stock.ceiling
            floors += stock.last == stock.floor
        value = round(self.value, 2)
        change = round(value - self.prior, 2)
        return MI(
            RType="MI", IndexId=self.index_id, IndexName=self.name, TradingDate=trading_date, Time=clock,
            IndexValue=value, PriorIndexValue=self.prior, Change=change,
            RatioChange=round(change / self.prior * 100, 2), TotalTrade=0.0,
            TotalQtty=float(self._total_vol), TotalValue=float(self._total_val), TotalQttyPt=0.0, TotalValuePt=0.0,
            AllQty=float(self._total_vol), AllValue=float(self._total_val),
            Advances=advances, NoChanges=len(self.members) - advances - declines, Declines=declines,
            Ceilings=ceilings, Floors=floors, IndexType="Main", TradingSession=session, Exchange="HOSE",
        )


class _Market:
    """Everything a simulated day starts from, drawn from the seed in a fixed order."""

    def __init__(self, rng: random.Random, trading_date: date, symbols: list[str]) -> None:
        basket = [symbol for symbol in symbols if symbol in DEFAULT_VN30_BASKET]
        others = [symbol for symbol in symbols if symbol not in DEFAULT_VN30_BASKET]
        # Limit moves belong to the volatile mid caps when there are any; one runner goes up, the other down.
        candidates = others if len(others) >= 2 else symbols
        drifts = dict(zip(rng.sample(candidates, min(2, len(candidates))), (RUNNER_DRIFT, -RUNNER_DRIFT), strict=False))
        scarce = rng.choice(basket or symbols)
        self.stocks = [
            _Stock(symbol, rng, large_cap=symbol in DEFAULT_VN30_BASKET, drift=drifts.get(symbol, 0.0),
                   scarce_room=symbol == scarce)
            for symbol in symbols
        ]
        self.factor = _Walk(rng, rng.gauss(0.0, 0.006) / DAY_SECONDS, MARKET_DAILY_SD)
        self.vn30 = _Index("VN30", "VN30", round(rng.uniform(*VN30_PRIOR), 2),
                           [stock for stock in self.stocks if stock.symbol in DEFAULT_VN30_BASKET])
        self.vnindex = _Index("VNINDEX", "VNIndex", round(rng.uniform(*VNINDEX_PRIOR), 2), self.stocks)
        for stock in self.stocks:
            stock.indices = (self.vn30, self.vnindex) if stock in self.vn30.members else (self.vnindex,)
        self.contracts = [
            _Contract(code, rng, vn30_prior=self.vn30.prior, front=position == 0)
            for position, code in enumerate(listed_contracts(trading_date)[:2])
        ]


class _Timetable:
    """HOSE's and the derivatives market's phase at each second, read once a minute from `shared.market.phase_at`
    (its schedules change only on whole minutes) so the simulator keeps the same schedule as the rest of the system."""

    def __init__(self, trading_date: date) -> None:
        self._first_minute = FIRST_SECOND // 60 - 1
        minutes = [time(minute // 60, minute % 60) for minute in range(self._first_minute, LAST_SECOND // 60 + 1)]
        self._hose = [phase_at(Exchange.HOSE, exchange_datetime(trading_date, clock)) for clock in minutes]
        self._der = [phase_at(Exchange.DER, exchange_datetime(trading_date, clock)) for clock in minutes]
        self.trading_day = any(phase is not Phase.CLOSED for phase in self._hose + self._der)

    def hose(self, second: int) -> Phase:
        return self._hose[second // 60 - self._first_minute]

    def der(self, second: int) -> Phase:
        return self._der[second // 60 - self._first_minute]


# --- the day ------------------------------------------------------------------------------------------------------


class _Day:
    """Runs one trading day second by second and turns what happens into SSI frames, in causal order."""

    def __init__(self, market: _Market, rng: random.Random, trading_date: date, intensity: float) -> None:
        self._market = market
        self._rng = rng
        self._intensity = intensity
        self._trading_date = trading_date
        self._date_text = trading_date.strftime("%d/%m/%Y")
        self._timetable = _Timetable(trading_date)
        self._stock_trades = _Arrivals(rng)
        self._stock_weights = list(accumulate(stock.weight for stock in market.stocks))
        self._futures_trades = [_Arrivals(rng) for _ in market.contracts]
        self._stock_auction_quotes = _Arrivals(rng)
        self._futures_auction_quotes = _Arrivals(rng)
        self._rooms_due: dict[str, _Stock] = {}  # stocks whose foreign figures changed since their last R
        self._out: list[SimFrame] = []
        self._clock = ""
        self._at = exchange_datetime(trading_date, time())

    def frames(self) -> Iterator[SimFrame]:
        if not self._timetable.trading_day:
            return
        for second in range(FIRST_SECOND, LAST_SECOND + 1):
            self._second(second)
            if self._out:
                yield from self._out
                self._out = []

    def _second(self, second: int) -> None:
        self._clock = f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        self._at = exchange_datetime(self._trading_date, time(second // 3600, second // 60 % 60, second % 60))
        timetable, market = self._timetable, self._market
        hose, hose_before = timetable.hose(second), timetable.hose(second - 1)
        der, der_before = timetable.der(second), timetable.der(second - 1)
        if second == FIRST_SECOND:
            self._indices(_SESSION_CODES[der])
        stock_print = hose != hose_before and hose_before in _AUCTIONS
        if stock_print:
            for stock in market.stocks:
                self._stock_auction(stock, second, _SESSION_CODES[hose_before])
        if der != der_before and der_before in _AUCTIONS:
            for contract in market.contracts:
                self._print(contract, self._futures_fair(contract, second), _SESSION_CODES[der_before])
        if stock_print:
            self._indices(_SESSION_CODES[hose_before])
        if hose != hose_before and _SESSION_CODES[hose] != _SESSION_CODES.get(hose_before):
            for stock in market.stocks:
                self._status(stock, _SESSION_CODES[hose])
        if hose in _AUCTIONS:
            rate = STOCK_AUCTION_QUOTES * len(market.stocks)
            for _ in range(self._stock_auction_quotes.count(second, rate)):
                stock = self._rng.choice(market.stocks)
                self._quote(stock, stock.book(self._stock_fair(stock, second)), _SESSION_CODES[hose])
        if der in _AUCTIONS:
            rate = FUTURES_AUCTION_QUOTES * len(market.contracts)
            for _ in range(self._futures_auction_quotes.count(second, rate)):
                contract = self._rng.choice(market.contracts)
                self._quote(contract, contract.book(self._futures_fair(contract, second)), _SESSION_CODES[der])
        if der is Phase.CONTINUOUS:
            activity = _activity(second) * self._intensity
            for contract, arrivals in zip(market.contracts, self._futures_trades, strict=True):
                for _ in range(arrivals.count(second, contract.rate * activity)):
                    self._continuous(contract, self._futures_fair(contract, second))
        if hose is Phase.CONTINUOUS:
            rate = STOCK_TRADES_PER_SECOND * self._stock_weights[-1] * _activity(second) * self._intensity
            count = self._stock_trades.count(second, rate)
            for stock in self._rng.choices(market.stocks, cum_weights=self._stock_weights, k=count):
                self._continuous(stock, self._stock_fair(stock, second))
                self._note_room(stock)
            if second % MI_EVERY == 0 and not stock_print:
                self._indices("LO")
        if stock_print or hose in _AUCTIONS or hose is Phase.CONTINUOUS:
            self._send_rooms(second)

    # --- prices -------------------------------------------------------------------------------------------------

    def _stock_fair(self, stock: _Stock, second: int) -> float:
        return stock.fair(second, self._market.factor.at(second))

    def _futures_fair(self, contract: _Contract, second: int) -> float:
        return (self._market.vn30.value + contract.basis.at(second)) * contract.scale

    # --- events -------------------------------------------------------------------------------------------------

    def _continuous(self, instrument: _Instrument, fair: float) -> None:
        """A continuous-session match: the book before it, the trade at the best price on the aggressed side, its
        bar, and usually the book it left."""
        book = instrument.book(fair)
        self._quote(instrument, book, "LO")
        buyer = instrument.buyer_initiated(book, fair)
        levels = book.asks if buyer else book.bids
        price_index, available = levels[0]
        volume = min(available, instrument.trade_volume())
        self._trade(instrument, price_index, volume, "LO")
        if self._rng.random() < POST_TRADE_QUOTE:
            instrument.take(levels, volume, 1 if buyer else -1)
            self._quote(instrument, book, "LO")

    def _stock_auction(self, stock: _Stock, second: int, session: str) -> None:
        self._print(stock, self._stock_fair(stock, second), session)
        self._note_room(stock)

    def _print(self, instrument: _Instrument, fair: float, session: str) -> None:
        """An auction's single match at the valid price nearest the fair value."""
        self._trade(instrument, instrument.nearest(fair), instrument.auction_volume(), session)

    def _note_room(self, stock: _Stock) -> None:
        if stock.foreign.changed:
            self._rooms_due[stock.symbol] = stock

    def _send_rooms(self, second: int) -> None:
        """R frames for stocks whose foreign figures changed, each at most once per R_EVERY seconds."""
        for symbol, stock in list(self._rooms_due.items()):
            room = stock.foreign
            if second - room.sent_at < R_EVERY:
                continue
            self._emit("R", R(
                RType="R", TradingDate=self._date_text, Time=self._clock, Isin=symbol, Symbol=symbol,
                TotalRoom=float(room.total_room), CurrentRoom=float(room.current_room),
                BuyVol=float(room.buy_vol), SellVol=float(room.sell_vol),
                BuyVal=float(room.buy_val), SellVal=float(room.sell_val), MarketId="HOSE", Exchange="HOSE",
            ))
            room.sent_at = second
            room.changed = False
            del self._rooms_due[symbol]

    # --- frames -------------------------------------------------------------------------------------------------

    def _emit(self, data_type: str, content: msgspec.Struct) -> None:
        envelope = {"DataType": data_type, "Content": _ENCODER.encode(content).decode()}
        self._out.append(SimFrame(self._at, _ENCODER.encode(envelope)))

    def _quote(self, instrument: _Instrument, book: _Book, session: str) -> None:
        levels: dict[str, float] = {}
        for keys, side in zip(BOOK_KEYS.values(), (book.bids, book.asks), strict=True):
            for position, (price_key, volume_key) in enumerate(keys):
                if position < len(side):  # SSI sends every level, 0 for those without orders
                    price_index, volume = side[position]
                    levels[price_key] = instrument.quoted(instrument.grid[price_index])
                    levels[volume_key] = float(volume)
                else:
                    levels[price_key] = levels[volume_key] = 0.0
        self._emit("X-QUOTE", XQuote(
            RType="X-QUOTE", TradingDate=self._date_text, Time=self._clock, Symbol=instrument.symbol,
            Exchange=instrument.market, MarketId=instrument.market, TradingSession=session, TradingStatus="N",
            **levels))

    def _trade(self, instrument: _Instrument, price_index: int, volume: int, session: str) -> None:
        """Record a match, then send its X-TRADE (with the day's running figures) and its B bar."""
        units = instrument.grid[price_index]
        instrument.record(units, volume)
        price = instrument.quoted(units)
        ref = instrument.quoted(instrument.ref)
        change = instrument.quoted(units - instrument.ref)
        self._emit("X-TRADE", XTrade(
            RType="X-TRADE", TradingDate=self._date_text, Time=self._clock, Isin=instrument.symbol,
            Symbol=instrument.symbol, Ceiling=instrument.quoted(instrument.ceiling),
            Floor=instrument.quoted(instrument.floor), RefPrice=ref,
            AvgPrice=round(instrument.total_val / instrument.total_vol, 2), PriorVal=ref, LastPrice=price,
            LastVol=float(volume), TotalVal=float(instrument.total_val), TotalVol=float(instrument.total_vol),
            MarketId=instrument.market, Exchange=instrument.market, TradingSession=session, TradingStatus="N",
            Change=change, RatioChange=round((units - instrument.ref) / instrument.ref * 100, 2),
            EstMatchedPrice=price, Highest=instrument.quoted(instrument.highest),
            Lowest=instrument.quoted(instrument.lowest),
        ))
        self._emit("B", B(
            RType="B", TradingDate=self._date_text, Time=self._clock, Symbol=instrument.symbol, Open=price,
            High=price, Low=price, Close=price, Volume=float(volume), Value=0.0,
        ))

    def _status(self, stock: _Stock, session: str) -> None:
        self._emit("F", F(
            RType="F", MarketId=stock.market, TradingDate=self._date_text, Time=self._clock, Symbol=stock.symbol,
            TradingSession=session, TradingStatus="N", Exchange=stock.market,
        ))

    def _indices(self, session: str) -> None:
        for index in (self._market.vn30, self._market.vnindex):
            self._emit("MI", index.content(self._date_text, self._clock, session))


# --- public API ---------------------------------------------------------------------------------------------------


class MarketSimulator:
    """One simulated trading day of HOSE stocks, the VN30 and VNINDEX indices and the two nearest VN30F contracts.

    Pure: no I/O, no clock. Same arguments, same bytes; `day()` can be iterated again from the start. A date
    `shared.market` treats as closed (a weekend) yields no frames."""

    def __init__(
        self, *, seed: int, trading_date: date, stocks: Sequence[str] | None = None, intensity: float = 1.0
    ) -> None:
        if intensity <= 0:
            raise ValueError(f"intensity must be positive, not {intensity}")
        chosen = (*DEFAULT_VN30_BASKET, *EXTRA_STOCKS) if stocks is None else stocks
        symbols = list(dict.fromkeys(symbol.strip().upper() for symbol in chosen))
        if not symbols:
            raise ValueError("no stocks to simulate")
        self._seed = seed
        self._trading_date = trading_date
        self._symbols = symbols
        self._intensity = intensity
        self._market = _Market(random.Random(seed), trading_date, symbols)  # the day's starting point, for inspection

    @property
    def ref_prices(self) -> dict[str, float]:
        """Reference price per stock (VND) and per futures contract (points)."""
        instruments: list[_Instrument] = [*self._market.stocks, *self._market.contracts]
        return {instrument.symbol: instrument.quoted(instrument.ref) for instrument in instruments}

    @property
    def contracts(self) -> list[str]:
        """The VN30F contracts simulated: the front and the next month listed on the trading date."""
        return [contract.symbol for contract in self._market.contracts]

    def day(self) -> Iterator[SimFrame]:
        """The day's frames from 08:45 to 15:00 in non-decreasing exchange time (causal order within a second)."""
        rng = random.Random(self._seed)
        market = _Market(rng, self._trading_date, self._symbols)
        yield from _Day(market, rng, self._trading_date, self._intensity).frames()
