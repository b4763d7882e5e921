"""What a browser page may make the gateway do: answers only to its own host names (DNS rebinding), WebSockets and
anything but reads only from its own pages or an allowed origin, and security headers on every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from nats.aio.client import Client
from test_gateway import Running, gateway

from services.gateway.api import SECURITY_HEADERS, authority, host_name
from shared import config

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(nc: Client, settings: config.Settings) -> AsyncIterator[Running]:
    async with gateway(settings) as running:
        yield running


async def _get(url: str, **headers: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers, allow_redirects=False) as response:
        await response.read()
        return response.status, dict(response.headers)


async def _handshake(url: str, **headers: str) -> tuple[int, dict[str, str]]:
    """The status of a WebSocket handshake (101 when accepted) and its headers."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url.replace("http", "ws", 1), headers=headers) as socket:
                return 101, dict(socket._response.headers)
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status, dict(refused.headers or {})


def test_host_names_and_authorities() -> None:
    assert host_name("127.0.0.1:8080") == "127.0.0.1"
    assert host_name("[::1]:8080") == "::1"
    assert host_name("LocalHost.") == "localhost"
    assert host_name("::1") == "::1"
    assert authority("Board.Example:443") == "board.example"
    assert authority("localhost:8080") == "localhost:8080"


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css", "/api/market/snapshot", "/healthz",
                                  "/api/openapi.json", "/no/such/path", "/api/history/ticks?symbol=ACB&date=x"])
async def test_every_answer_carries_the_security_headers(served: Running, path: str) -> None:
    _, headers = await _get(served.url + path)
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]


async def test_a_websocket_handshake_carries_them_too(served: Running) -> None:
    status, headers = await _handshake(f"{served.url}/ws/market")
    assert status == 101
    assert headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", "[::2]"])
async def test_an_unknown_host_name_is_refused_everywhere(served: Running, host: str) -> None:
    for path in ("/", "/api/market/snapshot", "/healthz"):
        status, _ = await _get(served.url + path, Host=host)
        assert status == 421, path
    status, _ = await _handshake(f"{served.url}/ws/market", Host=host)
    assert status == 421


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1", "[::1]:8080", "LOCALHOST."])
async def test_loopback_names_are_answered_by_default(served: Running, host: str) -> None:
    status, _ = await _get(f"{served.url}/api/market/snapshot", Host=host)
    assert status == 200


async def test_allowed_hosts_are_configurable(nc: Client, settings: config.Settings) -> None:
    async with gateway(settings, gateway_allowed_hosts=["board.example"]) as running:
        assert (await _get(f"{running.url}/", Host="board.example"))[0] == 200
        assert (await _get(f"{running.url}/", Host="localhost"))[0] == 421
    async with gateway(settings, gateway_allowed_hosts=["*"]) as running:
        assert (await _get(f"{running.url}/", Host="anything.example"))[0] == 200


async def test_a_websocket_from_another_sites_page_is_refused(served: Running) -> None:
    own = served.url  # the dashboard's own origin: http://127.0.0.1:<port>
    assert (await _handshake(f"{own}/ws/market", Origin=own))[0] == 101
    assert (await _handshake(f"{own}/ws/market"))[0] == 101  # no Origin: not a browser (a token guards those)
    for foreign in ("http://evil.example", "null", own.replace("127.0.0.1", "localhost"), own + "1"):
        assert (await _handshake(f"{own}/ws/foreign", Origin=foreign))[0] == 403, foreign


async def test_allowed_origins_may_open_websockets(nc: Client, settings: config.Settings) -> None:
    async with gateway(settings, gateway_cors_origins=["https://board.example"]) as running:
        assert (await _handshake(f"{running.url}/ws/market", Origin="https://board.example"))[0] == 101
        assert (await _handshake(f"{running.url}/ws/market", Origin="https://other.example"))[0] == 403


async def test_anything_but_a_read_from_another_origin_is_refused(served: Running) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{served.url}/api/market/snapshot", headers={"Origin": "http://evil.example"}) as answer:
            assert answer.status == 403
        async with http.post(f"{served.url}/api/market/snapshot", headers={"Origin": served.url}) as answer:
            assert answer.status == 405  # its own origin gets as far as the route (which takes no POST)
        async with http.get(f"{served.url}/api/market/snapshot", headers={"Origin": "http://evil.example"}) as answer:
            assert answer.status == 200  # a read: CORS keeps its answer from the other page
            assert "Access-Control-Allow-Origin" not in answer.headers
