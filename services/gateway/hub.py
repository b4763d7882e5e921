"""WebSocket fan-out: one hub per channel; per connected socket a bounded queue and a writer task.

A socket carries one channel (`/ws/<channel>`) or several (`/ws?channels=a,b`, then `{"op": "subscribe" |
"unsubscribe", "channel": "..."}` messages): the dashboard opens one socket per tab. Each channel broadcasts at most
once per WS_THROTTLE_MS: a burst of KV updates becomes one `delta` message holding the latest state of what changed,
encoded once for every client. A client first gets each channel's full state (a `snapshot`), then deltas. A client
whose queue is full loses its queued deltas and is sent a fresh snapshot of every channel it follows instead
(counted), so a slow client never holds the others back nor grows the gateway's memory, and never misses a change
for good; a client stuck longer than WS_SEND_TIMEOUT_S on one send is disconnected.

The filtered channels (`board`, `trades`, `candles`: `services.gateway.topics`) have one hub per distinct
subscription (its `topic`: a board filter's canonical form, or a symbol), shared by every client asking the same and
dropped with its last client: what a topic broadcasts is encoded once for all of its clients.

Messages: {"type": "snapshot" | "delta", "channel": "<name>", "topic": "<subscription>" (filtered channels only),
"seq": <n per channel or topic>, "data": {...}}; a request the gateway cannot follow is answered
{"type": "error", "channel": "<name or empty>", "seq": 0, "data": "<why>"}.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import Counter, Gauge

WS_CLIENTS = Gauge("stocktracker_gateway_ws_clients", "Connected WebSocket clients, by channel", ["channel"])
WS_MESSAGES = Counter("stocktracker_gateway_ws_messages_total", "Messages broadcast, by channel and type",
                      ["channel", "type"])
WS_DROPPED = Counter("stocktracker_gateway_ws_dropped_total",
                     "Queued updates a slow client lost (replaced by a fresh snapshot), by channel", ["channel"])
WS_EVICTED = Counter("stocktracker_gateway_ws_evicted_total", "Clients disconnected for being stuck, by channel",
                     ["channel"])

log = structlog.get_logger("gateway.ws")
_encoder = msgspec.json.Encoder()


MAX_FOLLOWED = 64  # channels and topics one socket may follow at once: a dashboard needs a handful


class Envelope(msgspec.Struct, omit_defaults=True):
    type: str
    channel: str
    seq: int
    data: Any
    topic: str | None = None


class Request(msgspec.Struct, forbid_unknown_fields=True):
    """What a client may ask on its socket: a channel, and for the filtered channels what of it (`board`: symbols,
    group or exchange; `trades`, `candles`: symbol)."""

    op: str
    channel: str
    symbols: list[str] | None = None
    group: str | None = None
    exchange: str | None = None
    symbol: str | None = None


_decode_request = msgspec.json.Decoder(Request).decode


class Topics(Protocol):
    """The filtered channels' hubs, made on demand."""

    channels: frozenset[str]

    def hub_for(self, request: Request) -> ChannelHub | str:
        """The hub serving what the request asks (made when new), or why it cannot be served."""
        ...


@dataclass(eq=False)
class Client:
    """One socket and the channels it follows."""

    socket: web.WebSocketResponse
    queue: asyncio.Queue[tuple[str, bytes]]  # (hub key, message); ("", answer) to it alone; ("", b"") a wake-up
    hubs: dict[str, ChannelHub] = field(default_factory=dict)  # what it follows, by hub key
    needs_snapshot: set[str] = field(default_factory=set)  # hub keys whose full state it is sent next
    writer: asyncio.Task[None] | None = None
    dropped: int = 0

    def follow(self, hub: ChannelHub) -> None:
        if hub.key in self.hubs:
            return
        self.hubs[hub.key] = hub
        hub.clients.add(self)
        WS_CLIENTS.labels(hub.name).inc()
        self.needs_snapshot.add(hub.key)
        self.wake()

    def leave(self, key: str) -> None:
        hub = self.hubs.pop(key, None)
        if hub is not None:
            hub.clients.discard(self)
            WS_CLIENTS.labels(hub.name).dec()
            self.needs_snapshot.discard(key)
            hub.release_if_idle()

    def leave_all(self) -> None:
        for name in list(self.hubs):
            self.leave(name)

    def wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(("", b""))

    def resync(self) -> None:
        """Drop what is queued; send every followed channel's full state instead (it includes what was dropped)."""
        while not self.queue.empty():
            key, message = self.queue.get_nowait()
            if message and key:
                self.dropped += 1
                WS_DROPPED.labels(key.split(":", 1)[0]).inc()
        self.needs_snapshot = set(self.hubs)
        self.wake()


