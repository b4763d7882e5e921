"""The live SSI FastConnect Data feed, through the official `ssi-fc-data` client, made fit for a service.

What the client does not do, and this adapter does (docs/ssi.md, "Connection and streaming"):
- It is synchronous and threaded: REST calls run in worker threads with a timeout; frames arrive on the websocket
  thread and are handed to the event loop with back-pressure (the websocket thread waits while the queue is full).
- It swallows nothing we need but also checks nothing: rejected credentials stop the service with a clear error.
- It never reconnects and never notices a dead link: each channel has its own stream and a watchdog; a channel
  that closes, or that stays silent (keep-alives included) for SSI_WATCHDOG_S while the market is open, is rebuilt
  with a fresh token and backoff. After a rebuild, minute bars of the gap are fetched over REST and published.
- It prints the bearer token to stdout: that print is silenced.
- Its stream does not verify certificates (the transport's `verify_ssl` defaults to False, for the negotiation and
  the websocket alike), so any server in the path would receive the bearer token: the stream is made with
  verification on. Its REST calls use `requests`, which verifies. Plain HTTP (a local fake SSI) uses no TLS at all.
- It json-decodes each Broadcast itself and treats a bad one as a dropped connection: here the raw Broadcast
  argument is taken from the connection's frame hook instead, so a bad frame is just a rejected frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from services.ingest.sources import Frame, Reference
from shared.config import ConfigError, Settings
from shared.market import (
    Exchange,
    exchange_datetime,
    exchange_now,
    is_trading,
    parse_clock,
    parse_trading_date,
)
from shared.messages.domain import Bar, IndexBasket, SecurityInfo
from shared.messages.ssi import IndexComponents, IntradayBar, SecuritiesDetails, rest_rows, total_records
from shared.reference import configured_basket
from shared.retry import FEED_AWAY, retrying

RECONNECTS = Counter("stocktracker_ingest_reconnects_total", "SSI channel streams rebuilt, by channel and cause",
                     ["channel", "cause"])
CHANNEL_SILENCE = Gauge("stocktracker_ingest_channel_silence_seconds",
                        "Seconds since a channel's last frame (keep-alives included)", ["channel"])
RECONCILED = Counter("stocktracker_ingest_reconciled_bars_total", "Minute bars fetched over REST after a reconnect")

REST_TIMEOUT_S = 20.0
HUB = "FcMarketDataV2Hub"
log = structlog.get_logger("ingest.ssi")


class SsiError(RuntimeError):
    """SSI refused us or answered nonsense; the message says which, in one line."""


class CredentialsRejected(SsiError, ConfigError):
    """SSI refused SSI_CONSUMER_ID/SECRET: at start a configuration error (no restart mends it); mid-day, when a
    reconnect asks for a fresh token, one more failed attempt (as any SsiError)."""


def client_config(settings: Settings) -> SimpleNamespace:
    """The client reads its configuration as attributes and joins URLs by concatenation (hence the trailing /)."""
    return SimpleNamespace(
        consumerID=settings.ssi_consumer_id,
        consumerSecret=settings.ssi_consumer_secret,
        url=settings.ssi_url,
        stream_url=settings.ssi_stream_url,
        auth_type="Bearer",
    )


def _silence_client() -> None:
    from ssi_fc_data.signalr.transports import _transport

    # The transport print()s the request headers, bearer token included, on every connect.
    _transport.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    # It logs a traceback per socket error; the adapter logs each disconnect itself, once.
    logging.getLogger("SignalRCoreClient").setLevel(logging.CRITICAL)
    logging.getLogger("websocket").setLevel(logging.CRITICAL)


def _verify_certificates() -> None:
    """Every stream the client makes verifies SSI's certificate (the negotiation's `requests` call and the
    websocket's handshake). tests/test_ingest_ssi.py fails loudly if the names this relies on are gone."""
    from ssi_fc_data import fc_md_stream
    from ssi_fc_data.signalr import Connection

    if not isinstance(fc_md_stream.Connection, functools.partial):
        fc_md_stream.Connection = functools.partial(Connection, verify_ssl=True)  # type: ignore[misc]


def market_is_open() -> bool:
    """Whether any exchange matches orders now (UPCOM trades until 15:00, after HOSE's close)."""
    now = exchange_now()
    return any(is_trading(exchange, now) for exchange in Exchange)


async def _in_thread(call: Callable[[], Any], what: str) -> Any:
    try:
        return await asyncio.wait_for(asyncio.to_thread(call), REST_TIMEOUT_S)
    except TimeoutError:
        raise SsiError(f"SSI did not answer {what} within {REST_TIMEOUT_S:g} s") from None


