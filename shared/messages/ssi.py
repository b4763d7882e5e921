"""SSI FastConnect Data wire payloads, with SSI's own field names, and the one function that turns a frame into
domain messages (`decode_frame`).

A frame is what `ssi-fc-data` hands to `on_message` (and what a recorded file holds per line): `{"DataType":
"X-TRADE", "Content": "<JSON string>"}`. Tolerances, all seen in the wild (docs/ssi.md, "Quirks the decoder
tolerates"): Content double-encoded or already an object; DataType/Content keys in any case; DataType values in any
case and missing (then Content's RType/Rtype decides); numbers as JSON numbers or numeric strings; nulls nearly
anywhere; channel R naming its figures BuyVol.. or FBuyVol..; B carrying TradingTime instead of TradingDate/Time.
Anything else is refused with a reason (`Rejection`), never an exception: decoding is the system's hard boundary.
Beyond SSI's shapes it refuses what no market sends (the README lists each reason with its bound): frames over
MAX_FRAME_BYTES or nesting deeper than MAX_NESTING, strings over MAX_TEXT characters or holding a control character
(NUL included: refused, not stripped, so nothing downstream ever sees a value the exchange did not send), numbers
that are not finite or lie beyond the domain's bounds (`shared.messages.domain`), and trading dates outside the
market's era."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from operator import attrgetter
from typing import Annotated, Any, NamedTuple, TypeVar

import msgspec
from msgspec import Meta

from shared.market import exchange_datetime, in_market_era, normalize_index_id, parse_clock, parse_trading_date
from shared.messages.domain import (
    MAX_AVERAGE_PRICE,
    MAX_COUNT,
    MAX_INDEX,
    MAX_MARKET_VOLUME,
    MAX_PERCENT,
    MAX_PRICE,
    MAX_ROOM,
    MAX_TEXT,
    MAX_VALUE,
    MAX_VOLUME,
    SYMBOL_PATTERN,
    Bar,
    ForeignRoom,
    IndexUpdate,
    Message,
    PriceLevel,
    Quote,
    Rejection,
    SecurityStatus,
    Trade,
    TradeType,
)


def _bounded(low: float, high: float) -> Any:
    """A wire number: a JSON number or numeric string (strict=False), finite and within [low, high], or null."""
    return Annotated[float, Meta(ge=low, le=high)] | None


WirePrice = _bounded(0, MAX_PRICE)
WireAveragePrice = _bounded(0, MAX_AVERAGE_PRICE)
WirePriceChange = _bounded(-MAX_PRICE, MAX_PRICE)
WireVolume = _bounded(0, MAX_VOLUME)
WireMarketVolume = _bounded(0, MAX_MARKET_VOLUME)
WireValue = _bounded(0, MAX_VALUE)
WireIndex = _bounded(0, MAX_INDEX)
WireIndexChange = _bounded(-MAX_INDEX, MAX_INDEX)
WireCount = _bounded(0, MAX_COUNT)
WirePercent = _bounded(-MAX_PERCENT, MAX_PERCENT)
WireRoom = _bounded(-MAX_ROOM, MAX_ROOM)
WireText = Annotated[str, Meta(max_length=MAX_TEXT)] | None

MAX_FRAME_BYTES = 64 * 1024  # a 10-level X frame is about 2 KB
MAX_NESTING = 3  # the envelope holds Content, whose values are scalars: two levels; one more is tolerated

BOOK_DEPTH = 10
T = TypeVar("T")
# The book's field names, SSI's: per side, (price, volume) of level 1 to BOOK_DEPTH.
BOOK_KEYS = {side: tuple((f"{side}Price{level}", f"{side}Vol{level}") for level in range(1, BOOK_DEPTH + 1))
             for side in ("Bid", "Ask")}


class SsiFrame(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Fields every SSI content shares. These Structs are the one place SSI's field names are written: the decoder
    reads frames into them, the simulator builds its frames from them (a field left unset is not sent: the decoder
    reads a missing field as null, the way SSI's own nulls are read)."""

    RType: WireText = None
    Rtype: WireText = None
    TradingDate: WireText = None
    Time: WireText = None
    Symbol: WireText = None
    Exchange: WireText = None
    MarketId: WireText = None
    TradingSession: WireText = None
    TradingStatus: WireText = None


