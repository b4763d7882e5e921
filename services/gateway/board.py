"""The price board from the market view: rows with their foreign columns, which rows a filter selects, the whole
book of one instrument, and the market views made from the rows (breadth, top movers, index contributions). Pure:
read from a `MarketView`, no I/O.

A row's exchange is the one it was sent with (HOSE, HNX, UPCOM; futures are DER). A group is an index's basket as
reference data names it (`basket.<INDEX_ID>`: VN30 always, others when ingest knows them). An index's members for
breadth and contributions: its basket when one is known, else the stocks of its exchange (VNINDEX: HOSE, HNXINDEX:
HNX, UPCOMINDEX: UPCOM), covered warrants and futures left out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import msgspec

from services.gateway.routes import is_instrument
from services.gateway.view import MarketView
from shared.market import DEFAULT_VN30_BASKET, Exchange, is_futures, parse_exchange
from shared.messages.domain import BoardRow, PriceLevel

MAX_SYMBOLS = 200  # in one filter: a watchlist, not the market
INDEX_EXCHANGES = {"VNINDEX": Exchange.HOSE, "VN30": Exchange.HOSE, "HNXINDEX": Exchange.HNX, "HNX30": Exchange.HNX,
                   "UPCOMINDEX": Exchange.UPCOM}
_EXCHANGE_CODES = frozenset(str(exchange) for exchange in Exchange)  # as the API names them, exactly
_DEFAULT_VN30 = list(DEFAULT_VN30_BASKET)  # while reference data names none
_NOT_IN_INDICES = frozenset({"CW", "FU"})  # covered warrants and futures: listed, but in no index


class BoardQuote(BoardRow, kw_only=True):
    """A board row with its foreign investors' columns (ĐTNN: bought, sold, the room left), as the board endpoint
    and the `board` channel carry it."""

    foreign_buy_volume: int | None = None
    foreign_sell_volume: int | None = None
    foreign_buy_value: float | None = None
    foreign_sell_value: float | None = None
    foreign_room: float | None = None  # shares foreigners may still buy (SSI CurrentRoom)
    foreign_total_room: float | None = None


class Book(msgspec.Struct, kw_only=True):
    """Every level of one instrument's book as the exchange sent it (3 on HOSE, up to 10 elsewhere), best first."""

    symbol: str
    exchange: str | None
    trading_date: date
    session: str | None
    bids: list[PriceLevel]
    asks: list[PriceLevel]
    projected_price: float | None  # during an ATO/ATC auction
    last_updated: datetime


class Breadth(msgspec.Struct, kw_only=True):
    """An index's members by their move against the reference price. Ceilings are counted among the advances and
    floors among the declines, as the exchanges count them; `untraded`: no match yet today."""

    index_id: str
    members: int
    advances: int = 0
    declines: int = 0
    unchanged: int = 0
    untraded: int = 0
    ceilings: int = 0
    floors: int = 0
    total_volume: int = 0
    total_value: float = 0.0  # VND
    value: float | None = None  # the index, when the feed sends it
    change: float | None = None


class Mover(msgspec.Struct, kw_only=True):
    symbol: str
    last_price: float | None
    change: float | None
    ratio_change: float | None
    total_volume: int
    total_value: float


class Movers(msgspec.Struct, kw_only=True):
    """The day's top instruments of an exchange: by % gain, by % loss, by volume and by traded value."""

    exchange: str
    gainers: list[Mover]
    losers: list[Mover]
    volume: list[Mover]
    value: list[Mover]


class MemberContribution(msgspec.Struct, kw_only=True):
    symbol: str
    points: float  # index points this member moved the index by
    weight: float  # its share of the index's capitalisation at the reference prices
    ratio_change: float | None


class Contribution(msgspec.Struct, kw_only=True):
    """Each member's part of the index's move, in index points: prior value × shares × (price − reference) /
    Σ shares × reference, with reference data's listed shares as the weights (the exchange weights by free float,
    with caps: `explained` against the index's own `change` shows how close that comes). `unweighted`: members
    without listed shares, left out."""

    index_id: str
    prior_value: float | None
    change: float | None
    explained: float
    members: list[MemberContribution]
    unweighted: list[str]