OTHER_BASKETS = ("HNX30",)  # besides VN30: the indices whose constituents SSI's IndexComponents is asked for


def basket_from_index_components(response: dict[str, Any]) -> list[str]:
    """`data[0].IndexComponent[].StockSymbol`: SSI nests the constituents under the index."""
    indices = rest_rows(response, IndexComponents)
    return [item.StockSymbol.strip().upper() for item in (indices[0].IndexComponent if indices else [])
            if item.StockSymbol]


def _date_or_none(value: str | None) -> date | None:
    try:
        return parse_trading_date(value) if value else None
    except ValueError:
        return None


def securities_from_details(response: dict[str, Any], trading_date: date) -> list[SecurityInfo]:
    """SecuritiesDetails: `data[0].RepeatedInfo[]`, numbers and dates as strings."""
    pages = rest_rows(response, SecuritiesDetails)
    return [
        SecurityInfo(
            symbol=item.Symbol.strip().upper(), trading_date=trading_date, exchange=item.Exchange or item.MarketId,
            name=item.SymbolName or item.SymbolEngName, sec_type=item.SecType,
            lot_size=int(item.LotSize) if item.LotSize is not None else None, underlying=item.Underlying or None,
            listed_shares=int(item.ListedShare) if item.ListedShare is not None else None,
            # a futures contract's last trading day; MaturityDate when LastTradingDate is not sent
            last_trading_date=_date_or_none(item.LastTradingDate) or _date_or_none(item.MaturityDate),
        )
        for item in (pages[0].RepeatedInfo if pages else []) if item.Symbol and item.Symbol.strip()
    ]


def bars_from_intraday(response: dict[str, Any], symbol: str, since: datetime, until: datetime) -> list[Bar]:
    """IntradayOhlc rows (strings; Time marks the last update inside the minute) as 1-minute bars within the gap."""
    bars = []
    for row in rest_rows(response, IntradayBar):
        if None in (row.TradingDate, row.Time, row.Open, row.High, row.Low, row.Close, row.Volume):
            continue
        try:
            day = parse_trading_date(row.TradingDate or "")
            stamp = exchange_datetime(day, parse_clock(row.Time or ""))
        except ValueError:
            continue
        if since <= stamp <= until:
            bars.append(Bar(symbol=symbol, trading_date=day, timestamp=stamp.replace(second=0),
                            open=row.Open or 0.0, high=row.High or 0.0, low=row.Low or 0.0, close=row.Close or 0.0,
                            volume=int(row.Volume or 0), interval_s=60))
    return bars


@dataclass
class ChannelStream:
    """One SSI channel (e.g. `X:ALL`) on its own connection, watched for silence."""

    channel: str
    last_seen: float = field(default_factory=time.monotonic)
    last_broadcast_at: datetime | None = None  # exchange (wall) time of the last data frame
    closed: threading.Event = field(default_factory=threading.Event)
    stream: Any = None
    generation: int = 0  # which stream is current: a replaced stream's late close must not count

    def closed_callback(self) -> Callable[[], None]:
        generation = self.generation

        def on_close() -> None:
            if generation == self.generation:
                self.closed.set()

        return on_close

    @property
    def kind(self) -> str:
        return self.channel.split(":", 1)[0].upper()


def channel_order_warning(channels: list[str]) -> str | None:
    """What to say when trades and quotes come on channels of their own (X-TRADE, X-QUOTE): each channel is its own
    stream, with its own connection and client thread, so nothing orders a trade after the book change before it,
    and at burst rates a trade can meet the wrong book. The combined X channel carries both in the exchange's order."""
    types = {channel.split(":", 1)[0].strip().upper() for channel in channels}
    if {"X-TRADE", "X-QUOTE"} <= types:
        return ("trades and quotes arrive on separate channels (X-TRADE, X-QUOTE), whose relative order is not "
                "guaranteed: the active buy / sell split is approximate; X:ALL keeps the order")
    return None