class XTrade(SsiFrame, kw_only=True):
    """DataType X-TRADE: one matched trade with the day's running totals."""

    Isin: WireText = None
    Ceiling: WirePrice = None
    Floor: WirePrice = None
    RefPrice: WirePrice = None
    AvgPrice: WireAveragePrice = None
    PriorVal: WirePrice = None
    LastPrice: WirePrice = None
    LastVol: WireVolume = None
    TotalVal: WireValue = None
    TotalVol: WireVolume = None
    Change: WirePriceChange = None
    RatioChange: WirePercent = None
    EstMatchedPrice: WirePrice = None
    Highest: WirePrice = None
    Lowest: WirePrice = None
    Side: WireText = None


_BOOK_FIELDS = [(name, kind, None) for keys in BOOK_KEYS.values() for pair in keys
                for name, kind in zip(pair, (WirePrice, WireVolume), strict=True)]

XQuote = msgspec.defstruct("XQuote", _BOOK_FIELDS, bases=(SsiFrame,), kw_only=True)
XQuote.__doc__ = "DataType X-QUOTE: the order book, BidPrice1..10/BidVol1..10/AskPrice1..10/AskVol1..10."

X = msgspec.defstruct(
    "X",
    [*_BOOK_FIELDS, ("Open", WirePrice, None), ("High", WirePrice, None), ("Low", WirePrice, None),
     ("Close", WirePrice, None), ("CloseQtty", WireVolume, None)],
    bases=(XTrade,),
    kw_only=True,
)
X.__doc__ = "DataType X: trade and book combined; it fires on book changes too, so LastVol repeats."


class R(SsiFrame, kw_only=True):
    """DataType R: foreign room and cumulative foreign buy/sell since the open (either naming)."""

    Isin: WireText = None
    TotalRoom: WireRoom = None
    CurrentRoom: WireRoom = None
    BuyVol: WireVolume = None
    SellVol: WireVolume = None
    BuyVal: WireValue = None
    SellVal: WireValue = None
    FBuyVol: WireVolume = None
    FSellVol: WireVolume = None
    FBuyVal: WireValue = None
    FSellVal: WireValue = None


class MI(msgspec.Struct, kw_only=True, omit_defaults=True):
    """DataType MI: an index value and the market's breadth."""

    RType: WireText = None
    Rtype: WireText = None
    IndexId: WireText = None
    IndexName: WireText = None
    TradingDate: WireText = None
    Time: WireText = None
    IndexValue: WireIndex = None
    PriorIndexValue: WireIndex = None
    Change: WireIndexChange = None
    RatioChange: WirePercent = None
    TotalTrade: WireMarketVolume = None
    TotalQtty: WireMarketVolume = None
    TotalValue: WireValue = None
    TotalQttyPt: WireMarketVolume = None
    TotalValuePt: WireValue = None
    AllQty: WireMarketVolume = None
    AllValue: WireValue = None
    Advances: WireCount = None
    NoChanges: WireCount = None
    Declines: WireCount = None
    Ceilings: WireCount = None
    Floors: WireCount = None
    IndexType: WireText = None
    TradingSession: WireText = None
    MarketId: WireText = None
    Exchange: WireText = None


class B(SsiFrame, kw_only=True):
    """DataType B: a realtime OHLCV bar (`Volume` is the last match's volume; `Value` is unused, 0)."""

    TradingTime: WireText = None
    Open: WirePrice = None
    High: WirePrice = None
    Low: WirePrice = None
    Close: WirePrice = None
    Volume: WireVolume = None
    Value: WireValue = None


class F(SsiFrame, kw_only=True):
    """DataType F: a security's trading session and status."""

    TradingOlSession: WireText = None


