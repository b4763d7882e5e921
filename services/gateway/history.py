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

Bounded, whatever the clients do: at most HISTORY_MAX_QUERIES queries run at once (others wait a moment for a slot,
then get 503), each cancelled after HISTORY_STATEMENT_TIMEOUT_S (statement_timeout), and an answer is streamed from a
server-side cursor in batches of BATCH_ROWS rows, each written only once the client has taken the one before, so a
client that never reads holds one batch, not its whole answer, and is cut off after HISTORY_WRITE_TIMEOUT_S. Ticks
come in pages: a full page's answer names the next one in `X-Next-Cursor` (pass it back as `cursor`).
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
from prometheus_client import Counter

from services.gateway.api import ALERT_FILTERS, UNAUTHORIZED, alert_filter, bad_parameter, json_response
from services.gateway.routes import ApiError, Endpoint, IntParam, Param, instrument_param, is_instrument, shown
from shared.candles import MinuteCandle
from shared.config import Settings
from shared.database import database_unavailable
from shared.market import EXCHANGE_TZ, MARKET_ERA, in_market_era, normalize_index_id, to_exchange_time
from shared.messages.domain import Alert
from shared.retry import DATABASE_AWAY, retrying

log = structlog.get_logger("gateway.history")
HISTORY_REFUSED = Counter("stocktracker_gateway_history_refused_total",
                          "History requests refused or cut off to keep the gateway bounded", ["reason"])

RESOLUTIONS = {"1m": None, "5m": "5 minutes", "15m": "15 minutes", "30m": "30 minutes", "1h": "1 hour", "1d": "1 day"}
MAX_SPAN_DAYS = {"candles_1m": 31, "candles_intraday": 92, "candles_1d": 3660, "ticks": 31, "foreign": 31,
                 "index": 31, "derivatives": 31, "alerts": 31}


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


def candle_of(minute: MinuteCandle) -> Candle:
    """A 1-minute candle (the forming one included) as the API shows candles, here and on the `candles` channel."""
    return Candle(minute.minute, minute.open, minute.high, minute.low, minute.close, minute.volume, minute.value,
                  minute.buy_volume, minute.sell_volume, minute.neutral_volume, minute.unseen_volume, minute.trades)


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


# Candles come from the ticks (the recorder folds them in the same transaction): they share the `ticks` family.
LATEST_DAY = "SELECT max(trading_date) FROM instrument_days WHERE family = $1 AND instrument = $2"
LATEST_ALERT_DAY = "SELECT max(trading_date) FROM instrument_days WHERE family = 'alerts'"  # of any symbol


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
    bounds: dict[str, tuple[date, datetime]] = {}
    for name, raw in ((START.name, request.query.get(START.name)), (END.name, request.query.get(END.name))):
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


def _read_cursor(text: str) -> tuple[date, int] | None:
    """A ticks cursor's position (trading date, total volume), or None when it is not one we would have given."""
    match = _CURSOR.match(text)
    if match is None:
        return None
    try:
        day = date.fromisoformat(match[1])
    except ValueError:
        return None
    return (day, int(match[2])) if in_market_era(day) else None


def path_instrument(request: web.Request) -> str:
    """The instrument the path names (checked by the guard), in upper case."""
    return next(iter(request.match_info.values())).upper()


def _local(moment: datetime) -> datetime:
    return moment.astimezone(EXCHANGE_TZ)


BATCH_ROWS = 1_000
SLOT_WAIT_S = 5.0  # a query waits this long for a slot before it is answered 503 (busy)
_CURSOR = re.compile(r"^(\d{4}-\d{2}-\d{2}):(\d{1,18})$")  # a ticks page's last row: trading date, total volume


class _Busy(Exception):
    """Every history slot is taken."""


