"""The foreign service: SSI's cumulative foreign figures (md.foreign.*) into flow events, per-symbol data and the
VN30 summary in KV."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
from prometheus_client import Counter

from services.foreign.core import ForeignCore, SymbolForeign
from shared.bus import BucketWatch
from shared.market import exchange_now
from shared.messages.domain import ForeignRoom, IndexBasket
from shared.reference import configured_basket
from shared.runtime import Context
from shared.subjects import FOREIGN_SUMMARY_KEY, MD_FOREIGN, VN30_BASKET_KEY, Bucket, derived_subject, foreign_stock_key
from shared.tracker import Tracker

FLOWS = Counter("stocktracker_foreign_flows_total", "Foreign flow events published")
RESEEDS = Counter("stocktracker_foreign_reseeds_total", "Cumulative volumes that went backwards and re-seeded")
BASELINES = Counter("stocktracker_foreign_baselines_total",
                    "First updates of the day taken as a baseline, not a flow: begun mid-day without a checkpoint")


class ForeignState(msgspec.Struct):
    symbols: dict[str, SymbolForeign]
    first_day: date | None = None  # the trading date the tracker began in: only that day's first updates are baselines


class ForeignService(Tracker[ForeignState]):
    name = "foreign"
    description = "Foreign investors' flows, speed and acceleration; the VN30 summary"
    metrics_port = 9103
    inputs = ((MD_FOREIGN.wildcard, ForeignRoom),)
    state_type = ForeignState
    state_version = 2  # 2: the day it began (first_day): an older checkpoint is rebuilt from the stream
    partitionable = False  # the VN30 summary needs every basket symbol

    def __init__(self) -> None:
        super().__init__()
        self.core = ForeignCore()
        self.basket: list[str] = []
        self.flows = 0
        self._encode = msgspec.json.Encoder().encode
        self._basket_watch: BucketWatch | None = None

    async def start(self, ctx: Context) -> None:
        self.basket = configured_basket(ctx.settings.vn30_symbols, exchange_now().date()).symbols
        self._basket_watch = BucketWatch(ctx.js, Bucket.REFERENCE, self._reference_changed)
        self._basket_watch.start()
        await super().start(ctx)

    def _reference_changed(self, key: str, value: bytes | None) -> None:
        if key == VN30_BASKET_KEY and value is not None:
            self.basket = msgspec.json.decode(value, type=IndexBasket).symbols
            self._summary_changed()

    def restore(self, state: ForeignState | None) -> None:
        self.core = ForeignCore(state.symbols if state else None, window_s=self._window_s(),
                                first_day=state.first_day if state else None)

    def _window_s(self) -> float:
        return self.ctx.settings.foreign_speed_window_s if self.ctx else 300.0

    def snapshot(self) -> ForeignState:
        return ForeignState(symbols=self.core.symbols, first_day=self.core.first_day)

    async def handle(self, subject: str, room: ForeignRoom) -> None:
        reseeds_before = self.core.symbols[room.symbol].reseeds if room.symbol in self.core.symbols else 0
        baselines_before = self.core.baselines
        flow = self.core.on_room(room)
        if self.core.baselines > baselines_before:
            BASELINES.inc()
            if baselines_before == 0:
                assert self.ctx is not None
                self.ctx.log.info("begun within the trading day without a checkpoint: each symbol's first update "
                                  "today is a baseline, not a flow", trading_date=room.trading_date.isoformat())
        state = self.core.symbols.get(room.symbol)
        if state is None:
            return
        if state.reseeds > reseeds_before:
            RESEEDS.inc()
        if flow is not None:
            assert self.ctx is not None
            key = (f"flow:{flow.trading_date.isoformat()}:{flow.symbol}:{flow.cumulative_buy_volume}:"
                   f"{flow.cumulative_sell_volume}:{flow.cumulative_buy_value:.0f}:{flow.cumulative_sell_value:.0f}")
            await self.ctx.publisher.publish(derived_subject(flow), self._encode(flow), key)
            self.flows += 1
            FLOWS.inc()
        assert self.kv is not None
        self.kv.put(Bucket.FOREIGN, foreign_stock_key(room.symbol), lambda: self._encode(state.data))
        if room.symbol in self.basket:
            self._summary_changed()

    def _summary_changed(self) -> None:
        day = self.core.latest_date()
        if day is None or self.kv is None:
            return
        self.kv.put(Bucket.FOREIGN, FOREIGN_SUMMARY_KEY, lambda: self._encode(self.core.summary(self.basket, day)))

    async def stop(self) -> None:
        if self._basket_watch is not None:
            await self._basket_watch.stop()
        await super().stop()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "symbols": len(self.core.symbols), "flows": self.flows,
                "basket": len(self.basket), "stale": self.core.stale, "baselines": self.core.baselines,
                "first_day": self.core.first_day.isoformat() if self.core.first_day else None}