# --- REST responses (api/v2/Market/...: numbers and dates as strings, read with strict=False) ----------------------


class IndexComponent(msgspec.Struct, kw_only=True):
    Isin: WireText = None
    StockSymbol: WireText = None


class IndexComponents(msgspec.Struct, kw_only=True):
    """IndexComponents' `data[0]`: the index with its constituents nested under it."""

    IndexCode: WireText = None
    IndexComponent: list[IndexComponent] = msgspec.field(default_factory=list)


class SecurityDetail(msgspec.Struct, kw_only=True):
    """One SecuritiesDetails `RepeatedInfo` item."""

    Symbol: WireText = None
    SymbolName: WireText = None
    SymbolEngName: WireText = None
    Exchange: WireText = None
    MarketId: WireText = None
    SecType: WireText = None
    LotSize: WireVolume = None
    ListedShare: WireVolume = None  # shares listed: a stock's weight in its cap-weighted indices
    Underlying: WireText = None
    LastTradingDate: WireText = None
    MaturityDate: WireText = None


class SecuritiesDetails(msgspec.Struct, kw_only=True):
    """SecuritiesDetails' `data[0]`: the page's securities."""

    TotalNoSym: WireVolume = None
    RepeatedInfo: list[SecurityDetail] = msgspec.field(default_factory=list)


class IntradayBar(msgspec.Struct, kw_only=True):
    """One IntradayOhlc row (Time marks the last update inside the minute; Value is the close, not a turnover)."""

    TradingDate: WireText = None
    Time: WireText = None
    Open: WirePrice = None
    High: WirePrice = None
    Low: WirePrice = None
    Close: WirePrice = None
    Volume: WireVolume = None


class _Paged(msgspec.Struct):
    totalRecord: WireVolume = None


def total_records(response: Any) -> int:
    """How many rows a paged REST answer says there are in all (0 when it does not say)."""
    try:
        return int(msgspec.convert(response, _Paged, strict=False).totalRecord or 0)
    except msgspec.ValidationError:
        return 0


def rest_rows(response: Any, row: type[T]) -> list[T]:
    """A REST response's `data` rows as `row` Structs; a row that is not one is left out."""
    data = response.get("data") if isinstance(response, Mapping) else None
    rows = []
    for item in data if isinstance(data, list) else []:
        try:
            rows.append(msgspec.convert(item, row, strict=False))
        except msgspec.ValidationError:
            continue
    return rows


class _RTypeProbe(msgspec.Struct):
    RType: WireText = None
    Rtype: WireText = None


# --- rejection reasons --------------------------------------------------------------------------------------------


class Reason(StrEnum):
    """Why a frame was refused. A negative quantity is reported as `neg_<field>` (e.g. neg_lastvol)."""

    BLANK = "blank"  # an empty line or frame
    INVALID_JSON = "invalid_json"  # the frame is not JSON
    NOT_OBJECT = "not_object"  # the frame is JSON but not an object
    CONTENT_NOT_JSON = "content_not_json"  # Content is a string that is not JSON
    CONTENT_NOT_OBJECT = "content_not_object"  # Content is JSON but not an object
    UNKNOWN_TYPE = "unknown_type"  # DataType/RType absent or not one we know
    UNSUPPORTED_TYPE = "unsupported_type"  # a known type we do not process (OL, odd lots)
    MISSING_SYMBOL = "missing_symbol"  # no Symbol (IndexId for MI)
    BAD_SYMBOL = "bad_symbol"  # a symbol that cannot be a subject token
    MISSING_FIELD = "missing_field"  # a field the message cannot do without
    BAD_TIME = "bad_time"  # TradingDate/Time unreadable
    INVALID_VALUE = "invalid_value"  # a field of the wrong type (e.g. a non-numeric volume)
    NO_TRADE = "no_trade"  # an X-TRADE frame with nothing traded yet (TotalVol 0)
    NON_FINITE = "non_finite"  # a number or numeric string that is inf, NaN, Infinity, or overflows to infinity
    OUT_OF_RANGE = "out_of_range"  # a number beyond its bound (a price, volume, value, index value, count, room)
    IMPLAUSIBLE_DATE = "implausible_date"  # a trading date outside the market's era, or too far from the feed's date
    CONTROL_CHARACTER = "control_character"  # a string holding NUL or another control character
    STRING_TOO_LONG = "string_too_long"  # a string longer than MAX_TEXT characters
    TOO_LARGE = "too_large"  # a frame longer than MAX_FRAME_BYTES, or a message too large to publish
    TOO_DEEP = "too_deep"  # JSON nested deeper than MAX_NESTING
    INTERNAL_ERROR = "internal_error"  # the decoder itself failed: a bug, the frame kept on md.rejected to mend it


