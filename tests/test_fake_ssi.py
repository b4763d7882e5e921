"""The real ssi-fc-data 2.2.2 client against FakeSsi.

These tests prove the fake speaks SSI's protocol well enough for the real client. They also pin down the client
behaviour the production adapter has to live with: blocking calls, callbacks from a websocket thread, on_close firing
twice, a close() that does not work, and a bearer token printed to stdout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from types import SimpleNamespace
from typing import Any, TypeAlias, TypeVar

import aiohttp
import pytest
from fake_ssi import HUB, REST_AUTH_FAILURE, FakeSsi
from helpers import eventually
from ssi_fc_data.fc_md_client import MarketDataClient
from ssi_fc_data.fc_md_stream import MarketDataStream
from ssi_fc_data.model import model
from ssi_fc_data.signalr.hubs.errors import UnAuthorizedHubError

KEEPALIVE_S = 0.2
TRADE = {"DataType": "X-TRADE", "Content": json.dumps({"Symbol": "FPT", "LastPrice": 120000.0, "LastVol": 100.0})}
QUOTE = {"DataType": "X-QUOTE", "Content": json.dumps({"Symbol": "ACB", "BidPrice1": 22900.0})}
INDEX = {"DataType": "MI", "Content": json.dumps({"IndexId": "VN30", "IndexValue": 1350.5})}


def ssi_config(fake: FakeSsi, *, secret: str = "test-secret") -> SimpleNamespace:
    """The client reads its settings as attributes, so a dict will not do."""
    return SimpleNamespace(
        consumerID="test-id", consumerSecret=secret, url=fake.url, stream_url=fake.url, auth_type="Bearer"
    )


def bar(symbol: str, time: str, close: str) -> dict[str, str]:
    """One IntradayOhlc row in SSI's shape: every number is a string, and Value is the close."""
    return {
        "Symbol": symbol,
        "Value": close,
        "TradingDate": "20/07/2026",
        "Time": time,
        "Open": close,
        "High": close,
        "Low": close,
        "Close": close,
        "Volume": "1000",
    }


class StreamProbe:
    """A real MarketDataStream whose callbacks are bridged into asyncio queues.

    The client calls on_message, on_error and on_close from its websocket thread, so each callback hands its argument
    to the event loop with call_soon_threadsafe. This is what the production adapter has to do too.
    """

    def __init__(self, config: SimpleNamespace, client: MarketDataClient) -> None:
        self._loop = asyncio.get_running_loop()
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[str] = asyncio.Queue()
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # every raw frame, keep-alives included
        self.closes: asyncio.Queue[None] = asyncio.Queue()
        self.stream = MarketDataStream(config, client, on_close=partial(self._bridge, self.closes, None))

    def _bridge(self, queue: asyncio.Queue[Any], item: Any) -> None:
        self._loop.call_soon_threadsafe(queue.put_nowait, item)

    async def start(self, channel: str) -> None:
        """start() negotiates with a blocking HTTP call, so it runs in a worker thread."""
        await asyncio.to_thread(
            self.stream.start, partial(self._bridge, self.messages), partial(self._bridge, self.errors), channel
        )
        # The library drops keep-alives before on_message; hooking the connection sees every frame (docs/ssi.md,
        # "Connection and streaming").
        self.stream.connection.received += lambda **frame: self._bridge(self.frames, frame)

    @property
    def thread(self) -> threading.Thread:
        return self.stream.connection._Connection__transport._thread

    async def close(self) -> None:
        """End the stream's thread, whatever state the link is in, and wait for it.

        The library offers no working way to do this. Connection.close() raises AttributeError, and the transport's
        stop() does nothing because the transport never reaches its `connected` state. WebSocketApp.close() from
        another thread sometimes leaves the thread blocked forever in select() on the closed socket, and a polite
        close handshake cannot finish on a dead link. So stop the run loop and shut the socket down under it: the
        thread wakes, tears down, fires on_close once and ends.
        """
        app = self.stream.connection._Connection__transport._ws
        app.keep_running = False
        if app.sock is not None:
            app.sock.abort()
        await asyncio.to_thread(self.thread.join, 5)


OpenStream: TypeAlias = Callable[[str], Awaitable[StreamProbe]]
T = TypeVar("T")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSsi]:
    async with FakeSsi(keepalive_s=KEEPALIVE_S) as server:
        yield server


