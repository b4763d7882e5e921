"""Our domain messages: what flows on the MARKET and DERIVED streams and what the KV buckets hold.

Names and fields follow the system's contract (docs/architecture.md, "Subjects, streams and buckets"). Every message
carries the exchange timestamp (tz-aware, Asia/Ho_Chi_Minh; `timestamp` or, for current-state models,
`last_updated`) and the trading date. Units: stock prices VND, futures and indices in points, volumes in
shares/contracts, values in VND. All are msgspec Structs encoded as JSON so the NATS CLI can read them.

The market's inputs and the events derived from them are bounded (`Price`, `Volume`, ...): every decoder of these
types, wherever a message comes from (the feed, the bus, a checkpoint), refuses a value beyond its bound, and with it
every non-finite number (`inf`, `NaN`). The bounds are far beyond anything the market has seen and are listed in the
README; a value beyond one is a corrupt or hostile message, not a market event.
"""

from __future__ import annotations

import math
import sys
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

import msgspec
from msgspec import Meta

# --- bounds ---------------------------------------------------------------------------------------------------------

MAX_PRICE = 1e8  # VND a share (the dearest Vietnamese shares trade near 10^6) or index points a contract
MAX_VOLUME = 10**10  # shares or contracts of one instrument in one day (the largest listings have ~10^10 shares)
# SSI's AvgPrice of a futures contract is TotalVal / TotalVol: VND a contract (100,000 VND a point), not points.
MAX_AVERAGE_PRICE = MAX_PRICE * 100_000
MAX_MARKET_VOLUME = 1e12  # shares of a whole exchange in one day
MAX_VALUE = MAX_PRICE * MAX_VOLUME  # VND: a price times a volume, and any day's total
MAX_INDEX = 1e6  # index points
MAX_COUNT = 10**6  # securities counted by an index's breadth
MAX_ROOM = 1e12  # shares of foreign ownership room
MAX_PERCENT = 1e4  # a change in percent
MAX_TEXT = 64  # characters of a code sent by the exchange (session, status, exchange, name)
SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9_-]{0,29}$"  # an instrument, as a subject's last token: upper case, [A-Z0-9_-]

Price = Annotated[float, Meta(ge=0, le=MAX_PRICE)]
AveragePrice = Annotated[float, Meta(ge=0, le=MAX_AVERAGE_PRICE)]
PriceChange = Annotated[float, Meta(ge=-MAX_PRICE, le=MAX_PRICE)]
Volume = Annotated[int, Meta(ge=0, le=MAX_VOLUME)]
MarketVolume = Annotated[float, Meta(ge=0, le=MAX_MARKET_VOLUME)]
Value = Annotated[float, Meta(ge=0, le=MAX_VALUE)]
ValueChange = Annotated[float, Meta(ge=-MAX_VALUE, le=MAX_VALUE)]
IndexValue = Annotated[float, Meta(ge=0, le=MAX_INDEX)]
IndexChange = Annotated[float, Meta(ge=-MAX_INDEX, le=MAX_INDEX)]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
Room = Annotated[float, Meta(ge=-MAX_ROOM, le=MAX_ROOM)]
Percent = Annotated[float, Meta(ge=-MAX_PERCENT, le=MAX_PERCENT)]
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]  # computed: any finite number
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
# An instrument's code. Its characters are checked against SYMBOL_PATTERN once per subject, where it is the subject's
# last token (ingest, the trackers, the recorder), not at every decode: a pattern costs more than the rest of a decode.
Symbol = Annotated[str, Meta(min_length=1, max_length=30)]


class NonFiniteError(ValueError):
    """A computation gave infinity or NaN: the message that led to it is refused, never stored as `null`."""


def finite(value: float, what: str) -> float:
    """`value`, when it is a finite number; raises `NonFiniteError` naming `what` otherwise."""
    if not math.isfinite(value):
        raise NonFiniteError(f"{what} is {value}")
    return value


class Message(msgspec.Struct, kw_only=True, gc=False):
    """Base of every domain message. Messages are trees of plain values, never part of a reference cycle, so the
    garbage collector need not track them (`gc=False`): a recorder holding ten thousand of them in its buffers spent
    a fifth of its time in collections that could never free one."""


