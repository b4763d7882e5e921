"""Our domain messages: what flows on the MARKET and DERIVED streams and what the KV buckets hold.

Names and fields follow the seed's models (../shared/seed/backend-scout-report.md Part 5). Every message carries the
exchange timestamp (tz-aware, Asia/Ho_Chi_Minh; `timestamp` or, for current-state models, `last_updated`) and the
trading date. Units: stock prices VND, futures and indices in points, volumes in shares/contracts, values in VND.
All are msgspec Structs encoded as JSON so the NATS CLI can read them.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

import msgspec


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

    AUCTION = "auction"  # ATO/ATC/PT print: no aggressor
    EXCHANGE = "exchange"  # the exchange's own Side flag
    QUOTE = "quote"  # the book before the trade
    TICK = "tick"  # the day's price sequence
    NONE = "none"  # nothing applied
    UNSEEN = "unseen"  # volume the exchange counted but whose trades never reached us


# --- normalized market data (stream MARKET, subjects md.*) ----------------------------------------------------


class Trade(Message, kw_only=True):
    """A matched trade (SSI X-TRADE, or the trade part of an X frame). Subject md.trade.<SYMBOL>."""

    symbol: str
    exchange: str | None = None
    trading_date: date
    timestamp: datetime
    price: float
    volume: int  # this match (SSI LastVol)
    total_volume: int  # cumulative for the day (SSI TotalVol): the trade's natural key
    total_value: float | None = None
    ref_price: float | None = None
    ceiling: float | None = None
    floor: float | None = None
    session: str | None = None  # SSI TradingSession as sent: ATO, LO, ATC, PT, ...
    side: TradeType | None = None  # the exchange's aggressor flag (SSI Side BU/SD), when sent
    change: float | None = None
    ratio_change: float | None = None
    highest: float | None = None
    lowest: float | None = None
    avg_price: float | None = None

    def natural_key(self) -> str:
        return f"{self.trading_date.isoformat()}:{self.symbol}:{self.total_volume}"


class PriceLevel(msgspec.Struct, array_like=True):
    """One level of the book, encoded as [price, volume]."""

    price: float
    volume: int


class Quote(Message, kw_only=True):
    """The order book's best levels (SSI X-QUOTE, or the quote part of an X frame). Subject md.quote.<SYMBOL>.
    Levels with a zero price (absent) are dropped, so `bids`/`asks` may be empty."""

    symbol: str
    exchange: str | None = None
    trading_date: date
    timestamp: datetime
    session: str | None = None
    bids: list[PriceLevel] = msgspec.field(default_factory=list)
    asks: list[PriceLevel] = msgspec.field(default_factory=list)

    @property
    def bid1(self) -> float:
        return self.bids[0].price if self.bids else 0.0

    @property
    def ask1(self) -> float:
        return self.asks[0].price if self.asks else 0.0


class ForeignRoom(Message, kw_only=True):
    """Foreign investors' cumulative buy/sell since the open and their ownership room (SSI R).
    Subject md.foreign.<SYMBOL>."""

    symbol: str
    exchange: str | None = None
    trading_date: date
    timestamp: datetime
    buy_volume: int
    sell_volume: int
    buy_value: float
    sell_value: float
    total_room: float | None = None
    current_room: float | None = None


class IndexUpdate(Message, kw_only=True):
    """An index value with the market's breadth (SSI MI). Subject md.index.<INDEX_ID> (normalized id)."""

    index_id: str
    index_name: str | None = None
    exchange: str | None = None
    trading_date: date
    timestamp: datetime
    value: float
    prior_value: float | None = None
    change: float | None = None
    ratio_change: float | None = None
    total_volume: float | None = None  # SSI TotalQtty: shares matched in normal trading
    total_value: float | None = None
    advances: int | None = None
    declines: int | None = None
    no_changes: int | None = None
    ceilings: int | None = None
    floors: int | None = None
    session: str | None = None


class Bar(Message, kw_only=True):
    """A realtime OHLCV bar from SSI channel B. Subject md.bar.<SYMBOL>."""

    symbol: str
    trading_date: date
    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    interval_s: int | None = None  # None: one match (SSI channel B); 60: a minute bar fetched after a reconnect


class SecurityStatus(Message, kw_only=True):
    """A security's trading session and status (SSI F). Subject md.status.<SYMBOL>."""

    symbol: str
    exchange: str | None = None
    trading_date: date
    timestamp: datetime
    session: str | None = None
    status: str | None = None


class Rejection(Message, kw_only=True):
    """A frame the decoder refused, with the reason. Subject md.rejected. It has no trustworthy exchange time, so it
    carries the wall-clock time it was received."""

    reason: str
    detail: str
    data_type: str | None = None
    raw: str
    received_at: datetime


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


# --- derived events and state (stream DERIVED, KV buckets) ------------------------------------------------------


class ClassifiedTrade(Message, kw_only=True):
    """A trade with its aggressor. Subject trade.classified.<SYMBOL>."""

    symbol: str
    trading_date: date
    timestamp: datetime
    price: float
    volume: int
    value: float  # price × volume, VND
    trade_type: TradeType
    rule: ClassificationRule
    bid_price: float | None = None  # best bid and ask before the trade
    ask_price: float | None = None
    total_volume: int  # the exchange's cumulative volume after this trade: the natural key
    session: str | None = None
    unseen_volume: int = 0  # volume this trade's TotalVol revealed beyond its own: trades we never saw, neutral

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

    symbol: str
    trading_date: date
    timestamp: datetime
    buy_volume: int  # deltas
    sell_volume: int
    buy_value: float
    sell_value: float
    cumulative_buy_volume: int
    cumulative_sell_volume: int
    cumulative_buy_value: float
    cumulative_sell_value: float


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

    index_id: str
    trading_date: date
    timestamp: datetime
    value: float


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
    futures_symbol: str
    futures_price: float
    spot_value: float
    basis: float  # futures_price − spot_value, index points
    basis_pct: float  # basis / spot_value × 100
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