@pytest.fixture
async def open_stream(fake: FakeSsi) -> AsyncIterator[OpenStream]:
    """Opens real streams, each with its own client, and closes them all when the test ends."""
    probes: list[StreamProbe] = []

    async def open_(channel: str) -> StreamProbe:
        config = ssi_config(fake)
        client = await asyncio.to_thread(MarketDataClient, config)
        probe = StreamProbe(config, client)
        await probe.start(channel)
        probes.append(probe)
        return probe

    yield open_
    for probe in probes:
        await probe.close()


async def next_item(queue: asyncio.Queue[T], timeout: float = 5.0) -> T:
    return await asyncio.wait_for(queue.get(), timeout)


def drain(queue: asyncio.Queue[T]) -> list[T]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def collect(queue: asyncio.Queue[T], seconds: float) -> list[T]:
    """Everything that arrives on `queue` in the next `seconds`."""
    await asyncio.sleep(seconds)
    return drain(queue)


async def test_client_gets_a_token_and_reads_rest_in_ssi_shapes(fake: FakeSsi) -> None:
    fake.index_components["VN30"] = ["ACB", "FPT", "VNM"]
    fake.securities_details = [{"Symbol": "FPT", "MarketId": "HOSE", "LotSize": "100"}, {"Symbol": "ACB"}]
    fake.intraday_bars = [
        bar("FPT", "09:15:42", "120000"),
        bar("ACB", "09:15:10", "22900"),
        bar("FPT", "09:16:05", "120100"),
    ]

    client = await asyncio.to_thread(MarketDataClient, ssi_config(fake))
    assert fake.token_requests == 1
    [token] = fake.tokens_issued
    payload = token.split(".")[1]
    assert not set(payload) & {"-", "_"}  # the client decodes it with standard base64
    assert json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))["exp"] > 2_000_000_000

    basket = await asyncio.to_thread(client.index_components, None, model.index_components("VN30", 1, 100))
    assert [c["StockSymbol"] for c in basket["data"][0]["IndexComponent"]] == ["ACB", "FPT", "VNM"]
    assert (basket["status"], basket["totalRecord"], basket["data"][0]["TotalSymbolNo"]) == ("Success", 1, "3")

    details = await asyncio.to_thread(client.securities_details, None, model.securities_details("HOSE", "FPT"))
    assert details["data"][0]["RepeatedInfo"] == [fake.securities_details[0]]

    bars = await asyncio.to_thread(client.intraday_ohlc, None, model.intraday_ohlc("FPT", "20/07/2026", "20/07/2026"))
    assert bars["data"] == [fake.intraday_bars[0], fake.intraday_bars[2]]
    assert bars["totalRecord"] == 2
    second_page = model.intraday_ohlc("FPT", "20/07/2026", "20/07/2026", pageIndex=2, pageSize=1)
    paged = await asyncio.to_thread(client.intraday_ohlc, None, second_page)
    assert (paged["data"], paged["totalRecord"]) == ([fake.intraday_bars[2]], 2)

    assert [name for name, _ in fake.rest_requests] == [
        "IndexComponents",
        "SecuritiesDetails",
        "IntradayOhlc",
        "IntradayOhlc",
    ]
    assert fake.rest_requests[0][1] == {"indexCode": "VN30", "pageIndex": "1", "pageSize": "100"}
    assert fake.token_requests == 1  # the token is cached
    assert fake.auth_failures == 0

    await asyncio.to_thread(MarketDataClient, ssi_config(fake))
    assert len(set(fake.tokens_issued)) == 2


async def test_bad_credentials_raise_name_error_with_the_servers_message(fake: FakeSsi) -> None:
    with pytest.raises(NameError, match="The connection is invalid"):
        await asyncio.to_thread(MarketDataClient, ssi_config(fake, secret="wrong"))
    assert fake.token_requests == 1
    assert fake.tokens_issued == []


async def test_requests_without_a_valid_token_are_refused(fake: FakeSsi) -> None:
    async with FakeSsi() as other:
        stranger = await asyncio.to_thread(MarketDataClient, ssi_config(other))
        stream = MarketDataStream(ssi_config(fake), stranger)  # a token `fake` never issued
        with pytest.raises(UnAuthorizedHubError):  # raised by start() itself, from the negotiate call
            await asyncio.to_thread(stream.start, print, print, "X:ALL")

    async with aiohttp.ClientSession() as http, http.get(f"{fake.url}api/v2/Market/IndexComponents") as response:
        assert response.status == 200  # SSI refuses in the body, not with the HTTP status
        assert await response.json() == REST_AUTH_FAILURE
    assert fake.auth_failures == 2
    assert fake.connections_total == 0