class TradeType(StrEnum):
    """Who initiated a trade: mua chủ động (active buy), bán chủ động (active sell), or no aggressor."""

    MUA_CHU_DONG = "mua_chu_dong"
    BAN_CHU_DONG = "ban_chu_dong"
    NEUTRAL = "neutral"


class ClassificationRule(StrEnum):
    """Which rule decided a trade's type (see the classifier)."""

    AUCTION = "auction"  # an auction or post-close print by its session code (ATO, ATC, PT, PLO): no aggressor
    SCHEDULE = "schedule"  # the same, known by the exchange's schedule: the session code was missing or said nothing
    EXCHANGE = "exchange"  # the exchange's own Side flag
    QUOTE = "quote"  # the book before the trade
    TICK = "tick"  # the day's price sequence
    NONE = "none"  # nothing applied


# --- normalized market data (stream MARKET, subjects md.*) ----------------------------------------------------


class Trade(Message, kw_only=True):
    """A matched trade (SSI X-TRADE, or the trade part of an X frame). Subject md.trade.<SYMBOL>."""

    symbol: Symbol
    exchange: Text | None = None
    trading_date: date
    timestamp: datetime
    price: Price
    volume: Volume  # this match (SSI LastVol)
    total_volume: Volume  # cumulative for the day (SSI TotalVol): the trade's natural key
    total_value: Value | None = None
    ref_price: Price | None = None
    ceiling: Price | None = None
    floor: Price | None = None
    session: Text | None = None  # SSI TradingSession as sent: ATO, LO, ATC, PT, ...
    side: TradeType | None = None  # the exchange's aggressor flag (SSI Side BU/SD), when sent
    change: PriceChange | None = None
    ratio_change: Percent | None = None
    highest: Price | None = None
    lowest: Price | None = None
    avg_price: AveragePrice | None = None

    def natural_key(self) -> str:
        return f"{self.trading_date.isoformat()}:{self.symbol}:{self.total_volume}"


class PriceLevel(msgspec.Struct, array_like=True):
    """One level of the book, encoded as [price, volume]."""

    price: Price
    volume: Volume


class Quote(Message, kw_only=True):
    """The order book's best levels (SSI X-QUOTE, or the quote part of an X frame). Subject md.quote.<SYMBOL>.
    Levels with a zero price (absent) are dropped, so `bids`/`asks` may be empty."""

    symbol: Symbol
    exchange: Text | None = None
    trading_date: date
    timestamp: datetime
    session: Text | None = None
    bids: list[PriceLevel] = msgspec.field(default_factory=list)
    asks: list[PriceLevel] = msgspec.field(default_factory=list)
    projected_price: Price | None = None  # SSI EstMatchedPrice of an X frame: where an ATO/ATC auction would match

    @property
    def bid1(self) -> float:
        return self.bids[0].price if self.bids else 0.0

    @property
    def ask1(self) -> float:
        return self.asks[0].price if self.asks else 0.0


class ForeignRoom(Message, kw_only=True):
    """Foreign investors' cumulative buy/sell since the open and their ownership room (SSI R).
    Subject md.foreign.<SYMBOL>."""

    symbol: Symbol
    exchange: Text | None = None
    trading_date: date
    timestamp: datetime
    buy_volume: Volume
    sell_volume: Volume
    buy_value: Value
    sell_value: Value
    total_room: Room | None = None
    current_room: Room | None = None


class IndexUpdate(Message, kw_only=True):
    """An index value with the market's breadth (SSI MI). Subject md.index.<INDEX_ID> (normalized id)."""

    index_id: Symbol
    index_name: Text | None = None
    exchange: Text | None = None
    trading_date: date
    timestamp: datetime
    value: IndexValue
    prior_value: IndexValue | None = None
    change: IndexChange | None = None
    ratio_change: Percent | None = None
    total_volume: MarketVolume | None = None  # SSI TotalQtty: shares matched in normal trading
    total_value: Value | None = None
    advances: Count | None = None
    declines: Count | None = None
    no_changes: Count | None = None
    ceilings: Count | None = None
    floors: Count | None = None
    session: Text | None = None


class Bar(Message, kw_only=True):
    """A realtime OHLCV bar from SSI channel B. Subject md.bar.<SYMBOL>."""

    symbol: Symbol
    trading_date: date
    timestamp: datetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume
    interval_s: int | None = None  # None: one match (SSI channel B); 60: a minute bar fetched after a reconnect


