"""The derivatives tracker's pure core: VN30 index futures, their basis to the VN30 index, and the aggressor of each
futures trade. No I/O.

- Contracts: each one's last trading day comes from `expiry_of(code, trading date)` (the service's order of truth:
  reference data, FUTURES_ALIASES, a generic alias such as VN30F1M resolved for that date, the third-Thursday rule).
  The active contract is the front month of the latest trading date seen: the one traded that day with the nearest
  last trading day not yet passed (`shared.market.front_month` when no expiry is known at all); `is_active` is true of
  that one contract only, so after a roll the previous front month says false.
- DerivativesData per contract: last price, change against the trade's reference price (the previous settlement),
  cumulative volume, best bid/ask, and basis = last price - the latest VN30 value, basis_pct = basis / VN30 × 100,
  is_premium = basis > 0; differences of points to 0.01, the index's own precision. Recomputed whenever the contract
  trades or VN30 moves.
- BasisPoint events whenever the basis moves (a futures trade, or a VN30 update for each contract traded that day),
  at most one per contract per second of exchange time: within a second the latest value wins; a second's point is
  released when a later second begins (or when the service flushes). So the basis trend always ends at the basis
  `DerivativesData` shows.
- Each futures trade is classified like a stock's (`shared.aggressor`: the same rules and tallies), for the tick
  history.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import msgspec

from shared.aggressor import Classifier, SymbolDay, TradeOutcome
from shared.market import expiry_on, front_month
from shared.messages.domain import BasisPoint, DerivativesData, IndexUpdate, Quote, Trade, finite

SPOT_INDEX = "VN30"


class Spot(msgspec.Struct):
    trading_date: date
    value: float
    timestamp: datetime


class Contract(msgspec.Struct, kw_only=True):
    symbol: str
    trading_date: date
    last_price: float | None = None
    ref_price: float | None = None
    total_volume: int = 0
    bid1: float = 0.0
    ask1: float = 0.0
    last_updated: datetime | None = None
    pending_point: BasisPoint | None = None


class DerivativesState(msgspec.Struct, kw_only=True):
    spot: Spot | None = None
    contracts: dict[str, Contract] = msgspec.field(default_factory=dict)
    trades: dict[str, SymbolDay] = msgspec.field(default_factory=dict)  # the classifier's per-contract days


def points(difference: float) -> float:
    """A difference of index points to the hundredth they are quoted in: 1884.3 - 1880.32 is 3.98, not the
    3.980000000000018 floating point gives."""
    return round(difference, 2)


def basis_of(futures_price: float, spot_value: float) -> tuple[float, float]:
    """Basis in points and as a percentage of the index (raises NonFiniteError for a corrupt, near-zero index)."""
    basis = points(futures_price - spot_value)
    return basis, finite(basis / spot_value * 100, "the basis in percent")


def change_of(last_price: float, ref_price: float | None) -> tuple[float, float]:
    """A contract's change against its reference, in points and percent (0, 0 while no reference is known)."""
    if not ref_price:
        return 0.0, 0.0
    change = points(last_price - ref_price)
    return change, finite(change / ref_price * 100, "the change in percent")


Expiry = Callable[[str, date], date | None]  # a contract's last trading day, by its code, on a trading date


def basis_point(contract: Contract, spot: Spot, at: datetime) -> BasisPoint | None:
    if contract.last_price is None or not spot.value:
        return None
    basis, basis_pct = basis_of(contract.last_price, spot.value)
    return BasisPoint(trading_date=contract.trading_date, timestamp=at, futures_symbol=contract.symbol,
                      futures_price=contract.last_price, spot_value=spot.value, basis=basis, basis_pct=basis_pct,
                      is_premium=basis > 0)


