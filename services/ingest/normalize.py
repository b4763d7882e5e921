"""Ingest's pure core: a raw SSI frame in, the messages to publish out (subject, JSON payload, natural-key message
id), with a verdict on every trade. No I/O; the service feeds it frames and publishes what it returns.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import msgspec

from shared.market import LONGEST_CLOSURE_DAYS, is_futures
from shared.messages.domain import Message, Quote, Rejection, Trade
from shared.messages.ssi import Decoded, Reason, decode_frame, rejection
from shared.subjects import MD_REJECTED, market_subject

Frame = bytes | str | Mapping[str, Any]


class TradeVerdict(StrEnum):
    """How a trade's cumulative volume (TotalVol) compares with the symbol's latest one that day."""

    NEW = "new"
    DUPLICATE = "duplicate"  # the same TotalVol again: a frame sent twice
    OUT_OF_ORDER = "out_of_order"  # a lower TotalVol: an older trade arriving late
    REPEAT = "repeat"  # an X frame's trade part repeating with a book change: not a trade at all


class Outgoing(NamedTuple):  # a tuple: one or two per frame, and a frozen dataclass costs a microsecond each
    subject: str
    payload: bytes
    msg_id: str


@dataclass(frozen=True, slots=True)
class Normalized:
    """An accepted frame: its canonical DataType, what to publish, and the verdict on its trade (if any)."""

    data_type: str
    messages: tuple[Outgoing, ...]
    trade_verdict: TradeVerdict | None
    exchange_time: datetime
    book_unchanged: bool = False  # its quote was the symbol's last book again: not published


@dataclass(frozen=True, slots=True)
class Refused:
    """A rejected frame: the reason, and the rejection to publish on md.rejected."""

    reason: str
    detail: str
    message: Outgoing


def oversized(messages: tuple[Outgoing, ...], limit: int) -> str | None:
    """Why a frame's messages cannot be published (a payload over the bus's `limit`), or None."""
    for message in messages:
        if len(message.payload) > limit:
            return f"{message.subject} would be {len(message.payload):,} bytes, over the bus's {limit:,}"
    return None


class Normalizer:
    """Turns frames into publishable messages.

    Message ids (JetStream's Nats-Msg-Id) are natural keys, so a frame read twice (a replayed file, a resent frame)
    is dropped by JetStream instead of counted twice. A trade's key is its trading date, symbol and TotalVol. A book
    can legitimately go A, B, A within one second, so a quote's key is its exchange time, its ordinal among the
    symbol's quotes in that second and a checksum (a replay reads the same sequence again, so it gets the same keys;
    a quote resent out of sequence goes through again, harmlessly: it is the book's state, not a count). Every other
    message's key is its content (foreign and index figures are cumulative, so a repeat carries nothing new).
    A trade from X-TRADE is published whatever its verdict (downstream keeps the exact tallies); the trade part of an
    X frame is published only when TotalVol grew, since X repeats it with every book change. Likewise a quote is
    published only when it changes something a reader of md.quote sees: the levels, the session, the projected price
    or the trading date. An X frame repeats the book with every match (most matches leave the book they hit standing
    but for the volume taken, and some leave it as it was), and the same book again is no news to the classifier,
    the board or a NATS CLI user; the frame's trade still goes out.

    Futures trades and quotes go to the futures subjects: a contract is known by its code (VN30FYYMM, VN30F1M), by
    the exchange the frame names (DERIVATIVES), or as one of `futures` (FUTURES_ALIASES, reference data's FU).

    Trading dates: a frame dated implausibly far from the feed's current trading date is refused, so one frame dated
    2099 cannot carry a symbol into a day no real trade will reach. The current date is `today()` when given (the
    live feed: the exchange's own date; a frame may be up to a day ahead of it, for clocks either side of midnight),
    otherwise the feed's own (a replay, the simulator: the latest date accepted, which moves on by at most
    LONGEST_CLOSURE_DAYS, so day rollovers, weekends and the Tết break pass). Either way a frame may lag the current
    date by up to LONGEST_CLOSURE_DAYS (the last trading day's figures, sent again before the next open).
    """

    def __init__(self, today: Callable[[], date] | None = None) -> None:
        self._encoder = msgspec.json.Encoder()
        self.futures: set[str] = set()  # codes that are futures though neither their format nor exchange says so
        self.today = today
        self.feed_date: date | None = None  # the latest trading date accepted
        self._window_of: date | None = None  # the current date `_window` was worked out for
        self._window = (date.min, date.max)  # the trading dates plausible on it
        self._last_total: dict[str, tuple[date, int]] = {}
        self._last_book: dict[str, tuple[Any, ...]] = {}  # per symbol: what its last quote published showed
        self._ordinals: dict[str, tuple[datetime, int]] = {}
        self._iso: tuple[datetime | None, str] = (None, "")  # the last quote time in ISO form, shared by its second

    def normalize(self, raw: Frame | Message) -> Normalized | Refused:
        """A raw frame, or a message a source built itself (bars fetched over REST after a reconnect). Never raises:
        whatever goes wrong with a frame is its rejection."""
        if isinstance(raw, Message):
            return self._accept(Decoded(type(raw).__name__.upper(), (raw,)))
        try:
            result = decode_frame(raw)
            if isinstance(result, Rejection):
                return self.refuse(result)
            implausible = self._implausible_date(result)
            if implausible:
                return self.refuse(rejection(raw, Reason.IMPLAUSIBLE_DATE, implausible))
            return self._accept(result)
        except Exception as err:  # a bug of ours must not stop the feed
            return self.refuse(rejection(raw, Reason.INTERNAL_ERROR, f"normalizing failed: {err!r}"))

    def _implausible_date(self, decoded: Decoded) -> str | None:
        """Why the frame's trading date cannot be the feed's, or None when it can (the feed's date then moves on)."""
        day: date = decoded.messages[0].trading_date  # type: ignore[attr-defined]
        current = self.today() if self.today is not None else self.feed_date
        if current is not None:
            if current != self._window_of:  # the bounds change once a day, not with every frame
                ahead = 1 if self.today is not None else LONGEST_CLOSURE_DAYS
                self._window = (current - timedelta(days=LONGEST_CLOSURE_DAYS), current + timedelta(days=ahead))
                self._window_of = current
            earliest, latest = self._window
            if day > latest:
                return f"trading date {day} is more than {(latest - current).days} days after the feed's {current}"
            if day < earliest:
                return f"trading date {day} is more than {LONGEST_CLOSURE_DAYS} days before the feed's {current}"
        if self.feed_date is None or day > self.feed_date:
            self.feed_date = day
        return None

    def _accept(self, decoded: Decoded) -> Normalized:
        outgoing: list[Outgoing] = []
        verdict: TradeVerdict | None = None
        unchanged = False
        for message in decoded.messages:
            if isinstance(message, Trade):
                verdict = self._judge(message, combined=decoded.data_type == "X")
                if verdict is TradeVerdict.REPEAT:
                    continue
            elif isinstance(message, Quote):
                book = (message.trading_date, message.session, message.projected_price, message.bids, message.asks)
                if self._last_book.get(message.symbol) == book:
                    unchanged = True
                    continue
                self._last_book[message.symbol] = book
            subject = market_subject(message, futures=self._is_futures(message))
            payload = self._encoder.encode(message)
            outgoing.append(Outgoing(subject, payload, self._message_id(subject, message, payload)))
        timestamp = decoded.messages[0].timestamp  # type: ignore[attr-defined]
        return Normalized(decoded.data_type, tuple(outgoing), verdict, timestamp, unchanged)

    def _is_futures(self, message: Message) -> bool:
        """Only trades and quotes have futures subjects of their own."""
        if not isinstance(message, Trade | Quote):
            return False
        return message.symbol in self.futures or is_futures(message.symbol, message.exchange)

    def _judge(self, trade: Trade, *, combined: bool) -> TradeVerdict:
        last = self._last_total.get(trade.symbol)
        if last is None or last[0] != trade.trading_date or trade.total_volume > last[1]:
            self._last_total[trade.symbol] = (trade.trading_date, trade.total_volume)
            return TradeVerdict.NEW
        if combined:
            return TradeVerdict.REPEAT
        return TradeVerdict.DUPLICATE if trade.total_volume == last[1] else TradeVerdict.OUT_OF_ORDER

    def _message_id(self, subject: str, message: Message, payload: bytes) -> str:
        if isinstance(message, Trade):
            return f"trade:{message.natural_key()}"
        timestamp: datetime = message.timestamp  # type: ignore[attr-defined]
        if not isinstance(message, Quote):
            return f"{subject}:{timestamp.isoformat()}:{zlib.crc32(payload):08x}"
        previous = self._ordinals.get(subject)
        ordinal = previous[1] + 1 if previous and previous[0] == timestamp else 0
        self._ordinals[subject] = (timestamp, ordinal)
        cached = self._iso[0]
        # Equal instants in other zones are written apart: the zone must be the same object too.
        if cached is None or cached != timestamp or cached.tzinfo is not timestamp.tzinfo:
            self._iso = (timestamp, timestamp.isoformat())
        return f"{subject}:{self._iso[1]}:{ordinal}:{zlib.crc32(payload):08x}"

    def refuse(self, rejection: Rejection) -> Refused:
        # The same bad frame twice is one entry on md.rejected (and two in the rejection counts).
        msg_id = f"rejected:{zlib.crc32(rejection.raw.encode()):08x}:{len(rejection.raw)}"
        message = Outgoing(MD_REJECTED, self._encoder.encode(rejection), msg_id)
        return Refused(rejection.reason, rejection.detail, message)