class HistoryApi:
    def __init__(self, settings: Settings) -> None:
        self.database_url = settings.database_url
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(settings.history_max_queries)
        self._encoder = msgspec.json.Encoder()

    def start(self) -> None:
        if self.database_url:
            self._connecting = asyncio.create_task(self._connect(), name="history-pool")

    async def _connect(self) -> None:
        self.pool = await retrying(
            lambda: asyncpg.create_pool(
                self.database_url, min_size=1, max_size=self.settings.history_max_queries + 1, server_settings={
                    "timezone": "Asia/Ho_Chi_Minh", "plan_cache_mode": "force_custom_plan",
                    "statement_timeout": str(int(self.settings.history_statement_timeout_s * 1000)),
                    "default_transaction_read_only": "on"}),
            DATABASE_AWAY, retry_on=(OSError, asyncpg.PostgresError),
            on_failure=lambda err, _, wait: log.warning("history database unreachable; retrying", error=str(err),
                                                        retry_in_s=wait))

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self.pool is not None:
            await self.pool.close()

    def endpoints(self) -> list[Endpoint]:
        rows = "Rows, oldest first; an empty list for an unknown instrument"
        errors = ((400, "A bad parameter (named in the body)"), UNAUTHORIZED,
                  (422, "A number out of range (named in the body)"), (503, "The history database is unavailable"))
        symbol, period = instrument_param("symbol"), (START, END)
        return [
            Endpoint("/api/history/index/{name}", "historyIndex", "An index's values", self._guard(self.index),
                     list[IndexValue], rows, (instrument_param("name"), *period), errors),
            Endpoint("/api/history/derivatives/{contract}", "historyDerivatives", "A contract's basis points",
                     self._guard(self.derivatives), list[BasisRow], rows, (instrument_param("contract"), *period),
                     errors),
            Endpoint("/api/history/alerts", "historyAlerts", "Every alert raised, oldest first; the filters given "
                     "narrow each other", self._guard(self.alerts), list[Alert],
                     "Alerts, oldest first (by exchange time, then symbol and rule)", (*period, *ALERT_FILTERS),
                     ((400, "A bad parameter (named in the body)"), UNAUTHORIZED,
                      (422, "A type or severity that is none of ours"), (503, "The history database is unavailable"))),
            Endpoint("/api/history/{symbol}/candles", "historyCandles",
                     "OHLCV with buy / sell / neutral volume, 1-minute candles or rolled up",
                     self._guard(self.candles), list[Candle], rows, (symbol, *period, RESOLUTION), errors),
            Endpoint("/api/history/{symbol}/ticks", "historyTicks",
                     "Classified trades with the rule that decided each and the book at the time",
                     self._guard(self.ticks), list[Tick], rows, (symbol, *period, LIMIT, CURSOR), errors),
            Endpoint("/api/history/{symbol}/foreign/daily", "historyForeignDaily", "Each trading day's foreign totals",
                     self._guard(self.foreign_daily), list[ForeignDay], rows, (symbol, DAYS), errors),
            Endpoint("/api/history/{symbol}/foreign", "historyForeign", "Foreign flows with the cumulative figures",
                     self._guard(self.foreign), list[ForeignFlowRow], rows, (symbol, *period), errors),
        ]

    def _guard(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        """Instrument checks, and a 503 (not a 500) while the database is unreachable or unavailable."""
        async def handle(request: web.Request) -> web.StreamResponse:
            for name, instrument in request.match_info.items():
                if not is_instrument(instrument):
                    return bad_parameter(request, name, "not a symbol: [A-Za-z0-9_-]{1,30}")
            if self.pool is None:
                reason = "DATABASE_URL is not set" if not self.database_url else "the database is not reachable yet"
                return json_response(request, ApiError(error=f"history unavailable: {reason}"), 503)
            try:
                return await handler(request)
            except _Busy:
                HISTORY_REFUSED.labels("busy").inc()
                busy = json_response(request, ApiError(error="history busy: try again shortly"), 503)
                busy.headers["Retry-After"] = "1"
                return busy
            except asyncpg.QueryCanceledError:
                HISTORY_REFUSED.labels("statement_timeout").inc()
                return json_response(request, ApiError(
                    error=f"history query ran longer than {self.settings.history_statement_timeout_s:g} s"), 503)
            except Exception as err:
                if not database_unavailable(err):
                    raise
                log.warning("history query failed", error=str(err) or type(err).__name__)
                return json_response(request, ApiError(error="history unavailable: database error"), 503)

        return handle

    async def _answer(self, request: web.Request, query: str, args: tuple[Any, ...],
                      row: Callable[[asyncpg.Record], Any], headers: dict[str, str] | None = None,
                      ) -> web.StreamResponse:
        """The rows of `query` as a JSON list, streamed from a cursor in batches within a history slot (see the
        module's docstring). Errors before the first byte answer as usual (503); a client too slow to take its
        answer within HISTORY_WRITE_TIMEOUT_S is cut off."""
        assert self.pool is not None
        try:
            await asyncio.wait_for(self._slots.acquire(), SLOT_WAIT_S)
        except TimeoutError:
            raise _Busy from None
        try:
            async with self.pool.acquire() as connection, connection.transaction(readonly=True):
                cursor = await connection.cursor(query, *args)
                batch = await cursor.fetch(BATCH_ROWS)
                response = web.StreamResponse(headers={"Content-Type": "application/json", **(headers or {})})
                if "gzip" in request.headers.get("Accept-Encoding", ""):
                    response.enable_compression(web.ContentCoding.gzip)
                sent = 0
                try:
                    async with asyncio.timeout(self.settings.history_write_timeout_s):
                        await response.prepare(request)
                        await response.write(b"[")
                        while batch:
                            encoded = self._encoder.encode([row(record) for record in batch])
                            await response.write((b"," if sent else b"") + encoded[1:-1])  # waits for the client
                            sent += len(batch)
                            batch = await cursor.fetch(BATCH_ROWS) if len(batch) == BATCH_ROWS else []
                        await response.write(b"]")
                        await response.write_eof()
                except (TimeoutError, ConnectionResetError) as cut:
                    # The answer has begun: all that is left is to end the connection (the client sees it cut).
                    HISTORY_REFUSED.labels("write_timeout" if isinstance(cut, TimeoutError) else "gone").inc()
                    log.info("history answer cut off", path=request.path, sent_rows=sent,
                             why="the client did not take it in time" if isinstance(cut, TimeoutError)
                             else "the client went away")
                    if request.transport is not None:
                        request.transport.abort()
                return response
        finally:
            self._slots.release()

    async def _latest(self, family: str, instrument: str) -> date | None:
        """The latest trading date `instrument` has rows on in the recorder's table `family`."""
        assert self.pool is not None
        return await self.pool.fetchval(LATEST_DAY, family, instrument)

    async def candles(self, request: web.Request) -> web.StreamResponse:
        symbol = path_instrument(request)
        resolution = request.query.get(RESOLUTION.name, "1m")
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
        return await self._answer(request, query, args, lambda r: Candle(
            _local(r[0]), *r[1:5], int(r[5]), r[6], *(int(v) for v in r[7:12])))

    async def ticks(self, request: web.Request) -> web.StreamResponse:
        symbol = path_instrument(request)
        limit = LIMIT.read(request, bad_parameter)
        if isinstance(limit, web.Response):
            return limit
        after = request.query.get(CURSOR.name)
        position = _read_cursor(after) if after is not None else None
        if after is not None and position is None:
            return bad_parameter(request, CURSOR.name, f"cursor must be what X-Next-Cursor said, got {shown(after)}")
        period = parse_period(request, await self._latest("ticks", symbol), MAX_SPAN_DAYS["ticks"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        # Ticks in the order they traded: (trading date, total volume), after the cursor's position when given.
        where = ("symbol = $1 AND trading_date BETWEEN $2 AND $3 AND ts >= $4 AND ts < $5 "
                 "AND (trading_date, total_volume) > ($6, $7)")
        start = position or (MARKET_ERA[0], -1)
        args = (symbol, period.first_day, period.last_day, period.start, period.end, *start)
        # The page's last row, when another page follows it: looked up first, as headers go before the body.
        beyond = await self.pool.fetch(f"SELECT trading_date, total_volume FROM ticks WHERE {where} "
                                       f"ORDER BY trading_date, total_volume OFFSET $8 LIMIT 2", *args, limit - 1)
        headers = {"X-Next-Cursor": f"{beyond[0][0]}:{beyond[0][1]}"} if len(beyond) == 2 else {}
        return await self._answer(
            request, "SELECT ts, price, volume, value, trade_type, rule, bid_price, ask_price, total_volume, "
                     f"session, unseen_volume FROM ticks WHERE {where} ORDER BY trading_date, total_volume LIMIT $8",
            (*args, limit), lambda r: Tick(_local(r[0]), *r[1:]), headers)

    async def foreign(self, request: web.Request) -> web.StreamResponse:
        symbol = path_instrument(request)
        period = parse_period(request, await self._latest("foreign_flows", symbol),
                              MAX_SPAN_DAYS["foreign"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        return await self._answer(
            request, "SELECT ts, buy_volume, sell_volume, buy_value, sell_value, cumulative_buy_volume, "
                     "cumulative_sell_volume, cumulative_buy_value, cumulative_sell_value FROM foreign_flows "
                     "WHERE symbol = $1 AND trading_date BETWEEN $2 AND $3 AND ts >= $4 AND ts < $5 "
                     "ORDER BY ts, cumulative_buy_volume, cumulative_sell_volume",
            (symbol, period.first_day, period.last_day, period.start, period.end),
            lambda r: ForeignFlowRow(_local(r[0]), *r[1:]))

    async def foreign_daily(self, request: web.Request) -> web.StreamResponse:
        symbol = path_instrument(request)
        days = DAYS.read(request, bad_parameter)
        if isinstance(days, web.Response):
            return days
        latest = await self._latest("foreign_flows", symbol)
        if latest is None:
            return json_response(request, [])
        assert self.pool is not None
        return await self._answer(
            request, "SELECT DISTINCT ON (trading_date) trading_date, cumulative_buy_volume, cumulative_sell_volume, "
                     "cumulative_buy_value, cumulative_sell_value FROM foreign_flows "
                     "WHERE symbol = $1 AND trading_date > $2 AND trading_date <= $3 "
                     "ORDER BY trading_date, cumulative_buy_volume DESC, cumulative_sell_volume DESC",
            (symbol, latest - timedelta(days=days), latest),
            lambda r: ForeignDay(r[0], r[1], r[2], r[1] - r[2], r[3], r[4], r[3] - r[4]))

    async def index(self, request: web.Request) -> web.StreamResponse:
        name = path_instrument(request)
        index_id = normalize_index_id(name)
        period = parse_period(request, await self._latest("index_points", index_id),
                              MAX_SPAN_DAYS["index"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        return await self._answer(
            request, "SELECT ts, value FROM index_points WHERE index_id = $1 AND trading_date BETWEEN $2 AND $3 "
                     "AND ts >= $4 AND ts < $5 ORDER BY ts",
            (index_id, period.first_day, period.last_day, period.start, period.end),
            lambda r: IndexValue(_local(r[0]), r[1]))

    async def derivatives(self, request: web.Request) -> web.StreamResponse:
        contract = path_instrument(request)
        period = parse_period(request, await self._latest("basis_points", contract),
                              MAX_SPAN_DAYS["derivatives"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        assert self.pool is not None
        return await self._answer(
            request, "SELECT ts, futures_price, spot_value, basis, basis_pct, is_premium FROM basis_points "
                     "WHERE futures_symbol = $1 AND trading_date BETWEEN $2 AND $3 AND ts >= $4 AND ts < $5 "
                     "ORDER BY ts",
            (contract, period.first_day, period.last_day, period.start, period.end),
            lambda r: BasisRow(_local(r[0]), *r[1:]))

    async def alerts(self, request: web.Request) -> web.StreamResponse:
        chosen = alert_filter(request)
        if isinstance(chosen, web.Response):
            return chosen
        assert self.pool is not None
        latest = await (self._latest("alerts", chosen.symbol) if chosen.symbol
                        else self.pool.fetchval(LATEST_ALERT_DAY))
        period = parse_period(request, latest, MAX_SPAN_DAYS["alerts"])
        if not isinstance(period, Period):
            return period or json_response(request, [])
        return await self._answer(
            request, 'SELECT type, severity, symbol, trading_date, ts, rule, "values"::text, message_vi, message_en '
                     "FROM alerts WHERE trading_date BETWEEN $1 AND $2 AND ts >= $3 AND ts < $4 "
                     "AND ($5::text IS NULL OR type = $5) AND ($6::text IS NULL OR severity = $6) "
                     "AND ($7::text IS NULL OR symbol = $7) ORDER BY ts, symbol, rule",
            (period.first_day, period.last_day, period.start, period.end, *chosen),
            lambda r: Alert(type=r[0], severity=r[1], symbol=r[2], trading_date=r[3], timestamp=_local(r[4]),
                            rule=r[5], values=_decode_values(r[6]), message_vi=r[7], message_en=r[8]))


_decode_values = msgspec.json.Decoder(dict[str, float]).decode

_MOMENT = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
START = Param("start", "YYYY-MM-DD (exchange time, inclusive) or an ISO datetime; default: the latest trading date "
                       "with data", _MOMENT)
END = Param("end", "YYYY-MM-DD (exchange time, inclusive) or an ISO datetime; default: the latest trading date "
                   "with data", _MOMENT)
RESOLUTION = Param("resolution", "Candle width, rolled up from the 1-minute candles",
                   {"type": "string", "enum": list(RESOLUTIONS), "default": "1m"})
LIMIT = IntParam("limit", "At most this many ticks, oldest first (a page: X-Next-Cursor names the next)",
                 default=1_000, low=1, high=50_000)
CURSOR = Param("cursor", "The next page of ticks: the X-Next-Cursor of the page before", {
    "type": "string", "pattern": _CURSOR.pattern})
DAYS = IntParam("days", "Trading days back from the latest", default=30, low=1, high=365)