class DerivativesCore:
    def __init__(self, state: DerivativesState | None = None, *, expiry_of: Expiry = expiry_on) -> None:
        self.state = state or DerivativesState()
        self.classifier = Classifier(self.state.trades)
        self.expiry_of = expiry_of

    # --- input ---------------------------------------------------------------------------------------------------

    def on_index(self, update: IndexUpdate) -> tuple[list[str], list[BasisPoint]]:
        """A VN30 update moves the basis of every contract traded that day: returns those contracts and the basis
        points released (a second completed). Every new basis is computed before the spot is taken, so a corrupt value
        is refused with the state untouched."""
        if update.index_id != SPOT_INDEX:
            return [], []
        spot = self.state.spot
        if spot is not None and (update.trading_date, update.timestamp) < (spot.trading_date, spot.timestamp):
            return [], []
        moved = [contract for contract in self.state.contracts.values()
                 if contract.trading_date == update.trading_date and contract.last_price is not None]
        if update.value:
            for contract in moved:
                basis_of(contract.last_price or 0.0, update.value)
        self.state.spot = Spot(update.trading_date, update.value, update.timestamp)
        released = [point for contract in moved
                    if (point := self._hold(contract, self.state.spot, update.timestamp)) is not None]
        return [contract.symbol for contract in moved], released

    def on_quote(self, quote: Quote) -> None:
        contract = self._contract(quote.symbol, quote.trading_date)
        if contract.trading_date == quote.trading_date:
            contract.bid1, contract.ask1 = quote.bid1, quote.ask1
        self.classifier.on_quote(quote)

    def on_trade(self, trade: Trade) -> tuple[TradeOutcome, BasisPoint | None]:
        """The trade's classification and, when it completes an earlier second, that second's basis point. The
        figures that can fail are computed before anything changes."""
        spot = self.state.spot
        if spot is not None and spot.trading_date == trade.trading_date and spot.value:
            basis_of(trade.price, spot.value)
        known = self.state.contracts.get(trade.symbol)
        change_of(trade.price, trade.ref_price or (known.ref_price if known is not None else None))
        outcome = self.classifier.on_trade(trade)
        if outcome.classified is None:
            return outcome, None
        contract = self._contract(trade.symbol, trade.trading_date)
        contract.last_price = trade.price
        contract.ref_price = trade.ref_price or contract.ref_price
        contract.total_volume = trade.total_volume
        contract.last_updated = trade.timestamp
        released = None
        if spot is not None and spot.trading_date == trade.trading_date:
            released = self._hold(contract, spot, trade.timestamp)
        return outcome, released

    @staticmethod
    def _hold(contract: Contract, spot: Spot, at: datetime) -> BasisPoint | None:
        """Hold the contract's basis at `at` as its second's point; returns the point of an earlier second it ends."""
        pending = contract.pending_point
        point = basis_point(contract, spot, at)
        if pending is not None and pending.timestamp.replace(microsecond=0) != at.replace(microsecond=0):
            contract.pending_point = point
            return pending
        if point is not None:  # the second's latest value wins
            contract.pending_point = point
        return None

    def held_points(self) -> list[BasisPoint]:
        """The basis points still held back (each contract's latest second)."""
        return [c.pending_point for c in self.state.contracts.values() if c.pending_point is not None]

    def forget(self, point: BasisPoint) -> None:
        """`point` went out: stop holding it (unless a newer one took its place meanwhile)."""
        contract = self.state.contracts.get(point.futures_symbol)
        if contract is not None and contract.pending_point is point:
            contract.pending_point = None

    def _contract(self, symbol: str, trading_date: date) -> Contract:
        contract = self.state.contracts.get(symbol)
        if contract is None or contract.trading_date < trading_date:
            contract = Contract(symbol=symbol, trading_date=trading_date)
            self.state.contracts[symbol] = contract
        return contract

    # --- output --------------------------------------------------------------------------------------------------

    def current_date(self) -> date | None:
        """The latest trading date seen, of a contract or of the index: the market's today."""
        dates = [contract.trading_date for contract in self.state.contracts.values()]
        if self.state.spot is not None:
            dates.append(self.state.spot.trading_date)
        return max(dates, default=None)

    def active_contract(self, trading_date: date) -> str:
        """The front month on `trading_date` among the contracts traded that day, by their last trading days."""
        candidates = []
        for symbol, contract in self.state.contracts.items():
            expiry = self.expiry_of(symbol, trading_date)
            if contract.trading_date == trading_date and expiry is not None and expiry >= trading_date:
                candidates.append((expiry, symbol))
        return min(candidates)[1] if candidates else front_month(trading_date)

    def active_now(self) -> str | None:
        """The active contract on the latest trading date seen."""
        today = self.current_date()
        return self.active_contract(today) if today is not None else None

    def data(self, symbol: str) -> DerivativesData | None:
        contract = self.state.contracts.get(symbol)
        if contract is None or contract.last_price is None or contract.last_updated is None:
            return None
        spot = self.state.spot
        if spot is not None and (spot.trading_date != contract.trading_date or not spot.value):
            spot = None  # no VN30 of the contract's day yet: no basis
        change, change_pct = change_of(contract.last_price, contract.ref_price)
        basis, basis_pct = basis_of(contract.last_price, spot.value) if spot is not None else (None, None)
        return DerivativesData(
            symbol=symbol, trading_date=contract.trading_date, last_price=contract.last_price, change=change,
            change_pct=change_pct,
            volume=contract.total_volume, bid_price=contract.bid1 or None, ask_price=contract.ask1 or None,
            spot_value=spot.value if spot is not None else None, basis=basis, basis_pct=basis_pct,
            is_premium=basis > 0 if basis is not None else None,
            is_active=symbol == self.active_now(),
            last_updated=max(contract.last_updated, spot.timestamp) if spot is not None else contract.last_updated,
        )
