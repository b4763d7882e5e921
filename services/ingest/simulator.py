"""A deterministic simulated trading day of HOSE, HNX, UPCOM and VN30F, emitted in SSI FastConnect's exact wire format.

Why: every service must run end to end (ingest -> trackers -> recorder) without SSI credentials, at market speed or
faster, and tests need whole days whose properties are known. Each frame is the bytes of one Broadcast payload,
`{"DataType": ..., "Content": "<JSON string>"}`, built from the very wire Structs the decoder reads
(`shared.messages.ssi`: SSI's field names are written there only) with the units, number formats and exchange codes
SSI sends (docs/ssi.md, "Frames and field names": HOSE, HNX, UPCOM, DERIVATIVES), so a simulated day takes the same
decoding path as the live feed; a field SSI sends as null is left out (the decoder reads both alike). Market rules
(each exchange's schedule, ticks and limits, the contracts) come from `shared.market`.

The model. HOSE and the futures draw from `random.Random(seed)`, in a fixed order; HNX and UPCOM each draw from a
generator of their own derived from the seed, so that simulating them leaves every HOSE and VN30F figure as it was.
- Stocks: fair value `ref * exp(beta * M(t) + e(t))`, M a market-wide Brownian motion (so stocks, indices and futures
  move together) and e a per-stock Brownian motion. HOSE's trades advance M; HNX and UPCOM read it as HOSE last left
  it, since advancing it would draw from HOSE's generator. Two seeded "runners" per exchange carry a drift of about
  1.7 daily limits over four hours (ln(1.12) on HOSE), enough to reach the ceiling and the floor. Each exchange's
  trades arrive as a Poisson process (U-shaped intraday activity, scaled by `intensity` and by each stock's seeded
  trading rate). At each trade the book stands on the exchange's tick grid between floor and ceiling (HOSE ±7 %,
  HNX ±10 %, UPCOM ±15 %; 100 VND ticks on HNX and UPCOM), as deep as SSI sends it (HOSE 3 levels, the others 10):
  best bid = highest grid price <= fair, best ask one tick above (sometimes two). A fair value at or above the
  ceiling locks the book there with no asks; below the floor, at the floor with no bids. The trade is
  buyer-initiated (at AskPrice1) with probability (fair - bid) / (ask - bid) clipped to [0.15, 0.85], else
  seller-initiated (at BidPrice1).
- Sessions, per exchange as `shared.market.phase_at` has them: HOSE ATO 09:00-09:15, continuous, lunch, ATC
  14:30-14:45; HNX continuous from 09:00 (no ATO), lunch, ATC 14:30-14:45, then its post-close (left without
  matches); UPCOM continuous 09:00-15:00 around lunch, no auctions; VN30F ATO 08:45-09:00, continuous, lunch, ATC
  14:30-14:45. While an auction runs, its books go out as X frames instead of X-QUOTE: the book, the day's trade
  figures as they stand (TotalVol has not grown, so the frame carries no trade) and EstMatchedPrice, the projected
  price: the valid price nearest the fair value, where the auction would match now. When the auction ends each
  instrument gets its single match (X-TRADE) at the valid price nearest the fair value of that second.
- Channels. By default trades and books go out as X-TRADE and X-QUOTE (and X in the auctions). `combined=True` sends
  them as SSI's X:ALL does: every book change and every match an X frame, the day's trade figures and the book in
  one; a continuous match's frame carries the book it left (or the one it hit, when the model leaves the book
  unchanged), an auction's match the last book shown. The draws are the same either way: the same seed gives the
  same trades, books and totals on both channels.
- Indices, cap-weighted over fixed seeded share counts s_i (the `listed_shares` of `MarketSimulator.securities`):
  `IndexValue = round(PriorIndexValue * sum(s_i * p_i) / sum(s_i * ref_i), 2)`, p_i the last traded price (ref_i
  before the first trade). VN30 is over the simulated stocks of DEFAULT_VN30_BASKET and VNINDEX over all HOSE ones,
  HNX30 over those of HNX30_BASKET and HNXINDEX over all HNX ones, UPCOMINDEX over all UPCOM ones; each index has a
  seeded prior value near its real level.
- Futures: fair = VN30 (unrounded) + basis, the basis an Ornstein-Uhlenbeck process around a seeded mean of a few
  points per contract (10-minute reversion time, 2-point spread); books and trades on the 0.1-point grid within ±7%
  of the contract's reference.
- Foreign room: a seeded share of trades has a foreign buyer or seller for part of the volume. Foreigners never buy
  more than the remaining room nor sell more than they hold, so CurrentRoom = initial room - net foreign buying
  stays within [0, TotalRoom]; one seeded HOSE stock starts almost out of room ("het room").
- Universe: `default` simulates real names (the VN30 basket and EXTRA_STOCKS on HOSE, HNX_STOCKS, UPCOM_STOCKS) and
  the two nearest VN30F contracts; `market` adds generated three-letter symbols up to MARKET_SIZES stocks per
  exchange (about 1,550 instruments in all): small caps with low seeded trading rates (most trade a few times a day,
  and each exchange's arrivals are one process whatever its size), so a whole market's day stays a few seconds'
  work.
"""