def negative_reason(field: str) -> str:
    return f"neg_{field.lower()}"


class FrameRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Decoded(NamedTuple):
    """A frame's DataType (canonical, upper case) and the messages it yields, in publishing order."""

    data_type: str
    messages: tuple[Message, ...]


# --- decoding -----------------------------------------------------------------------------------------------------

_SYMBOL = re.compile(SYMBOL_PATTERN)
_ERROR_FIELD = re.compile(r" - at `\$\.(\w+)`$")
RAW_KEPT_BYTES = 4096


@lru_cache(maxsize=16384)
def _symbol(raw: str | None) -> str:
    if raw is None or not raw.strip():
        raise FrameRejected(Reason.MISSING_SYMBOL, "no Symbol")
    symbol = raw.strip().upper()
    if not _SYMBOL.match(symbol):
        raise FrameRejected(Reason.BAD_SYMBOL, f"symbol {raw!r} is not [A-Z0-9_-]{{1,30}}")
    return symbol


@lru_cache(maxsize=4096)  # a busy second stamps hundreds of frames alike
def _time(trading_date: str | None, clock: str | None) -> tuple[date, datetime]:
    if not trading_date:
        raise FrameRejected(Reason.MISSING_FIELD, "no TradingDate")
    if not clock:
        raise FrameRejected(Reason.MISSING_FIELD, "no Time")
    try:
        day = parse_trading_date(trading_date)
        moment = exchange_datetime(day, parse_clock(clock))
    except ValueError as err:
        raise FrameRejected(Reason.BAD_TIME, str(err)) from None
    if not in_market_era(day):
        raise FrameRejected(Reason.IMPLAUSIBLE_DATE, f"TradingDate {trading_date!r} is outside the market's era")
    return day, moment


def _required(value: float | None, field: str) -> float:
    if value is None:
        raise FrameRejected(Reason.MISSING_FIELD, f"no {field}")
    return value


def _count(value: float | None, field: str) -> int:
    """A volume: whole shares or contracts."""
    number = _required(value, field)
    if number != int(number):
        raise FrameRejected(Reason.INVALID_VALUE, f"{field}={number} is not a whole number")
    return int(number)


def _optional_count(value: float | None, field: str) -> int | None:
    return None if value is None else _count(value, field)


_SIDES = {"BU": TradeType.MUA_CHU_DONG, "SD": TradeType.BAN_CHU_DONG}


def _trade(frame: XTrade, symbol: str, day: date, timestamp: datetime) -> Trade:
    total_volume = _count(frame.TotalVol, "TotalVol")
    if total_volume == 0:
        raise FrameRejected(Reason.NO_TRADE, "TotalVol is 0: nothing traded yet")
    return Trade(
        symbol=symbol,
        exchange=frame.Exchange or frame.MarketId,
        trading_date=day,
        timestamp=timestamp,
        price=_required(frame.LastPrice, "LastPrice"),
        volume=_count(frame.LastVol, "LastVol"),
        total_volume=total_volume,
        total_value=frame.TotalVal,
        ref_price=frame.RefPrice,
        ceiling=frame.Ceiling,
        floor=frame.Floor,
        session=frame.TradingSession,
        side=_SIDES.get((frame.Side or "").strip().upper()),
        change=frame.Change,
        ratio_change=frame.RatioChange,
        highest=frame.Highest,
        lowest=frame.Lowest,
        avg_price=frame.AvgPrice,
    )


