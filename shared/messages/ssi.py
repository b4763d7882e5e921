"""SSI FastConnect Data wire payloads, with SSI's own field names, and the one function that turns a frame into
domain messages (`decode_frame`).

A frame is what `ssi-fc-data` hands to `on_message` (and what a recorded file holds per line):
`{"DataType": "X-TRADE", "Content": "<JSON string>"}`. Tolerances, all seen in the wild (../shared/ssi/PROTOCOL.md §2):
Content double-encoded or already an object; DataType/Content keys in any case; DataType values in any case and
missing (then Content's RType/Rtype decides); numbers as JSON numbers or numeric strings; nulls nearly anywhere;
channel R naming its figures BuyVol.. or FBuyVol..; B carrying TradingTime instead of TradingDate/Time.
Anything else is refused with a reason (`Rejection`), never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from operator import attrgetter
from typing import Annotated, Any, NamedTuple

import msgspec
from msgspec import Meta

from shared.market import exchange_datetime, normalize_index_id, parse_clock, parse_trading_date
from shared.messages.domain import (
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

Quantity = Annotated[float, Meta(ge=0)] | None  # volumes, prices and values: never negative
Number = float | None  # changes may be negative

BOOK_DEPTH = 10


class SsiFrame(msgspec.Struct, kw_only=True):
    """Fields every SSI content shares."""

    RType: str | None = None
    Rtype: str | None = None
    TradingDate: str | None = None
    Time: str | None = None
    Symbol: str | None = None
    Exchange: str | None = None
    MarketId: str | None = None
    TradingSession: str | None = None
    TradingStatus: str | None = None


class XTrade(SsiFrame, kw_only=True):
    """DataType X-TRADE: one matched trade with the day's running totals."""

    Isin: str | None = None
    Ceiling: Quantity = None
    Floor: Quantity = None
    RefPrice: Quantity = None
    AvgPrice: Quantity = None
    PriorVal: Quantity = None
    LastPrice: Quantity = None
    LastVol: Quantity = None
    TotalVal: Quantity = None
    TotalVol: Quantity = None
    Change: Number = None
    RatioChange: Number = None
    EstMatchedPrice: Quantity = None
    Highest: Quantity = None
    Lowest: Quantity = None
    Side: str | None = None


_BOOK_FIELDS = [
    (f"{side}{kind}{level}", Quantity, None)
    for side in ("Bid", "Ask")
    for level in range(1, BOOK_DEPTH + 1)
    for kind in ("Price", "Vol")
]

XQuote = msgspec.defstruct("XQuote", _BOOK_FIELDS, bases=(SsiFrame,), kw_only=True)
XQuote.__doc__ = "DataType X-QUOTE: the order book, BidPrice1..10/BidVol1..10/AskPrice1..10/AskVol1..10."

X = msgspec.defstruct(
    "X",
    [*_BOOK_FIELDS, ("Open", Quantity, None), ("High", Quantity, None), ("Low", Quantity, None),
     ("Close", Quantity, None), ("CloseQtty", Quantity, None)],
    bases=(XTrade,),
    kw_only=True,
)
X.__doc__ = "DataType X: trade and book combined; it fires on book changes too, so LastVol repeats."


class R(SsiFrame, kw_only=True):
    """DataType R: foreign room and cumulative foreign buy/sell since the open (either naming)."""

    Isin: str | None = None
    TotalRoom: Number = None
    CurrentRoom: Number = None
    BuyVol: Quantity = None
    SellVol: Quantity = None
    BuyVal: Quantity = None
    SellVal: Quantity = None
    FBuyVol: Quantity = None
    FSellVol: Quantity = None
    FBuyVal: Quantity = None
    FSellVal: Quantity = None


class MI(msgspec.Struct, kw_only=True):
    """DataType MI: an index value and the market's breadth."""

    RType: str | None = None
    Rtype: str | None = None
    IndexId: str | None = None
    IndexName: str | None = None
    TradingDate: str | None = None
    Time: str | None = None
    IndexValue: Quantity = None
    PriorIndexValue: Quantity = None
    Change: Number = None
    RatioChange: Number = None
    TotalTrade: Quantity = None
    TotalQtty: Quantity = None
    TotalValue: Quantity = None
    TotalQttyPt: Quantity = None
    TotalValuePt: Quantity = None
    AllQty: Quantity = None
    AllValue: Quantity = None
    Advances: Quantity = None
    NoChanges: Quantity = None
    Declines: Quantity = None
    Ceilings: Quantity = None
    Floors: Quantity = None
    IndexType: str | None = None
    TradingSession: str | None = None
    MarketId: str | None = None
    Exchange: str | None = None


class B(SsiFrame, kw_only=True):
    """DataType B: a realtime OHLCV bar (`Volume` is the last match's volume; `Value` is unused, 0)."""

    TradingTime: str | None = None
    Open: Quantity = None
    High: Quantity = None
    Low: Quantity = None
    Close: Quantity = None
    Volume: Quantity = None
    Value: Quantity = None