class SecurityStatus(Message, kw_only=True):
    """A security's trading session and status (SSI F). Subject md.status.<SYMBOL>."""

    symbol: Symbol
    exchange: Text | None = None
    trading_date: date
    timestamp: datetime
    session: Text | None = None
    status: Text | None = None


class Rejection(Message, kw_only=True):
    """A frame the decoder refused, with the reason. Subject md.rejected. It has no trustworthy exchange time, so it
    carries the wall-clock time it was received."""

    reason: str
    detail: str
    data_type: str | None = None
    raw: str
    received_at: datetime


class DeadLetter(Message, kw_only=True):
    """A stream message a service could not use, set aside with why. Subject dlq.<service> on stream DEADLETTER;
    `stocktracker dlq` lists them. Its position in its own stream is passed: the service went on with the next.
    It carries the wall-clock time it was set aside: the message itself may have no readable exchange time."""

    service: str
    stream: str
    subject: str
    sequence: int  # in `stream`
    reason: str  # undecodable, invalid, bad_subject, subject_mismatch, implausible_date, non_finite, handler_error
    error: str
    payload: str  # the message as text (bytes that are not UTF-8 escaped), its first DEAD_LETTER_KEPT_BYTES
    payload_bytes: int  # the message's whole size
    dead_lettered_at: datetime


class IndexBasket(Message, kw_only=True):
    """An index's constituents. KV bucket reference, key basket.<INDEX_ID>."""

    index_id: str
    symbols: list[str]
    source: str  # ssi (IndexComponents), config (VN30_SYMBOLS) or builtin
    trading_date: date


class SecurityInfo(Message, kw_only=True):
    """Reference data of one security (SSI SecuritiesDetails). KV bucket reference, key security.<SYMBOL>."""

    symbol: str
    trading_date: date
    exchange: str | None = None
    name: str | None = None
    sec_type: str | None = None  # ST stock, FU future, EF ETF, CW covered warrant ...
    lot_size: int | None = None
    underlying: str | None = None
    last_trading_date: date | None = None
    listed_shares: int | None = None  # SSI ListedShare: the weight of a stock's price move in its indices


# --- derived events and state (stream DERIVED, KV buckets) ------------------------------------------------------


class ClassifiedTrade(Message, kw_only=True):
    """A trade with its aggressor. Subject trade.classified.<SYMBOL>."""

    symbol: Symbol
    trading_date: date
    timestamp: datetime
    price: Price
    volume: Volume
    value: Value  # price × volume, VND
    trade_type: TradeType
    rule: ClassificationRule
    bid_price: Price | None = None  # best bid and ask before the trade
    ask_price: Price | None = None
    total_volume: Volume  # the exchange's cumulative volume after this trade: the natural key
    session: str | None = None
    unseen_volume: Volume = 0  # volume this trade's TotalVol revealed beyond its own: trades we never saw, neutral
    ref_price: Price | None = None  # the day's reference, ceiling and floor, as the trade was sent with them
    ceiling: Price | None = None
    floor: Price | None = None

    def natural_key(self) -> str:
        return f"{self.trading_date.isoformat()}:{self.symbol}:{self.total_volume}"


class PhaseVolumes(Message, kw_only=True):
    """Buy / sell / neutral volume and value (for the day, or within one trading phase)."""

    mua_chu_dong_volume: int = 0
    mua_chu_dong_value: float = 0.0
    ban_chu_dong_volume: int = 0
    ban_chu_dong_value: float = 0.0
    neutral_volume: int = 0
    neutral_value: float = 0.0


class SessionStats(PhaseVolumes, kw_only=True):
    """A symbol's active buy / active sell split for the day. KV bucket session_stats, key <SYMBOL>."""

    symbol: str
    trading_date: date
    total_volume: int = 0
    phases: dict[str, PhaseVolumes] = msgspec.field(default_factory=dict)  # ato / continuous / atc
    last_updated: datetime