@dataclass(frozen=True)
class BoardFilter:
    """Which rows: those of an exchange, of a group, of named symbols; the ones given narrow each other."""

    exchange: Exchange | None = None
    group: str | None = None
    symbols: frozenset[str] | None = None

    @property
    def topic(self) -> str:
        """The filter's canonical name: the same rows asked in any order or case are one subscription."""
        parts = [f"exchange={self.exchange}" if self.exchange else "", f"group={self.group}" if self.group else "",
                 f"symbols={','.join(sorted(self.symbols))}" if self.symbols is not None else ""]
        return "&".join(part for part in parts if part) or "all"


def read_filter(exchange: str | None, group: str | None, symbols: Iterable[str] | None,
                groups: Iterable[str]) -> BoardFilter | tuple[str, str]:
    """A filter from what a client sent, or (the parameter, why) it cannot be one."""
    if exchange is not None and exchange not in _EXCHANGE_CODES:
        return "exchange", f"exchange is one of {', '.join(Exchange)}"
    known = {name.upper() for name in groups} | {"VN30"}
    if group is not None and group.upper() not in known:
        return "group", f"group is one of {', '.join(sorted(known))}"
    wanted = None
    if symbols is not None:
        wanted = frozenset(symbol.strip().upper() for symbol in symbols if symbol.strip())
        if len(wanted) > MAX_SYMBOLS:
            return "symbols", f"at most {MAX_SYMBOLS} symbols"
        if not all(is_instrument(symbol) for symbol in wanted):
            return "symbols", "symbols are [A-Za-z0-9_-]{1,30}, comma-separated"
    return BoardFilter(Exchange(exchange) if exchange else None, group.upper() if group else None, wanted)


