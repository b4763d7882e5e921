"""Who is asking, and whether they may open one more WebSocket.

The client's address is the peer's, unless the peer is a proxy named in GATEWAY_TRUSTED_PROXIES: then it is the
nearest address its `Forwarded` (RFC 7239) or `X-Forwarded-For` header names that is not itself a trusted proxy
(walking from the right, as each proxy appends the one it heard from). A header from anyone else is ignored: a
client cannot choose its own address.

WebSockets are capped per address (WS_MAX_CONNECTIONS_PER_IP) and overall (WS_MAX_CONNECTIONS). A refused handshake
(a wrong token, a foreign Origin, a limit reached) counts against its address: one that has been refused
WS_REFUSALS_PER_MINUTE times within a minute is refused at once (429) until its count falls, so a flood of bad
handshakes costs the gateway a counter, not a handshake each.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from shared.config import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDED_FOR = re.compile(r'for="?\[?([^\]";,]+)\]?(?::\d+)?"?', re.IGNORECASE)
REFUSAL_WINDOW_S = 60.0


def trusted_networks(entries: list[str]) -> list[Network]:
    """GATEWAY_TRUSTED_PROXIES as networks (an address is a network of one); ConfigError naming a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(f"invalid GATEWAY_TRUSTED_PROXIES entry {entry!r}: not an address or network") from None
    return networks


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip('"[]'))
    except ValueError:
        return None


@dataclass
class Admission:
    per_address: int
    total: int
    refusals_per_minute: int
    trusted: list[Network] = field(default_factory=list)
    open: dict[str, int] = field(default_factory=dict)
    open_total: int = 0
    _refusals: dict[str, deque[float]] = field(default_factory=dict)

    def client_address(self, request: web.Request) -> str:
        peer = request.remote or "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        forwarded = request.headers.get("Forwarded")
        hops = (_FORWARDED_FOR.findall(forwarded) if forwarded is not None
                else request.headers.get("X-Forwarded-For", "").split(","))
        for hop in reversed([hop.strip() for hop in hops if hop.strip()]):
            address = _address(hop)
            if address is None:
                return peer  # a hop we cannot read: trust nothing beyond the proxy
            if not self._is_trusted(str(address)):
                return str(address)
        return peer

    def _is_trusted(self, address: str) -> bool:
        parsed = _address(address)
        return parsed is not None and any(parsed in network for network in self.trusted)

    def refused_too_often(self, address: str) -> bool:
        times = self._refusals.get(address)
        if not times:
            return False
        horizon = time.monotonic() - REFUSAL_WINDOW_S
        while times and times[0] < horizon:
            times.popleft()
        if not times:
            del self._refusals[address]
            return False
        return len(times) >= self.refusals_per_minute

    def count_refusal(self, address: str) -> None:
        times = self._refusals.setdefault(address, deque(maxlen=self.refusals_per_minute))
        times.append(time.monotonic())

    def acquire(self, address: str) -> str | None:
        """Take a place for a WebSocket from `address`; the reason it is refused, or None."""
        if self.refused_too_often(address):
            return "refused_too_often"
        if self.open.get(address, 0) >= self.per_address:
            return "per_ip_limit"
        if self.open_total >= self.total:
            return "total_limit"
        self.open[address] = self.open.get(address, 0) + 1
        self.open_total += 1
        return None

    def release(self, address: str) -> None:
        if address not in self.open:
            return
        self.open_total -= 1
        remaining = self.open[address] - 1
        if remaining > 0:
            self.open[address] = remaining
        else:
            del self.open[address]


def is_websocket_path(path: str) -> bool:
    """`/ws` (several channels) or `/ws/<channel>`."""
    return path == "/ws" or path.startswith("/ws/")


CLIENT_ADDRESS = web.RequestKey("client_address", str)  # who is asking (behind trusted proxies), for the handler
REFUSED_HANDSHAKE = web.RequestKey("refused_handshake", bool)  # a handshake refused after it was accepted (token)


def admission_middleware(admission: Admission, refused: Counter) -> Any:
    """For WebSocket handshakes: an address refused too often is refused at once; every refusal (a wrong token, a
    foreign Origin, a limit) counts against the address it came from."""

    @web.middleware
    async def handle(request: web.Request, handler: Any) -> web.StreamResponse:
        if not is_websocket_path(request.path):
            return await handler(request)
        address = admission.client_address(request)
        request[CLIENT_ADDRESS] = address
        if admission.refused_too_often(address):
            refused.labels("refused_too_often").inc()
            return web.json_response({"error": "too many refused handshakes from this address"}, status=429)
        response = await handler(request)
        if request.get(REFUSED_HANDSHAKE) or response.status in (403, 421, 429, 503):
            admission.count_refusal(address)
        return response

    return handle
