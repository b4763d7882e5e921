"""The classifier service: stock trades and quotes from MARKET (md.trade.*, md.quote.*: futures have subjects of their
own), in stream order, through the pure core; classified trades to DERIVED, each symbol's session stats and price
to KV."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from prometheus_client import Counter

from shared.aggressor import Classifier, SymbolDay
from shared.config import Settings
from shared.messages.domain import Quote, Trade
from shared.subjects import MD_QUOTE, MD_TRADE, Bucket, derived_subject
from shared.tracker import Tracker

CLASSIFIED = Counter("stocktracker_classifier_trades_total", "Trades classified, by type and deciding rule",
                     ["trade_type", "rule"])
IGNORED = Counter("stocktracker_classifier_ignored_total", "Trades ignored: duplicate or out_of_order", ["why"])
UNSEEN = Counter("stocktracker_classifier_unseen_volume_total",
                 "Volume revealed by TotalVol jumps beyond the trades seen, counted as neutral")


class ClassifierState(msgspec.Struct):
    days: dict[str, SymbolDay]


@functools.cache
def _labelled(metric: Counter, *labels: str) -> Any:
    return metric.labels(*labels)


class ClassifierService(Tracker[ClassifierState]):
    name = "classifier"
    description = "Classifies trades as active buy / active sell; session stats and prices"
    metrics_port = 9102
    inputs = ((MD_TRADE.wildcard, Trade), (MD_QUOTE.wildcard, Quote))
    state_type = ClassifierState

    def __init__(self) -> None:
        super().__init__()
        self.core = Classifier()
        self.classified = 0
        self._encode = msgspec.json.Encoder().encode

    def kv_interval_s(self, settings: Settings) -> float:
        return settings.classifier_kv_interval_ms / 1000

    def restore(self, state: ClassifierState | None) -> None:
        self.core = Classifier(state.days if state else None)

    def snapshot(self) -> ClassifierState:
        return ClassifierState(days=self.core.days)

    async def handle(self, subject: str, message: Trade | Quote) -> None:
        if isinstance(message, Quote):
            self.core.on_quote(message)
            return
        trade = message
        outcome = self.core.on_trade(trade)
        if outcome.classified is None:
            _labelled(IGNORED, outcome.ignored or "ignored").inc()
            return
        classified = outcome.classified
        assert self.ctx is not None
        assert self.kv is not None
        await self.ctx.publisher.publish(derived_subject(classified), self._encode(classified),
                                         f"classified:{classified.natural_key()}")
        _labelled(CLASSIFIED, classified.trade_type, classified.rule).inc()
        self.classified += 1
        if classified.unseen_volume:
            UNSEEN.inc(classified.unseen_volume)
        day = self.core.days[trade.symbol]
        self.kv.put(Bucket.SESSION_STATS, trade.symbol, lambda: self._encode(day.stats))
        if day.price is not None:
            self.kv.put(Bucket.PRICES, trade.symbol, lambda: self._encode(day.price))

    def status(self) -> dict[str, Any]:
        tally = self.core.tally()
        return {**super().status(), "symbols": len(self.core.days), "classified": self.classified,
                "duplicates": tally.duplicates, "out_of_order": tally.out_of_order, "gaps": tally.gaps,
                "unseen_volume": tally.unseen_volume}
