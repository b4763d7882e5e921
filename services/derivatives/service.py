"""The derivatives service: futures trades and quotes (md.futures.trade.*, md.futures.quote.*) and the VN30 index
from MARKET; classified futures trades and basis points to DERIVED, each contract's state to KV."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import date
from typing import Any

import msgspec
from prometheus_client import Counter

from services.derivatives.core import SPOT_INDEX, DerivativesCore, DerivativesState
from shared.bus import BucketWatch
from shared.market import contract_expiry, expiry_on
from shared.messages.domain import BasisPoint, IndexUpdate, Quote, SecurityInfo, Trade
from shared.runtime import Context
from shared.subjects import MD_FUTURES_QUOTE, MD_FUTURES_TRADE, MD_INDEX, Bucket, derived_subject
from shared.tracker import Tracker

BASIS_POINTS = Counter("stocktracker_derivatives_basis_points_total", "Basis points published")
FUTURES_TRADES = Counter("stocktracker_derivatives_trades_total", "Futures trades classified")
IDLE_RELEASE_S = 1.0  # a second's basis point goes out when the basis has not moved for this long


class DerivativesService(Tracker[DerivativesState]):
    name = "derivatives"
    description = "VN30F futures and their basis to the VN30 index"
    metrics_port = 9105
    inputs = ((MD_FUTURES_TRADE.wildcard, Trade), (MD_FUTURES_QUOTE.wildcard, Quote),
              (MD_INDEX(SPOT_INDEX), IndexUpdate))
    state_type = DerivativesState
    partitionable = False
    sparse = True  # futures and one index among every stock's trades and quotes (md.> covers them all)

    def __init__(self) -> None:
        super().__init__()
        self.core = DerivativesCore()
        self.aliases: dict[str, str] = {}
        self.expiries: dict[str, date] = {}
        self._last_point_at = 0.0  # when a basis point was last held back (a futures trade, a VN30 move)
        self._active: str | None = None  # the active contract whose KV entry says so
        self._encode = msgspec.json.Encoder().encode
        self._reference: BucketWatch | None = None
        self._releaser: asyncio.Task[None] | None = None

    async def start(self, ctx: Context) -> None:
        self.aliases = ctx.settings.futures_codes
        self._reference = BucketWatch(ctx.js, Bucket.REFERENCE, self._reference_changed)
        self._reference.start()
        await super().start(ctx)
        self._releaser = asyncio.create_task(self._release_when_idle(), name="basis-release")

    def _reference_changed(self, key: str, value: bytes | None) -> None:
        if not key.startswith("security.") or value is None:
            return
        security = msgspec.json.decode(value, type=SecurityInfo)
        if security.sec_type == "FU" and security.last_trading_date is not None:
            self.expiries[security.symbol] = security.last_trading_date

    def expiry_of(self, symbol: str, trading_date: date) -> date | None:
        """A contract's last trading day, in order of truth: SSI's reference data (LastTradingDate, else
        MaturityDate: a holiday moves the expiry, and only the exchange knows it), FUTURES_ALIASES, a generic alias
        (VN30F1M, VN30F2M, VN30F1Q, VN30F2Q) as the contract it stands for on `trading_date`, the third-Thursday
        rule of a VN30FYYMM code."""
        if symbol in self.expiries:
            return self.expiries[symbol]
        if symbol in self.aliases:
            return contract_expiry(self.aliases[symbol])
        return expiry_on(symbol, trading_date)

    def restore(self, state: DerivativesState | None) -> None:
        self.core = DerivativesCore(state, expiry_of=self.expiry_of)

    def snapshot(self) -> DerivativesState:
        return self.core.state

    async def handle(self, subject: str, message: Trade | Quote | IndexUpdate) -> None:
        if isinstance(message, IndexUpdate):
            moved, released = self.core.on_index(message)
            for point in released:
                await self._publish_point(point)
            for symbol in moved:
                self._changed(symbol)
            if moved:
                self._last_point_at = time.monotonic()
            return
        if isinstance(message, Quote):
            self.core.on_quote(message)
            self._changed(message.symbol)
            return
        trade = message
        outcome, released = self.core.on_trade(trade)
        if outcome.classified is None:
            return
        assert self.ctx is not None
        classified = outcome.classified
        await self.ctx.publisher.publish(derived_subject(classified), self._encode(classified),
                                         f"classified:{classified.natural_key()}")
        FUTURES_TRADES.inc()
        self._last_point_at = time.monotonic()
        if released is not None:
            await self._publish_point(released)
        self._changed(trade.symbol)

    def _changed(self, symbol: str) -> None:
        """Write the contract's state; when the active contract changed, both the new one's and the old one's (which
        would otherwise still say it is active)."""
        assert self.kv is not None
        self._put(symbol)
        active = self.core.active_now()
        if active != self._active:
            # After a start every contract is written once: which one an earlier run's entries call active is not
            # known here (a roll's rewrite may have been lost with that run).
            rewrite = self.core.state.contracts if self._active is None else (self._active, active)
            for contract in rewrite:
                if contract is not None and contract != symbol and contract in self.core.state.contracts:
                    self._put(contract)
            self._active = active

    def _put(self, symbol: str) -> None:
        assert self.kv is not None
        self.kv.put(Bucket.DERIVATIVES, symbol, lambda: self._encode(self.core.data(symbol)))

    async def _publish_point(self, point: BasisPoint) -> None:
        assert self.ctx is not None
        key = f"basis:{point.futures_symbol}:{point.timestamp.replace(microsecond=0).isoformat()}"
        await self.ctx.publisher.publish(derived_subject(point), self._encode(point), key)
        BASIS_POINTS.inc()

    async def _release_when_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_RELEASE_S / 2)
            if time.monotonic() - self._last_point_at >= IDLE_RELEASE_S:
                await self._release_held()

    async def _release_held(self) -> None:
        # Published before being forgotten, so a checkpoint taken meanwhile still holds it: none is lost.
        for point in self.core.held_points():
            await self._publish_point(point)
            self.core.forget(point)

    async def stop(self) -> None:
        if self._releaser is not None:
            self._releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._releaser
        if self._reference is not None:
            await self._reference.stop()
        if self._reader is not None:
            await self._reader.stop()  # no more input: what is held now is all there is to release
        await self._release_held()
        await super().stop()

    def status(self) -> dict[str, Any]:
        contracts = self.core.state.contracts
        latest = max((c.trading_date for c in contracts.values()), default=None)
        return {**super().status(), "contracts": sorted(contracts),
                "active": self.core.active_contract(latest) if latest else None}
