"""The aggressor rules: who initiated each trade (mua chủ động / bán chủ động), the day's split per instrument, and
its price against the reference. A pure core, messages in, events out, no I/O: the classifier runs it over stocks,
the derivatives service over futures.

Per symbol and trading date, a trade is new only when its cumulative volume (TotalVol) exceeds the last one seen:
an equal TotalVol is a duplicate, a lower one arrives out of order; both are ignored and counted. The trade's volume
is its LastVol; cumulative volume beyond it is volume whose trades never reached us ("unseen"), counted as neutral,
so the day's total always equals the exchange's latest TotalVol. Its value is not guessed: the prices of trades we
never saw are unknown, so unseen volume adds nothing to neutral_value.

Classification, the first rule that applies:
1. auction: an auction or post-close print -> neutral (a call auction's single price, a put-through deal: no
   aggressor). Its phase comes from TradingSession (ATO, ATC, PT, PLO: rule `auction`) or, when the feed sends no
   session code or one naming no phase (null, C, ...), from the exchange's schedule at the trade's time (rule
   `schedule`; `shared.market.trade_phase`): HOSE's opening print at 09:15:00 (the symbol's first match of the day),
   its closing print from 14:30 to 14:45:00, its post-close deals after that; HNX's closing auction and post-close;
   the derivatives market's auctions; UPCOM has none;
2. exchange: Side BU -> active buy, SD -> active sell (the exchange's own flag);
3. quote: against the latest book received before the trade (bid1/ask1; 0 or missing: that side is absent;
   bid1 >= ask1: no book): price >= ask1 -> buy; price <= bid1 -> sell; strictly inside: above the mid -> buy,
   below -> sell (at the mid, go on);
4. tick: against the day's price sequence RefPrice, p1, p2, ... (auction prints included): up -> buy, down -> sell,
   unchanged -> the direction of the last non-zero tick (none yet: go on);
5. none: neutral.
The book is the one before the trade because ingest publishes an X frame's trade before its quote, and quotes and
trades are consumed as one ordered sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

import msgspec

from shared.market import AUCTION_PHASES, Phase, session_phase, trade_phase
from shared.messages.domain import (
    ClassificationRule,
    ClassifiedTrade,
    PhaseVolumes,
    PriceData,
    Quote,
    SessionStats,
    Trade,
    TradeType,
    finite,
)

_EXCHANGE_SIDES = (TradeType.MUA_CHU_DONG, TradeType.BAN_CHU_DONG)


class Decision(StrEnum):
    """The rule and branch that decided a trade: finer than `ClassificationRule`, for metrics and audits."""

    AUCTION = "1_auction"
    SCHEDULE = "1_schedule"
    SIDE = "2_side"
    AT_OR_ABOVE_ASK = "3_at_or_above_ask"
    AT_OR_BELOW_BID = "3_at_or_below_bid"
    INSIDE_ABOVE_MID = "3_inside_above_mid"
    INSIDE_BELOW_MID = "3_inside_below_mid"
    TICK = "4_tick"
    NO_TICK = "5_no_tick"


_RULE_OF = {
    Decision.AUCTION: ClassificationRule.AUCTION,
    Decision.SCHEDULE: ClassificationRule.SCHEDULE,
    Decision.SIDE: ClassificationRule.EXCHANGE,
    Decision.AT_OR_ABOVE_ASK: ClassificationRule.QUOTE,
    Decision.AT_OR_BELOW_BID: ClassificationRule.QUOTE,
    Decision.INSIDE_ABOVE_MID: ClassificationRule.QUOTE,
    Decision.INSIDE_BELOW_MID: ClassificationRule.QUOTE,
    Decision.TICK: ClassificationRule.TICK,
    Decision.NO_TICK: ClassificationRule.NONE,
}


def classify_by_book(price: float, bid1: float, ask1: float) -> tuple[TradeType, Decision] | None:
    """Rule 3 against the book before the trade; None when the book decides nothing."""
    has_bid, has_ask = bid1 > 0, ask1 > 0
    if has_bid and has_ask and bid1 >= ask1:
        return None  # crossed or locked: not a book to trust
    if has_ask and price >= ask1:
        return TradeType.MUA_CHU_DONG, Decision.AT_OR_ABOVE_ASK
    if has_bid and price <= bid1:
        return TradeType.BAN_CHU_DONG, Decision.AT_OR_BELOW_BID
    if has_bid and has_ask:
        mid = (bid1 + ask1) / 2
        if price > mid:
            return TradeType.MUA_CHU_DONG, Decision.INSIDE_ABOVE_MID
        if price < mid:
            return TradeType.BAN_CHU_DONG, Decision.INSIDE_BELOW_MID
    return None


def phase_key(session: str | None, phase: Phase | None = None) -> str:
    """Where a trade's volume goes in the per-phase breakdown: ato, continuous, atc, or the session's own code (the
    phase's name when the schedule told it). `phase`: the trade's, when known; else its session code's."""
    named = session_phase(session)
    phase = phase or named
    if phase in (Phase.ATO, Phase.CONTINUOUS, Phase.ATC):
        return str(phase)
    if session and named is phase:  # a session code naming its phase: as sent (pt, plo)
        return session.strip().lower()
    return str(phase) if phase else (session or "unknown").strip().lower()


class SymbolDay(msgspec.Struct, kw_only=True):
    """Everything the classifier remembers about one symbol for one trading date."""

    symbol: str
    trading_date: date
    last_total: int = 0
    bid1: float = 0.0
    ask1: float = 0.0
    last_price: float | None = None  # the tick rule's previous price (RefPrice before the first trade)
    last_direction: TradeType | None = None  # the last non-zero tick
    ref_price: float | None = None
    ceiling: float | None = None
    floor: float | None = None
    stats: SessionStats
    price: PriceData | None = None
    duplicates: int = 0
    out_of_order: int = 0
    gaps: int = 0
    unseen_volume: int = 0


class TradeOutcome(msgspec.Struct, kw_only=True):
    """What one trade message did: its classification (None when ignored), and why it was ignored if it was."""

    classified: ClassifiedTrade | None = None
    decision: Decision | None = None
    ignored: str | None = None  # duplicate / out_of_order


def _add(split: PhaseVolumes, trade_type: TradeType, volume: int, value: float) -> None:
    if trade_type is TradeType.MUA_CHU_DONG:
        split.mua_chu_dong_volume += volume
        split.mua_chu_dong_value += value
    elif trade_type is TradeType.BAN_CHU_DONG:
        split.ban_chu_dong_volume += volume
        split.ban_chu_dong_value += value
    else:
        split.neutral_volume += volume
        split.neutral_value += value


@dataclass
class Tally:
    """Counts over everything the core has seen, for metrics and status."""

    duplicates: int = 0
    out_of_order: int = 0
    gaps: int = 0
    unseen_volume: int = 0


class Classifier:
    """The classifier's state: one `SymbolDay` per symbol, replaced when a new trading date begins."""

    def __init__(self, days: dict[str, SymbolDay] | None = None) -> None:
        self.days: dict[str, SymbolDay] = days or {}

    def _day(self, symbol: str, trading_date: date, at: datetime) -> SymbolDay:
        day = self.days.get(symbol)
        if day is None or day.trading_date != trading_date:
            if day is not None and day.trading_date > trading_date:
                return day  # a message from a day already over: read against the current day, then ignored
            day = SymbolDay(symbol=symbol, trading_date=trading_date,
                            stats=SessionStats(symbol=symbol, trading_date=trading_date, last_updated=at))
            self.days[symbol] = day
        return day

    def on_quote(self, quote: Quote) -> None:
        day = self._day(quote.symbol, quote.trading_date, quote.timestamp)
        if day.trading_date != quote.trading_date:
            return
        day.bid1, day.ask1 = quote.bid1, quote.ask1

    def on_trade(self, trade: Trade) -> TradeOutcome:
        """Everything that can fail (a non-finite change from a corrupt reference price) is worked out before the
        symbol's day changes at all: a trade is taken whole or refused with the day untouched."""
        day = self.days.get(trade.symbol)
        if day is not None and (day.trading_date > trade.trading_date or (
                day.trading_date == trade.trading_date and trade.total_volume <= day.last_total)):
            stale = day.trading_date != trade.trading_date or trade.total_volume < day.last_total
            if stale:
                day.out_of_order += 1
            else:
                day.duplicates += 1
            return TradeOutcome(ignored="out_of_order" if stale else "duplicate")
        new_day = day is None or day.trading_date != trade.trading_date
        if new_day:  # stored only once the trade is known to be whole
            day = SymbolDay(symbol=trade.symbol, trading_date=trade.trading_date,
                            stats=SessionStats(symbol=trade.symbol, trading_date=trade.trading_date,
                                               last_updated=trade.timestamp))
        assert day is not None
        added = trade.total_volume - day.last_total
        volume = min(trade.volume, added)
        unseen = added - volume
        value = finite(trade.price * volume, "the trade's value")
        price = self._price(day, trade)
        phase, by_schedule = trade_phase(trade.session, trade.exchange, trade.timestamp,
                                         first_of_day=day.last_total == 0)
        if new_day:
            self.days[trade.symbol] = day

        day.last_total = trade.total_volume
        self._reference(day, trade)
        trade_type, decision = self._classify(day, trade, phase, by_schedule)
        self._tick(day, trade.price)
        split_of_phase = day.stats.phases.setdefault(phase_key(trade.session, phase), PhaseVolumes())
        for split in (day.stats, split_of_phase):
            _add(split, trade_type, volume, value)
            if unseen:
                _add(split, TradeType.NEUTRAL, unseen, 0.0)
        if unseen:
            day.gaps += 1
            day.unseen_volume += unseen
        day.stats.total_volume = trade.total_volume
        day.stats.last_updated = trade.timestamp
        day.price = price or day.price

        classified = ClassifiedTrade(
            symbol=trade.symbol, trading_date=trade.trading_date, timestamp=trade.timestamp, price=trade.price,
            volume=volume, value=value, trade_type=trade_type, rule=_RULE_OF[decision],
            bid_price=day_bid(day), ask_price=day_ask(day), total_volume=trade.total_volume,
            session=trade.session, unseen_volume=unseen, ref_price=trade.ref_price, ceiling=trade.ceiling,
            floor=trade.floor,
        )
        return TradeOutcome(classified=classified, decision=decision)

    def _classify(self, day: SymbolDay, trade: Trade, phase: Phase | None,
                  by_schedule: bool) -> tuple[TradeType, Decision]:
        if phase in AUCTION_PHASES:
            return TradeType.NEUTRAL, Decision.SCHEDULE if by_schedule else Decision.AUCTION
        if trade.side in _EXCHANGE_SIDES:
            return trade.side, Decision.SIDE
        by_book = classify_by_book(trade.price, day.bid1, day.ask1)
        if by_book is not None:
            return by_book
        if day.last_price is not None and trade.price != day.last_price:
            direction = TradeType.MUA_CHU_DONG if trade.price > day.last_price else TradeType.BAN_CHU_DONG
            return direction, Decision.TICK
        if day.last_price is not None and day.last_direction is not None:
            return day.last_direction, Decision.TICK
        return TradeType.NEUTRAL, Decision.NO_TICK

    @staticmethod
    def _tick(day: SymbolDay, price: float) -> None:
        if day.last_price is not None and price != day.last_price:
            day.last_direction = TradeType.MUA_CHU_DONG if price > day.last_price else TradeType.BAN_CHU_DONG
        day.last_price = price

    @staticmethod
    def _reference(day: SymbolDay, trade: Trade) -> None:
        """RefPrice, ceiling and floor come with the trades; the first RefPrice also starts the tick sequence."""
        if trade.ref_price:
            if day.last_price is None:
                day.last_price = trade.ref_price
            day.ref_price = trade.ref_price
        day.ceiling = trade.ceiling or day.ceiling
        day.floor = trade.floor or day.floor

    @staticmethod
    def _price(day: SymbolDay, trade: Trade) -> PriceData | None:
        """The symbol's price after `trade` (None while no reference price is known), from the day before it."""
        ref = trade.ref_price or day.ref_price
        if not ref:
            return None
        change = trade.price - ref
        return PriceData(symbol=day.symbol, trading_date=day.trading_date, last_price=trade.price, change=change,
                         change_pct=finite(change / ref * 100, "the change in percent"), ref_price=ref,
                         ceiling=trade.ceiling or day.ceiling, floor=trade.floor or day.floor,
                         last_updated=trade.timestamp)

    def tally(self) -> Tally:
        tally = Tally()
        for day in self.days.values():
            tally.duplicates += day.duplicates
            tally.out_of_order += day.out_of_order
            tally.gaps += day.gaps
            tally.unseen_volume += day.unseen_volume
        return tally


def day_bid(day: SymbolDay) -> float | None:
    return day.bid1 or None


def day_ask(day: SymbolDay) -> float | None:
    return day.ask1 or None
