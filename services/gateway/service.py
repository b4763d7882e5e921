"""The gateway: the trackers' KV buckets watched into an in-memory view, served as REST snapshots and WebSocket
streams (aiohttp). Stateless: any number can run side by side, each with its own view of the same buckets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from services.gateway.admission import CLIENT_ADDRESS, Admission, admission_middleware, trusted_networks
from services.gateway.alerts import AlertLog
from services.gateway.api import (
    MarketApi,
    auth_middleware,
    bad_parameter,
    cors_middleware,
    error_middleware,
    host_middleware,
    json_response,
    openapi_document,
    origin_middleware,
    security_headers,
)
from services.gateway.board import Board
from services.gateway.history import HistoryApi
from services.gateway.hub import ChannelHub, serve
from services.gateway.routes import Endpoint, shown
from services.gateway.rules import RULES_PATH, AlertRules
from services.gateway.tape import Tape
from services.gateway.topics import MAX_REQUEST_BYTES, FilteredChannels
from services.gateway.view import CHANNEL_BUCKETS, WATCHED, MarketView
from shared import bus
from shared.config import Settings
from shared.market import exchange_now
from shared.messages.domain import Alert, BasisPoint, ClassifiedTrade
from shared.runtime import Actor, Context
from shared.subjects import ALERT_PREFIX, ALERTS, BASIS_POINT, DERIVED, TRADE_CLASSIFIED, Bucket

WS_REFUSED = Counter("stocktracker_gateway_ws_refused_total", "WebSocket connections refused, by reason", ["reason"])
DERIVED_HISTORY = timedelta(hours=26)  # reach back to the start of the latest trading day, whatever the hour
STATIC = Path(__file__).resolve().parent / "static"  # the dashboard: plain HTML, CSS and JS modules


class Health(msgspec.Struct):
    live: bool
    ready: bool  # every bucket is loaded into the view
    loaded: list[str]  # the buckets loaded


class Gateway(Actor):
    name = "gateway"
    description = "REST snapshots, history and WebSocket streams"
    metrics_port = 9107

    @staticmethod
    def check(settings: Settings) -> None:
        trusted_networks(settings.gateway_trusted_proxies)

    def __init__(self) -> None:
        self.view = MarketView()
        self.tape = Tape()
        self.alerts = AlertLog()
        self.rules = AlertRules()
        self.history: HistoryApi | None = None
        self.hubs: dict[str, ChannelHub] = {}
        self.filtered: FilteredChannels | None = None
        self.port = 0
        self._watches: list[bus.BucketWatch] = []
        self._derived: bus.StreamReader | None = None
        self._broadcaster: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.admission: Admission | None = None
        self._ctx: Context | None = None
        self._decode_point = msgspec.json.Decoder(BasisPoint).decode
        self._decode_trade = msgspec.json.Decoder(ClassifiedTrade).decode
        self._decode_alert = msgspec.json.Decoder(Alert).decode
        self._openapi = b""

    async def start(self, ctx: Context) -> None:
        self._ctx = ctx
        settings = ctx.settings
        self.admission = Admission(settings.ws_max_connections_per_ip, settings.ws_max_connections,
                                   settings.ws_refusals_per_minute, trusted_networks(settings.gateway_trusted_proxies))
        for channel in CHANNEL_BUCKETS:
            self.hubs[channel] = ChannelHub(
                channel, state=lambda c=channel: self.view.channel_state(c),
                delta=lambda c=channel: self.view.take_delta(c),
                queue_size=settings.ws_queue_size, send_timeout_s=settings.ws_send_timeout_s,
            )
        self.filtered = FilteredChannels(Board(self.view), self.tape, settings.ws_queue_size,
                                         settings.ws_send_timeout_s, settings.ws_phases, self.alerts)
        self.rules.kv = await bus.electing(lambda: ctx.js.key_value(str(Bucket.ALERT_RULES)))
        rules = bus.BucketWatch(ctx.js, Bucket.ALERT_RULES, self.rules.changed, on_load=self.rules.loaded)
        rules.start()
        self._watches.append(rules)
        for bucket in WATCHED:
            watch = bus.BucketWatch(ctx.js, bucket, lambda key, value, b=bucket: self.view.apply(b, key, value),
                                    on_load=lambda entries, b=bucket: self.view.replace(b, entries))
            watch.start()
            self._watches.append(watch)
        self._derived = await bus.consume_from(ctx.js, DERIVED,
                                               [BASIS_POINT.wildcard, TRADE_CLASSIFIED.wildcard, ALERTS],
                                               self._on_derived, start_time=exchange_now() - DERIVED_HISTORY)
        self._broadcaster = asyncio.create_task(self._broadcast_every(settings.ws_throttle_ms / 1000,
                                                                      settings.ws_phases))
        self.history = HistoryApi(settings)
        self.history.start()
        app = self.make_app()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.gateway_host, settings.gateway_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ctx.log.info("serving", url=f"http://{settings.gateway_host}:{self.port}/")

    def make_app(self) -> web.Application:
        assert self._ctx is not None
        settings = self._ctx.settings
        assert self.admission is not None
        app = web.Application(middlewares=[
            error_middleware(), admission_middleware(self.admission, WS_REFUSED),
            host_middleware(settings.gateway_allowed_hosts),
            origin_middleware(settings.gateway_cors_origins), cors_middleware(settings.gateway_cors_origins),
            auth_middleware(settings.gateway_token, settings.gateway_token_rest, always=(RULES_PATH,)),
        ])
        app.on_response_prepare.append(security_headers)
        assert self.history is not None
        endpoints = [*MarketApi(self.view, self.alerts).endpoints(), *self.rules.endpoints(),
                     *self.history.endpoints(), Endpoint(
            "/healthz", "health", "Liveness and readiness: ready once the KV view is loaded", self._health, Health,
            "Live and ready", errors=((503, "Live, not ready (KV view not loaded)", Health),))]
        self._openapi = msgspec.json.encode(openapi_document(endpoints))
        app.add_routes([endpoint.route() for endpoint in endpoints])
        app.add_routes([
            web.get("/metrics", self._metrics),
            web.get("/api/openapi.json", self._openapi_json),
            web.get("/", self._dashboard),
            web.static("/static", STATIC),
            web.get("/ws", self._websocket(None)),
            *(web.get(f"/ws/{channel}", self._websocket(channel)) for channel in self.hubs),
        ])
        return app

    async def _on_derived(self, subject: str, payload: bytes, position: bus.Delivery) -> None:
        """Classified trades to the tape, alerts to the alert log, basis points to the view."""
        try:
            if TRADE_CLASSIFIED.matches(subject):
                self.tape.add(self._decode_trade(payload))
            elif subject.startswith(ALERT_PREFIX):
                self.alerts.add(self._decode_alert(payload))
            else:
                self.view.add_basis_point(self._decode_point(payload))
        except msgspec.DecodeError:  # (ValidationError included) the recorder dead-letters it; the view skips it
            self.view.undecodable += 1

    async def _broadcast_every(self, interval_s: float, phases: int) -> None:
        """Each of the `phases` turns of every `interval_s`, on a fixed schedule: the time a turn takes does not push
        the next one back (an update waits at most one interval); turns missed while the loop was busy are not made
        up in a burst. The channels broadcast at the first turn, the filtered channels to one phase's sockets at
        each."""
        assert self.filtered is not None
        loop = asyncio.get_running_loop()
        next_turn, step = loop.time(), interval_s / phases
        for turn in itertools.count():
            next_turn = max(next_turn + step, loop.time())
            await asyncio.sleep(next_turn - loop.time())
            phase = turn % phases
            if phase == 0:
                for hub in self.hubs.values():
                    hub.broadcast()
            self.filtered.broadcast(phase)

    def _websocket(self, channel: str | None) -> Any:
        """`/ws/<channel>` follows that channel; `/ws` the `channels` asked (comma-separated, none by default) and
        whatever it subscribes to later: one socket for a whole dashboard tab."""

        async def handle(request: web.Request) -> web.StreamResponse:
            assert self.admission is not None
            assert self._ctx is not None
            if channel is not None:
                channels = [channel]
            else:
                channels = [name for name in request.query.get("channels", "").split(",") if name]
                unknown = [name for name in channels if name not in self.hubs]
                if unknown or len(channels) > len(self.hubs):
                    asked = shown(request.query["channels"])
                    return bad_parameter(request, "channels",
                                         f"channels are {', '.join(self.hubs)}, comma-separated, got {asked}")
            address = request[CLIENT_ADDRESS]
            refused = self.admission.acquire(address)
            if refused is not None:
                WS_REFUSED.labels(refused).inc()
                if refused == "total_limit":
                    return json_response(request, {"error": "the gateway is at its WebSocket limit"}, 503)
                return json_response(request, {"error": "too many connections from this address"}, 429)
            try:
                # No permessage-deflate: a message is encoded once for every client, but compressed once per
                # socket (and each socket keeps a compressor): with 1,000 browsers asking for it, the gateway's CPU
                # and memory tripled (bench/fanout.py --board --compress).
                socket = web.WebSocketResponse(heartbeat=self._ctx.settings.ws_heartbeat_s,
                                               max_msg_size=MAX_REQUEST_BYTES, compress=False)
                await socket.prepare(request)
                await serve(socket, self.hubs, channels, self.filtered)
                return socket
            finally:
                self.admission.release(address)

        return handle

    async def _health(self, request: web.Request) -> web.Response:
        loaded = [str(w.bucket) for w in self._watches if w.loaded.is_set()]
        ready = self.ready()
        return json_response(request, Health(live=True, ready=ready, loaded=loaded), 200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _dashboard(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    def ready(self) -> bool:
        return self.port > 0 and bool(self._watches) and all(watch.loaded.is_set() for watch in self._watches)

    async def stop(self) -> None:
        for hub in [*self.hubs.values(), *(self.filtered.hubs.values() if self.filtered else ())]:
            await hub.close_all()
        if self._broadcaster is not None:
            self._broadcaster.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._broadcaster
        if self._runner is not None:
            await self._runner.cleanup()
        for watch in self._watches:
            await watch.stop()
        if self.history is not None:
            await self.history.stop()
        if self._derived is not None:
            await self._derived.stop()

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "ready": self.ready(),
                "clients": {name: len(hub.clients) for name, hub in self.hubs.items()},
                "topics": self.filtered.status() if self.filtered else {}, "board_rows": len(self.view.board),
                "symbols": len(self.view.stats), "undecodable": self.view.undecodable,
                "watch_loads": {str(w.bucket): w.loads for w in self._watches}}