class SsiSource:
    """Frames from SSI's live hub, one stream per configured channel, with reference data from its REST API."""

    name = "ssi"

    def __init__(self, settings: Settings, *, market_open: Callable[[], bool] = market_is_open,
                 queue_size: int = 10_000) -> None:
        self.settings = settings
        self._config = client_config(settings)
        self._market_open = market_open
        self._queue: asyncio.Queue[Frame | Bar] = asyncio.Queue(queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._channels = [ChannelStream(channel) for channel in settings.ssi_channels]
        if (warning := channel_order_warning(settings.ssi_channels)) is not None:
            log.warning(warning, channels=settings.ssi_channels)
        self._watchers: list[asyncio.Task[None]] = []
        self._symbols_for_reconcile: set[str] = set()
        self.reconnects = 0
        self.frames_received = 0
        _silence_client()
        _verify_certificates()

    # --- REST ----------------------------------------------------------------------------------------------------

    async def _ensure_client(self) -> Any:
        if self._client is None:
            from ssi_fc_data.fc_md_client import MarketDataClient

            def make() -> Any:
                try:
                    return MarketDataClient(self._config)
                except NameError as refused:  # the client's way of saying status != 200
                    raise CredentialsRejected(
                        f"SSI rejected the credentials (SSI_CONSUMER_ID/SECRET): {refused}") from None
                except (KeyError, TypeError, ValueError) as err:
                    raise SsiError(f"SSI's AccessToken answer is not what the client expects: {err!r}") from None
                except OSError as err:
                    raise SsiError(f"cannot reach SSI at {self._config.url}: {err}") from None

            self._client = await _in_thread(make, "AccessToken")
        return self._client

    async def _get(self, method: str, request: Any) -> dict[str, Any]:
        client = await self._ensure_client()
        response = await _in_thread(lambda: getattr(client, method)(None, request), method)
        if not isinstance(response, dict):
            raise SsiError(f"SSI's {method} answered {type(response).__name__}, not an object")
        if response.get("data") is None:  # "status": "Error", or 401 in the body of an HTTP 200
            raise SsiError(f"SSI's {method} failed: {response.get('message')}")
        return response

    async def reference(self) -> Reference:
        from ssi_fc_data.model import model

        today = exchange_now().date()
        await self._ensure_client()  # bad credentials stop the service here, before any stream starts
        if self.settings.vn30_symbols:
            basket = configured_basket(self.settings.vn30_symbols, today)
        else:
            symbols = basket_from_index_components(
                await self._get("index_components", model.index_components("VN30", 1, 100))
            )
            basket = (IndexBasket(index_id="VN30", symbols=symbols, source="ssi", trading_date=today) if symbols
                      else configured_basket([], today))
        securities: list[SecurityInfo] = []
        for market in Exchange:  # every listed security: its exchange, type and listed shares
            try:
                securities.extend(await self._securities(market, today))
            except SsiError as err:
                log.warning("securities details unavailable", market=market, error=str(err))
        self._symbols_for_reconcile = set(basket.symbols) | {s.symbol for s in securities if s.sec_type == "FU"}
        return Reference(basket=basket, securities=securities, baskets=await self._other_baskets(today))

    async def _other_baskets(self, today: date) -> list[IndexBasket]:
        """The baskets of the other indices with one (HNX30), for their breadth and contributions; an index SSI
        does not answer for is left out (its views fall back to its exchange's stocks)."""
        from ssi_fc_data.model import model

        baskets = []
        for index_id in OTHER_BASKETS:
            try:
                symbols = basket_from_index_components(
                    await self._get("index_components", model.index_components(index_id, 1, 100)))
            except SsiError as err:
                log.warning("index basket unavailable", index_id=index_id, error=str(err))
                continue
            if symbols:
                baskets.append(IndexBasket(index_id=index_id, symbols=symbols, source="ssi", trading_date=today))
        return baskets

    async def _securities(self, market: str, today: date) -> list[SecurityInfo]:
        """All pages of a market's SecuritiesDetails (SSI serves at most 10 pages of 1000)."""
        from ssi_fc_data.model import model

        found: list[SecurityInfo] = []
        for page in range(1, 11):
            response = await self._get("securities_details", model.securities_details(market, "", str(page), "1000"))
            batch = securities_from_details(response, today)
            found.extend(batch)
            pages = rest_rows(response, SecuritiesDetails)
            total = (int(pages[0].TotalNoSym or 0) if pages else 0) or total_records(response)
            if not batch or len(found) >= total:
                break
        return found

    # --- streaming -------------------------------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame | Bar]:
        self._loop = asyncio.get_running_loop()
        for channel in self._channels:
            await self._connect(channel)
            self._watchers.append(asyncio.create_task(self._watch(channel), name=f"ssi-watch-{channel.channel}"))
        while True:
            yield await self._queue.get()

    def _hand_over(self, item: Frame | Bar) -> None:
        """From the websocket thread: wait for room in the queue, so a slow pipeline slows the socket reads."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=60)

    async def _connect(self, channel: ChannelStream) -> None:
        from ssi_fc_data.fc_md_stream import MarketDataStream

        client = await self._ensure_client()
        channel.generation += 1
        channel.closed.clear()

        def on_frame(**frame: Any) -> None:  # every frame, keep-alives included
            channel.last_seen = time.monotonic()
            for item in frame.get("M") or ():
                if isinstance(item, dict) and str(item.get("H", "")).lower() == HUB.lower() \
                        and item.get("M") == "Broadcast":
                    channel.last_broadcast_at = exchange_now()
                    for argument in item.get("A") or ():
                        self.frames_received += 1
                        self._hand_over(argument)

        def start() -> Any:
            stream = MarketDataStream(self._config, client, on_close=channel.closed_callback())
            stream.start(lambda _: None, lambda error: log.warning("ssi error", error=str(error)),
                         channel.channel)
            stream.hub_proxy.client.off("Broadcast", stream._on_message)
            stream.connection.received += on_frame
            return stream

        try:
            channel.stream = await _in_thread(start, f"the stream negotiation for {channel.channel}")
        except SsiError:
            raise
        except Exception as err:  # UnAuthorizedHubError, HubError(status), connection refused ...
            channel.closed.set()
            raise SsiError(f"cannot open SSI stream {channel.channel}: {err!r}") from None
        channel.last_seen = time.monotonic()
        CHANNEL_SILENCE.labels(channel.channel).set_function(lambda: time.monotonic() - channel.last_seen)

    async def _watch(self, channel: ChannelStream) -> None:
        """Rebuild the channel when its socket closed, or when it went silent while the market is open."""
        while True:
            await asyncio.sleep(min(1.0, self.settings.ssi_watchdog_s / 4))
            silent_for = time.monotonic() - channel.last_seen
            if channel.closed.is_set():
                cause = "closed"
            elif silent_for > self.settings.ssi_watchdog_s and self._market_open():
                cause = "silent"
            else:
                continue
            gap_start = channel.last_broadcast_at or exchange_now()
            log.warning("ssi channel lost; reconnecting", channel=channel.channel, cause=cause,
                        silent_s=round(silent_for, 1))
            await self._rebuild(channel, cause)
            await self._reconcile(channel, gap_start)

    async def _rebuild(self, channel: ChannelStream, cause: str) -> None:
        async def reconnect() -> None:
            await asyncio.to_thread(_close, channel.stream)
            self._client = None  # a fresh token for the new connection
            await self._connect(channel)

        await retrying(reconnect, FEED_AWAY, retry_on=(SsiError,), on_failure=lambda err, _, wait: log.warning(
            "ssi reconnect failed", channel=channel.channel, error=str(err), retry_in_s=wait))
        self.reconnects += 1
        RECONNECTS.labels(channel.channel, cause).inc()
        log.info("ssi channel reconnected", channel=channel.channel, reconnects=self.reconnects)

    async def _reconcile(self, channel: ChannelStream, gap_start: datetime) -> None:
        """What SSI's REST can give back for the gap: 1-minute bars of the basket and futures (trades cannot be
        fetched; the classifier counts their volume as unseen from the next trade's TotalVol)."""
        if channel.kind not in ("X", "X-TRADE", "B"):
            return
        from ssi_fc_data.model import model

        since = gap_start.replace(second=0, microsecond=0)
        until = exchange_now()
        day = until.strftime("%d/%m/%Y")
        for symbol in sorted(self._symbols_for_reconcile):
            try:
                response = await self._get("intraday_ohlc",
                                           model.intraday_ohlc(symbol, day, day, 1, 1000, True, 1))
            except SsiError as err:
                log.warning("reconciliation failed", symbol=symbol, error=str(err))
                continue
            for bar in bars_from_intraday(response, symbol, since, until):
                RECONCILED.inc()
                await self._queue.put(bar)

    async def close(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await asyncio.gather(*(asyncio.to_thread(_close, channel.stream) for channel in self._channels))

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "channels": {c.channel: {"silent_s": round(now - c.last_seen, 1), "open": not c.closed.is_set()}
                         for c in self._channels},
            "frames_received": self.frames_received,
            "reconnects": self.reconnects,
        }


def _close(stream: Any) -> None:
    """Close a stream's websocket and let its thread end. The client's own Connection.close() calls a method its
    transport lacks, and a polite WebSocketApp.close() from another thread can leave the reader stuck in select()
    (and a dead peer never answers the close handshake anyway): abort the socket instead."""
    if stream is None:
        return
    transport = getattr(stream.connection, "_Connection__transport", None)
    socket_app = getattr(transport, "_ws", None)
    if socket_app is None:
        return
    socket_app.keep_running = False
    if socket_app.sock is not None:
        with contextlib.suppress(Exception):
            socket_app.sock.abort()
    thread = getattr(transport, "_thread", None)
    if thread is not None:
        thread.join(timeout=5)
