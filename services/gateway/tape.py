"""Each symbol's tape: its latest classified trades and its 1-minute candles (the forming one included) of its latest
trading date, from the DERIVED stream, with what changed since last taken. Pure: fed trades, asked for state.

A trade whose cumulative volume (TotalVol) is not above the symbol's last one is a repeat (the stream read again
after a reconnect) and changes nothing. A trade of a later trading date starts the symbol's day afresh; one of an
earlier date is ignored."""

from __future__ import annotations

from collections import deque
from datetime import date, datetime

from shared.candles import MinuteCandle, add, minute_of, open_candle
from shared.messages.domain import ClassifiedTrade


class _SymbolTape:
    __slots__ = ("candles", "last_total", "trades", "trading_date")

    def __init__(self, trading_date: date, trades_kept: int) -> None:
        self.trading_date = trading_date
        self.trades: deque[ClassifiedTrade] = deque(maxlen=trades_kept)
        self.candles: dict[datetime, MinuteCandle] = {}  # by minute, in time order
        self.last_total = -1


class Tape:
    def __init__(self, trades_kept: int = 50, candles_kept: int = 60) -> None:
        self.trades_kept = trades_kept
        self.candles_kept = candles_kept
        self._tapes: dict[str, _SymbolTape] = {}
        self.new_trades: dict[str, list[ClassifiedTrade]] = {}  # since `take`
        self.changed_candles: dict[str, dict[datetime, MinuteCandle]] = {}
        self.repeats = 0

    def add(self, trade: ClassifiedTrade) -> None:
        tape = self._tapes.get(trade.symbol)
        if tape is None or trade.trading_date > tape.trading_date:
            tape = self._tapes[trade.symbol] = _SymbolTape(trade.trading_date, self.trades_kept)
            self.changed_candles.pop(trade.symbol, None)
            self.new_trades.pop(trade.symbol, None)
        elif trade.trading_date < tape.trading_date or trade.total_volume <= tape.last_total:
            self.repeats += 1
            return
        tape.last_total = trade.total_volume
        tape.trades.append(trade)
        self.new_trades.setdefault(trade.symbol, []).append(trade)
        minute = minute_of(trade)
        candle = tape.candles.get(minute)
        if candle is None:
            candle = tape.candles[minute] = open_candle(trade)
            if len(tape.candles) > self.candles_kept:
                del tape.candles[next(iter(tape.candles))]
        add(candle, trade)
        self.changed_candles.setdefault(trade.symbol, {})[minute] = candle

    def trades(self, symbol: str) -> list[ClassifiedTrade]:
        tape = self._tapes.get(symbol)
        return list(tape.trades) if tape is not None else []

    def candles(self, symbol: str) -> list[MinuteCandle]:
        tape = self._tapes.get(symbol)
        return list(tape.candles.values()) if tape is not None else []

    def take(self) -> tuple[dict[str, list[ClassifiedTrade]], dict[str, list[MinuteCandle]]]:
        """The trades and candles new or changed since the last call, by symbol."""
        trades, candles = self.new_trades, self.changed_candles
        self.new_trades, self.changed_candles = {}, {}
        return trades, {symbol: list(changed.values()) for symbol, changed in candles.items()}