class Board:
    """The board's answers from the market view."""

    def __init__(self, view: MarketView) -> None:
        self.view = view
        self._group_sets: dict[str, tuple[list[str], frozenset[str]]] = {}  # (the basket, its set) by group

    def groups(self) -> list[str]:
        return sorted(set(self.view.baskets) | {"VN30"})

    def members_of(self, group: str) -> list[str]:
        return self.view.baskets.get(group) or (_DEFAULT_VN30 if group == "VN30" else [])

    def _group_set(self, group: str) -> frozenset[str]:
        members = self.members_of(group)
        cached = self._group_sets.get(group)
        if cached is None or cached[0] is not members:  # a basket update replaces the list
            cached = self._group_sets[group] = (members, frozenset(members))
        return cached[1]

    def matches(self, board_filter: BoardFilter, symbol: str) -> bool:
        """Whether the filter selects the symbol's row (or would, for a row just deleted, by symbols or group)."""
        if board_filter.symbols is not None and symbol not in board_filter.symbols:
            return False
        if board_filter.group and symbol not in self._group_set(board_filter.group):
            return False
        if board_filter.exchange:
            row = self.view.board.get(symbol)
            return row is not None and self.exchange_of(row) is board_filter.exchange
        return True

    def exchange_of(self, row: BoardRow) -> Exchange | None:
        if is_futures(row.symbol, row.exchange):
            return Exchange.DER
        return parse_exchange(row.exchange)

    def selects(self, board_filter: BoardFilter) -> set[str]:
        """The symbols the filter selects now (a group's members and an exchange's rows change as the day goes)."""
        chosen = set(self.view.board) if board_filter.symbols is None else set(board_filter.symbols)
        if board_filter.group:
            chosen &= set(self.members_of(board_filter.group))
        if board_filter.exchange:
            chosen = {s for s in chosen if s in self.view.board and self.exchange_of(self.view.board[s])
                      is board_filter.exchange}
        return chosen

    def quote(self, symbol: str) -> BoardQuote | None:
        row = self.view.board.get(symbol)
        if row is None:
            return None
        quote = BoardQuote(**msgspec.structs.asdict(row))
        foreign = self.view.foreign.get(symbol)
        if foreign is not None and foreign.trading_date == row.trading_date:
            quote.foreign_buy_volume, quote.foreign_sell_volume = foreign.buy_volume, foreign.sell_volume
            quote.foreign_buy_value, quote.foreign_sell_value = foreign.buy_value, foreign.sell_value
            quote.foreign_room, quote.foreign_total_room = foreign.current_room, foreign.total_room
        return quote

    def rows(self, board_filter: BoardFilter) -> list[BoardQuote]:
        quotes = (self.quote(symbol) for symbol in sorted(self.selects(board_filter)))
        return [quote for quote in quotes if quote is not None]

    def book(self, symbol: str) -> Book | None:
        row = self.view.board.get(symbol)
        if row is None:
            return None
        return Book(symbol=row.symbol, exchange=row.exchange, trading_date=row.trading_date, session=row.session,
                    bids=row.bids, asks=row.asks, projected_price=row.projected_price, last_updated=row.last_updated)

    # --- market views --------------------------------------------------------------------------------------------

    def index_ids(self) -> list[str]:
        """The indices views are made for: those with a known basket or exchange."""
        return sorted(set(INDEX_EXCHANGES) | set(self.view.baskets))

    def index_members(self, index_id: str) -> list[BoardRow]:
        """The index's members on the board, of its latest trading date."""
        board = self.view.board
        if index_id in self.view.baskets or index_id == "VN30":
            rows = [board[s] for s in self.members_of(index_id) if s in board]
        else:
            exchange = INDEX_EXCHANGES.get(index_id)
            rows = [row for row in board.values() if exchange is not None and self.exchange_of(row) is exchange
                    and self._in_indices(row.symbol)]
        latest = max((row.trading_date for row in rows), default=None)
        return sorted((row for row in rows if row.trading_date == latest), key=lambda row: row.symbol)

    def _in_indices(self, symbol: str) -> bool:
        security = self.view.securities.get(symbol)
        return security is None or (security.sec_type or "").upper() not in _NOT_IN_INDICES

    def breadth(self, index_id: str) -> Breadth:
        members = self.index_members(index_id)
        breadth = Breadth(index_id=index_id, members=len(members))
        for row in members:
            breadth.total_volume += row.total_volume
            breadth.total_value += row.total_value
            if row.last_price is None or row.ref_price is None:
                breadth.untraded += 1
                continue
            if row.last_price > row.ref_price:
                breadth.advances += 1
            elif row.last_price < row.ref_price:
                breadth.declines += 1
            else:
                breadth.unchanged += 1
            if row.ceiling is not None and row.last_price >= row.ceiling:
                breadth.ceilings += 1
            elif row.floor is not None and row.last_price <= row.floor:
                breadth.floors += 1
        index = self.view.indices.get(index_id)
        if index is not None:
            breadth.value, breadth.change = index.value, index.change
        return breadth

    def movers(self, exchange: Exchange, limit: int) -> Movers:
        traded = [row for row in self.view.board.values()
                  if self.exchange_of(row) is exchange and row.last_price is not None]
        latest = max((row.trading_date for row in traded), default=None)
        traded = sorted((row for row in traded if row.trading_date == latest), key=lambda row: row.symbol)

        def top(rows: Iterable[BoardRow], key: object, reverse: bool) -> list[Mover]:
            ranked = sorted(rows, key=key, reverse=reverse)[:limit]  # type: ignore[arg-type]  # stable: ties by symbol
            return [Mover(symbol=r.symbol, last_price=r.last_price, change=r.change, ratio_change=r.ratio_change,
                          total_volume=r.total_volume, total_value=r.total_value) for r in ranked]

        return Movers(
            exchange=str(exchange),
            gainers=top((r for r in traded if (r.ratio_change or 0) > 0), lambda r: r.ratio_change, True),
            losers=top((r for r in traded if (r.ratio_change or 0) < 0), lambda r: r.ratio_change, False),
            volume=top(traded, lambda r: r.total_volume, True),
            value=top(traded, lambda r: r.total_value, True),
        )

    def contribution(self, index_id: str) -> Contribution:
        index = self.view.indices.get(index_id)
        prior = index.prior_value if index is not None and index.prior_value > 0 else None
        weighted: list[tuple[BoardRow, int]] = []
        unweighted: list[str] = []
        for row in self.index_members(index_id):
            security = self.view.securities.get(row.symbol)
            shares = security.listed_shares if security is not None else None
            if shares and row.ref_price:
                weighted.append((row, shares))
            else:
                unweighted.append(row.symbol)
        capitalisation = sum(shares * (row.ref_price or 0.0) for row, shares in weighted)  # > 0 when any is weighted
        members = []
        for row, shares in weighted:
            reference = row.ref_price or 0.0
            moved = row.last_price - reference if row.last_price is not None else 0.0
            members.append(MemberContribution(
                symbol=row.symbol, points=prior * shares * moved / capitalisation if prior else 0.0,
                weight=shares * reference / capitalisation, ratio_change=row.ratio_change))
        members.sort(key=lambda member: (-member.points, member.symbol))
        return Contribution(index_id=index_id, prior_value=prior, change=index.change if index is not None else None,
                            explained=sum(member.points for member in members), members=members,
                            unweighted=unweighted)
