"""The gateway's view of the market: the trackers' KV buckets decoded into one in-memory picture, with what changed
since each channel last broadcast. Pure: fed (bucket, key, value) entries, asked for snapshots and deltas."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import msgspec

from shared.messages.domain import (
    BasisPoint,
    BoardRow,
    DerivativesData,
    ForeignInvestorData,
    ForeignSummary,
    IndexBasket,
    IndexData,
    MarketSnapshot,
    PriceData,
    SecurityInfo,
    SessionStats,
)
from shared.subjects import BASKET_KEY_PREFIX, FOREIGN_SUMMARY_KEY, SECURITY_KEY_PREFIX, VN30_BASKET_KEY, Bucket

WATCHED = (Bucket.SESSION_STATS, Bucket.PRICES, Bucket.FOREIGN, Bucket.INDICES, Bucket.DERIVATIVES, Bucket.BOARD,
           Bucket.REFERENCE)

_DECODERS = {
    Bucket.SESSION_STATS: msgspec.json.Decoder(SessionStats),
    Bucket.PRICES: msgspec.json.Decoder(PriceData),
    Bucket.INDICES: msgspec.json.Decoder(IndexData),
    Bucket.DERIVATIVES: msgspec.json.Decoder(DerivativesData | None),
    Bucket.BOARD: msgspec.json.Decoder(BoardRow),
}
_FOREIGN_STOCK = msgspec.json.Decoder(ForeignInvestorData)
_FOREIGN_SUMMARY = msgspec.json.Decoder(ForeignSummary)
_BASKET = msgspec.json.Decoder(IndexBasket)
_SECURITY = msgspec.json.Decoder(SecurityInfo)

# What each WebSocket channel shows, by the buckets it is made of.
CHANNEL_BUCKETS: dict[str, frozenset[Bucket]] = {
    "market": frozenset({Bucket.SESSION_STATS, Bucket.PRICES, Bucket.INDICES, Bucket.FOREIGN, Bucket.DERIVATIVES}),
    "foreign": frozenset({Bucket.FOREIGN, Bucket.REFERENCE}),
    "index": frozenset({Bucket.INDICES}),
    "derivatives": frozenset({Bucket.DERIVATIVES}),
}


class MarketView:
    """Current state from KV, plus, per channel, the keys changed since its last broadcast."""

    def __init__(self, max_basis_points: int = 7_500) -> None:
        self.stats: dict[str, SessionStats] = {}
        self.prices: dict[str, PriceData] = {}
        self.foreign: dict[str, ForeignInvestorData] = {}
        self.summary: ForeignSummary | None = None
        self.indices: dict[str, IndexData] = {}
        self.contracts: dict[str, DerivativesData] = {}
        self.basket: list[str] = []  # VN30's
        self.baskets: dict[str, list[str]] = {}  # index id -> its members, as reference data names them
        self.securities: dict[str, SecurityInfo] = {}
        self.board: dict[str, BoardRow] = {}
        self.board_changed: set[str] = set()  # symbols whose board row or foreign columns changed since taken
        self.basis: dict[str, list[BasisPoint]] = {}
        self.max_basis_points = max_basis_points
        self.undecodable = 0
        self._changed: dict[str, dict[Bucket, set[str]]] = {channel: {} for channel in CHANNEL_BUCKETS}
        self._new_points: list[BasisPoint] = []

    # --- input ---------------------------------------------------------------------------------------------------

    def apply(self, bucket: Bucket, key: str, value: bytes | None) -> None:
        try:
            self._apply(bucket, key, value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.undecodable += 1
            return
        for channel, buckets in CHANNEL_BUCKETS.items():
            if bucket in buckets:
                self._changed[channel].setdefault(bucket, set()).add(key)

    def _apply(self, bucket: Bucket, key: str, value: bytes | None) -> None:
        if bucket is Bucket.REFERENCE:
            if key.startswith(BASKET_KEY_PREFIX):
                _store(self.baskets, key.removeprefix(BASKET_KEY_PREFIX),
                       _BASKET.decode(value).symbols if value is not None else None)
                self.basket = self.baskets.get(VN30_BASKET_KEY.removeprefix(BASKET_KEY_PREFIX), [])
            elif key.startswith(SECURITY_KEY_PREFIX):
                _store(self.securities, key.removeprefix(SECURITY_KEY_PREFIX),
                       _SECURITY.decode(value) if value is not None else None)
            return
        if bucket is Bucket.FOREIGN:
            if key == FOREIGN_SUMMARY_KEY:
                self.summary = _FOREIGN_SUMMARY.decode(value) if value is not None else None
            else:
                symbol = key.removeprefix("stock.")
                _store(self.foreign, symbol, _FOREIGN_STOCK.decode(value) if value is not None else None)
                self.board_changed.add(symbol)
            return
        if bucket is Bucket.BOARD:
            self.board_changed.add(key)
        target = {Bucket.SESSION_STATS: self.stats, Bucket.PRICES: self.prices, Bucket.INDICES: self.indices,
                  Bucket.DERIVATIVES: self.contracts, Bucket.BOARD: self.board}[bucket]
        _store(target, key, _DECODERS[bucket].decode(value) if value is not None else None)

    def replace(self, bucket: Bucket, entries: dict[str, bytes]) -> None:
        """A bucket's full content after a (re)load: what is not in it any more is gone."""
        current = self._keys(bucket)
        for key in current - set(entries):
            self.apply(bucket, key, None)
        for key, value in entries.items():
            self.apply(bucket, key, value)

    def _keys(self, bucket: Bucket) -> set[str]:
        if bucket is Bucket.FOREIGN:
            return {f"stock.{symbol}" for symbol in self.foreign} | ({FOREIGN_SUMMARY_KEY} if self.summary else set())
        if bucket is Bucket.REFERENCE:
            return ({BASKET_KEY_PREFIX + index_id for index_id in self.baskets}
                    | {SECURITY_KEY_PREFIX + symbol for symbol in self.securities})
        return set({Bucket.SESSION_STATS: self.stats, Bucket.PRICES: self.prices, Bucket.INDICES: self.indices,
                    Bucket.DERIVATIVES: self.contracts, Bucket.BOARD: self.board}[bucket])

    def take_board_changes(self) -> set[str]:
        """The symbols whose board row or foreign columns changed since the last call."""
        changed, self.board_changed = self.board_changed, set()
        return changed

    def add_basis_point(self, point: BasisPoint) -> None:
        """Basis points come from the DERIVED stream; a contract keeps its latest trading date's, in order."""
        series = self.basis.setdefault(point.futures_symbol, [])
        if series and point.trading_date > series[-1].trading_date:
            series.clear()
        elif series and (point.trading_date, point.timestamp) <= (series[-1].trading_date, series[-1].timestamp):
            return
        series.append(point)
        if len(series) > self.max_basis_points:
            del series[: len(series) - self.max_basis_points]
        self._new_points.append(point)
        self._changed["derivatives"].setdefault(Bucket.DERIVATIVES, set()).add(point.futures_symbol)

    # --- output --------------------------------------------------------------------------------------------------

    def trading_date(self) -> date | None:
        dates = [s.trading_date for s in self.stats.values()] + [i.trading_date for i in self.indices.values()]
        return max(dates, default=None)

    def active_contract(self) -> DerivativesData | None:
        active = [c for c in self.contracts.values() if c.is_active]
        return max(active, key=lambda c: c.trading_date, default=None)

    def snapshot(self) -> MarketSnapshot:
        updated = [s.last_updated for s in self.stats.values()] + [i.last_updated for i in self.indices.values()]
        return MarketSnapshot(
            trading_date=self.trading_date(), quotes=dict(sorted(self.stats.items())),
            prices=dict(sorted(self.prices.items())), indices=dict(sorted(self.indices.items())),
            foreign=self.summary, derivatives=self.active_contract(), last_updated=max(updated, default=None),
        )

    def foreign_stocks(self) -> list[ForeignInvestorData]:
        """The basket's symbols (all tracked symbols while no basket is known), by symbol."""
        symbols = self.basket or sorted(self.foreign)
        return [self.foreign[symbol] for symbol in sorted(symbols) if symbol in self.foreign]

    def basis_trend(self, minutes: int) -> list[BasisPoint]:
        """The active contract's basis points of the last `minutes`, counted back from its latest point (the
        market's clock, not the wall clock)."""
        active = self.active_contract()
        series = self.basis.get(active.symbol, []) if active else []
        if not series:
            return []
        since = series[-1].timestamp.timestamp() - minutes * 60
        return [point for point in series if point.timestamp.timestamp() >= since]

    def channel_state(self, channel: str) -> Any:
        """A channel's full state, as its `snapshot` message carries it."""
        if channel == "market":
            return self.snapshot()
        if channel == "foreign":
            return self.summary
        if channel == "index":
            return dict(sorted(self.indices.items()))
        return {"contract": self.active_contract(), "contracts": dict(sorted(self.contracts.items())),
                "basis_points": self.basis_trend(30)}

    def take_delta(self, channel: str) -> dict[str, Any] | None:
        """What changed for `channel` since its last call, as its `delta` message carries it (None: nothing)."""
        changed = self._changed[channel]
        points = self._new_points if channel == "derivatives" else []
        if not changed and not points:
            return None
        self._changed[channel] = {}
        if channel == "derivatives":
            self._new_points = []
            contracts = changed.get(Bucket.DERIVATIVES, set())
            return {"contract": self.active_contract(), "contracts": _pick(self.contracts, contracts),
                    "basis_points": points}
        if channel == "foreign":
            return {"summary": self.summary}
        if channel == "index":
            return _pick(self.indices, changed.get(Bucket.INDICES, ()))
        delta: dict[str, Any] = {
            "quotes": _pick(self.stats, changed.get(Bucket.SESSION_STATS, ())),
            "prices": _pick(self.prices, changed.get(Bucket.PRICES, ())),
            "indices": _pick(self.indices, changed.get(Bucket.INDICES, ())),
        }
        if Bucket.FOREIGN in changed:
            delta["foreign"] = self.summary
        if Bucket.DERIVATIVES in changed:
            delta["derivatives"] = self.active_contract()
        return delta


def _store(target: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


def _pick(source: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The changed entries; a key that was deleted maps to None, so clients drop it too."""
    return {key: source.get(key) for key in sorted(keys)}
