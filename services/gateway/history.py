"""The history API: what the recorder stored, through an asyncpg pool, every query parameterized.

Periods: `start`/`end` are dates (YYYY-MM-DD, exchange time, both days included) or ISO datetimes (a naive one is
exchange time), within the market's era (2000-2099) once in exchange time. Without them, the latest trading date
holding data for the instrument: the market's own "today", found in `instrument_days` (one index probe; max() over a
partitioned table would open every daily partition). Each endpoint caps the span it answers (MAX_SPAN_DAYS); longer,
reversed, unreadable or out-of-era periods answer 400.

Every table is partitioned by trading date and every query names its dates, so PostgreSQL opens only their
partitions, but only when it plans the query for those dates: a generic plan (what a prepared statement switches to
after five runs) covers, and locks, every partition. The pool's sessions therefore plan every query for its values
(`plan_cache_mode = force_custom_plan`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta
from typing import Any

import asyncpg
import msgspec
import structlog
from aiohttp import web

from services.gateway.api import ApiError, bad_parameter, int_parameter, json_response, shown
from shared.database import database_unavailable
from shared.market import EXCHANGE_TZ, MARKET_ERA, in_market_era, normalize_index_id, to_exchange_time
from shared.retry import DATABASE_AWAY, retrying

log = structlog.get_logger("gateway.history")
_SYMBOL = re.compile(r"^[A-Za-z0-9_-]{1,30}$")

RESOLUTIONS = {"1m": None, "5m": "5 minutes", "15m": "15 minutes", "30m": "30 minutes", "1h": "1 hour", "1d": "1 day"}
MAX_SPAN_DAYS = {"candles_1m": 31, "candles_intraday": 92, "candles_1d": 3660, "ticks": 31, "foreign": 31,
                 "index": 31, "derivatives": 31}


class Candle(msgspec.Struct):
    time: datetime  # the bucket's start, exchange time
    open: float
    high: float
    low: float
    close: float
    volume: int
    value: float
    buy_volume: int
    sell_volume: int
    neutral_volume: int
    unseen_volume: int  # volume TotalVol revealed beyond the trades received (not in `volume`)
    trades: int


class Tick(msgspec.Struct):
    timestamp: datetime
    price: float
    volume: int
    value: float
    trade_type: str
    rule: str
    bid_price: float | None
    ask_price: float | None
    total_volume: int
    session: str | None
    unseen_volume: int


class ForeignFlowRow(msgspec.Struct):
    timestamp: datetime
    buy_volume: int
    sell_volume: int
    buy_value: float
    sell_value: float
    cumulative_buy_volume: int
    cumulative_sell_volume: int
    cumulative_buy_value: float
    cumulative_sell_value: float


class ForeignDay(msgspec.Struct):
    trading_date: date
    buy_volume: int
    sell_volume: int
    net_volume: int
    buy_value: float
    sell_value: float
    net_value: float


class IndexValue(msgspec.Struct):
    timestamp: datetime
    value: float


class BasisRow(msgspec.Struct):
    timestamp: datetime
    futures_price: float
    spot_value: float
    basis: float
    basis_pct: float
    is_premium: bool


ROW_TYPES = (Candle, Tick, ForeignFlowRow, ForeignDay, IndexValue, BasisRow)
# Candles come from the ticks (the recorder folds them in the same transaction): they share the `ticks` family.
LATEST_DAY = "SELECT max(trading_date) FROM instrument_days WHERE family = $1 AND instrument = $2"


class Period(msgspec.Struct):
    first_day: date
    last_day: date
    start: datetime
    end: datetime  # exclusive


ERA = f"{MARKET_ERA[0].year}-{MARKET_ERA[1].year}"


def _parse_moment(text: str, *, is_end: bool) -> tuple[date, datetime]:
    """A date (the whole day) or an ISO datetime; (its trading date, the moment it bounds). ValueError when it is
    neither, or outside the market's era: checked before any arithmetic, which overflows at the ends of the calendar
    (the day after 9999-12-31; 0001-01-01T00:00+14:00 in exchange time)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text)
        if not in_market_era(day):
            raise ValueError(f"{text} is outside {ERA}")
        return day, datetime.combine(day + timedelta(days=1) if is_end else day, time(0), EXCHANGE_TZ)
    try:
        moment = to_exchange_time(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except OverflowError:  # only a moment in year 1 or 9999 leaves the calendar when moved to UTC+7
        raise ValueError(f"{text} is outside {ERA}") from None
    if not in_market_era(moment.date()):
        raise ValueError(f"{text} is outside {ERA}")
    return moment.date(), moment


def parse_period(request: web.Request, latest: date | None, max_days: int) -> Period | web.Response | None:
    """The requested period, a 400 naming the bad parameter, or None when there is no data to default to."""
    raw_start, raw_end = request.query.get("start"), request.query.get("end")
    bounds: dict[str, tuple[date, datetime]] = {}
    for name, raw in (("start", raw_start), ("end", raw_end)):
        if raw is None:
            continue
        try:
            bounds[name] = _parse_moment(raw, is_end=name == "end")
        except ValueError:
            return bad_parameter(request, name, f"{name} must be YYYY-MM-DD or an ISO datetime within {ERA} "
                                                f"(exchange time), got {shown(raw)}")
    if not bounds and latest is None:
        return None
    default_day = latest or (bounds.get("start") or bounds["end"])[0]
    first_day, start = bounds.get("start", (default_day, datetime.combine(default_day, time(0), EXCHANGE_TZ)))
    last_day, end = bounds.get("end", (max(default_day, first_day),
                                       datetime.combine(max(default_day, first_day) + timedelta(days=1), time(0),
                                                        EXCHANGE_TZ)))
    if end <= start:
        return bad_parameter(request, "end", "end must come after start")
    if (last_day - first_day).days + 1 > max_days:
        return bad_parameter(request, "end", f"the period is longer than {max_days} days")
    return Period(first_day=first_day, last_day=last_day, start=start, end=end)


def _local(moment: datetime) -> datetime:
    return moment.astimezone(EXCHANGE_TZ)


class HistoryApi:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.pool: asyncpg.Pool | None = None
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.database_url:
            self._connecting = asyncio.create_task(self._connect(), name="history-pool")

    async def _connect(self) -> None:
        self.pool = await retrying(
            lambda: asyncpg.create_pool(self.database_url, min_size=1, max_size=8, server_settings={
                "timezone": "Asia/Ho_Chi_Minh", "plan_cache_mode": "force_custom_plan"}),
            DATABASE_AWAY, retry_on=(OSError, asyncpg.PostgresError),
            on_failure=lambda err, _, wait: log.warning("history database unreachable; retrying", error=str(err),
                                                        retry_in_s=wait))

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self.pool is not None:
            await self.pool.close()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/history/index/{name}", self._guard(self.index)),
            web.get("/api/history/derivatives/{contract}", self._guard(self.derivatives)),
            web.get("/api/history/{symbol}/candles", self._guard(self.candles)),
            web.get("/api/history/{symbol}/ticks", self._guard(self.ticks)),
            web.get("/api/history/{symbol}/foreign/daily", self._guard(self.foreign_daily)),
            web.get("/api/history/{symbol}/foreign", self._guard(self.foreign)),
        ]

    def _guard(self, handler: Callable[[web.Request, str], Awaitable[web.Response]]) -> Any:
        """Instrument checks, and a 503 (not a 500) while the database is unreachable or unavailable."""
        async def handle(request: web.Request) -> web.Response:
            instrument = next(iter(request.match_info.values()))
            if not _SYMBOL.match(instrument):
                return bad_parameter(request, next(iter(request.match_info)), "not a symbol: [A-Za-z0-9_-]{1,30}")
            if self.pool is None:
                reason = "DATABASE_URL is not set" if not self.database_url else "the database is not reachable yet"
                return json_response(request, ApiError(error=f"history unavailable: {reason}"), 503)
            try:
                return await handler(request, instrument.upper())
            except Exception as err:
                if not database_unavailable(err):
                    raise
                log.warning("history query failed", error=str(err) or type(err).__name__)
                return json_response(request, ApiError(error="history unavailable: database error"), 503)

        return handle

    async def _latest(self, family: str, instrument: str) -> date | None:
        """The latest trading date `instrument` has rows on in the recorder's table `family`."""
        assert self.pool is not None
        return await self.pool.fetchval(LATEST_DAY, family, instrument)

    async def candles(self, request: web.Request, symbol: str) -> web.Response:
        resolution = request.query.get("resolution", "1m")
        if resolution not in RESOLUTIONS:
            return bad_parameter(request, "resolution", f"resolution must be one of {', '.join(RESOLUTIONS)}")
        span = "candles_1m" if resolution == "1m" else "candles_1d" if resolution == "1d" else "candles_intraday"
        period = parse_period(request, await self._latest("ticks", symbol), MAX_SPAN_DAYS[span])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        where = "symbol = $1 AND trading_date BETWEEN $2 AND $3 AND minute >= $4 AND minute < $5"
        args = (symbol, period.first_day, period.last_day, period.start, period.end)
        totals = ("sum(volume), sum(value), sum(buy_volume), sum(sell_volume), sum(neutral_volume), "
                  "sum(unseen_volume), sum(trades)")
        firsts = "(array_agg(open ORDER BY minute))[1], max(high), min(low), (array_agg(close ORDER BY minute DESC))[1]"
        if resolution == "1m":
            query = (f"SELECT minute, open, high, low, close, volume, value, buy_volume, sell_volume, neutral_volume, "
                     f"unseen_volume, trades FROM candles_1m WHERE {where} ORDER BY minute")
        elif resolution == "1d":
            query = (f"SELECT trading_date::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh', {firsts}, {totals} "
                     f"FROM candles_1m WHERE {where} GROUP BY trading_date ORDER BY trading_date")
        else:
            bucket = f"date_bin('{RESOLUTIONS[resolution]}', minute, TIMESTAMPTZ '2000-01-03 00:00:00+07')"
            query = (f"SELECT {bucket} AS bucket, {firsts}, {totals} FROM candles_1m WHERE {where} "
                     f"GROUP BY bucket ORDER BY bucket")
        rows = await self.pool.fetch(query, *args)
        return json_response(request, [Candle(_local(r[0]), *r[1:5], int(r[5]), r[6], *(int(v) for v in r[7:12]))
                                       for r in rows])

    async def ticks(self, request: web.Request, symbol: str) -> web.Response:
        limit = int_parameter(request, "limit", 1_000, 1, 50_000)
        if isinstance(limit, web.Response):
            return limit
        period = parse_period(request, await self._latest("ticks", symbol), MAX_SPAN_DAYS["ticks"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT ts, price, volume, value, trade_type, rule, bid_price, ask_price, total_volume, session, "
            "unseen_volume FROM ticks WHERE symbol = $1 AND trading_date BETWEEN $2 AND $3 AND ts >= $4 AND ts < $5 "
            "ORDER BY trading_date, total_volume LIMIT $6",
            symbol, period.first_day, period.last_day, period.start, period.end, limit,
        )
        return json_response(request, [Tick(_local(r[0]), *r[1:]) for r in rows])

    async def foreign(self, request: web.Request, symbol: str) -> web.Response:
        period = parse_period(request, await self._latest("foreign_flows", symbol),
                              MAX_SPAN_DAYS["foreign"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT ts, buy_volume, sell_volume, buy_value, sell_value, cumulative_buy_volume, "
            "cumulative_sell_volume, cumulative_buy_value, cumulative_sell_value FROM foreign_flows "
            "WHERE symbol = $1 AND trading_date BETWEEN $2 AND $3 AND ts >= $4 AND ts < $5 "
            "ORDER BY ts, cumulative_buy_volume, cumulative_sell_volume",
            symbol, period.first_day, period.last_day, period.start, period.end,
        )
        return json_response(request, [ForeignFlowRow(_local(r[0]), *r[1:]) for r in rows])

    async def foreign_daily(self, request: web.Request, symbol: str) -> web.Response:
        days = int_parameter(request, "days", 30, 1, 365)
        if isinstance(days, web.Response):
            return days
        latest = await self._latest("foreign_flows", symbol)
        if latest is None:
            return json_response(request, [])
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (trading_date) trading_date, cumulative_buy_volume, cumulative_sell_volume, "
            "cumulative_buy_value, cumulative_sell_value FROM foreign_flows "
            "WHERE symbol = $1 AND trading_date > $2 AND trading_date <= $3 "
            "ORDER BY trading_date, cumulative_buy_volume DESC, cumulative_sell_volume DESC",
            symbol, latest - timedelta(days=days), latest,
        )
        return json_response(request, [ForeignDay(r[0], r[1], r[2], r[1] - r[2], r[3], r[4], r[3] - r[4])
                                       for r in rows])

    async def index(self, request: web.Request, name: str) -> web.Response:
        index_id = normalize_index_id(name)
        period = parse_period(request, await self._latest("index_points", index_id),
                              MAX_SPAN_DAYS["index"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT ts, value FROM index_points WHERE index_id = $1 AND trading_date BETWEEN $2 AND $3 "
            "AND ts >= $4 AND ts < $5 ORDER BY ts",
            index_id, period.first_day, period.last_day, period.start, period.end,
        )
        return json_response(request, [IndexValue(_local(r[0]), r[1]) for r in rows])

    async def derivatives(self, request: web.Request, contract: str) -> web.Response:
        period = parse_period(request, await self._latest("basis_points", contract),
                              MAX_SPAN_DAYS["derivatives"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT ts, futures_price, spot_value, basis, basis_pct, is_premium FROM basis_points "
            "WHERE futures_symbol = $1 AND trading_date BETWEEN $2 AND $3 AND ts >= $4 AND ts < $5 ORDER BY ts",
            contract, period.first_day, period.last_day, period.start, period.end,
        )
        return json_response(request, [BasisRow(_local(r[0]), *r[1:]) for r in rows])


def _array(item: type) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{item.__name__}"}}


def openapi_paths() -> dict[str, Any]:
    """The history endpoints for the OpenAPI document."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}}

    def period_params() -> list[dict[str, Any]]:
        moment = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
        return [{"name": name, "in": "query", "required": False, "schema": moment,
                 "description": "YYYY-MM-DD (exchange time, inclusive) or an ISO datetime; default: the latest "
                                "trading date with data"} for name in ("start", "end")]

    def path_param(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,30}$"}}

    def operation(summary: str, operation_id: str, item: type, params: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {"summary": summary, "operationId": operation_id, "parameters": params, "responses": {
            "200": {"description": "Rows, oldest first; an empty list for an unknown instrument",
                    "content": {"application/json": {"schema": _array(item)}}},
            "400": {"description": "A bad parameter (named in the body)", **error},
            "401": {"description": "Missing or wrong token (GATEWAY_TOKEN_REST)", **error},
            "422": {"description": "A number out of range (named in the body)", **error},
            "503": {"description": "The history database is unavailable", **error}}}}

    return {
        "/api/history/{symbol}/candles": operation(
            "OHLCV with buy / sell / neutral volume, 1-minute candles or rolled up", "historyCandles", Candle,
            [path_param("symbol"), *period_params(),
             {"name": "resolution", "in": "query", "required": False,
              "schema": {"type": "string", "enum": list(RESOLUTIONS), "default": "1m"}}]),
        "/api/history/{symbol}/ticks": operation(
            "Classified trades with the rule that decided each and the book at the time", "historyTicks", Tick,
            [path_param("symbol"), *period_params(),
             {"name": "limit", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": 50_000, "default": 1_000}}]),
        "/api/history/{symbol}/foreign": operation(
            "Foreign flows with the cumulative figures", "historyForeign", ForeignFlowRow,
            [path_param("symbol"), *period_params()]),
        "/api/history/{symbol}/foreign/daily": operation(
            "Each trading day's foreign totals", "historyForeignDaily", ForeignDay,
            [path_param("symbol"), {"name": "days", "in": "query", "required": False,
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}}]),
        "/api/history/index/{name}": operation(
            "An index's values", "historyIndex", IndexValue, [path_param("name"), *period_params()]),
        "/api/history/derivatives/{contract}": operation(
            "A contract's basis points", "historyDerivatives", BasisRow, [path_param("contract"), *period_params()]),
    }