class BoardRow(Message, kw_only=True):
    """One instrument's row of a Vietnamese price board (TC / Trần / Sàn, the book, Khớp lệnh, Tổng KL, Mở / Cao /
    Thấp / TB), kept by the board tracker in KV `board` under <SYMBOL>. Prices in VND for stocks, index points for
    futures, as the feed sends them; the book's levels exactly as sent (3 on HOSE, up to 10 elsewhere)."""

    symbol: Symbol
    exchange: Text | None = None
    trading_date: date
    ref_price: Price | None = None
    ceiling: Price | None = None
    floor: Price | None = None
    bids: list[PriceLevel] = msgspec.field(default_factory=list)  # best first
    asks: list[PriceLevel] = msgspec.field(default_factory=list)  # best first
    last_price: Price | None = None  # the last match
    last_volume: Volume | None = None
    last_time: datetime | None = None
    change: PriceChange | None = None  # the last match against the reference price
    ratio_change: Percent | None = None
    total_volume: Volume = 0
    total_value: Value = 0.0
    open: Price | None = None  # the day's first match
    high: Price | None = None
    low: Price | None = None
    avg_price: AveragePrice | None = None
    session: Text | None = None  # the session of the latest update, as sent
    projected_price: Price | None = None  # during an ATO/ATC auction: where it would match (SSI EstMatchedPrice)
    last_updated: datetime


class PriceData(Message, kw_only=True):
    """A symbol's last price against its reference. KV bucket prices, key <SYMBOL>."""

    symbol: str
    trading_date: date
    last_price: float
    change: float  # last_price − ref_price
    change_pct: float  # change / ref_price × 100
    ref_price: float
    ceiling: float | None = None
    floor: float | None = None
    last_updated: datetime


class ForeignInvestorData(Message, kw_only=True):
    """A symbol's foreign flow for the day. KV bucket foreign, key stock.<SYMBOL>."""

    symbol: str
    trading_date: date
    buy_volume: int = 0
    sell_volume: int = 0
    net_volume: int = 0
    buy_value: float = 0.0
    sell_value: float = 0.0
    net_value: float = 0.0
    total_room: float | None = None
    current_room: float | None = None  # remaining room; "hết room" when about 0
    buy_speed_per_min: float = 0.0
    sell_speed_per_min: float = 0.0
    buy_acceleration: float = 0.0
    sell_acceleration: float = 0.0
    last_updated: datetime


class ForeignFlow(Message, kw_only=True):
    """The change in a symbol's cumulative foreign figures between two updates. Subject foreign.flow.<SYMBOL>."""

    symbol: Symbol
    trading_date: date
    timestamp: datetime
    buy_volume: Volume  # deltas
    sell_volume: Volume
    buy_value: ValueChange  # may fall while the volume grows: HOSE derives the value (volume × price)
    sell_value: ValueChange
    cumulative_buy_volume: Volume
    cumulative_sell_volume: Volume
    cumulative_buy_value: Value
    cumulative_sell_value: Value


class ForeignSummary(Message, kw_only=True):
    """Foreign flow over the VN30 basket. KV bucket foreign, key summary."""

    trading_date: date
    total_buy_value: float = 0.0
    total_sell_value: float = 0.0
    total_net_value: float = 0.0
    total_buy_volume: int = 0
    total_sell_volume: int = 0
    total_net_volume: int = 0
    top_buy: list[ForeignInvestorData] = msgspec.field(default_factory=list)
    top_sell: list[ForeignInvestorData] = msgspec.field(default_factory=list)
    last_updated: datetime


class IntradayPoint(Message, kw_only=True):
    """One point of an index's intraday series (IndexData.intraday)."""

    timestamp: datetime
    value: float


class IndexPoint(Message, kw_only=True):
    """An index value at a moment of the day. Subject index.point.<INDEX_ID>."""

    index_id: Symbol
    trading_date: date
    timestamp: datetime
    value: IndexValue


class IndexData(Message, kw_only=True):
    """An index's current value, breadth and intraday series. KV bucket indices, key <INDEX_ID>.
    advance_ratio = advances / (advances + declines), 0 when both are 0; computed, never taken from input."""

    index_id: str
    trading_date: date
    value: float
    prior_value: float = 0.0
    change: float = 0.0
    ratio_change: float = 0.0
    total_volume: float = 0.0
    advances: int = 0
    declines: int = 0
    no_changes: int = 0
    advance_ratio: float = 0.0
    intraday: list[IntradayPoint] = msgspec.field(default_factory=list)
    last_updated: datetime

    def __post_init__(self) -> None:
        moving = self.advances + self.declines
        self.advance_ratio = self.advances / moving if moving else 0.0


