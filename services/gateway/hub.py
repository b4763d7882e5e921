"""WebSocket fan-out: one hub per channel, a bounded queue and a writer task per client.

Each channel broadcasts at most once per WS_THROTTLE_MS: a burst of KV updates becomes one `delta` message holding
the latest state of what changed, encoded once for every client. A client first gets the channel's full state (a
`snapshot`), then deltas. A client whose queue is full loses its queued deltas and is sent a fresh snapshot instead
(counted), so a slow client never holds the others back nor grows the gateway's memory, and never misses a change
for good; a client stuck longer than WS_SEND_TIMEOUT_S on one send is disconnected.

Messages: {"type": "snapshot" | "delta", "channel": "<name>", "seq": <n per channel>, "data": {...}}.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


class Envelope(msgspec.Struct):
    type: str
    channel: str
    seq: int
    data: Any


@dataclass(eq=False)
class Client:
    socket: web.WebSocketResponse
    queue: asyncio.Queue[bytes]
    needs_snapshot: bool = True
    writer: asyncio.Task[None] | None = None
    dropped: int = 0


@dataclass
class ChannelHub:
    """The clients of one channel and what they are sent."""

    name: str
    state: Callable[[], Any]  # the channel's full state
    delta: Callable[[], Any]  # what changed since the last call (None: nothing)
    queue_size: int
    send_timeout_s: float
    clients: set[Client] = field(default_factory=set)
    seq: int = 0

    def encode(self, kind: str, data: Any) -> bytes:
        self.seq += 1
        return _encoder.encode(Envelope(kind, self.name, self.seq, data))

    def broadcast(self) -> None:
        """Send what changed, once encoded, to every client."""
        delta = self.delta()
        if delta is None or not self.clients:
            return
        message = self.encode("delta", delta)
        WS_MESSAGES.labels(self.name, "delta").inc()
        for client in self.clients:
            if client.needs_snapshot:
                continue  # its writer sends the current full state next, which includes this
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._resync(client)

    def _resync(self, client: Client) -> None:
        dropped = client.queue.qsize()
        while not client.queue.empty():
            client.queue.get_nowait()
        client.dropped += dropped
        WS_DROPPED.labels(self.name).inc(dropped)
        client.needs_snapshot = True
        client.queue.put_nowait(b"")  # wake the writer: it sends a snapshot

    async def serve(self, socket: web.WebSocketResponse) -> None:
        """Run one connected client until it goes away."""
        client = Client(socket, asyncio.Queue(self.queue_size))
        client.queue.put_nowait(b"")
        self.clients.add(client)
        WS_CLIENTS.labels(self.name).inc()
        client.writer = asyncio.create_task(self._write(client), name=f"ws-{self.name}-writer")
        try:
            async for _ in socket:  # clients only listen; reading keeps pings/pongs and the close handshake going
                pass
        finally:
            self.clients.discard(client)
            WS_CLIENTS.labels(self.name).dec()
            client.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client.writer

    async def _write(self, client: Client) -> None:
        socket = client.socket
        try:
            while not socket.closed:
                message = await client.queue.get()
                if client.needs_snapshot:
                    client.needs_snapshot = False
                    message = self.encode("snapshot", self.state())
                    WS_MESSAGES.labels(self.name, "snapshot").inc()
                if not message:
                    continue
                # A text frame (browsers hand it to JSON.parse as is), from the bytes encoded once for everyone.
                await asyncio.wait_for(socket.send_frame(message, WSMsgType.TEXT), self.send_timeout_s)
        except TimeoutError:
            WS_EVICTED.labels(self.name).inc()
            log.warning("websocket client stuck; disconnecting", channel=self.name)
            await socket.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
        except (ConnectionResetError, RuntimeError):
            return  # the client went away mid-send

    async def close_all(self) -> None:
        for client in list(self.clients):
            await client.socket.close(code=WSCloseCode.GOING_AWAY, message=b"gateway stopping")