async def test_stream_subscribes_and_delivers_pushed_frames_in_order(fake: FakeSsi, open_stream: OpenStream) -> None:
    probe = await open_stream("X:ALL")
    await fake.wait_for_clients()
    assert fake.subscriptions == ["X:ALL"]
    assert (fake.connected, fake.connections_total) == (1, 1)

    await fake.push(TRADE, json.dumps(QUOTE), json.dumps(INDEX).encode())
    assert [await next_item(probe.messages) for _ in range(3)] == [TRADE, QUOTE, INDEX]
    broadcasts: list[Any] = []

    def all_three() -> bool:  # the raw frames come through a queue of their own, maybe a moment later
        broadcasts.extend(frame for frame in drain(probe.frames) if "C" in frame and frame["M"])
        return len(broadcasts) >= 3

    await eventually(all_three, timeout=5)
    assert [frame["M"] for frame in broadcasts] == [
        [{"H": HUB, "M": "Broadcast", "A": [json.dumps(payload)]}] for payload in (TRADE, QUOTE, INDEX)
    ]

    await fake.push_error("Invalid channel")
    assert await next_item(probe.errors) == "Invalid channel"


async def test_keepalives_flow_and_stop_while_silent(fake: FakeSsi, open_stream: OpenStream) -> None:
    probe = await open_stream("X:ALL")
    await fake.wait_for_clients()
    drain(probe.frames)
    assert 3 <= (await collect(probe.frames, 5 * KEEPALIVE_S)).count({}) <= 6

    fake.go_silent()
    await asyncio.sleep(0.05)  # let a keep-alive already on the wire land
    drain(probe.frames)
    await fake.push(TRADE)  # lost, as on a dead link
    assert await collect(probe.frames, 3 * KEEPALIVE_S) == []
    assert probe.messages.empty()
    assert probe.closes.empty()  # the client cannot tell
    assert fake.connected == 1

    fake.speak_again()
    assert {} in await collect(probe.frames, 3 * KEEPALIVE_S)


async def test_server_drop_fires_on_close_and_a_new_stream_can_connect(fake: FakeSsi, open_stream: OpenStream) -> None:
    first = await open_stream("X:ALL")
    await fake.wait_for_clients()
    await fake.drop_connections()
    await next_item(first.closes)
    await asyncio.to_thread(first.thread.join, 5)
    assert not first.thread.is_alive()  # no automatic reconnect: the thread is simply gone
    await asyncio.sleep(0)  # deliver callbacks still in flight from the thread
    assert len(drain(first.closes)) <= 1  # on_close fires once or twice
    assert fake.connected == 0

    second = await open_stream("X:ALL")
    await fake.wait_for_clients()
    assert fake.connections_total == 2
    assert fake.subscriptions == ["X:ALL", "X:ALL"]
    await fake.push(TRADE)
    assert await next_item(second.messages) == TRADE


async def test_only_aborting_its_socket_closes_a_stream(fake: FakeSsi, open_stream: OpenStream) -> None:
    probe = await open_stream("X:ALL")
    await fake.wait_for_clients()
    with pytest.raises(AttributeError):
        probe.stream.connection.close()

    fake.go_silent()  # even on a dead link, as when a watchdog gives up on it
    await probe.close()
    assert not probe.thread.is_alive()
    await next_item(probe.closes)
    assert drain(probe.closes) == []  # once only when we close, unlike a server drop
    for _ in range(100):  # the server side notices a moment later
        if not fake.connected:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the server still counts the closed stream as connected")


async def test_bad_frame_fires_on_close_but_the_stream_goes_on(fake: FakeSsi, open_stream: OpenStream) -> None:
    probe = await open_stream("X:ALL")
    await fake.wait_for_clients()
    await fake.push("not json", TRADE)
    await next_item(probe.closes)  # the library reports any exception in a frame's handling as a close...
    assert await next_item(probe.messages) == TRADE  # ...yet the socket stays open and frames keep coming
    assert probe.thread.is_alive()


async def test_client_prints_the_bearer_token_to_stdout(
    fake: FakeSsi, open_stream: OpenStream, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production adapter must silence this (e.g. redirect stdout around start()), or the token ends up in logs."""
    import builtins

    from ssi_fc_data.signalr.transports import _transport

    # The library as it comes: the live adapter, if a test in this process started one, silenced it for good.
    monkeypatch.setattr(_transport, "print", builtins.print, raising=False)
    await open_stream("X:ALL")
    assert f"Bearer {fake.tokens_issued[-1]}" in capfd.readouterr().out