from __future__ import annotations

import math
import random
import string
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from itertools import accumulate, islice
from typing import Any, Literal

import msgspec

from shared.market import (
    BOARD_LOT,
    DEFAULT_VN30_BASKET,
    FUTURES_MULTIPLIER,
    Exchange,
    Phase,
    contract_expiry,
    exchange_datetime,
    listed_contracts,
    phase_at,
    price_limits,
    tick_size,
)
from shared.messages.domain import IndexBasket, SecurityInfo
from shared.messages.ssi import BOOK_KEYS, MI, B, F, R, X, XQuote, XTrade

EXTRA_STOCKS = ("DIG", "DXG", "NVL", "PDR", "VND")  # volatile non-VN30 HOSE names simulated by default
HNX30_BASKET = ("CEO", "HUT", "IDC", "MBS", "NVB", "PVI", "PVS", "SHS", "TNG", "VCS")  # the HNX30 members simulated
HNX_STOCKS = (*HNX30_BASKET, "APS", "BAB", "BVS", "PTI", "VNR")
UPCOM_STOCKS = ("ACV", "FOX", "LTG", "MCH", "MSR", "OIL", "QNS", "VEA", "VGI", "VGT")
MARKET_SIZES = {Exchange.HOSE: 400, Exchange.HNX: 350, Exchange.UPCOM: 800}  # stocks of the `market` universe
Universe = Literal["default", "market"]
UNIVERSES: tuple[Universe, ...] = ("default", "market")

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
RUNNER_SECONDS = 4 * 3600
# A runner's gain over RUNNER_SECONDS: about 1.7 daily limits, so it reaches its limit in the afternoon.
RUNNER_GAINS = {Exchange.HOSE: 1.12, Exchange.HNX: 1.17, Exchange.UPCOM: 1.25}
BASIS_REVERSION = 1 / 600
BASIS_SD = 2.0

VN30_PRIOR = (1880.0, 1920.0)
VNINDEX_PRIOR = (1660.0, 1700.0)
HNX30_PRIOR = (450.0, 550.0)
HNXINDEX_PRIOR = (220.0, 260.0)
UPCOMINDEX_PRIOR = (95.0, 110.0)

# Each exchange's indices: IndexId, IndexName as SSI spells it, the range of its prior value, and its basket (None:
# every stock of the exchange). The first basket also marks the exchange's big caps.
_INDICES: dict[Exchange, tuple[tuple[str, str, tuple[float, float], tuple[str, ...] | None], ...]] = {
    Exchange.HOSE: (("VN30", "VN30", VN30_PRIOR, DEFAULT_VN30_BASKET), ("VNINDEX", "VNIndex", VNINDEX_PRIOR, None)),
    Exchange.HNX: (("HNX30", "HNX30", HNX30_PRIOR, HNX30_BASKET), ("HNXINDEX", "HNXIndex", HNXINDEX_PRIOR, None)),
    Exchange.UPCOM: (("UPCOMINDEX", "HNXUpcomIndex", UPCOMINDEX_PRIOR, None),),
}
_MARKET_CODES = {Exchange.HOSE: "HOSE", Exchange.HNX: "HNX", Exchange.UPCOM: "UPCOM", Exchange.DER: "DERIVATIVES"}
_BOOK_LEVELS = {Exchange.HOSE: 3}  # SSI fills 3 levels of a HOSE book, 10 of the others
_SYMBOL_STRIDE = 7919  # coprime with 26**3: stepping by it visits every three-letter symbol once, scattered

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
_BOOK_FIELD_NAMES = tuple(name for keys in BOOK_KEYS.values() for pair in keys for name in pair)


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

    @property
    def value(self) -> float:
        """The value as last advanced: reading it draws nothing."""
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

    scale = 1
    value_per_unit = 1

    def __init__(self, symbol: str, rng: random.Random, exchange: Exchange, ref: int) -> None:
        self.symbol = symbol
        self.rng = rng
        self.market = _MARKET_CODES[exchange]  # the Exchange and MarketId SSI sends
        self.depth = _BOOK_LEVELS.get(exchange, 10)
        self.ref = ref
        ceiling, floor = price_limits(exchange, ref / self.scale)
        self.ceiling = round(ceiling * self.scale)
        self.floor = round(floor * self.scale)
        self.grid = [self.floor]
        while self.grid[-1] < self.ceiling:
            self.grid.append(self.grid[-1] + int(tick_size(exchange, self.grid[-1] / self.scale) * self.scale))
        self.last = ref  # the reference until the first trade, as an index counts it
        self.last_vol = 0
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
            best_bid, best_ask = below, min(top, below + (2 if self.rng.random() < WIDE_SPREAD else 1))
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
        return self.rng.random() < min(0.85, max(0.15, (fair - bid) / (ask - bid)))

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
        self.last_vol = volume
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


