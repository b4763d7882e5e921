"""The WebSocket hub's back-pressure, with sockets that stall on purpose: a full queue costs a slow client its
queued deltas (counted) and earns it a fresh snapshot; a client stuck on one send is disconnected."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType

from services.gateway.hub import ChannelHub, serve


class StalledSocket:
    """A socket whose sends block until released, like a client that stopped reading."""

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[bytes] = []
        self.release = asyncio.Event()
        self.close_code: int | None = None
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def send_frame(self, message: bytes, opcode: WSMsgType) -> None:
        assert opcode is WSMsgType.TEXT
        await self.release.wait()
        self.sent.append(message)

    async def close(self, code: int, message: bytes) -> None:
        self.closed = True
        self.close_code = code
        self.inbox.put_nowait(None)

    def __aiter__(self) -> StalledSocket:
        return self

    async def __anext__(self) -> Any:
        item = await self.inbox.get()
        if item is None:
            raise StopAsyncIteration
        return item


def hub(changes: list[int], *, queue_size: int = 2, send_timeout_s: float = 5.0) -> ChannelHub:
    state = {"n": 0}

    def delta() -> dict[str, int] | None:
        if not changes:
            return None
        state["n"] = changes.pop(0)
        return {"n": state["n"]}

    return ChannelHub("test", state=lambda: {"full": state["n"]}, delta=delta, queue_size=queue_size,
                      send_timeout_s=send_timeout_s)


async def test_a_full_queue_drops_old_deltas_and_resyncs_with_a_snapshot() -> None:
    changes = list(range(1, 11))
    channel = hub(changes)
    stalled = StalledSocket()
    serving = asyncio.create_task(channel.serve(stalled))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)  # the writer is stuck sending the first snapshot
    for _ in range(10):
        channel.broadcast()
    (client,) = channel.clients
    assert client.queue.qsize() <= 2
    assert client.dropped > 0
    assert client.needs_snapshot
    stalled.release.set()
    await asyncio.sleep(0.05)
    kinds = [msg.split(b'"type":"')[1].split(b'"')[0] for msg in stalled.sent]
    assert kinds[0] == b"snapshot"
    assert kinds[-1] == b"snapshot"  # after the drop, the current full state (n = 10), not stale deltas
    assert b'"full":10' in stalled.sent[-1]
    await stalled.close(1000, b"")
    await serving
    assert not channel.clients


async def test_a_client_stuck_on_one_send_is_disconnected() -> None:
    channel = hub([1], send_timeout_s=0.2)
    stalled = StalledSocket()
    serving = asyncio.create_task(channel.serve(stalled))  # type: ignore[arg-type]
    await asyncio.wait_for(serving, 5)
    assert stalled.closed
    assert stalled.close_code == 1013  # try again later
    assert not channel.clients


class Frame:
    def __init__(self, data: str) -> None:
        self.type = WSMsgType.TEXT
        self.data = data


def named(name: str, changes: list[int]) -> ChannelHub:
    made = hub(changes, queue_size=8)
    made.name = name
    return made


async def test_one_socket_follows_several_channels_and_subscribes_at_will() -> None:
    """The dashboard's socket: a snapshot of each channel it asks for, then their deltas, each message naming its
    channel; a subscription later brings that channel's snapshot, an unsubscription ends its deltas, and a request
    it cannot follow is answered with an error, not a closed socket."""
    hubs = {"market": named("market", [1, 2]), "index": named("index", [5]), "foreign": named("foreign", [7])}
    socket = StalledSocket()
    socket.release.set()
    serving = asyncio.create_task(serve(socket, hubs, ["market", "index"]))  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    for channel in hubs.values():
        channel.broadcast()
    await asyncio.sleep(0.02)
    sent = [json.loads(message) for message in socket.sent]
    assert [(m["type"], m["channel"]) for m in sent] == [
        ("snapshot", "index"), ("snapshot", "market"), ("delta", "market"), ("delta", "index")]
    socket.inbox.put_nowait(Frame('{"op": "subscribe", "channel": "foreign"}'))
    socket.inbox.put_nowait(Frame('{"op": "unsubscribe", "channel": "market"}'))
    socket.inbox.put_nowait(Frame('{"op": "subscribe", "channel": "nope"}'))
    socket.inbox.put_nowait(Frame("not json"))
    await asyncio.sleep(0.02)
    for channel in hubs.values():
        channel.broadcast()  # market's second change: no longer followed
    await asyncio.sleep(0.02)
    later = [json.loads(message) for message in socket.sent[len(sent):]]
    assert [(m["type"], m["channel"]) for m in later] == [
        ("snapshot", "foreign"), ("error", "nope"), ("error", "")]
    assert "no such channel" in later[1]["data"]
    assert {name for name, channel in hubs.items() if channel.clients} == {"index", "foreign"}
    await socket.close(1000, b"")
    await serving
    assert not any(channel.clients for channel in hubs.values())


async def test_a_slow_socket_is_resynced_on_every_channel_it_follows() -> None:
    hubs = {"market": named("market", list(range(1, 30))), "index": named("index", list(range(1, 30)))}
    for channel in hubs.values():
        channel.queue_size = 2
    socket = StalledSocket()
    serving = asyncio.create_task(serve(socket, hubs, ["market", "index"]))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)  # stuck on its first snapshot
    for _ in range(10):
        for channel in hubs.values():
            channel.broadcast()
    (client,) = hubs["market"].clients
    assert client.dropped > 0
    assert client.needs_snapshot == {"market", "index"}
    socket.release.set()
    await asyncio.sleep(0.05)
    last = [json.loads(message) for message in socket.sent[-2:]]
    assert {(m["type"], m["channel"]) for m in last} == {("snapshot", "market"), ("snapshot", "index")}
    await socket.close(1000, b"")
    await serving


class OneTopic:
    """A filtered channel of one topic, its hub made on demand and dropped with its last client."""

    channels = frozenset({"board"})

    def __init__(self, changes: list[int]) -> None:
        self.changes = changes
        self.hub: ChannelHub | None = None
        self.made = 0

    def hub_for(self, request: Any) -> ChannelHub:
        if self.hub is None:
            self.made += 1
            self.hub = named("board", self.changes)
            self.hub.topic = "group=VN30"
            self.hub.on_idle = self._drop
        return self.hub

    def _drop(self, hub: ChannelHub) -> None:
        if self.hub is hub:
            self.hub = None

    def next_phase(self) -> int:
        return 0


def sequence(sent: list[bytes], channel: str) -> list[tuple[str, int, Any]]:
    return [(m["type"], m["seq"], m["data"]) for m in map(json.loads, sent) if m["channel"] == channel]


async def test_a_resubscribed_channel_gets_its_snapshot_and_never_the_deltas_queued_before_it() -> None:
    """Deltas queued while the client was stuck, then an unsubscribe and a subscribe: what follows the new snapshot
    is newer than it, on a channel whose hub lived on and on a topic whose hub was dropped and made again."""
    topics = OneTopic(list(range(1, 30)))
    hubs = {"market": named("market", list(range(1, 30)))}
    socket = StalledSocket()
    serving = asyncio.create_task(serve(socket, hubs, ["market"], topics))  # type: ignore[arg-type]
    socket.inbox.put_nowait(Frame('{"op": "subscribe", "channel": "board", "group": "VN30"}'))
    await asyncio.sleep(0.01)  # stuck on its first snapshot
    for _ in range(3):
        hubs["market"].broadcast()
        assert topics.hub is not None
        topics.hub.broadcast()  # deltas queued behind the stuck send
    for request in ('{"op": "unsubscribe", "channel": "market"}', '{"op": "subscribe", "channel": "market"}',
                    '{"op": "unsubscribe", "channel": "board", "group": "VN30"}',
                    '{"op": "subscribe", "channel": "board", "group": "VN30"}'):
        socket.inbox.put_nowait(Frame(request))
    await asyncio.sleep(0.01)
    assert topics.made == 2  # the topic's hub was dropped with its only client, then made anew
    socket.release.set()
    await asyncio.sleep(0.05)
    market = sequence(socket.sent, "market")
    assert [seq for _, seq, _ in market] == sorted({seq for _, seq, _ in market})  # never an older message later
    assert market[-1][0::2] == ("snapshot", {"full": 3})  # the latest state, no older delta after it
    board = sequence(socket.sent, "board")
    assert board[-1][0] == "snapshot"  # the new hub's: the old hub's queued deltas are not sent after it
    topics.hub.broadcast()  # type: ignore[union-attr]
    hubs["market"].broadcast()
    await asyncio.sleep(0.02)
    assert sequence(socket.sent, "market")[-1][:2] == ("delta", market[-1][1] + 1)
    assert sequence(socket.sent, "board")[-1][:2] == ("delta", board[-1][1] + 1)
    await socket.close(1000, b"")
    await serving
