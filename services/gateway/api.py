"""The gateway's HTTP surface: REST snapshots from the market view (declared in the route table, `routes`), the
OpenAPI document made from that table, and the middleware every request passes (JSON errors, optional token, CORS,
gzip)."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import structlog
from aiohttp import web
from prometheus_client import Counter

from services.gateway.admission import REFUSED_HANDSHAKE, is_websocket_path
from services.gateway.alerts import AlertLog
from services.gateway.board import Board, BoardFilter, BoardQuote, Book, Breadth, Contribution, Movers, read_filter
from services.gateway.routes import (
    INSTRUMENT_PATTERN,
    ApiError,
    Endpoint,
    Handler,
    IntParam,
    Param,
    answer_types,
    instrument_param,
    is_instrument,
    openapi_paths,
    shown,
)
from services.gateway.view import MarketView
from shared.market import EXCHANGE_TZ, SCHEDULES, Exchange, Phase, to_exchange_time
from shared.messages.domain import (
    Alert,
    AlertType,
    BasisPoint,
    ForeignInvestorData,
    ForeignSummary,
    MarketSnapshot,
    SessionStats,
    Severity,
)
from shared.runtime import VERSION

AUTH_FAILURES = Counter("stocktracker_gateway_auth_failures_total", "Requests refused for a missing or wrong token",
                        ["kind"])
REQUESTS = Counter("stocktracker_gateway_requests_total", "HTTP requests, by route and status", ["route", "status"])

log = structlog.get_logger("gateway.http")
_encoder = msgspec.json.Encoder()
GZIP_ABOVE_BYTES = 1024
UNAUTHORIZED = (401, "GATEWAY_TOKEN is set with GATEWAY_TOKEN_REST and the token is missing or wrong")


class ForeignDetail(msgspec.Struct):
    summary: ForeignSummary | None
    stocks: list[ForeignInvestorData]


class VolumeStats(msgspec.Struct):
    stats: list[SessionStats]


class Basket(msgspec.Struct):
    symbols: list[str]  # the VN30 basket (reference data); every tracked symbol while none is known


class PhaseStart(msgspec.Struct):
    start: str  # HH:MM, exchange time
    phase: Phase


class TradingSchedule(msgspec.Struct):
    """Each exchange's trading day: its phases by start time (each lasts until the next; before the first, pre_open;
    weekends closed), in exchange time."""

    timezone: str
    utc_offset: str
    exchanges: dict[str, list[PhaseStart]]


def trading_schedule() -> TradingSchedule:
    return TradingSchedule(
        timezone=str(EXCHANGE_TZ.tzname(None)), utc_offset="+07:00",
        exchanges={str(exchange): [PhaseStart(start.strftime("%H:%M"), phase) for start, phase in schedule]
                   for exchange, schedule in SCHEDULES.items()})


SCHEDULE = trading_schedule()
_ALERT_TYPES = [str(kind) for kind in AlertType]
_SEVERITIES = [str(level) for level in Severity]


class AlertFilter(NamedTuple):
    """What a client narrows a list of alerts to; None: any."""

    type: str | None
    severity: str | None
    symbol: str | None  # upper case


def alert_filter(request: web.Request) -> AlertFilter | web.Response:
    """The `type`, `severity` and `symbol` filters of a request for alerts (ALERT_FILTERS), or the error naming the
    bad one: 422 for a type or severity that is none of ours, 400 for what cannot be a symbol."""
    query = request.query
    kind, severity, symbol = query.get("type"), query.get("severity"), query.get("symbol")
    if kind is not None and kind not in _ALERT_TYPES:
        return bad_parameter(request, "type", f"type is one of {', '.join(_ALERT_TYPES)}, got {shown(kind)}", 422)
    if severity is not None and severity not in _SEVERITIES:
        return bad_parameter(request, "severity", f"severity is one of {', '.join(_SEVERITIES)}, got "
                             f"{shown(severity)}", 422)
    if symbol is not None and not is_instrument(symbol):
        return bad_parameter(request, "symbol", f"symbol is [A-Za-z0-9_-]{{1,30}}, got {shown(symbol)}")
    return AlertFilter(kind, severity, symbol.upper() if symbol else None)


def json_response(request: web.Request, body: Any, status: int = 200) -> web.Response:
    data = _encoder.encode(body)
    response = web.Response(body=data, status=status, content_type="application/json")
    if len(data) > GZIP_ABOVE_BYTES and "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression(web.ContentCoding.gzip)
    return response


def bad_parameter(request: web.Request, parameter: str, message: str, status: int = 400) -> web.Response:
    return json_response(request, ApiError(error=message, parameter=parameter), status)


def token_matches(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


def presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):]
    return request.query.get("token")


class MarketApi:
    def __init__(self, view: MarketView, alerts: AlertLog) -> None:
        self.view = view
        self.board = Board(view)
        self.alerts = alerts

    async def snapshot(self, request: web.Request) -> web.Response:
        return json_response(request, self.view.snapshot())

    async def foreign_detail(self, request: web.Request) -> web.Response:
        return json_response(request, ForeignDetail(summary=self.view.summary, stocks=self.view.foreign_stocks()))

    async def volume_stats(self, request: web.Request) -> web.Response:
        return json_response(request, VolumeStats(stats=[self.view.stats[s] for s in sorted(self.view.stats)]))

    async def basket(self, request: web.Request) -> web.Response:
        return json_response(request, Basket(symbols=list(self.view.basket) or sorted(self.view.prices)))

    async def schedule(self, request: web.Request) -> web.Response:
        return json_response(request, SCHEDULE)

    async def basis_trend(self, request: web.Request) -> web.Response:
        minutes = MINUTES.read(request, bad_parameter)
        if isinstance(minutes, web.Response):
            return minutes
        return json_response(request, self.view.basis_trend(minutes))

    async def board_rows(self, request: web.Request) -> web.Response:
        board_filter = self._filter(request)
        if isinstance(board_filter, web.Response):
            return board_filter
        return json_response(request, self.board.rows(board_filter))

    def _filter(self, request: web.Request) -> BoardFilter | web.Response:
        symbols = request.query.get("symbols")
        chosen = read_filter(request.query.get("exchange"), request.query.get("group"),
                             symbols.split(",") if symbols is not None else None, self.board.groups())
        if isinstance(chosen, tuple):
            parameter, why = chosen
            return bad_parameter(request, parameter, f"{why}, got {shown(request.query[parameter])}", 422)
        return chosen

    async def book(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"]
        if not is_instrument(symbol):
            return bad_parameter(request, "symbol", "not a symbol: [A-Za-z0-9_-]{1,30}")
        book = self.board.book(symbol.upper())
        if book is None:
            return json_response(request, ApiError(error=f"no board row for {shown(symbol)}", parameter="symbol"), 404)
        return json_response(request, book)

    async def breadth(self, request: web.Request) -> web.Response:
        return json_response(request, [self.board.breadth(index_id) for index_id in self.board.index_ids()])

    async def movers(self, request: web.Request) -> web.Response:
        limit = MOVERS_LIMIT.read(request, bad_parameter)
        if isinstance(limit, web.Response):
            return limit
        raw = request.query.get("exchange", str(Exchange.HOSE))
        if raw not in Exchange.__members__:
            return bad_parameter(request, "exchange", f"exchange is one of {', '.join(Exchange)}, got {shown(raw)}",
                                 422)
        return json_response(request, self.board.movers(Exchange(raw), limit))

    async def contribution(self, request: web.Request) -> web.Response:
        index_id = request.query.get("index", "VN30").upper()
        if index_id not in self.board.index_ids():
            return bad_parameter(request, "index", f"index is one of {', '.join(self.board.index_ids())}, got "
                                 f"{shown(index_id)}", 422)
        return json_response(request, self.board.contribution(index_id))

    async def alert_list(self, request: web.Request) -> web.Response:
        limit = ALERTS_LIMIT.read(request, bad_parameter)
        if isinstance(limit, web.Response):
            return limit
        chosen = alert_filter(request)
        if isinstance(chosen, web.Response):
            return chosen
        since, raw_since = None, request.query.get(ALERTS_SINCE.name)
        if raw_since is not None:
            try:
                since = to_exchange_time(datetime.fromisoformat(raw_since))
            except ValueError:
                return bad_parameter(request, "since", f"since is an ISO 8601 time, got {shown(raw_since)}")
        return json_response(request, self.alerts.select(limit, chosen.type, chosen.severity, chosen.symbol, since))

    def endpoints(self) -> list[Endpoint]:
        unknown = (422, "a filter names no exchange, group or symbols this board knows")
        return [
            Endpoint("/api/market/board", "board", "Price board rows (TC/Trần/Sàn, the book, the last match, the "
                     "day's figures, foreign columns), by symbol; the filters given narrow each other",
                     self.board_rows, list[BoardQuote], params=BOARD_FILTER, errors=(unknown, UNAUTHORIZED)),
            Endpoint("/api/market/book/{symbol}", "book", "Every level of an instrument's book as sent",
                     self.book, Book, params=(instrument_param("symbol"),),
                     errors=((400, "not a symbol"), (404, "no board row for the symbol"), UNAUTHORIZED)),
            Endpoint("/api/market/breadth", "breadth", "Each index's advances, declines, ceilings, floors and "
                     "traded value, from the board", self.breadth, list[Breadth], errors=(UNAUTHORIZED,)),
            Endpoint("/api/market/movers", "movers", "An exchange's top gainers, losers, volume and value",
                     self.movers, Movers, params=(MOVERS_EXCHANGE, MOVERS_LIMIT),
                     errors=((400, "limit is not an integer"), (422, "limit or exchange out of range"),
                             UNAUTHORIZED)),
            Endpoint("/api/market/contribution", "contribution", "Each index member's part of the index's move, "
                     "in points", self.contribution, Contribution, params=(CONTRIBUTION_INDEX,),
                     errors=((422, "not an index with known members"), UNAUTHORIZED)),
            Endpoint("/api/market/alerts", "alerts", "The latest alerts (volume spikes, limits, foreign "
                     "acceleration, basis, futures flow, user rules), newest first; the filters given narrow each "
                     "other", self.alert_list, list[Alert], params=(ALERTS_LIMIT, *ALERT_FILTERS, ALERTS_SINCE),
                     errors=((400, "limit, symbol or since is malformed"), (422, "limit, type or severity out of "
                             "range"), UNAUTHORIZED)),
            Endpoint("/api/market/snapshot", "marketSnapshot", "Everything a price board needs: stats, prices, "
                     "indices, the foreign summary, the active VN30F contract", self.snapshot, MarketSnapshot,
                     errors=(UNAUTHORIZED,)),
            Endpoint("/api/market/foreign-detail", "foreignDetail",
                     "The VN30 foreign summary and each basket symbol's foreign flow", self.foreign_detail,
                     ForeignDetail, errors=(UNAUTHORIZED,)),
            Endpoint("/api/market/volume-stats", "volumeStats",
                     "Active buy / active sell split of every symbol, by symbol", self.volume_stats, VolumeStats,
                     errors=(UNAUTHORIZED,)),
            Endpoint("/api/market/basket", "basket", "The VN30 basket's symbols", self.basket, Basket,
                     errors=(UNAUTHORIZED,)),
            Endpoint("/api/market/schedule", "schedule", "Each exchange's trading phases by start time, exchange "
                     "time (the one schedule the system uses)", self.schedule, TradingSchedule,
                     errors=(UNAUTHORIZED,)),
            Endpoint("/api/market/basis-trend", "basisTrend",
                     "The active contract's basis points over the last N minutes of market time", self.basis_trend,
                     list[BasisPoint], description="Basis points, oldest first", params=(MINUTES,),
                     errors=((400, "minutes is not an integer"), (422, "minutes is out of range"), UNAUTHORIZED)),
        ]


_EXCHANGES = {"type": "string", "enum": [str(exchange) for exchange in Exchange]}
BOARD_FILTER = (
    Param("exchange", "Rows of one exchange (futures: DER)", _EXCHANGES),
    Param("group", "Rows of an index's basket (VN30, and others reference data names)", {"type": "string"}),
    Param("symbols", "Rows of these symbols, comma-separated (at most 200)", {"type": "string"}),
)
MOVERS_EXCHANGE = Param("exchange", "The exchange", {**_EXCHANGES, "default": str(Exchange.HOSE)})
MOVERS_LIMIT = IntParam("limit", "How many in each list", default=10, low=1, high=50)
CONTRIBUTION_INDEX = Param("index", "The index id", {"type": "string", "default": "VN30"})
MINUTES = IntParam("minutes", "Minutes of market time, counted back from the contract's latest point",
                   default=30, low=1, high=120)
ALERTS_LIMIT = IntParam("limit", "How many, newest first", default=100, low=1, high=500)
ALERT_FILTERS = (  # read by alert_filter
    Param("type", "Alerts of this type", {"type": "string", "enum": _ALERT_TYPES}),
    Param("severity", "Alerts of this severity", {"type": "string", "enum": _SEVERITIES}),
    Param("symbol", "Alerts of this symbol or contract", {"type": "string", "pattern": INSTRUMENT_PATTERN}),
)
ALERTS_SINCE = Param("since", "Alerts raised at or after this exchange time (ISO 8601; without an offset: exchange "
                     "time)", {"type": "string", "format": "date-time"})


# --- middleware --------------------------------------------------------------------------------------------------


def undecodable_headers(request: web.Request) -> list[str]:
    """The names of the request's headers whose values are not UTF-8. aiohttp hands such bytes over as surrogate
    escapes, which fail wherever text is encoded again (a token compared as bytes, aiohttp's own WebSocket
    handshake), so they must never reach the handlers."""
    names = []
    for name, value in request.headers.items():
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                names.append(name)
    return names


def error_middleware() -> Any:
    """The outermost middleware: a JSON answer for every error, and requests made safe to handle. A header whose
    value is not UTF-8 is treated as absent: an undecodable token is no token (401, or a WebSocket closed with 1008),
    an undecodable WebSocket key no handshake (400), an undecodable Origin or Accept-Encoding no CORS or no gzip."""

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        undecodable = undecodable_headers(request)
        if undecodable:
            headers = request.headers.copy()
            for name in undecodable:
                headers.popall(name, None)
            request = request.clone(headers=headers)
        try:
            response = await handler(request)
        except web.HTTPException as http_error:
            if http_error.status < 400:
                raise
            response = json_response(request, ApiError(error=http_error.reason), http_error.status)
            for header in ("Allow", "WWW-Authenticate"):  # e.g. a 405 must say which methods are allowed
                if header in http_error.headers:
                    response.headers[header] = http_error.headers[header]
        except Exception:
            log.exception("request failed", path=request.path)
            response = json_response(request, ApiError(error="internal error"), 500)
        REQUESTS.labels(route, str(response.status)).inc()
        return response

    return handle


# Every answer carries these: the dashboard is same-origin scripts and styles only (no inline script), it may not be
# framed, nothing sniffs a content type, and no URL leaks to another site in a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
REFUSED = Counter("stocktracker_gateway_refused_total", "Requests refused for their Host or Origin", ["reason"])
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = (":80", ":443")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, the static files and WebSocket handshakes included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def host_name(host: str) -> str:
    """The name in a Host header (or an origin's authority), without its port: `[::1]:8080` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


def authority(host: str) -> str:
    """host[:port] as compared between an Origin and a Host: lower case, without a default port."""
    host = host.strip().lower().rstrip("/")
    return host[: -len(suffix)] if (suffix := next((p for p in _DEFAULT_PORTS if host.endswith(p)), "")) else host


def host_middleware(allowed_hosts: list[str]) -> Any:
    """Only the names the gateway is meant to be reached by: a page whose own name was rebound to 127.0.0.1 (DNS
    rebinding) sends its own name as Host, and is refused before it can read anything."""
    anyone = "*" in allowed_hosts
    names = {host_name(name) for name in allowed_hosts}

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not anyone and host_name(request.headers.get("Host", "")) not in names:
            REFUSED.labels("host").inc()
            return json_response(request, ApiError(error="this gateway does not answer to that host name "
                                                         "(GATEWAY_ALLOWED_HOSTS)"), 421)
        return await handler(request)

    return handle


def origin_allowed(request: web.Request, origins: list[str]) -> bool:
    """A browser's request from this gateway's own pages or from an origin in GATEWAY_CORS_ORIGINS; one without
    Origin is not a browser's (a browser always sends it on a WebSocket handshake and on a POST)."""
    origin = request.headers.get("Origin")
    if origin is None or "*" in origins or origin in origins:
        return True
    scheme, _, rest = origin.partition("://")
    return bool(scheme) and authority(rest) == authority(request.headers.get("Host", ""))


def origin_middleware(origins: list[str]) -> Any:
    """What a browser may do on a visitor's behalf with no token to stop it: open a WebSocket (which no CORS
    protects) or send anything but a read. Both only from the gateway's own pages or an allowed origin."""

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        guarded = is_websocket_path(request.path) or request.method not in _SAFE_METHODS
        if guarded and not origin_allowed(request, origins):
            REFUSED.labels("origin").inc()
            return json_response(request, ApiError(error="origin not allowed (GATEWAY_CORS_ORIGINS)"), 403)
        return await handler(request)

    return handle


def auth_middleware(token: str, protect_rest: bool, always: tuple[str, ...] = ()) -> Any:
    """With a token set: WebSocket handshakes, the paths under `always` (what changes the system for everyone), and
    with `protect_rest` every other REST path but health, metrics and the document, need it."""
    open_paths = ("/healthz", "/metrics", "/api/openapi.json")

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_ws = is_websocket_path(request.path)
        guarded = (is_ws or request.path.startswith(always)
                   or (protect_rest and request.path.startswith("/api/") and request.path not in open_paths))
        if token and guarded and request.method != "OPTIONS" and not token_matches(token, presented_token(request)):
            AUTH_FAILURES.labels("ws" if is_ws else "rest").inc()
            if is_ws:
                return await refuse_websocket(request)
            return json_response(request, ApiError(error="missing or wrong token"), 401)
        return await handler(request)

    return handle


async def refuse_websocket(request: web.Request) -> web.WebSocketResponse:
    """A browser cannot read an HTTP 401 from a WebSocket handshake: accept, then close with 1008 (policy)."""
    request[REFUSED_HANDSHAKE] = True  # counted against the address
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    await socket.close(code=1008, message=b"missing or wrong token")
    return socket


def cors_middleware(origins: list[str]) -> Any:
    allowed = set(origins)

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        permitted = origin is not None and ("*" in allowed or origin in allowed)
        if request.method == "OPTIONS" and permitted and request.headers.get("Access-Control-Request-Method"):
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if permitted and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin  # type: ignore[assignment]
            response.headers["Vary"] = "Origin"
        return response

    return handle


# --- OpenAPI -------------------------------------------------------------------------------------------------------


def openapi_document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the REST API, made from the route table the handlers are served from: its
    paths, parameters and responses are the endpoints' own, its schemas generated from the very Structs the
    handlers encode, so the document and the answers cannot drift apart."""
    types = (*answer_types(endpoints), ApiError)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    refs = dict(zip(types, schemas, strict=True))
    return {
        "openapi": "3.1.0",
        "info": {"title": "stock-tracker gateway", "version": VERSION,
                 "description": "Real-time Vietnamese market data: REST snapshots and history. WebSocket streams "
                                "at /ws/market, /ws/foreign, /ws/index and /ws/derivatives, or several on one "
                                "socket at /ws?channels=market,index (see the README)."},
        "paths": openapi_paths(endpoints, refs.__getitem__),
        "components": {"schemas": components},
    }
