"""Vietnamese market rules as pure functions: exchange time, trading phases, ticks, price limits, lots, VN30F contracts.

Sources: docs/ssi.md, "Sessions and the trading schedule", "Ticks, limits and lots", "VN30 index and its futures"
and "Units and time". Prices are VND for stocks and index points for futures; nothing here scales them.
Exchange holidays are not modelled: a holiday looks like a trading day whose feed stays silent.
"""

from __future__ import annotations

import calendar
import itertools
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from functools import lru_cache

# Vietnam has kept UTC+7 without daylight saving since 1975, so a fixed offset is exact and needs no tz database.
EXCHANGE_TZ = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")


class Exchange(StrEnum):
    HOSE = "HOSE"
    HNX = "HNX"
    UPCOM = "UPCOM"
    DER = "DER"  # HNX derivatives (VN30F); SSI streams call it "DERIVATIVES"


_EXCHANGE_ALIASES = {"HOSE": "HOSE", "HSX": "HOSE", "HNX": "HNX", "UPCOM": "UPCOM", "DER": "DER", "DERIVATIVES": "DER"}


def parse_exchange(code: str | None) -> Exchange | None:
    """SSI's Exchange/MarketId value as an `Exchange`, or None when absent or unknown (e.g. HNXBOND)."""
    if not code:
        return None
    canonical = _EXCHANGE_ALIASES.get(code.strip().upper())
    return Exchange(canonical) if canonical else None


class Phase(StrEnum):
    """Where an exchange's trading day stands at a given exchange time."""

    PRE_OPEN = "pre_open"
    ATO = "ato"
    CONTINUOUS = "continuous"
    LUNCH = "lunch"
    ATC = "atc"
    POST_CLOSE = "post_close"  # HOSE put-through only / HNX PLO: trading, but no continuous matching
    CLOSED = "closed"


