"""Who is asking, and whether they may open one more WebSocket: the client's address behind trusted proxies only,
limits per address and overall, and refused handshakes counted against their address."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from nats.aio.client import Client
from test_gateway import Running, gateway

from services.gateway.admission import Admission, trusted_networks
from shared import config
from shared.config import ConfigError


class _Peer:
    def __init__(self, peer: str, headers: dict[str, str]) -> None:
        self.remote = peer
        self.headers = headers


PROXIES = trusted_networks(["10.0.0.0/8", "192.0.2.1"])


@pytest.mark.parametrize(("peer", "headers", "client"), [
    ("203.0.113.9", {}, "203.0.113.9"),
    ("203.0.113.9", {"X-Forwarded-For": "1.2.3.4"}, "203.0.113.9"),  # not a proxy of ours: its header is ignored
    ("10.1.2.3", {"X-Forwarded-For": "198.51.100.7"}, "198.51.100.7"),
    ("10.1.2.3", {"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.9.9.9"}, "198.51.100.7"),  # the nearest untrusted
    ("192.0.2.1", {"Forwarded": 'for=198.51.100.7;proto=https, for="[2001:db8::1]:4711"'}, "2001:db8::1"),
    ("192.0.2.1", {"Forwarded": "for=198.51.100.7", "X-Forwarded-For": "6.6.6.6"}, "198.51.100.7"),
    ("10.1.2.3", {"X-Forwarded-For": "not-an-address"}, "10.1.2.3"),  # unreadable: nothing beyond the proxy
    ("10.1.2.3", {"X-Forwarded-For": "10.4.4.4"}, "10.1.2.3"),  # proxies all the way: the peer
])
def test_the_client_address_behind_trusted_proxies_only(peer: str, headers: dict[str, str], client: str) -> None:
    admission = Admission(10, 100, 30, PROXIES)
    assert admission.client_address(_Peer(peer, headers)) == client  # type: ignore[arg-type]


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    admission = Admission(10, 100, 30, [])
    assert admission.client_address(_Peer("10.1.2.3", {"X-Forwarded-For": "1.2.3.4"})) == "10.1.2.3"  # type: ignore


def test_a_bad_proxy_entry_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_TRUSTED_PROXIES"):
        trusted_networks(["10.0.0.0/8", "proxy.example"])


def test_limits_per_address_and_overall() -> None:
    admission = Admission(per_address=2, total=3, refusals_per_minute=30)
    assert admission.acquire("a") is None
    assert admission.acquire("a") is None
    assert admission.acquire("a") == "per_ip_limit"
    assert admission.acquire("b") is None
    assert admission.acquire("c") == "total_limit"
    admission.release("a")
    assert admission.acquire("c") is None
    for address in ("a", "b", "c", "unknown"):
        admission.release(address)
    admission.release("a")
    assert (admission.open, admission.open_total) == ({}, 0)


def test_an_address_refused_too_often_is_refused_at_once() -> None:
    admission = Admission(per_address=2, total=3, refusals_per_minute=3)
    for _ in range(3):
        assert not admission.refused_too_often("a")
        admission.count_refusal("a")
    assert admission.refused_too_often("a")
    assert admission.acquire("a") == "refused_too_often"
    assert admission.acquire("b") is None  # another address is not affected


@pytest.fixture
async def served(nc: Client, settings: config.Settings) -> AsyncIterator[Running]:
    async with gateway(settings, ws_refusals_per_minute=5, ws_max_connections=3,
                       gateway_trusted_proxies=["127.0.0.1"]) as running:
        yield running


async def _handshake(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status


async def test_refused_handshakes_count_against_their_address(served: Running) -> None:
    url = f"{served.url}/ws/market"
    for _ in range(5):  # a foreign page's handshakes, through our proxy on loopback
        assert await _handshake(url, Origin="http://evil.example", **{"X-Forwarded-For": "198.51.100.7"}) == 403
    assert await _handshake(url, **{"X-Forwarded-For": "198.51.100.7"}) == 429  # now refused at once
    assert await _handshake(url, **{"X-Forwarded-For": "198.51.100.8"}) == 101  # its neighbour is not


async def test_the_overall_cap(served: Running) -> None:
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(f"{served.url}/ws/market", headers={"X-Forwarded-For": f"198.51.100.{n}"})
                   for n in range(3)]
        try:
            assert await _handshake(f"{served.url}/ws/market", **{"X-Forwarded-For": "198.51.100.99"}) == 503
        finally:
            for socket in sockets:
                await socket.close()
