"""The board tracker's pure core: every instrument's price-board row from its trades and quotes. No I/O.

Per instrument and trading date: a quote replaces the book (its levels as sent, best first); a trade whose
cumulative volume (TotalVol) grew is the last match, and moves the day's totals, open, high and low. The day's
high, low and average are the exchange's when it sends them (SSI's Highest/Lowest/AvgPrice), else what the matches
seen give (the average from the traded value over the volume). The average is in the price's unit: for a futures
contract SSI's AvgPrice and TotalVal are VND with the multiplier (100,000 VND a point), so it is divided back to
index points. A trade whose TotalVol did not grow (a repeat, or older
than one already seen) changes nothing: counted, never double counted. A message of a later trading date starts the
instrument's new day; one of an earlier date is stale (counted). A quote keeps the last match, a trade keeps the book.
The auction's projected price (SSI EstMatchedPrice, carried by X frames) is shown while a quote of an ATO or ATC
auction stands; a later quote of another session, or the auction's match itself, clears it.
"""

from __future__ import annotations

import msgspec

from shared.market import FUTURES_MULTIPLIER, Phase, is_futures, session_phase
from shared.messages.domain import (
    MAX_AVERAGE_PRICE,
    MAX_PERCENT,
    MAX_VALUE,
    BoardRow,
    NonFiniteError,
    Quote,
    Trade,
    finite,
)

_CALL_AUCTIONS = frozenset({Phase.ATO, Phase.ATC})  # the sessions whose book projects a match price


def _bounded(value: float, bound: float, what: str) -> float:
    """A figure the core computed, checked before anything changes: a message that would make it infinite or out of
    its type's bounds is refused (the shell dead-letters it), as the other trackers do."""
    if abs(finite(value, what)) > bound:
        raise NonFiniteError(f"{what} is {value}, beyond {bound:g}")
    return value


class BoardCore:
    def __init__(self, rows: dict[str, BoardRow] | None = None) -> None:
        self.rows: dict[str, BoardRow] = rows or {}
        self.stale = 0  # messages of an earlier trading date, or trades already counted

    def _day_of(self, message: Trade | Quote) -> BoardRow | None:
        """The instrument's row for the message's trading date (a fresh one on a new day); None when stale."""
        row = self.rows.get(message.symbol)
        if row is not None and message.trading_date < row.trading_date:
            self.stale += 1
            return None
        if row is None or message.trading_date > row.trading_date:
            row = BoardRow(symbol=message.symbol, exchange=message.exchange, trading_date=message.trading_date,
                           last_updated=message.timestamp)
        return row

    def on_quote(self, quote: Quote) -> BoardRow | None:
        row = self._day_of(quote)
        if row is None:
            return None
        session = quote.session or row.session
        projected = quote.projected_price if session_phase(session) in _CALL_AUCTIONS else None
        row = msgspec.structs.replace(row, bids=list(quote.bids), asks=list(quote.asks),
                                      exchange=quote.exchange or row.exchange, session=session,
                                      projected_price=projected, last_updated=max(row.last_updated, quote.timestamp))
        self.rows[quote.symbol] = row
        return row

    def on_trade(self, trade: Trade) -> BoardRow | None:
        row = self._day_of(trade)
        if row is None:
            return None
        if row.last_price is not None and trade.total_volume <= row.total_volume:
            self.stale += 1  # a repeat, or older than a match already counted
            return None
        # Values are VND: a futures contract's include its multiplier (100,000 VND a point), its prices do not.
        per_unit = FUTURES_MULTIPLIER if is_futures(trade.symbol, trade.exchange or row.exchange) else 1
        total_value = trade.total_value if trade.total_value is not None else (
            row.total_value + trade.price * trade.volume * per_unit)
        average = trade.avg_price if trade.avg_price else (
            _bounded(total_value / trade.total_volume, MAX_AVERAGE_PRICE, "the average price")
            if trade.total_volume else None)
        ref = trade.ref_price if trade.ref_price is not None else row.ref_price
        change = trade.change if trade.change is not None else (trade.price - ref if ref else None)
        ratio = trade.ratio_change if trade.ratio_change is not None else (
            _bounded(change / ref * 100, MAX_PERCENT, "the change in percent") if ref and change is not None else None)
        total_value = _bounded(total_value, MAX_VALUE, "the traded value")
        row = msgspec.structs.replace(
            row, exchange=trade.exchange or row.exchange, ref_price=ref,
            ceiling=trade.ceiling if trade.ceiling is not None else row.ceiling,
            floor=trade.floor if trade.floor is not None else row.floor,
            last_price=trade.price, last_volume=trade.volume, last_time=trade.timestamp,
            change=change, ratio_change=ratio, total_volume=trade.total_volume, total_value=total_value,
            open=row.open if row.open is not None else trade.price,
            high=trade.highest if trade.highest else max(row.high or trade.price, trade.price),
            low=trade.lowest if trade.lowest else min(row.low or trade.price, trade.price),
            avg_price=average / per_unit if average is not None else None,
            session=trade.session or row.session, projected_price=None,
            last_updated=max(row.last_updated, trade.timestamp),
        )
        self.rows[trade.symbol] = row
        return row