_BOOK_SIDES = {side: attrgetter(*(name for pair in keys for name in pair)) for side, keys in BOOK_KEYS.items()}


def _levels(frame: Any, side: str) -> list[PriceLevel]:
    """The side's levels with a price, best first; SSI sends 0.0 for absent levels (HOSE fills only three)."""
    values = _BOOK_SIDES[side](frame)
    levels = []
    for level, (price, volume) in enumerate(zip(values[::2], values[1::2], strict=True), start=1):
        if price:
            whole = int(volume or 0)
            if volume and volume != whole:
                raise FrameRejected(Reason.INVALID_VALUE, f"{side}Vol{level}={volume} is not a whole number")
            levels.append(PriceLevel(price, whole))
    return levels


def _quote(frame: Any, symbol: str, day: date, timestamp: datetime) -> Quote:
    return Quote(
        symbol=symbol,
        exchange=frame.Exchange or frame.MarketId,
        trading_date=day,
        timestamp=timestamp,
        session=frame.TradingSession,
        bids=_levels(frame, "Bid"),
        asks=_levels(frame, "Ask"),
        # X-QUOTE has no such field; an X frame sends 0 outside the auctions
        projected_price=getattr(frame, "EstMatchedPrice", None) or None,
    )


def _parse_x_trade(frame: XTrade) -> tuple[Message, ...]:
    symbol = _symbol(frame.Symbol)
    day, timestamp = _time(frame.TradingDate, frame.Time)
    return (_trade(frame, symbol, day, timestamp),)


def _parse_x_quote(frame: Any) -> tuple[Message, ...]:
    symbol = _symbol(frame.Symbol)
    day, timestamp = _time(frame.TradingDate, frame.Time)
    return (_quote(frame, symbol, day, timestamp),)


def _parse_x(frame: Any) -> tuple[Message, ...]:
    """The trade part first (when the frame carries one), then the book: downstream classifies a trade against the
    book as it was before the trade."""
    symbol = _symbol(frame.Symbol)
    day, timestamp = _time(frame.TradingDate, frame.Time)
    quote = _quote(frame, symbol, day, timestamp)
    if frame.LastPrice and frame.TotalVol:
        return (_trade(frame, symbol, day, timestamp), quote)
    return (quote,)


def _parse_r(frame: R) -> tuple[Message, ...]:
    symbol = _symbol(frame.Symbol)
    day, timestamp = _time(frame.TradingDate, frame.Time)

    def either(short: float | None, prefixed: float | None, name: str) -> float:
        return _required(short if short is not None else prefixed, name)

    return (
        ForeignRoom(
            symbol=symbol,
            exchange=frame.Exchange or frame.MarketId,
            trading_date=day,
            timestamp=timestamp,
            buy_volume=_count(either(frame.BuyVol, frame.FBuyVol, "BuyVol"), "BuyVol"),
            sell_volume=_count(either(frame.SellVol, frame.FSellVol, "SellVol"), "SellVol"),
            buy_value=either(frame.BuyVal, frame.FBuyVal, "BuyVal"),
            sell_value=either(frame.SellVal, frame.FSellVal, "SellVal"),
            total_room=frame.TotalRoom,
            current_room=frame.CurrentRoom,
        ),
    )


