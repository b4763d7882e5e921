"""WebSocket fan-out: one hub per channel; per connected socket a bounded queue and a writer task.

A socket carries one channel (`/ws/<channel>`) or several (`/ws?channels=a,b`, then `{"op": "subscribe" |
"unsubscribe", "channel": "..."}` messages): the dashboard opens one socket per tab. Each channel broadcasts at most
once per WS_THROTTLE_MS: a burst of KV updates becomes one `delta` message holding the latest state of what changed,
encoded once for every client. A client first gets each channel's full state (a `snapshot`), then deltas. A client
whose queue is full loses its queued deltas and is sent a fresh snapshot of every channel it follows instead
(counted), so a slow client never holds the others back nor grows the gateway's memory, and never misses a change
for good; a client that cannot take what is queued for it within WS_SEND_TIMEOUT_S is disconnected.

The filtered channels (`board`, `trades`, `candles`: `services.gateway.topics`) have one hub per distinct
subscription (its `topic`: a board filter's canonical form, or a symbol), shared by every client asking the same and
dropped with its last client: what a topic broadcasts is encoded once for all of its clients. Their sockets are
served in WS_PHASES groups, each group's turn a fraction of the throttle interval after the previous one: every
client still gets at most a message per topic per interval, but the gateway writes to a group at a time, not to all
at once, so the last client of a turn waits for a fraction of the sockets, not for all of them.

Messages: {"type": "snapshot" | "delta", "channel": "<name>", "topic": "<subscription>" (filtered channels only),
"seq": <n>, "data": {...}}: a client's messages of one channel or topic come in increasing `seq` (with gaps where
a message went to other clients only: a snapshot, another phase's delta); a request the gateway cannot follow is
answered {"type": "error", "channel": "<name or empty>", "seq": 0, "data": "<why>"}.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

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

    def next_phase(self) -> int:
        """The phase a new socket's filtered channels are served in (the sockets spread evenly over them)."""
        ...


class Queued(NamedTuple):
    """One message waiting in a client's queue: a hub's broadcast (`hub`, the `seq` it carries), or, without a hub,
    an answer to that client alone (an empty one only wakes its writer)."""

    hub: ChannelHub | None
    seq: int
    message: bytes


_WAKE_UP = Queued(None, 0, b"")


@dataclass(eq=False)
class Client:
    """One socket and the channels it follows."""

    socket: web.WebSocketResponse
    queue: asyncio.Queue[Queued]
    hubs: dict[str, ChannelHub] = field(default_factory=dict)  # what it follows, by hub key
    needs_snapshot: set[str] = field(default_factory=set)  # hub keys whose full state it is sent next
    sent_seq: dict[str, int] = field(default_factory=dict)  # per followed hub key: the seq it was sent last
    phase: int = 0  # which of the throttle interval's phases serves its filtered channels
    writer: asyncio.Task[None] | None = None
    dropped: int = 0

    def follow(self, hub: ChannelHub) -> None:
        if self.hubs.get(hub.key) is hub:
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
            self.sent_seq.pop(key, None)
            hub.release_if_idle()

    def leave_all(self) -> None:
        for name in list(self.hubs):
            self.leave(name)

    def wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_WAKE_UP)

    def resync(self) -> None:
        """Drop what is queued; send every followed channel's full state instead (it includes what was dropped)."""
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            if queued.hub is not None:
                self.dropped += 1
                WS_DROPPED.labels(queued.hub.name).inc()
        self.needs_snapshot = set(self.hubs)
        self.wake()

    def is_due(self, queued: Queued) -> bool:
        """Whether a queued broadcast is still to be sent: from a hub it follows (not one it left, nor an earlier hub
        of the same topic), newer than the last message of that hub it was sent (a snapshot sent meanwhile holds
        it already)."""
        hub = queued.hub
        return hub is not None and self.hubs.get(hub.key) is hub and queued.seq > self.sent_seq.get(hub.key, 0)


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

    def snapshot(self) -> tuple[int, bytes]:
        """The full state, as the next message: (its seq, the message)."""
        WS_MESSAGES.labels(self.name, "snapshot").inc()
        message = self.encode("snapshot", self.state())
        return self.seq, message

    def broadcast(self, phase: int | None = None) -> None:
        """Send what changed, once encoded, to every client, or (a filtered channel's topic) to its clients of one
        phase (its `delta` then holds what changed since that phase's last turn)."""
        clients = list(self.clients) if phase is None else [c for c in self.clients if c.phase == phase]
        delta = self.delta() if clients or phase is None else None  # a channel's delta is taken even unsent
        if delta is None or not clients:
            return
        message = self.encode("delta", delta)
        queued = Queued(self, self.seq, message)
        WS_MESSAGES.labels(self.name, "delta").inc()
        for client in clients:
            if self.key in client.needs_snapshot:
                continue  # its writer sends the current full state next, which includes this
            try:
                client.queue.put_nowait(queued)
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
    client = Client(socket, asyncio.Queue(any_hub.queue_size), phase=topics.next_phase() if topics else 0)
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
        # Queued under no hub: an answer to this client, not a broadcast of a channel it may not follow.
        client.queue.put_nowait(Queued(None, 0, _encoder.encode(Envelope("error", channel[:32], 0, why))))


async def _write(client: Client, send_timeout_s: float) -> None:
    """The client's writer: at each wake-up, the full state of what it newly follows (or must resync), then all that
    is queued, in order, in one go: a burst of frames written under one deadline, without a task or a timer per
    message (a write only waits while the peer is not reading)."""
    socket = client.socket
    try:
        while not socket.closed:
            burst = [await client.queue.get()]
            while not client.queue.empty():
                burst.append(client.queue.get_nowait())
            async with asyncio.timeout(send_timeout_s):
                for wanted in sorted(client.needs_snapshot):
                    client.needs_snapshot.discard(wanted)
                    client.sent_seq[wanted], message = client.hubs[wanted].snapshot()
                    await _send(socket, message)
                for queued in burst:
                    if queued.hub is None:
                        if queued.message:
                            await _send(socket, queued.message)
                    elif client.is_due(queued):
                        client.sent_seq[queued.hub.key] = queued.seq
                        await _send(socket, queued.message)
    except TimeoutError:
        WS_EVICTED.labels(",".join(client.hubs) or "none").inc()
        log.warning("websocket client stuck; disconnecting", channels=list(client.hubs))
        await socket.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
    except (ConnectionResetError, RuntimeError):
        return  # the client went away mid-send


async def _send(socket: web.WebSocketResponse, message: bytes) -> None:
    # A text frame (browsers hand it to JSON.parse as is), from the bytes encoded once for everyone.
    await socket.send_frame(message, WSMsgType.TEXT)
