"""The board service: every instrument's trades and quotes (stocks and futures) into its price-board row in KV
`board` (services/board/core.py). Restart-safe like the other trackers (checkpointed rows); partitionable by symbol."""

from __future__ import annotations

from typing import Any

import msgspec
from prometheus_client import Counter

from services.board.core import BoardCore
from shared.messages.domain import BoardRow, Quote, Trade
from shared.subjects import MD_FUTURES_QUOTE, MD_FUTURES_TRADE, MD_QUOTE, MD_TRADE, Bucket
from shared.tracker import Tracker

STALE = Counter("stocktracker_board_stale_total", "Trades already counted or messages of an earlier day, ignored")


class BoardState(msgspec.Struct):
    rows: dict[str, BoardRow]


class BoardService(Tracker[BoardState]):
    name = "board"
    description = "The price board: each instrument's book, last match and day's figures"
    metrics_port = 9108
    inputs = ((MD_TRADE.wildcard, Trade), (MD_QUOTE.wildcard, Quote), (MD_FUTURES_TRADE.wildcard, Trade),
              (MD_FUTURES_QUOTE.wildcard, Quote))
    state_type = BoardState

    def __init__(self) -> None:
        super().__init__()
        self.core = BoardCore()
        self._encode = msgspec.json.Encoder().encode

    def restore(self, state: BoardState | None) -> None:
        self.core = BoardCore(state.rows if state else None)

    def snapshot(self) -> BoardState:
        return BoardState(rows=self.core.rows)

    async def handle(self, subject: str, message: Trade | Quote) -> None:
        row = self.core.on_trade(message) if isinstance(message, Trade) else self.core.on_quote(message)
        if row is None:
            STALE.inc()
            return
        assert self.kv is not None
        self.kv.put(Bucket.BOARD, row.symbol, lambda: self._encode(self.core.rows[row.symbol]))

    def status(self) -> dict[str, Any]:
        return {**super().status(), "symbols": len(self.core.rows), "stale": self.core.stale}