def _parse_mi(frame: MI) -> tuple[Message, ...]:
    if not frame.IndexId or not frame.IndexId.strip():
        raise FrameRejected(Reason.MISSING_SYMBOL, "no IndexId")
    index_id = _symbol(normalize_index_id(frame.IndexId))
    day, timestamp = _time(frame.TradingDate, frame.Time)
    return (
        IndexUpdate(
            index_id=index_id,
            index_name=frame.IndexName,
            exchange=frame.Exchange or frame.MarketId,
            trading_date=day,
            timestamp=timestamp,
            value=_required(frame.IndexValue, "IndexValue"),
            prior_value=frame.PriorIndexValue,
            change=frame.Change,
            ratio_change=frame.RatioChange,
            total_volume=frame.TotalQtty,
            total_value=frame.TotalValue,
            advances=_optional_count(frame.Advances, "Advances"),
            declines=_optional_count(frame.Declines, "Declines"),
            no_changes=_optional_count(frame.NoChanges, "NoChanges"),
            ceilings=_optional_count(frame.Ceilings, "Ceilings"),
            floors=_optional_count(frame.Floors, "Floors"),
            session=frame.TradingSession,
        ),
    )


def _parse_b(frame: B) -> tuple[Message, ...]:
    symbol = _symbol(frame.Symbol)
    trading_date, clock = frame.TradingDate, frame.Time
    if frame.TradingTime and not clock:
        stamp = frame.TradingTime.strip()
        trading_date, clock = stamp.rsplit(" ", 1) if " " in stamp else (trading_date, stamp)
    day, timestamp = _time(trading_date, clock)
    return (
        Bar(
            symbol=symbol,
            trading_date=day,
            timestamp=timestamp,
            open=_required(frame.Open, "Open"),
            high=_required(frame.High, "High"),
            low=_required(frame.Low, "Low"),
            close=_required(frame.Close, "Close"),
            volume=_count(frame.Volume, "Volume"),
        ),
    )


def _parse_f(frame: F) -> tuple[Message, ...]:
    symbol = _symbol(frame.Symbol)
    day, timestamp = _time(frame.TradingDate, frame.Time)
    return (
        SecurityStatus(
            symbol=symbol,
            exchange=frame.Exchange or frame.MarketId,
            trading_date=day,
            timestamp=timestamp,
            session=frame.TradingSession,
            status=frame.TradingStatus,
        ),
    )


class _Channel(NamedTuple):
    data_type: str
    wire: type
    parse: Callable[[Any], tuple[Message, ...]]


_CHANNELS: dict[str, _Channel] = {
    "X-TRADE": _Channel("X-TRADE", XTrade, _parse_x_trade),
    "X-QUOTE": _Channel("X-QUOTE", XQuote, _parse_x_quote),
    "X": _Channel("X", X, _parse_x),
    "R": _Channel("R", R, _parse_r),
    "MI": _Channel("MI", MI, _parse_mi),
    "B": _Channel("B", B, _parse_b),
    "F": _Channel("F", F, _parse_f),
}
_CHANNELS["TRADE"] = _CHANNELS["X-TRADE"]  # names used by SSI before 2021
_CHANNELS["QUOTE"] = _CHANNELS["X-QUOTE"]
_IGNORED_TYPES = frozenset({"OL"})
DATA_TYPES = ("X-TRADE", "X-QUOTE", "X", "R", "MI", "B", "F")

_decoders = {name: msgspec.json.Decoder(channel.wire, strict=False) for name, channel in _CHANNELS.items()}
_any_decoder = msgspec.json.Decoder()
# Each wire type's text fields, read together when a frame may hold a control character.
_TEXT_NAMES = {wire: [f.name for f in msgspec.structs.fields(wire) if f.type == WireText]
               for wire in {channel.wire for channel in _CHANNELS.values()}}
_TEXTS = {wire: attrgetter(*names) for wire, names in _TEXT_NAMES.items()}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# JSON can carry a control character only as an escape (raw ones are malformed JSON): \u0000-\u001f, \u007f-\u009f,
# \b \f \n \r \t. A frame with none of these, in either layer, has none, and its strings need no further look.
_CONTROL_ESCAPE = re.compile(r"\\(?:u00[0189]|u007[fF]|[bfnrt])")
_CONTROL_ESCAPE_BYTES = re.compile(_CONTROL_ESCAPE.pattern.encode())
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def _field(envelope: Mapping[str, Any], name: str) -> Any:
    value = envelope.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in envelope.items():
            if isinstance(key, str) and key.lower() == lowered:
                return candidate
    return value