def _t(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


# (start, phase) pairs per exchange, exchange time; each phase lasts until the next start. Before the first: PRE_OPEN;
# weekends CLOSED. The one schedule: the classifier's auctions, the live feed's watchdog and the dashboard (served as
# /api/market/schedule) all read it here.
SCHEDULES: dict[Exchange, tuple[tuple[time, Phase], ...]] = {
    Exchange.HOSE: (
        (_t("09:00"), Phase.ATO),
        (_t("09:15"), Phase.CONTINUOUS),
        (_t("11:30"), Phase.LUNCH),
        (_t("13:00"), Phase.CONTINUOUS),
        (_t("14:30"), Phase.ATC),
        (_t("14:45"), Phase.POST_CLOSE),
        (_t("15:00"), Phase.CLOSED),
    ),
    Exchange.HNX: (
        (_t("09:00"), Phase.CONTINUOUS),
        (_t("11:30"), Phase.LUNCH),
        (_t("13:00"), Phase.CONTINUOUS),
        (_t("14:30"), Phase.ATC),
        (_t("14:45"), Phase.POST_CLOSE),
        (_t("15:00"), Phase.CLOSED),
    ),
    Exchange.UPCOM: (
        (_t("09:00"), Phase.CONTINUOUS),
        (_t("11:30"), Phase.LUNCH),
        (_t("13:00"), Phase.CONTINUOUS),
        (_t("15:00"), Phase.CLOSED),
    ),
    Exchange.DER: (
        (_t("08:45"), Phase.ATO),
        (_t("09:00"), Phase.CONTINUOUS),
        (_t("11:30"), Phase.LUNCH),
        (_t("13:00"), Phase.CONTINUOUS),
        (_t("14:30"), Phase.ATC),
        (_t("14:45"), Phase.CLOSED),
    ),
}

_OPEN_PHASES = frozenset({Phase.ATO, Phase.CONTINUOUS, Phase.ATC, Phase.POST_CLOSE})


def phase_at(exchange: Exchange, moment: datetime) -> Phase:
    """The trading phase of `exchange` at `moment` (converted to exchange time). Weekends are CLOSED."""
    local = to_exchange_time(moment)
    if local.weekday() >= 5:
        return Phase.CLOSED
    clock = local.time()
    phase = Phase.PRE_OPEN
    for start, scheduled in SCHEDULES[exchange]:
        if clock < start:
            break
        phase = scheduled
    return phase


def is_trading(exchange: Exchange, moment: datetime) -> bool:
    """True while the exchange matches orders (auctions included), i.e. when a silent feed is suspicious."""
    return phase_at(exchange, moment) in _OPEN_PHASES


def session_phase(session_code: str | None) -> Phase | None:
    """SSI's TradingSession code as a phase: ATO, LO (continuous), ATC, PT/PLO (post-close), BREAK, C; else None."""
    if not session_code:
        return None
    return _SESSION_CODES.get(session_code.strip().upper())


# The phases whose matches have no aggressor: the opening and closing call auctions, and the post-close session
# (put-through deals, HNX's post-close lots at the closing price).
AUCTION_PHASES = frozenset({Phase.ATO, Phase.ATC, Phase.POST_CLOSE})


def trade_phase(session_code: str | None, exchange_code: str | None, moment: datetime, *,
                first_of_day: bool) -> tuple[Phase | None, bool]:
    """The phase a match belongs to, and whether the exchange's schedule (not the session code) said so.

    A session code naming a trading phase (ATO, LO, ATC, PT, PLO) decides. The live feed also sends matches with no
    session code, or one that names no phase (C, BREAK, codes not known here); those take the schedule's phase at
    their exchange time, read as the exchange matches: the opening auction's single match is stamped the instant
    continuous trading begins (HOSE 09:15:00, the derivatives market 09:00:00), so at that instant a symbol's first
    match of the day is the opening print, later ones continuous; the closing auction's match lands at its end or
    seconds after (14:45:00 on HOSE, up to 14:45:12 seen on the derivatives market, which closes then), so from
    that instant a match is the closing print or, once a post-close session runs (HOSE, HNX to 15:00), one of its
    deals. UPCOM has no auctions: its matches are continuous. None: the exchange is not known."""
    by_code = session_phase(session_code)
    if by_code in (Phase.ATO, Phase.CONTINUOUS, Phase.ATC, Phase.POST_CLOSE):
        return by_code, False
    exchange = parse_exchange(exchange_code)
    if exchange is None:
        return None, False
    scheduled = phase_at(exchange, moment)
    if scheduled is Phase.CLOSED and to_exchange_time(moment).weekday() >= 5:
        return scheduled, True
    opening_ends, closing_ends = _AUCTION_ENDS[exchange]
    clock = to_exchange_time(moment).time().replace(microsecond=0)
    if first_of_day and clock == opening_ends:
        return Phase.ATO, True
    if closing_ends is not None and clock >= closing_ends:
        return (Phase.POST_CLOSE if scheduled is Phase.POST_CLOSE and clock > closing_ends else Phase.ATC), True
    return scheduled, True


def _end_of(exchange: Exchange, phase: Phase) -> time | None:
    """When `phase` gives way to the next in the exchange's schedule (None: the exchange has no such phase)."""
    schedule = SCHEDULES[exchange]
    for (_, current), (start, _) in itertools.pairwise(schedule):
        if current is phase:
            return start
    return None


# When each exchange's opening and closing call auctions end: their matches are stamped then (or just after).
_AUCTION_ENDS = {exchange: (_end_of(exchange, Phase.ATO), _end_of(exchange, Phase.ATC)) for exchange in Exchange}


_SESSION_CODES = {
    "ATO": Phase.ATO,
    "LO": Phase.CONTINUOUS,
    "CONTINUOUS": Phase.CONTINUOUS,
    "ATC": Phase.ATC,
    "PT": Phase.POST_CLOSE,
    "PLO": Phase.POST_CLOSE,
    "BREAK": Phase.LUNCH,
    "C": Phase.CLOSED,
    "CLOSE": Phase.CLOSED,
    "CLOSED": Phase.CLOSED,
}


# --- exchange time ---------------------------------------------------------------------------------------------

_DATE_FORMATS = (
    re.compile(r"^(?P<d>\d{2})/(?P<m>\d{2})/(?P<y>\d{4})$"),  # SSI: dd/MM/yyyy
    re.compile(r"^(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})$"),  # ISO
    re.compile(r"^(?P<d>\d{2})(?P<m>\d{2})(?P<y>\d{4})$"),  # some SSI doc tables: ddMMyyyy
)
_TIME_FORMAT = re.compile(r"^(?P<h>\d{1,2}):?(?P<m>\d{2}):?(?P<s>\d{2})(?:\.\d+)?$")


@lru_cache(maxsize=64)
def parse_trading_date(text: str) -> date:
    """SSI's TradingDate ("24/11/2026"; also ISO and ddMMyyyy) as a date. Raises ValueError when unreadable."""
    stripped = text.strip()
    for pattern in _DATE_FORMATS:
        match = pattern.match(stripped)
        if match:
            return date(int(match["y"]), int(match["m"]), int(match["d"]))
    raise ValueError(f"unreadable trading date {text!r}")


def parse_clock(text: str) -> time:
    """SSI's Time ("09:15:03"; also "091503") as a time of day. Raises ValueError when unreadable."""
    match = _TIME_FORMAT.match(text.strip())
    if not match:
        raise ValueError(f"unreadable time {text!r}")
    return time(int(match["h"]), int(match["m"]), int(match["s"]))


def exchange_datetime(trading_date: date, clock: time) -> datetime:
    """The tz-aware exchange timestamp of a feed's TradingDate + Time."""
    return datetime.combine(trading_date, clock, EXCHANGE_TZ)


def to_exchange_time(moment: datetime) -> datetime:
    """`moment` in exchange time; a naive datetime is taken to already be exchange time."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=EXCHANGE_TZ)
    return moment.astimezone(EXCHANGE_TZ)


# The dates a market message may carry: outside them a trading date is a corrupt or hostile frame, never the market.
MARKET_ERA = (date(2000, 1, 1), date(2099, 12, 31))
# The longest the exchanges stay closed: the Tết break with the weekends around it (nine or ten days), rounded up. A
# feed's trading date moves on by at most this much from one trading day to the next.
LONGEST_CLOSURE_DAYS = 14


def in_market_era(day: date) -> bool:
    return MARKET_ERA[0] <= day <= MARKET_ERA[1]


def exchange_now() -> datetime:
    """The wall clock in exchange time: for liveness checks only, never for market data (the feed has its own clock)."""
    return datetime.now(EXCHANGE_TZ)


# --- ticks, limits, lots --------------------------------------------------------------------------------------


class InstrumentKind(StrEnum):
    STOCK = "stock"  # also closed-end funds
    ETF = "etf"
    COVERED_WARRANT = "cw"
    FUTURE = "future"


BOARD_LOT = 100
FUTURES_TICK = Decimal("0.1")
FUTURES_MULTIPLIER = 100_000  # VND per index point per VN30F contract

_DAILY_LIMIT_PCT = {Exchange.HOSE: 7, Exchange.HNX: 10, Exchange.UPCOM: 15, Exchange.DER: 7}
# First trading day of a new listing, or the first session after more than 25 sessions suspended.
_FIRST_DAY_LIMIT_PCT = {Exchange.HOSE: 20, Exchange.HNX: 30, Exchange.UPCOM: 40, Exchange.DER: 7}


def tick_size(exchange: Exchange, price: float | Decimal, kind: InstrumentKind = InstrumentKind.STOCK) -> Decimal:
    """The minimum price step at `price`: HOSE stocks 10/50/100 VND by band (<10,000; <50,000; above), HOSE ETFs and
    covered warrants 10 VND, HNX and UPCOM 100 VND, VN30F 0.1 point."""
    if exchange is Exchange.DER or kind is InstrumentKind.FUTURE:
        return FUTURES_TICK
    if exchange is not Exchange.HOSE:
        return Decimal(100)
    if kind in (InstrumentKind.ETF, InstrumentKind.COVERED_WARRANT):
        return Decimal(10)
    value = Decimal(str(price))
    if value < 10_000:
        return Decimal(10)
    if value < 50_000:
        return Decimal(50)
    return Decimal(100)


def is_on_tick(exchange: Exchange, price: float, kind: InstrumentKind = InstrumentKind.STOCK) -> bool:
    value = Decimal(str(price))
    return value % tick_size(exchange, value, kind) == 0


def _round_to_tick(exchange: Exchange, raw: Decimal, kind: InstrumentKind, rounding: str) -> Decimal:
    tick = tick_size(exchange, raw, kind)
    return (raw / tick).to_integral_value(rounding=rounding) * tick


def price_limits(
    exchange: Exchange,
    ref_price: float,
    kind: InstrumentKind = InstrumentKind.STOCK,
    *,
    first_trading_day: bool = False,
) -> tuple[float, float]:
    """(ceiling, floor) from the reference price: ref ± the exchange's daily limit, the ceiling rounded down and the
    floor rounded up to a valid tick (so both stay inside the band). Tick bands step at multiples of the wider tick,
    so rounding into the neighbouring band still lands on a valid price."""
    pct = (_FIRST_DAY_LIMIT_PCT if first_trading_day else _DAILY_LIMIT_PCT)[exchange]
    ref = Decimal(str(ref_price))
    ceiling = _round_to_tick(exchange, ref * (100 + pct) / 100, kind, ROUND_FLOOR)
    floor = _round_to_tick(exchange, ref * (100 - pct) / 100, kind, ROUND_CEILING)
    return float(ceiling), float(floor)


def is_odd_lot(volume: int) -> bool:
    """Odd lots (1-99 shares) trade on their own board; the main board takes multiples of the board lot."""
    return volume % BOARD_LOT != 0


# --- VN30 index futures -----------------------------------------------------------------------------------------

_VN30F_CODE = re.compile(r"^VN30F(?P<yy>\d{2})(?P<mm>0[1-9]|1[0-2])$")
_VN30F_ALIAS = re.compile(r"^VN30F(?P<n>[12])(?P<kind>[MQ])$")


def third_thursday(year: int, month: int) -> date:
    first_weekday = calendar.weekday(year, month, 1)
    first_thursday = 1 + (calendar.THURSDAY - first_weekday) % 7
    return date(year, month, first_thursday + 14)


def last_trading_day(year: int, month: int, holidays: frozenset[date] = frozenset()) -> date:
    """A VN30F contract's last trading day: the third Thursday of its month, or the trading day before it when that
    Thursday is a holiday."""
    day = third_thursday(year, month)
    while day in holidays or day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def contract_code(year: int, month: int) -> str:
    return f"VN30F{year % 100:02d}{month:02d}"


def parse_contract(code: str) -> tuple[int, int] | None:
    """(year, month) of a `VN30FYYMM` code, or None for anything else."""
    match = _VN30F_CODE.match(code.strip().upper())
    if not match:
        return None
    return 2000 + int(match["yy"]), int(match["mm"])


@lru_cache(maxsize=65536)
def is_vn30_future(symbol: str) -> bool:
    return parse_contract(symbol) is not None or _VN30F_ALIAS.match(symbol.strip().upper()) is not None


@lru_cache(maxsize=65536)
def is_futures(symbol: str, exchange: str | None) -> bool:
    """A futures contract, by its code or by the exchange SSI names (DERIVATIVES: whatever the code's format)."""
    return is_vn30_future(symbol) or parse_exchange(exchange) is Exchange.DER


def contract_expiry(code: str, holidays: frozenset[date] = frozenset()) -> date | None:
    parsed = parse_contract(code)
    return last_trading_day(*parsed, holidays) if parsed else None


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def front_month(today: date, holidays: frozenset[date] = frozenset()) -> str:
    """The nearest contract not yet expired on `today`: on its last trading day a contract is still the front month;
    the day after, the next month's contract takes over."""
    year, month = today.year, today.month
    if today > last_trading_day(year, month, holidays):
        year, month = _next_month(year, month)
    return contract_code(year, month)


def listed_contracts(today: date, holidays: frozenset[date] = frozenset()) -> list[str]:
    """The four contracts listed on `today`: the front month, the next month, then the next two quarter months
    (Mar/Jun/Sep/Dec) after those, nearest first."""
    front = parse_contract(front_month(today, holidays))
    assert front is not None
    months = [front, _next_month(*front)]
    candidate = months[-1]
    while len(months) < 4:
        candidate = _next_month(*candidate)
        if candidate[1] % 3 == 0:
            months.append(candidate)
    return [contract_code(year, month) for year, month in months]


@lru_cache(maxsize=4096)
def expiry_on(symbol: str, trading_date: date, holidays: frozenset[date] = frozenset()) -> date | None:
    """A contract's last trading day as its code tells it on `trading_date`: a generic alias (VN30F1M ...) as the
    contract it stands for that day, a VN30FYYMM code by the third-Thursday rule; None for other codes. Cached: the
    derivatives tracker asks it for every contract with every futures quote."""
    return contract_expiry(resolve_contract_alias(symbol, trading_date, holidays), holidays)


def resolve_contract_alias(symbol: str, today: date, holidays: frozenset[date] = frozenset()) -> str:
    """VN30F1M/2M (front and next month) and VN30F1Q/2Q (the two quarter contracts) as `VN30FYYMM` codes on `today`;
    any other symbol is returned unchanged."""
    match = _VN30F_ALIAS.match(symbol.strip().upper())
    if not match:
        return symbol
    listed = listed_contracts(today, holidays)
    offset = int(match["n"]) - 1
    return listed[offset] if match["kind"] == "M" else listed[2 + offset]


# --- indices ------------------------------------------------------------------------------------------------------

# The VN30 basket built in for when SSI's IndexComponents cannot be asked (no credentials, simulator, replay);
# VN30_SYMBOLS overrides it. The live feed's basket always wins over both.
DEFAULT_VN30_BASKET = (
    "ACB", "BCM", "BID", "BVH", "CTG", "FPT", "GAS", "GVR", "HDB", "HPG", "LPB", "MBB", "MSN", "MWG", "PLX",
    "SAB", "SHB", "SSB", "SSI", "STB", "TCB", "TPB", "VCB", "VHM", "VIB", "VIC", "VJC", "VNM", "VPB", "VRE",
)

# SSI spells some index ids several ways (IndexId "VNINDEX" in captures, "VNIndex" in SDK constants).
_INDEX_ALIASES = {"VNINDEX": "VNINDEX", "VN-INDEX": "VNINDEX", "HNXINDEX": "HNXINDEX", "HNX-INDEX": "HNXINDEX",
                  "HNXUPCOMINDEX": "UPCOMINDEX", "UPCOMINDEX": "UPCOMINDEX", "UPCOM-INDEX": "UPCOMINDEX"}


def normalize_index_id(index_id: str) -> str:
    """The canonical id of an index: upper case, with SSI's variant spellings folded (VNIndex -> VNINDEX,
    HNXIndex -> HNXINDEX, HNXUpcomIndex -> UPCOMINDEX); others (VN30, VN100, HNX30 ...) are just upper-cased."""
    upper = index_id.strip().upper()
    return _INDEX_ALIASES.get(upper, upper)