@dataclass(frozen=True, slots=True)
class _Profile:
    """How a kind of stock is seeded: log-uniform reference price and market capitalisation (VND), a lognormal
    trading rate (1 = a typical VN30 stock) and the value a typical order trades (VND)."""

    prices: tuple[float, float]
    caps: tuple[float, float]
    activity: float
    dispersion: float  # the standard deviation of the trading rate's logarithm
    order_value: float


# The big caps of an exchange's main basket (VN30, HNX30), its other real names, and the generated small caps of the
# whole-market universe, the long tail that trades rarely.
_BASKET_PROFILES = {
    Exchange.HOSE: _Profile((15_000, 130_000), (3e13, 4e14), 1.0, 0.5, 1e8),
    Exchange.HNX: _Profile((8_000, 70_000), (3e12, 3e13), 0.4, 0.5, 5e7),
}
_NAMED_PROFILES = {
    Exchange.HOSE: _Profile((15_000, 130_000), (3e12, 3e13), 0.35, 0.5, 1e8),
    Exchange.HNX: _Profile((6_000, 40_000), (5e11, 5e12), 0.15, 0.5, 3e7),
    Exchange.UPCOM: _Profile((10_000, 150_000), (1e13, 3e14), 0.15, 0.5, 5e7),
}
_SMALL_CAP = _Profile((3_000, 30_000), (5e10, 2e12), 0.015, 1.0, 2e7)


class _Stock(_Instrument):
    """A stock: the instrument, its fair-value path, share count (index weight) and foreign room."""

    def __init__(self, symbol: str, rng: random.Random, exchange: Exchange, profile: _Profile, *, drift: float,
                 scarce_room: bool) -> None:
        raw = math.exp(rng.uniform(*map(math.log, profile.prices)))
        tick = int(tick_size(exchange, raw))
        super().__init__(symbol, rng, exchange, round(raw / tick) * tick)
        self.shares = round(math.exp(rng.uniform(*map(math.log, profile.caps))) / self.ref / 1000) * 1000
        self.weight = rng.lognormvariate(0.0, profile.dispersion) * profile.activity  # trading rate
        self._mean_lots = max(1, round(rng.uniform(0.5, 2.0) * profile.order_value / (self.ref * BOARD_LOT)))
        self._beta = rng.uniform(0.6, 1.4)
        self._path = _Walk(rng, drift, rng.uniform(0.01, 0.025))
        self.foreign = _ForeignRoom(rng, self.shares, scarce=scarce_room)
        self.indices: tuple[_Index, ...] = ()

    def fair(self, second: int, market: float) -> float:
        return self.ref * math.exp(self._beta * market + self._path.at(second))

    def level_volume(self) -> int:
        return self.rng.randint(self._mean_lots, 8 * self._mean_lots) * BOARD_LOT

    def trade_volume(self) -> int:
        return (1 + int(self.rng.expovariate(1 / self._mean_lots))) * BOARD_LOT

    def auction_volume(self) -> int:
        return round(self._mean_lots * self.rng.uniform(5, 25)) * BOARD_LOT

    def record(self, price: int, volume: int) -> None:
        move = self.shares * (price - self.last)
        super().record(price, volume)
        for index in self.indices:
            index.on_trade(move, volume, price * volume)
        self.foreign.on_trade(price, volume)


class _Contract(_Instrument):
    """A VN30F contract: priced off VN30 plus its own basis, in tenths of a point, 10 book levels, VND values."""

    scale = 10
    value_per_unit = FUTURES_MULTIPLIER // 10

    def __init__(self, symbol: str, rng: random.Random, *, vn30_prior: float, front: bool) -> None:
        super().__init__(symbol, rng, Exchange.DER, round((vn30_prior + rng.uniform(-5, 5)) * self.scale))
        spread = 4.0 if front else 8.0
        self.basis = _Basis(rng, rng.uniform(-spread, spread))
        self.rate = FRONT_TRADES_PER_SECOND if front else NEXT_TRADES_PER_SECOND

    def level_volume(self) -> int:
        return self.rng.randint(5, 120)

    def trade_volume(self) -> int:
        return min(50, 1 + int(self.rng.expovariate(1 / 5)))

    def auction_volume(self) -> int:
        return self.rng.randint(20, 50)