def _check_size(text: str | bytes, what: str) -> None:
    """Refuse `text` over MAX_FRAME_BYTES, or nesting objects and arrays deeper than MAX_NESTING (brackets inside
    strings do not count). Counting brackets is enough for every frame SSI sends; the exact walk runs for odd ones."""
    if len(text) > MAX_FRAME_BYTES:
        raise FrameRejected(Reason.TOO_LARGE, f"{what} is {len(text):,} long, over {MAX_FRAME_BYTES:,}")
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    if b"[" not in data and data.count(b"{") <= MAX_NESTING:  # SSI's frames: no array, two objects
        return
    depth = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub(b"", data)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > MAX_NESTING:
            raise FrameRejected(Reason.TOO_DEEP, f"{what} nests deeper than {MAX_NESTING} levels")


def _number_verdict(value: Any, field: str) -> str:
    """Why a number failed its bound: not finite, negative, or too large."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # an integer too large for a float overflows too
        return Reason.NON_FINITE
    if not math.isfinite(number):
        return Reason.NON_FINITE
    return negative_reason(field) if number < 0 else Reason.OUT_OF_RANGE


def _validation_reason(err: msgspec.ValidationError, content: Any) -> tuple[str, str]:
    message = str(err)
    if message.startswith("Expected `object`"):
        return Reason.CONTENT_NOT_OBJECT, message
    located = _ERROR_FIELD.search(message)
    if located is None:
        return Reason.INVALID_VALUE, message
    field = located.group(1)
    if "of length <=" in message:
        return Reason.STRING_TOO_LONG, message
    if message.startswith(("Expected `float` >=", "Expected `float` <=", "Number out of range")):
        try:
            fields = _any_decoder.decode(content) if isinstance(content, str | bytes) else content
            raw = fields.get(field) if isinstance(fields, Mapping) else None
        except (msgspec.DecodeError, msgspec.ValidationError):  # a JSON number too large to read at all
            raw = "inf"
        return _number_verdict(raw, field), message
    return Reason.INVALID_VALUE, message


def _decode_content(channel: _Channel, content: Any) -> Any:
    try:
        if isinstance(content, str | bytes):  # its size and depth were checked with the envelope
            frame = _decoders[channel.data_type].decode(content)
            # Most Contents hold no escape at all (the outer layer's are gone): one scan for a backslash says so.
            if isinstance(content, str):
                suspect = "\\" in content and _CONTROL_ESCAPE.search(content) is not None
            else:
                suspect = b"\\" in content and _CONTROL_ESCAPE_BYTES.search(content) is not None
        else:
            frame = msgspec.convert(content, channel.wire, strict=False)
            suspect = True  # already parsed: no escapes left to tell by
    except msgspec.ValidationError as err:
        raise FrameRejected(*_validation_reason(err, content)) from None
    except msgspec.DecodeError as err:
        raise FrameRejected(Reason.CONTENT_NOT_JSON, f"Content is not JSON: {err}") from None
    if suspect:
        texts = _TEXTS[channel.wire](frame)
        for name, text in zip(_TEXT_NAMES[channel.wire], texts, strict=True):
            if text and _CONTROL.search(text):
                raise FrameRejected(Reason.CONTROL_CHARACTER, f"{name} holds a control character: {text!r}")
    return frame



def _rtype_of(content: Any) -> str | None:
    try:
        probe = (
            msgspec.json.decode(content, type=_RTypeProbe)
            if isinstance(content, str | bytes)
            else msgspec.convert(content, _RTypeProbe)
        )
    except msgspec.DecodeError:
        raise FrameRejected(Reason.CONTENT_NOT_JSON, "Content is not JSON") from None
    except msgspec.ValidationError:
        raise FrameRejected(Reason.CONTENT_NOT_OBJECT, "Content is not an object") from None
    return probe.RType or probe.Rtype


def decode_envelope(envelope: Any, *, content_checked: bool = False) -> Decoded:
    """Decode one Broadcast payload already parsed as JSON. Raises `FrameRejected` with a `Reason`.
    `content_checked`: the frame it was parsed from passed `_check_size`, so a Content string inside it does too."""
    if type(envelope) is not dict and not isinstance(envelope, Mapping):  # an ABC's isinstance is slow: dict first
        raise FrameRejected(Reason.NOT_OBJECT, f"frame is a JSON {type(envelope).__name__}, not an object")
    content = _field(envelope, "Content")
    if content is None:
        raise FrameRejected(Reason.MISSING_FIELD, "no Content")
    if not content_checked and isinstance(content, str | bytes):
        _check_size(content, "Content")
    data_type = _field(envelope, "DataType")
    if not isinstance(data_type, str) or not data_type.strip():
        data_type = _rtype_of(content)
    key = (data_type or "").strip().upper()
    channel = _CHANNELS.get(key)
    if channel is None:
        if key in _IGNORED_TYPES:
            raise FrameRejected(Reason.UNSUPPORTED_TYPE, f"DataType {data_type[:MAX_TEXT]!r} is not processed")
        raise FrameRejected(Reason.UNKNOWN_TYPE, f"unknown DataType {str(data_type)[:MAX_TEXT]!r}")
    frame = _decode_content(channel, content)
    return Decoded(channel.data_type, channel.parse(frame))


def decode_frame(raw: bytes | str | Mapping[str, Any]) -> Decoded | Rejection:
    """Decode one frame (a recorded line, a raw payload, or the dict `ssi-fc-data` hands over) into domain messages,
    or a `Rejection` saying why not. Never raises, whatever the input."""
    try:
        if type(raw) is not bytes and isinstance(raw, Mapping):
            return decode_envelope(raw)
        if not raw.strip():
            raise FrameRejected(Reason.BLANK, "empty frame")
        if type(raw) is not bytes or len(raw) > MAX_FRAME_BYTES or b"[" in raw or raw.count(b"{") > MAX_NESTING:
            _check_size(raw, "the frame")  # what SSI sends passes the fast test just before
        try:
            envelope = _any_decoder.decode(raw)
        except msgspec.DecodeError as err:
            if str(err).startswith("Number out of range"):  # a JSON number beyond a float, e.g. 1e400
                raise FrameRejected(Reason.NON_FINITE, str(err)) from None
            raise FrameRejected(Reason.INVALID_JSON, f"frame is not JSON: {err}") from None
        return decode_envelope(envelope, content_checked=True)
    except FrameRejected as rejected:
        return rejection(raw, rejected.reason, rejected.detail)
    except RecursionError:
        return rejection(raw, Reason.TOO_DEEP, "nested too deep to decode")
    except Exception as err:  # a bug of ours must not stop the feed: the frame is kept on md.rejected
        return rejection(raw, Reason.INTERNAL_ERROR, f"decoding failed: {err!r}"[:RAW_KEPT_BYTES])


def rejection(raw: bytes | str | Mapping[str, Any], reason: str, detail: str) -> Rejection:
    """The `Rejection` of a frame: its reason, and the start of the frame as text."""
    return Rejection(reason=str(reason), detail=detail, data_type=_data_type_hint(raw), raw=_raw_text(raw),
                     received_at=datetime.now(UTC))


def _data_type_hint(raw: bytes | str | Mapping[str, Any]) -> str | None:
    if isinstance(raw, Mapping):
        value = _field(raw, "DataType")
        return value[:MAX_TEXT] if isinstance(value, str) else None
    return None


def _raw_text(raw: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(raw, Mapping):
        try:
            text = msgspec.json.encode(raw).decode(errors="replace")
        except Exception:  # not JSON-encodable (a key that is not a string, a cycle): kept as Python shows it
            text = repr(raw)[:RAW_KEPT_BYTES]
    elif isinstance(raw, bytes):
        text = raw[:RAW_KEPT_BYTES].decode(errors="replace")
    else:
        text = raw
    return text[:RAW_KEPT_BYTES]
