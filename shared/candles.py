"""One-minute candles folded from classified trades: the recorder's `candles_1m` rows and the gateway's forming
candles are the same fold. A candle's open and close belong to the trades with the lowest and highest TotalVol, so
trades may arrive in any order; buy, sell and neutral volumes follow each trade's classification."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import msgspec

from shared.messages.domain import ClassifiedTrade, TradeType

_BUY, _SELL = TradeType.MUA_CHU_DONG, TradeType.BAN_CHU_DONG


class MinuteCandle(msgspec.Struct):
    """One minute of one symbol (the columns of `candles_1m`, in order). `first_total`/`last_total`: the TotalVol of
    the trades that set the open and the close."""

    symbol: str
    trading_date: date
    minute: datetime  # the minute's start, exchange time
    open: float
    high: float
    low: float
    close: float
    volume: int
    value: float
    buy_volume: int
    sell_volume: int
    neutral_volume: int
    unseen_volume: int
    trades: int
    first_total: int
    last_total: int


def minute_of(trade: ClassifiedTrade) -> datetime:
    return trade.timestamp.replace(second=0, microsecond=0)


def open_candle(trade: ClassifiedTrade) -> MinuteCandle:
    """An empty candle of the trade's minute, opened at its price; `add` the trade to it."""
    price, total = trade.price, trade.total_volume
    return MinuteCandle(trade.symbol, trade.trading_date, minute_of(trade), price, price, price, price, 0, 0.0, 0, 0,
                        0, 0, 0, total, total)


def add(candle: MinuteCandle, trade: ClassifiedTrade) -> None:
    """Fold a trade of the candle's symbol and minute into it."""
    price, volume, total = trade.price, trade.volume, trade.total_volume
    if total < candle.first_total:
        candle.open, candle.first_total = price, total
    elif total > candle.last_total:
        candle.close, candle.last_total = price, total
    if price > candle.high:
        candle.high = price
    elif price < candle.low:
        candle.low = price
    candle.volume += volume
    candle.value += trade.value
    candle.unseen_volume += trade.unseen_volume
    candle.trades += 1
    side = trade.trade_type
    if side is _BUY:
        candle.buy_volume += volume
    elif side is _SELL:
        candle.sell_volume += volume
    else:
        candle.neutral_volume += volume


def minute_candles(trades: Sequence[ClassifiedTrade]) -> list[MinuteCandle]:
    """The trades folded into 1-minute candles, one per symbol, trading date and minute."""
    candles: dict[tuple[str, date, float], MinuteCandle] = {}
    for trade in trades:
        key = (trade.symbol, trade.trading_date, trade.timestamp.timestamp() // 60)
        candle = candles.get(key)
        if candle is None:
            candle = candles[key] = open_candle(trade)
        add(candle, trade)
    return list(candles.values())