class _Index:
    """A cap-weighted index: prior * sum(shares * last price) / sum(shares * ref), kept as exact integer sums."""

    def __init__(self, index_id: str, name: str, exchange: Exchange, prior: float, members: list[_Stock]) -> None:
        self.index_id = index_id
        self.name = name
        self.market = _MARKET_CODES[exchange]
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
            Ceilings=ceilings, Floors=floors, IndexType="Main", TradingSession=session, Exchange=self.market,
        )


# --- the market ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Listing:
    """The stocks simulated on one exchange: real names first, then generated ones (the whole-market universe)."""

    named: tuple[str, ...]
    generated: tuple[str, ...] = ()

    @property
    def symbols(self) -> tuple[str, ...]:
        return (*self.named, *self.generated)


def _basket(exchange: Exchange) -> tuple[str, ...]:
    """The exchange's main index basket, whose members are its big caps (none on UPCOM)."""
    return next((basket for *_, basket in _INDICES[exchange] if basket is not None), ())


def _listed(rng: random.Random, exchange: Exchange, listing: _Listing, *, scarce_room: bool) -> list[_Stock]:
    """An exchange's stocks, drawn in a fixed order: its runners, the stock almost out of foreign room, the stocks."""
    basket = _basket(exchange)
    others = [symbol for symbol in listing.named if symbol not in basket]
    # Limit moves belong to the volatile mid caps when there are any; one runner goes up, the other down.
    candidates = others if len(others) >= 2 else list(listing.named)
    drift = math.log(RUNNER_GAINS[exchange]) / RUNNER_SECONDS
    drifts = dict(zip(rng.sample(candidates, min(2, len(candidates))), (drift, -drift), strict=False))
    symbols = listing.symbols
    scarce = rng.choice([symbol for symbol in symbols if symbol in basket] or symbols) if scarce_room else None
    return [
        _Stock(symbol, rng, exchange, _profile(exchange, symbol, listing, basket), drift=drifts.get(symbol, 0.0),
               scarce_room=symbol == scarce)
        for symbol in symbols
    ]


def _profile(exchange: Exchange, symbol: str, listing: _Listing, basket: tuple[str, ...]) -> _Profile:
    if symbol not in listing.named:
        return _SMALL_CAP
    return _BASKET_PROFILES[exchange] if symbol in basket else _NAMED_PROFILES[exchange]


class _Venue:
    """One stock exchange: its stocks and indices, the generator its events draw from, and its day's arrivals."""

    def __init__(self, exchange: Exchange, rng: random.Random, stocks: list[_Stock], factor: _Walk) -> None:
        self.exchange = exchange
        self.rng = rng
        self.stocks = stocks
        self.indices = tuple(
            _Index(index_id, name, exchange, round(rng.uniform(*prior), 2),
                   stocks if basket is None else [stock for stock in stocks if stock.symbol in basket])
            for index_id, name, prior, basket in _INDICES[exchange]
        )
        for index in self.indices:
            for stock in index.members:
                stock.indices = (*stock.indices, index)
        self.weights = list(accumulate(stock.weight for stock in stocks))
        self.trades = _Arrivals(rng)
        self.auction_books = _Arrivals(rng)
        self.rooms_due: dict[str, _Stock] = {}  # stocks whose foreign figures changed since their last R
        self._factor = factor

    def fair(self, stock: _Stock, second: int) -> float:
        # HOSE's trades move the market factor; the others read it as HOSE left it, drawing nothing from HOSE's
        # generator.
        market = self._factor.at(second) if self.exchange is Exchange.HOSE else self._factor.value
        return stock.fair(second, market)