class F(SsiFrame, kw_only=True):
    """DataType F: a security's trading session and status."""

    TradingOlSession: str | None = None


class _RTypeProbe(msgspec.Struct):
    RType: str | None = None
    Rtype: str | None = None


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

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,29}$")
_NEGATIVE = re.compile(r">= 0(?:\.0)? - at `\$\.(\w+)`")
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
        return day, exchange_datetime(day, parse_clock(clock))
    except ValueError as err:
        raise FrameRejected(Reason.BAD_TIME, str(err)) from None


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


_BOOK_SIDES = {
    side: attrgetter(*(f"{side}{kind}{level}" for level in range(1, BOOK_DEPTH + 1) for kind in ("Price", "Vol")))
    for side in ("Bid", "Ask")
}


def _levels(frame: Any, side: str) -> list[PriceLevel]:
    """The side's levels with a price, best first; SSI sends 0.0 for absent levels (HOSE fills only three)."""
    values = _BOOK_SIDES[side](frame)
    levels = []
    for index in range(0, 2 * BOOK_DEPTH, 2):
        price = values[index]
        if price:
            volume = values[index + 1] or 0
            if volume != int(volume):
                raise FrameRejected(Reason.INVALID_VALUE, f"{side}Vol{index // 2 + 1}={volume} is not a whole number")
            levels.append(PriceLevel(price, int(volume)))
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


def _field(envelope: Mapping[str, Any], name: str) -> Any:
    value = envelope.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in envelope.items():
            if key.lower() == lowered:
                return candidate
    return value


def _validation_reason(err: msgspec.ValidationError) -> tuple[str, str]:
    message = str(err)
    negative = _NEGATIVE.search(message)
    if negative:
        return negative_reason(negative.group(1)), message
    if message.startswith("Expected `object`"):
        return Reason.CONTENT_NOT_OBJECT, message
    return Reason.INVALID_VALUE, message


def _decode_content(channel: _Channel, content: Any) -> Any:
    try:
        if isinstance(content, str | bytes):
            return _decoders[channel.data_type].decode(content)
        return msgspec.convert(content, channel.wire, strict=False)
    except msgspec.ValidationError as err:
        raise FrameRejected(*_validation_reason(err)) from None
    except msgspec.DecodeError as err:
        raise FrameRejected(Reason.CONTENT_NOT_JSON, f"Content is not JSON: {err}") from None


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


def decode_envelope(envelope: Any) -> Decoded:
    """Decode one Broadcast payload already parsed as JSON. Raises `FrameRejected` with a `Reason`."""
    if not isinstance(envelope, Mapping):
        raise FrameRejected(Reason.NOT_OBJECT, f"frame is a JSON {type(envelope).__name__}, not an object")
    content = _field(envelope, "Content")
    if content is None:
        raise FrameRejected(Reason.MISSING_FIELD, "no Content")
    data_type = _field(envelope, "DataType")
    if not isinstance(data_type, str) or not data_type.strip():
        data_type = _rtype_of(content)
    key = (data_type or "").strip().upper()
    channel = _CHANNELS.get(key)
    if channel is None:
        if key in _IGNORED_TYPES:
            raise FrameRejected(Reason.UNSUPPORTED_TYPE, f"DataType {data_type!r} is not processed")
        raise FrameRejected(Reason.UNKNOWN_TYPE, f"unknown DataType {data_type!r}")
    frame = _decode_content(channel, content)
    return Decoded(channel.data_type, channel.parse(frame))


def decode_frame(raw: bytes | str | Mapping[str, Any]) -> Decoded | Rejection:
    """Decode one frame (a recorded line, a raw payload, or the dict `ssi-fc-data` hands over) into domain messages,
    or a `Rejection` saying why not. Never raises for bad input."""
    try:
        if isinstance(raw, Mapping):
            return decode_envelope(raw)
        if not raw.strip():
            raise FrameRejected(Reason.BLANK, "empty frame")
        try:
            envelope = _any_decoder.decode(raw)
        except msgspec.DecodeError as err:
            raise FrameRejected(Reason.INVALID_JSON, f"frame is not JSON: {err}") from None
        return decode_envelope(envelope)
    except FrameRejected as rejected:
        return Rejection(
            reason=str(rejected.reason),
            detail=rejected.detail,
            data_type=_data_type_hint(raw),
            raw=_raw_text(raw),
            received_at=datetime.now(UTC),
        )


def _data_type_hint(raw: bytes | str | Mapping[str, Any]) -> str | None:
    if isinstance(raw, Mapping):
        value = _field(raw, "DataType")
        return value if isinstance(value, str) else None
    return None


def _raw_text(raw: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(raw, Mapping):
        text = msgspec.json.encode(raw).decode(errors="replace")
    elif isinstance(raw, bytes):
        text = raw.decode(errors="replace")
    else:
        text = raw
    return text[:RAW_KEPT_BYTES]
