"""Every subject, stream and KV bucket: the system's public interface, named in this one module.

Subjects go from broad to narrow, the last token being the instrument (symbol, index id or contract) exactly as
normalized by ingest (upper case, [A-Z0-9_-]), so `nats sub 'md.trade.*'` or `nats sub 'md.futures.>'` line up.
Futures have their own trade and quote subjects so that the classifier reads only stocks and the derivatives service
only futures, each without the other's traffic.

Stream MARKET (normalized feed, written by ingest only):
    md.trade.<SYMBOL>              Trade           every matched trade of a stock (or fund, warrant...)
    md.quote.<SYMBOL>              Quote           the book's best levels
    md.futures.trade.<CONTRACT>    Trade           every matched trade of a futures contract
    md.futures.quote.<CONTRACT>    Quote           the contract's book
    md.foreign.<SYMBOL>    ForeignRoom     cumulative foreign buy/sell and room
    md.index.<INDEX_ID>    IndexUpdate     index value and breadth
    md.bar.<SYMBOL>        Bar             SSI's realtime bars                  (for external use: no service reads it)
    md.status.<SYMBOL>     SecurityStatus  trading session / status changes    (for external use: no service reads it)
    md.rejected            Rejection       frames ingest refused, with the reason (for inspection: `stocktracker tap`)
Stream DERIVED (events computed by the trackers):
    trade.classified.<SYMBOL>    ClassifiedTrade
    foreign.flow.<SYMBOL>        ForeignFlow
    index.point.<INDEX_ID>       IndexPoint
    basis.point.<CONTRACT>       BasisPoint
    alert.<TYPE>.<SYMBOL>        Alert           a market signal (AlertType) of a symbol or contract
Stream DEADLETTER (messages a service could not use, with why; `stocktracker dlq` lists them):
    dlq.<service>                DeadLetter
KV buckets (current state, one value per key): see `Bucket`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.messages.domain import (
    Alert,
    Bar,
    BasisPoint,
    ClassifiedTrade,
    ForeignFlow,
    ForeignRoom,
    IndexPoint,
    IndexUpdate,
    Message,
    Quote,
    Rejection,
    SecurityStatus,
    Trade,
)


@dataclass(frozen=True)
class Family:
    """Subjects `<prefix>.<TOKEN>`, one per instrument."""

    prefix: str

    def __call__(self, token: str) -> str:
        return f"{self.prefix}.{token}"

    @property
    def wildcard(self) -> str:
        return f"{self.prefix}.*"

    def matches(self, subject: str) -> bool:
        """Whether `subject` is one of this family's."""
        family, _, token = subject.rpartition(".")
        return family == self.prefix and bool(token)

    def token(self, subject: str) -> str:
        """The instrument token of one of this family's subjects."""
        return subject[len(self.prefix) + 1 :]


MD_TRADE = Family("md.trade")
MD_QUOTE = Family("md.quote")
MD_FUTURES_TRADE = Family("md.futures.trade")
MD_FUTURES_QUOTE = Family("md.futures.quote")
MD_FOREIGN = Family("md.foreign")
MD_INDEX = Family("md.index")
MD_BAR = Family("md.bar")
MD_STATUS = Family("md.status")
MD_REJECTED = "md.rejected"

TRADE_CLASSIFIED = Family("trade.classified")
FOREIGN_FLOW = Family("foreign.flow")
INDEX_POINT = Family("index.point")
BASIS_POINT = Family("basis.point")
ALERT_PREFIX = "alert."
ALERTS = f"{ALERT_PREFIX}*.*"  # alert.<TYPE>.<SYMBOL>
DEAD_LETTERS = Family("dlq")  # dlq.<service>
SERVICE_STATUS = "stocktracker.{name}.status"  # each service's nats.micro endpoint answering its status as JSON


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str


MARKET = StreamSpec(
    "MARKET",
    ("md.>",),
    "Normalized SSI market data, as published by ingest (replay buffer for every tracker)",
)
DERIVED = StreamSpec(
    "DERIVED",
    (TRADE_CLASSIFIED.wildcard, FOREIGN_FLOW.wildcard, INDEX_POINT.wildcard, BASIS_POINT.wildcard, ALERTS),
    "Events derived by the trackers: classified trades, foreign flows, index points, basis points, alerts",
)
DEADLETTER = StreamSpec(
    "DEADLETTER",
    (DEAD_LETTERS.wildcard,),
    "Messages a service could not use (undecodable, invalid, or failing), each with its subject, sequence and error",
)
STREAMS = (MARKET, DERIVED, DEADLETTER)