class _Market:
    """Everything a simulated day starts from, drawn from the seed in a fixed order."""

    def __init__(self, seed: int, trading_date: date, listings: Mapping[Exchange, _Listing]) -> None:
        self.rng = random.Random(seed)
        hose = _listed(self.rng, Exchange.HOSE, listings[Exchange.HOSE], scarce_room=True)
        self.factor = _Walk(self.rng, self.rng.gauss(0.0, 0.006) / DAY_SECONDS, MARKET_DAILY_SD)
        self.venues = [_Venue(Exchange.HOSE, self.rng, hose, self.factor)]
        self.vn30 = self.venues[0].indices[0]
        self.contracts = [
            _Contract(code, self.rng, vn30_prior=self.vn30.prior, front=position == 0)
            for position, code in enumerate(listed_contracts(trading_date)[:2])
        ]
        for exchange in (Exchange.HNX, Exchange.UPCOM):
            if listings[exchange].symbols:
                rng = random.Random(f"{seed}:{exchange}")  # a str seed is hashed with SHA-512: the same every run
                stocks = _listed(rng, exchange, listings[exchange], scarce_room=False)
                self.venues.append(_Venue(exchange, rng, stocks, self.factor))

    @property
    def stocks(self) -> Iterator[_Stock]:
        return (stock for venue in self.venues for stock in venue.stocks)


