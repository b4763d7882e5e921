"""The WebSocket hub's back-pressure, with sockets that stall on purpose: a full queue costs a slow client its
queued deltas (counted) and earns it a fresh snapshot; a client stuck on one send is disconnected."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType

from services.gateway.hub import ChannelHub


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