class Bucket(StrEnum):
    """KV buckets; values are the JSON-encoded domain messages named here."""

    SESSION_STATS = "session_stats"  # <SYMBOL> -> SessionStats
    PRICES = "prices"  # <SYMBOL> -> PriceData
    FOREIGN = "foreign"  # stock.<SYMBOL> -> ForeignInvestorData; summary -> ForeignSummary
    INDICES = "indices"  # <INDEX_ID> -> IndexData (with its intraday series)
    DERIVATIVES = "derivatives"  # <CONTRACT> -> DerivativesData
    BOARD = "board"  # <SYMBOL> -> BoardRow: the price board's row, the book as sent
    REFERENCE = "reference"  # basket.VN30 -> list of symbols; security.<SYMBOL> -> security details
    ALERTS = "alerts"  # <SYMBOL>.<RULE> -> Alert: the latest alert of each rule and symbol
    ALERT_RULES = "alert_rules"  # <RULE_ID> -> AlertRule: the users' rules
    CHECKPOINTS = "checkpoints"  # <service> -> the service's state and stream position, for restarts


def stream_of(subject: str) -> str:
    """The stream a subject we publish is stored in: a KV bucket's (KV_<bucket>) for $KV.<bucket>.<key>, else the
    stream whose subjects it falls under."""
    if subject.startswith("$KV."):
        return f"KV_{subject.split('.', 2)[1]}"
    first = subject.split(".", 1)[0]
    return next((spec.name for spec in STREAMS if any(pattern.split(".", 1)[0] == first for pattern in spec.subjects)),
                "")


def kv_subject(bucket: Bucket, key: str) -> str:
    """The subject a put to `key` of `bucket` is published on (JetStream KV's own layout)."""
    return f"$KV.{bucket}.{key}"


BUCKET_DESCRIPTIONS = {
    Bucket.SESSION_STATS: "Active buy / active sell split per symbol for the trading day",
    Bucket.PRICES: "Last price, change, reference, ceiling and floor per symbol",
    Bucket.FOREIGN: "Foreign flow per symbol (stock.<SYMBOL>) and the VN30 summary (summary)",
    Bucket.INDICES: "Index value, breadth and intraday series per index id",
    Bucket.DERIVATIVES: "VN30F contract state with its basis to the VN30 index",
    Bucket.BOARD: "The price board's row per instrument: the book as sent, the last match, the day's figures",
    Bucket.REFERENCE: "Reference data: index baskets (VN30, HNX30) and security details",
    Bucket.ALERTS: "The latest alert of each rule and symbol",
    Bucket.ALERT_RULES: "The users' alert rules, by id",
    Bucket.CHECKPOINTS: "Each tracker's state and stream position, so a restart resumes exactly; the alerts "
                        "webhook's position",
}

FOREIGN_SUMMARY_KEY = "summary"
BASKET_KEY_PREFIX = "basket."  # basket.<INDEX_ID> -> IndexBasket
SECURITY_KEY_PREFIX = "security."  # security.<SYMBOL> -> SecurityInfo


def basket_key(index_id: str) -> str:
    return f"{BASKET_KEY_PREFIX}{index_id}"


VN30_BASKET_KEY = basket_key("VN30")


def foreign_stock_key(symbol: str) -> str:
    return f"stock.{symbol}"


def security_key(symbol: str) -> str:
    return f"{SECURITY_KEY_PREFIX}{symbol}"


_MARKET_SUBJECTS: dict[type[Message], Family] = {
    Trade: MD_TRADE,
    Quote: MD_QUOTE,
    ForeignRoom: MD_FOREIGN,
    Bar: MD_BAR,
    SecurityStatus: MD_STATUS,
}
_FUTURES_SUBJECTS: dict[type[Message], Family] = {Trade: MD_FUTURES_TRADE, Quote: MD_FUTURES_QUOTE}


def market_subject(message: Message, *, futures: bool = False) -> str:
    """The MARKET subject a normalized message is published on; `futures`: the message is a futures contract's (its
    trades and quotes have subjects of their own; its bars and status share the stocks')."""
    if isinstance(message, IndexUpdate):
        return MD_INDEX(message.index_id)
    if isinstance(message, Rejection):
        return MD_REJECTED
    family = (futures and _FUTURES_SUBJECTS.get(type(message))) or _MARKET_SUBJECTS[type(message)]
    return family(message.symbol)  # type: ignore[attr-defined]


_DERIVED_SUBJECTS: dict[type[Message], Family] = {
    ClassifiedTrade: TRADE_CLASSIFIED,
    ForeignFlow: FOREIGN_FLOW,
}


def alert_subject(kind: str, symbol: str) -> str:
    return f"{ALERT_PREFIX}{kind}.{symbol}"


def derived_subject(message: Message) -> str:
    """The DERIVED subject a derived event is published on."""
    if isinstance(message, IndexPoint):
        return INDEX_POINT(message.index_id)
    if isinstance(message, BasisPoint):
        return BASIS_POINT(message.futures_symbol)
    if isinstance(message, Alert):
        return alert_subject(message.type, message.symbol)
    return _DERIVED_SUBJECTS[type(message)](message.symbol)  # type: ignore[attr-defined]