class BasisPoint(Message, kw_only=True):
    """Futures minus spot at a moment. Subject basis.point.<CONTRACT>."""

    trading_date: date
    timestamp: datetime
    futures_symbol: Symbol
    futures_price: Price
    spot_value: IndexValue
    basis: Finite  # futures_price − spot_value, index points
    basis_pct: Finite  # basis / spot_value × 100
    is_premium: bool  # basis > 0


class DerivativesData(Message, kw_only=True):
    """A VN30F contract's current state. KV bucket derivatives, key <CONTRACT>."""

    symbol: str
    trading_date: date
    last_price: float
    change: float = 0.0
    change_pct: float = 0.0
    volume: int = 0
    bid_price: float | None = None
    ask_price: float | None = None
    spot_value: float | None = None
    basis: float | None = None
    basis_pct: float | None = None
    is_premium: bool | None = None
    is_active: bool = False  # the front-month contract
    last_updated: datetime


class MarketSnapshot(Message, kw_only=True):
    """Everything a price board needs, as served by the gateway."""

    trading_date: date | None = None
    quotes: dict[str, SessionStats] = msgspec.field(default_factory=dict)
    prices: dict[str, PriceData] = msgspec.field(default_factory=dict)
    indices: dict[str, IndexData] = msgspec.field(default_factory=dict)
    foreign: ForeignSummary | None = None
    derivatives: DerivativesData | None = None
    last_updated: datetime | None = None


# --- alerts (stream DERIVED, subjects alert.<type>.<SYMBOL>) -------------------------------------------------------


class AlertType(StrEnum):
    """What an alert signals: a built-in rule's finding, or a user rule's (their `rule` names which)."""

    VOLUME_SPIKE = "volume_spike"  # a trade far above the symbol's recent mean trade
    CEILING_HIT = "ceiling_hit"  # a stock trades at its ceiling (trần)
    CEILING_LEFT = "ceiling_left"  # ... and then below it
    FLOOR_HIT = "floor_hit"  # at its floor (sàn)
    FLOOR_LEFT = "floor_left"
    FOREIGN_ACCELERATION = "foreign_acceleration"  # foreign net value moving fast
    BASIS_FLIP = "basis_flip"  # a contract's basis changes sign
    BASIS_MOVE = "basis_move"  # ... or moves far within minutes
    FUTURES_FLOW = "futures_flow"  # a contract's active buy / sell volumes far apart
    FUTURES_ABSORPTION = "futures_absorption"  # active buying speeding up while the price stands still
    PRICE_CROSS = "price_cross"  # user rule: the price crosses a level
    CHANGE_BEYOND = "change_beyond"  # user rule: the change from the reference beyond a percentage
    VOLUME_BEYOND = "volume_beyond"  # user rule: the day's volume beyond a number


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Message, kw_only=True):
    """A market signal, on the feed's own clock. Subject alert.<type>.<SYMBOL>; the latest in KV bucket alerts."""

    type: AlertType
    severity: Severity
    symbol: Symbol
    trading_date: date
    timestamp: datetime  # exchange time of the message that raised it
    rule: Text  # the built-in rule (its type) or the user rule's id
    values: dict[str, Finite]  # what triggered it (price, volume, mean, threshold, ...)
    message_vi: str
    message_en: str

    def natural_key(self) -> str:
        return f"{self.trading_date.isoformat()}:{self.rule}:{self.symbol}:{self.timestamp.isoformat()}"


class RuleKind(StrEnum):
    PRICE_ABOVE = "price_above"  # the price reaches `value` from below
    PRICE_BELOW = "price_below"  # ... from above
    CHANGE_BEYOND = "change_beyond"  # |change from the reference price| reaches `value` percent
    VOLUME_BEYOND = "volume_beyond"  # the day's cumulative volume reaches `value`


class AlertRule(Message, kw_only=True):
    """A user's rule for one symbol. KV bucket alert_rules, key <id>."""

    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
    symbol: Symbol
    kind: RuleKind
    value: Annotated[float, Meta(gt=0, le=MAX_VALUE)]
    severity: Severity = Severity.INFO