@dataclass
class ChannelHub:
    """The clients of one channel (or of one topic of a filtered channel) and what they are sent."""

    name: str  # the channel
    state: Callable[[], Any]  # the channel's full state
    delta: Callable[[], Any]  # what changed since the last call (None: nothing)
    queue_size: int
    send_timeout_s: float
    topic: str | None = None  # the subscription, on a filtered channel
    on_idle: Callable[[ChannelHub], None] | None = None  # called when its last client leaves
    clients: set[Client] = field(default_factory=set)
    seq: int = 0

    @property
    def key(self) -> str:
        return self.name if self.topic is None else f"{self.name}:{self.topic}"

    def release_if_idle(self) -> None:
        """A topic's hub without clients is dropped (idempotent)."""
        if not self.clients and self.on_idle is not None:
            self.on_idle(self)

    def encode(self, kind: str, data: Any) -> bytes:
        self.seq += 1
        return _encoder.encode(Envelope(kind, self.name, self.seq, data, self.topic))

    def broadcast(self) -> None:
        """Send what changed, once encoded, to every client."""
        delta = self.delta()
        if delta is None or not self.clients:
            return
        message = self.encode("delta", delta)
        WS_MESSAGES.labels(self.name, "delta").inc()
        for client in list(self.clients):
            if self.key in client.needs_snapshot:
                continue  # its writer sends the current full state next, which includes this
            try:
                client.queue.put_nowait((self.key, message))
            except asyncio.QueueFull:
                client.resync()

    async def serve(self, socket: web.WebSocketResponse) -> None:
        """Run one connected client of this channel only until it goes away."""
        await serve(socket, {self.name: self}, [self.name])

    async def close_all(self) -> None:
        for client in list(self.clients):
            await client.socket.close(code=WSCloseCode.GOING_AWAY, message=b"gateway stopping")


async def serve(socket: web.WebSocketResponse, hubs: dict[str, ChannelHub], channels: list[str],
                topics: Topics | None = None) -> None:
    """Run one connected socket until it goes away: following `channels`, then whatever it subscribes to."""
    any_hub = next(iter(hubs.values()))
    client = Client(socket, asyncio.Queue(any_hub.queue_size))
    for name in channels:
        client.follow(hubs[name])
    client.writer = asyncio.create_task(_write(client, any_hub.send_timeout_s), name="ws-writer")
    try:
        async for frame in socket:  # reading also keeps pings/pongs and the close handshake going
            if frame.type == WSMsgType.TEXT:
                _handle(client, hubs, topics, frame.data)
    finally:
        client.leave_all()
        client.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client.writer


def _handle(client: Client, hubs: dict[str, ChannelHub], topics: Topics | None, text: str) -> None:
    try:
        request = _decode_request(text)
    except msgspec.DecodeError:
        _answer_error(client, "", 'expected {"op": "subscribe" | "unsubscribe", "channel": "...", and for board '
                                  '"symbols" | "group" | "exchange", for trades and candles "symbol"}')
        return
    filtered = topics.channels if topics is not None else frozenset()
    if request.channel not in hubs and request.channel not in filtered:
        _answer_error(client, request.channel, f"no such channel; channels: {', '.join([*hubs, *sorted(filtered)])}")
        return
    if request.op not in ("subscribe", "unsubscribe"):
        _answer_error(client, request.channel, f"unknown op {request.op[:32]!r}: subscribe or unsubscribe")
        return
    hub: ChannelHub | str = hubs[request.channel] if request.channel in hubs else topics.hub_for(request)  # type: ignore[union-attr]
    if isinstance(hub, str):
        _answer_error(client, request.channel, hub)
    elif request.op == "unsubscribe":
        client.leave(hub.key)
        hub.release_if_idle()  # when it was made for this request
    elif len(client.hubs) >= MAX_FOLLOWED and hub.key not in client.hubs:
        _answer_error(client, request.channel, f"at most {MAX_FOLLOWED} channels and subscriptions on one socket")
        hub.release_if_idle()
    else:
        client.follow(hub)


def _answer_error(client: Client, channel: str, why: str) -> None:
    WS_MESSAGES.labels(channel or "none", "error").inc()
    with contextlib.suppress(asyncio.QueueFull):  # a client flooding bad requests loses the answers, not memory
        # Queued under no channel: an answer to this client, not a broadcast of a channel it may not follow.
        client.queue.put_nowait(("", _encoder.encode(Envelope("error", channel[:32], 0, why))))


async def _write(client: Client, send_timeout_s: float) -> None:
    socket = client.socket
    try:
        while not socket.closed:
            key, message = await client.queue.get()
            for wanted in sorted(client.needs_snapshot):
                client.needs_snapshot.discard(wanted)
                hub = client.hubs[wanted]
                WS_MESSAGES.labels(hub.name, "snapshot").inc()
                await _send(socket, hub.encode("snapshot", hub.state()), send_timeout_s)
            if message and (not key or key in client.hubs):  # not a channel it left meanwhile
                await _send(socket, message, send_timeout_s)
    except TimeoutError:
        WS_EVICTED.labels(",".join(client.hubs) or "none").inc()
        log.warning("websocket client stuck; disconnecting", channels=list(client.hubs))
        await socket.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
    except (ConnectionResetError, RuntimeError):
        return  # the client went away mid-send


async def _send(socket: web.WebSocketResponse, message: bytes, timeout_s: float) -> None:
    # A text frame (browsers hand it to JSON.parse as is), from the bytes encoded once for everyone.
    await asyncio.wait_for(socket.send_frame(message, WSMsgType.TEXT), timeout_s)
