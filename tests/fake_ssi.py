"""A fake SSI FastConnect Data server that the real `ssi-fc-data` 2.2.2 client accepts.

It speaks the wire protocol documented in docs/ssi.md, "Connection and streaming" and "REST API" (AccessToken, REST
GETs in SSI's shapes, classic SignalR 1.5 negotiate/connect, SwitchChannels, Broadcast/Error frames, keep-alives),
so tests drive the real, threaded client instead of a mock of it. Tests script what it serves, push frames, and can
make it misbehave the way SSI does: drop every stream socket, or go silent while keeping the sockets open (a dead
link nobody notices)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import ssl
import uuid
from datetime import date
from types import TracebackType
from typing import Any, Self

from aiohttp import WSMsgType, web

HUB = "FcMarketDataV2Hub"
# 2100-01-01: far in the future, and the standard base64 of {"exp":4102444800} holds no '-' or '_' (which the client,
# decoding with standard base64, would choke on).
TOKEN_EXP = 4102444800
_JWT_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}
_JWT_PAYLOAD = base64.b64encode(json.dumps({"exp": TOKEN_EXP}, separators=(",", ":")).encode()).decode().rstrip("=")
# SSI reportedly answers REST calls without a valid token with HTTP 200 and this body (docs/ssi.md, "REST API").
REST_AUTH_FAILURE = {"message": "Missing Authorization header", "status": 401}


class FakeSsi:
    """REST + SignalR hub on 127.0.0.1:<free port>, running in the current event loop."""

    def __init__(
        self, *, consumer_id: str = "test-id", consumer_secret: str = "test-secret", keepalive_s: float = 1.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.tls = tls  # serve HTTPS with this context (e.g. a self-signed certificate)
        self.requests_seen = 0  # every HTTP request that got through (TLS included), whatever its path
        self.consumer_id = consumer_id
        self.consumer_secret = consumer_secret
        self.keepalive_s = keepalive_s
        # scripting
        self.index_components: dict[str, list[str]] = {}
        self.securities_details: list[dict[str, Any]] = []
        self.intraday_bars: list[dict[str, Any]] = []
        # observations
        self.token_requests = 0
        self.tokens_issued: list[str] = []
        self.connections_total = 0
        self.subscriptions: list[str] = []
        self.rest_requests: list[tuple[str, dict[str, str]]] = []
        self.auth_failures = 0

        self._sockets: dict[web.WebSocketResponse, bool] = {}  # open stream sockets -> has sent SwitchChannels
        self._changed = asyncio.Condition()
        self._connection_tokens: set[str] = set()
        self._cursor = itertools.count(1)
        self._silent = False
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """Base URL for both `url` (REST) and `stream_url`: the client appends paths by string concatenation."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}/"

    @property
    def connected(self) -> int:
        return len(self._sockets)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._count])
        app.router.add_post("/api/v2/Market/AccessToken", self._access_token)
        app.router.add_get("/api/v2/Market/{name}", self._rest)
        app.router.add_post("/v2.0/signalr/negotiate", self._negotiate)
        app.router.add_get("/v2.0/signalr/negotiate", self._negotiate)
        app.router.add_get("/v2.0/signalr/connect", self._connect)
        app.router.add_get("/v2.0/signalr/start", self._start)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- scripting -------------------------------------------------------------------------------------------------

    async def push(self, *frames: dict[str, Any] | str | bytes) -> None:
        """Broadcast each payload {"DataType", "Content"} to every stream client, wrapped exactly as SSI does."""
        for frame in frames:
            payload = json.dumps(frame) if isinstance(frame, dict) else frame
            payload = payload.decode() if isinstance(payload, bytes) else payload
            await self._send_all({"C": self._next_cursor(), "M": [{"H": HUB, "M": "Broadcast", "A": [payload]}]})

    async def push_error(self, text: str) -> None:
        """A hub `Error` message, which the client hands to its on_error."""
        await self._send_all({"C": self._next_cursor(), "M": [{"H": HUB, "M": "Error", "A": [text]}]})

    async def drop_connections(self) -> None:
        """Close every stream socket from the server side, as when SSI drops us, and wait until they are gone."""
        sockets = list(self._sockets)
        await asyncio.gather(*(ws.close() for ws in sockets))
        async with self._changed:
            await self._changed.wait_for(lambda: not any(ws in self._sockets for ws in sockets))

    def go_silent(self) -> None:
        """Send nothing at all (frames are lost, no keep-alives) while keeping the sockets open: a dead link."""
        self._silent = True

    def speak_again(self) -> None:
        self._silent = False

    async def wait_for_clients(self, n: int = 1, timeout: float = 10.0) -> None:
        """Wait until `n` stream clients are connected and have subscribed (sent SwitchChannels)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: sum(self._sockets.values()) >= n)

    # ---- REST ------------------------------------------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests_seen += 1
        return await handler(request)

    async def _access_token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        body = await request.json()
        if body.get("consumerID") != self.consumer_id or body.get("consumerSecret") != self.consumer_secret:
            return web.json_response({"status": 400, "message": "The connection is invalid", "data": None})
        # The signature part carries a counter so every token is distinct; the client never checks it.
        token = f"{_JWT_HEADER}.{_JWT_PAYLOAD}.fake{len(self.tokens_issued) + 1}"
        self.tokens_issued.append(token)
        return web.json_response({"status": 200, "message": "Success", "data": {"accessToken": token}})

    async def _rest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        query = dict(request.query)
        self.rest_requests.append((name, query))
        if not self._authorized(request):
            return web.json_response(REST_AUTH_FAILURE)
        match name.lower():
            case "indexcomponents":
                data, total = self._index_components_data(query), 1
            case "securitiesdetails":
                data, total = self._securities_details_data(query), 1
            case "intradayohlc":
                data, total = self._intraday_data(query)
            case _:
                raise web.HTTPNotFound()
        return web.json_response({"data": data, "message": "Success", "status": "Success", "totalRecord": total})

    def _index_components_data(self, query: dict[str, str]) -> list[dict[str, Any]]:
        code = query.get("indexCode", "")
        symbols = self.index_components.get(code)
        if symbols is None:
            return []
        return [
            {
                "IndexCode": code,
                "IndexName": code,
                "Exchange": "HNX" if code.upper().startswith("HNX") else "HOSE",
                "TotalSymbolNo": str(len(symbols)),
                "IndexComponent": [{"Isin": symbol, "StockSymbol": symbol} for symbol in symbols],
            }
        ]

    def _securities_details_data(self, query: dict[str, str]) -> list[dict[str, Any]]:
        symbol, market = query.get("symbol", "").upper(), query.get("market", "").upper()
        items = [
            item
            for item in self.securities_details
            if (not symbol or str(item.get("Symbol", "")).upper() == symbol)
            and (not market or str(item.get("MarketId", "")).upper() == market)
        ]
        report_date = date.today().strftime("%d/%m/%Y")
        return [{"RType": "y", "ReportDate": report_date, "TotalNoSym": str(len(items)), "RepeatedInfo": items}]

    def _intraday_data(self, query: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
        """The requested symbol's bars, one page of them, and how many there are in all (so callers can page)."""
        symbol = query.get("symbol", "").upper()
        rows = [row for row in self.intraday_bars if str(row.get("Symbol", "")).upper() == symbol]
        index, size = int(query.get("pageIndex") or 1), int(query.get("pageSize") or 10)
        return rows[(index - 1) * size : index * size], len(rows)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and token in self.tokens_issued:
            return True
        self.auth_failures += 1
        return False

    # ---- SignalR ---------------------------------------------------------------------------------------------------

    async def _negotiate(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            raise web.HTTPUnauthorized()
        # Real connection tokens are base64 with '+', '/' and '=', which the client must URL-encode on /connect.
        token = base64.b64encode(secrets.token_bytes(30)).decode()
        self._connection_tokens.add(token)
        return web.json_response(
            {
                "Url": "/v2.0/signalr",
                "ConnectionToken": token,
                "ConnectionId": str(uuid.uuid4()),
                "KeepAliveTimeout": 3 * self.keepalive_s,  # classic SignalR sends keep-alives every third of this
                "DisconnectTimeout": 30.0,
                "ConnectionTimeout": 110.0,
                "TryWebSockets": True,
                "ProtocolVersion": "1.5",
                "TransportConnectTimeout": 5.0,
                "LongPollDelay": 0.0,
            }
        )

    async def _start(self, request: web.Request) -> web.Response:
        return web.json_response({"Response": "started"})

    async def _connect(self, request: web.Request) -> web.WebSocketResponse:
        if not self._authorized(request):
            raise web.HTTPUnauthorized()
        query = request.query
        if query.get("transport") != "webSockets" or query.get("connectionToken") not in self._connection_tokens:
            raise web.HTTPBadRequest()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections_total += 1
        self._sockets[ws] = False
        keepalive = asyncio.create_task(self._keep_alive(ws))
        try:
            await self._send(ws, {"C": "s-0,1", "S": 1, "M": []})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_client_frame(ws, json.loads(msg.data))
        finally:
            keepalive.cancel()
            del self._sockets[ws]
            await self._notify()
        return ws

    async def _on_client_frame(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        """Handle a hub invocation {"H", "M", "A", "I"}; only SwitchChannels exists on SSI's hub."""
        if str(frame.get("M", "")).lower() != "switchchannels":
            return
        self.subscriptions.append(frame["A"][0])
        self._sockets[ws] = True
        await self._notify()
        await self._send(ws, {"I": str(frame.get("I", 0))})

    async def _keep_alive(self, ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionResetError):
            while True:
                await asyncio.sleep(self.keepalive_s)
                await self._send(ws, {})

    async def _send_all(self, frame: dict[str, Any]) -> None:
        for ws in list(self._sockets):
            await self._send(ws, frame)

    async def _send(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        if not self._silent and not ws.closed:
            await ws.send_str(json.dumps(frame))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _next_cursor(self) -> str:
        return f"d-{next(self._cursor)}"