class _Timetable:
    """Each exchange's phase at each second, read once a minute from `shared.market.phase_at` (its schedules change
    only on whole minutes) so the simulator keeps the same schedule as the rest of the system."""

    def __init__(self, trading_date: date) -> None:
        self._first_minute = FIRST_SECOND // 60 - 1
        minutes = [time(minute // 60, minute % 60) for minute in range(self._first_minute, LAST_SECOND // 60 + 1)]
        self._phases = {
            exchange: [phase_at(exchange, exchange_datetime(trading_date, clock)) for clock in minutes]
            for exchange in Exchange
        }
        self.trading_day = any(phase is not Phase.CLOSED for phases in self._phases.values() for phase in phases)

    def phase(self, exchange: Exchange, second: int) -> Phase:
        return self._phases[exchange][second // 60 - self._first_minute]

    def change(self, exchange: Exchange, second: int) -> tuple[Phase, Phase]:
        """The exchange's phase at `second` and the second before."""
        return self.phase(exchange, second), self.phase(exchange, second - 1)


# --- the day ------------------------------------------------------------------------------------------------------


class _Day:
    """Runs one trading day second by second and turns what happens into SSI frames, in causal order."""

    def __init__(self, market: _Market, trading_date: date, intensity: float, *, combined: bool) -> None:
        self._market = market
        self._intensity = intensity
        self._combined = combined
        self._shown: dict[str, dict[str, float]] = {}  # each symbol's last book sent (combined: an auction's match)
        self._trading_date = trading_date
        self._date_text = trading_date.strftime("%d/%m/%Y")
        self._timetable = _Timetable(trading_date)
        self._futures_trades = [_Arrivals(market.rng) for _ in market.contracts]
        self._futures_auction_books = _Arrivals(market.rng)
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
        hose, *others = self._market.venues
        der, der_before = self._timetable.change(Exchange.DER, second)
        if second == FIRST_SECOND:
            self._indices(hose, _SESSION_CODES[der])
        # HOSE's steps and the futures' interleave in this order: the futures price off VN30 and draw from HOSE's
        # generator, so the order is part of what the seed gives.
        hose_auction = self._auction_prints(hose, second)
        if der != der_before and der_before in _AUCTIONS:
            for contract in self._market.contracts:
                self._print(contract, self._futures_fair(contract, second), _SESSION_CODES[der_before])
        if hose_auction:
            self._indices(hose, hose_auction)
        self._sessions(hose, second)
        if der in _AUCTIONS:
            contracts = self._market.contracts
            for _ in range(self._futures_auction_books.count(second, FUTURES_AUCTION_QUOTES * len(contracts))):
                contract = self._market.rng.choice(contracts)
                self._auction_book(contract, self._futures_fair(contract, second), _SESSION_CODES[der])
        if der is Phase.CONTINUOUS:
            activity = _activity(second) * self._intensity
            for contract, arrivals in zip(self._market.contracts, self._futures_trades, strict=True):
                for _ in range(arrivals.count(second, contract.rate * activity)):
                    self._continuous(contract, self._futures_fair(contract, second))
        self._trading(hose, second, printed=bool(hose_auction))
        for venue in others:
            auction = self._auction_prints(venue, second)
            if auction:
                self._indices(venue, auction)
            self._sessions(venue, second)
            self._trading(venue, second, printed=bool(auction))

    # --- an exchange's second -----------------------------------------------------------------------------------

    def _auction_prints(self, venue: _Venue, second: int) -> str:
        """When the exchange's auction gives way at `second`: each stock's single match. Returns the auction's
        session code, or "" when none ended."""
        phase, before = self._timetable.change(venue.exchange, second)
        if phase == before or before not in _AUCTIONS:
            return ""
        for stock in venue.stocks:
            self._print(stock, venue.fair(stock, second), _SESSION_CODES[before])
            self._note_room(venue, stock)
        return _SESSION_CODES[before]

    def _sessions(self, venue: _Venue, second: int) -> None:
        """Status frames when the exchange's session changes, and the books of an auction while it runs."""
        phase, before = self._timetable.change(venue.exchange, second)
        if phase != before and _SESSION_CODES[phase] != _SESSION_CODES.get(before):
            for stock in venue.stocks:
                self._status(stock, _SESSION_CODES[phase])
        if phase in _AUCTIONS:
            for _ in range(venue.auction_books.count(second, STOCK_AUCTION_QUOTES * len(venue.stocks))):
                stock = venue.rng.choice(venue.stocks)
                self._auction_book(stock, venue.fair(stock, second), _SESSION_CODES[phase])

    def _trading(self, venue: _Venue, second: int, *, printed: bool) -> None:
        """Continuous trading with the index values every MI_EVERY seconds, and the foreign room that changed."""
        phase = self._timetable.phase(venue.exchange, second)
        if phase is Phase.CONTINUOUS:
            rate = STOCK_TRADES_PER_SECOND * venue.weights[-1] * _activity(second) * self._intensity
            count = venue.trades.count(second, rate)
            for stock in venue.rng.choices(venue.stocks, cum_weights=venue.weights, k=count):
                self._continuous(stock, venue.fair(stock, second))
                self._note_room(venue, stock)
            if second % MI_EVERY == 0 and not printed:
                self._indices(venue, "LO")
        if printed or phase in _AUCTIONS or phase is Phase.CONTINUOUS:
            self._send_rooms(venue, second)

    # --- prices -------------------------------------------------------------------------------------------------

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
        instrument.record(instrument.grid[price_index], volume)
        left = instrument.rng.random() < POST_TRADE_QUOTE
        if left:
            instrument.take(levels, volume, 1 if buyer else -1)
        if self._combined:
            self._trade(instrument, "LO", book)
        else:
            self._trade(instrument, "LO")
            if left:
                self._quote(instrument, book, "LO")

    def _print(self, instrument: _Instrument, fair: float, session: str) -> None:
        """An auction's single match at the valid price nearest the fair value."""
        instrument.record(instrument.grid[instrument.nearest(fair)], instrument.auction_volume())
        self._trade(instrument, session)

    def _note_room(self, venue: _Venue, stock: _Stock) -> None:
        if stock.foreign.changed:
            venue.rooms_due[stock.symbol] = stock

    def _send_rooms(self, venue: _Venue, second: int) -> None:
        """R frames for stocks whose foreign figures changed, each at most once per R_EVERY seconds."""
        for symbol, stock in list(venue.rooms_due.items()):
            room = stock.foreign
            if second - room.sent_at < R_EVERY:
                continue
            self._emit("R", R(
                RType="R", TradingDate=self._date_text, Time=self._clock, Isin=symbol, Symbol=symbol,
                TotalRoom=float(room.total_room), CurrentRoom=float(room.current_room),
                BuyVol=float(room.buy_vol), SellVol=float(room.sell_vol),
                BuyVal=float(room.buy_val), SellVal=float(room.sell_val), MarketId=stock.market, Exchange=stock.market,
            ))
            room.sent_at = second
            room.changed = False
            del venue.rooms_due[symbol]

    # --- frames -------------------------------------------------------------------------------------------------

    def _emit(self, data_type: str, content: msgspec.Struct) -> None:
        envelope = {"DataType": data_type, "Content": _ENCODER.encode(content).decode()}
        self._out.append(SimFrame(self._at, _ENCODER.encode(envelope)))

    def _quote(self, instrument: _Instrument, book: _Book, session: str) -> None:
        if self._combined:  # the day's figures as they stand: TotalVol has not grown, no trade
            self._emit("X", X(RType="X", LastVol=float(instrument.last_vol), EstMatchedPrice=0.0,
                              **self._day_fields(instrument, session), **self._book_fields(instrument, book)))
            return
        self._emit("X-QUOTE", XQuote(
            RType="X-QUOTE", TradingDate=self._date_text, Time=self._clock, Symbol=instrument.symbol,
            Exchange=instrument.market, MarketId=instrument.market, TradingSession=session, TradingStatus="N",
            **self._book_fields(instrument, book)))

    def _auction_book(self, instrument: _Instrument, fair: float, session: str) -> None:
        """An auction's book as SSI's X frame: the book, the day's trade figures as they stand (TotalVol has not
        grown: no trade) and EstMatchedPrice, the valid price nearest `fair`, where the auction would match now."""
        book = instrument.book(fair)
        projected = instrument.quoted(instrument.grid[instrument.nearest(fair)])
        self._emit("X", X(
            RType="X", LastVol=float(instrument.last_vol), EstMatchedPrice=projected,
            **self._day_fields(instrument, session), **self._book_fields(instrument, book)))

    def _trade(self, instrument: _Instrument, session: str, book: _Book | None = None) -> None:
        """The match just recorded: its X-TRADE (with the day's running figures), or on the combined channel its X
        with `book` (None: the last book shown), then its B bar."""
        price = instrument.quoted(instrument.last)
        volume = float(instrument.last_vol)
        if self._combined:
            # SSI's X sends EstMatchedPrice 0 outside the auctions; an auction's match is its matched price.
            levels = self._book_fields(instrument, book) if book is not None else self._shown.get(
                instrument.symbol, dict.fromkeys(_BOOK_FIELD_NAMES, 0.0))
            self._emit("X", X(RType="X", LastVol=volume, EstMatchedPrice=0.0 if session == "LO" else price,
                              **self._day_fields(instrument, session), **levels))
        else:
            self._emit("X-TRADE", XTrade(
                RType="X-TRADE", LastVol=volume, EstMatchedPrice=price, **self._day_fields(instrument, session)))
        self._emit("B", B(
            RType="B", TradingDate=self._date_text, Time=self._clock, Symbol=instrument.symbol, Open=price,
            High=price, Low=price, Close=price, Volume=volume, Value=0.0,
        ))

    def _day_fields(self, instrument: _Instrument, session: str) -> dict[str, Any]:
        """The fields X-TRADE and X share: the limits, and the day's figures after the last match (0 before any)."""
        traded = instrument.total_vol > 0
        ref = instrument.quoted(instrument.ref)
        move = instrument.last - instrument.ref if traded else 0
        return {
            "TradingDate": self._date_text, "Time": self._clock, "Isin": instrument.symbol,
            "Symbol": instrument.symbol, "Ceiling": instrument.quoted(instrument.ceiling),
            "Floor": instrument.quoted(instrument.floor), "RefPrice": ref,
            "AvgPrice": round(instrument.total_val / instrument.total_vol, 2) if traded else 0.0, "PriorVal": ref,
            "LastPrice": instrument.quoted(instrument.last) if traded else 0.0,
            "TotalVal": float(instrument.total_val), "TotalVol": float(instrument.total_vol),
            "MarketId": instrument.market, "Exchange": instrument.market, "TradingSession": session,
            "TradingStatus": "N", "Change": instrument.quoted(move),
            "RatioChange": round(move / instrument.ref * 100, 2), "Highest": instrument.quoted(instrument.highest),
            "Lowest": instrument.quoted(instrument.lowest),
        }

    def _book_fields(self, instrument: _Instrument, book: _Book) -> dict[str, float]:
        levels: dict[str, float] = {}
        for keys, side in zip(BOOK_KEYS.values(), (book.bids, book.asks), strict=True):
            for position, (price_key, volume_key) in enumerate(keys):
                if position < len(side):  # SSI sends every level, 0 for those without orders
                    price_index, volume = side[position]
                    levels[price_key] = instrument.quoted(instrument.grid[price_index])
                    levels[volume_key] = float(volume)
                else:
                    levels[price_key] = levels[volume_key] = 0.0
        self._shown[instrument.symbol] = levels
        return levels

    def _status(self, stock: _Stock, session: str) -> None:
        self._emit("F", F(
            RType="F", MarketId=stock.market, TradingDate=self._date_text, Time=self._clock, Symbol=stock.symbol,
            TradingSession=session, TradingStatus="N", Exchange=stock.market,
        ))

    def _indices(self, venue: _Venue, session: str) -> None:
        for index in venue.indices:
            self._emit("MI", index.content(self._date_text, self._clock, session))


# --- public API ---------------------------------------------------------------------------------------------------


def _symbols(chosen: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(symbol.strip().upper() for symbol in chosen))


def _generated_symbols(taken: set[str]) -> Iterator[str]:
    """Three-letter symbols in a fixed scattered order, none of them `taken`: the same universe every run."""
    letters, count = string.ascii_uppercase, len(string.ascii_uppercase) ** 3
    for step in range(count):
        code = step * _SYMBOL_STRIDE % count
        symbol = letters[code // 676] + letters[code // 26 % 26] + letters[code % 26]
        if symbol not in taken:
            yield symbol


class MarketSimulator:
    """One simulated trading day of HOSE, HNX and UPCOM stocks, their indices (VN30, VNINDEX, HNX30, HNXINDEX,
    UPCOMINDEX) and the two nearest VN30F contracts.

    `stocks`, `hnx_stocks`, `upcom_stocks`: each exchange's stocks (None: its real names of the default universe; an
    empty HNX or UPCOM list leaves that exchange out; HOSE needs stocks, VN30 and its futures are priced off them).
    `universe="market"` adds generated small caps to the exchanges whose stocks are not given, up to MARKET_SIZES.
    `combined=True`: trades and books as SSI's X:ALL channel sends them, one X frame each (the module's "Channels").
    Pure: no I/O, no clock. Same arguments, same bytes; `day()` can be iterated again from the start. A date
    `shared.market` treats as closed (a weekend) yields no frames."""

    def __init__(
        self, *, seed: int, trading_date: date, stocks: Sequence[str] | None = None,
        hnx_stocks: Sequence[str] | None = None, upcom_stocks: Sequence[str] | None = None, intensity: float = 1.0,
        universe: Universe = "default", combined: bool = False,
    ) -> None:
        if intensity <= 0:
            raise ValueError(f"intensity must be positive, not {intensity}")
        if universe not in UNIVERSES:
            raise ValueError(f"universe must be one of {', '.join(UNIVERSES)}, not {universe!r}")
        chosen = {Exchange.HOSE: stocks, Exchange.HNX: hnx_stocks, Exchange.UPCOM: upcom_stocks}
        defaults = {Exchange.HOSE: (*DEFAULT_VN30_BASKET, *EXTRA_STOCKS), Exchange.HNX: HNX_STOCKS,
                    Exchange.UPCOM: UPCOM_STOCKS}
        named = {exchange: _symbols(defaults[exchange] if given is None else given)
                 for exchange, given in chosen.items()}
        if not named[Exchange.HOSE]:
            raise ValueError("no stocks to simulate on HOSE: VN30 and its futures are priced off them")
        everywhere = [symbol for symbols in named.values() for symbol in symbols]
        twice = sorted({symbol for symbol in everywhere if everywhere.count(symbol) > 1})
        if twice:
            raise ValueError(f"a stock is listed on one exchange only: {', '.join(twice)} given twice")
        generated = _generated_symbols(set(everywhere))
        self._listings = {
            exchange: _Listing(symbols, tuple(islice(generated, max(0, MARKET_SIZES[exchange] - len(symbols))))
                               if universe == "market" and chosen[exchange] is None else ())
            for exchange, symbols in named.items()
        }
        self._seed = seed
        self._trading_date = trading_date
        self._intensity = intensity
        self._combined = combined
        self._market = _Market(seed, trading_date, self._listings)  # the day's starting point, for inspection

    @property
    def ref_prices(self) -> dict[str, float]:
        """Reference price per stock (VND) and per futures contract (points)."""
        instruments: list[_Instrument] = [*self._market.stocks, *self._market.contracts]
        return {instrument.symbol: instrument.quoted(instrument.ref) for instrument in instruments}

    @property
    def contracts(self) -> list[str]:
        """The VN30F contracts simulated: the front and the next month listed on the trading date."""
        return [contract.symbol for contract in self._market.contracts]

    @property
    def securities(self) -> list[SecurityInfo]:
        """Reference data of every instrument simulated, as SSI's SecuritiesDetails gives it: each stock with the
        share count its indices weigh it by (`listed_shares`), each contract with its last trading day."""
        day = self._trading_date
        stocks = [
            SecurityInfo(symbol=stock.symbol, trading_date=day, exchange=stock.market, sec_type="ST",
                         lot_size=BOARD_LOT, listed_shares=stock.shares)
            for stock in self._market.stocks
        ]
        contracts = [
            SecurityInfo(symbol=contract.symbol, trading_date=day, exchange=contract.market, sec_type="FU",
                         lot_size=1, underlying="VN30", last_trading_date=contract_expiry(contract.symbol))
            for contract in self._market.contracts
        ]
        return stocks + contracts

    @property
    def baskets(self) -> list[IndexBasket]:
        """The baskets of the simulated indices that have one (HNX30), as SSI's IndexComponents gives them; VN30's
        is ingest's own (VN30_SYMBOLS, or the built-in one the simulator follows)."""
        return [
            IndexBasket(index_id=index.index_id, symbols=sorted(stock.symbol for stock in index.members),
                        source="builtin", trading_date=self._trading_date)
            for venue in self._market.venues
            for index, (*_, basket) in zip(venue.indices, _INDICES[venue.exchange], strict=True)
            if basket is not None and index.index_id != "VN30"
        ]

    def day(self) -> Iterator[SimFrame]:
        """The day's frames from 08:45 to 15:00 in non-decreasing exchange time (causal order within a second)."""
        market = _Market(self._seed, self._trading_date, self._listings)
        yield from _Day(market, self._trading_date, self._intensity, combined=self._combined).frames()
