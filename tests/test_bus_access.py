"""Least privilege on the bus, against a real nats-server running the deployment's users and permissions
(deploy/nats/auth.conf, rendered from shared/access.py): no client without credentials, and each service's user may
write only what that service produces, never another's subjects, KV keys or checkpoint, and never delete a stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from launcher.local import NatsServer
from shared import bus, config
from shared.access import OPERATOR, SERVICES, USERS

pytestmark = pytest.mark.integration
PASSWORDS = {user: f"password-of-{user}" for user in USERS}


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("secured") / "store", passwords=PASSWORDS)
    url = server.start()
    operator = await bus.connect(_as(url, OPERATOR), "tests")
    await bus.ensure_topology(operator.jetstream(), _as(url, OPERATOR))
    await operator.close()
    yield url
    server.stop()


def _as(url: str, user: str | None, password: str | None = None, **more: str) -> config.Settings:
    settings = {"NATS_URL": url, "NATS_CONNECT_TIMEOUT_S": "20", **more}
    if user:
        settings |= {"NATS_USER": user, "NATS_PASSWORD": password or PASSWORDS[user]}
    return config.load(settings)


class Client:
    """A connection as one user, telling which of its publishes the server refused."""

    def __init__(self, nc: Any, refused: list[str]) -> None:
        self.nc, self.refused = nc, refused

    async def may_publish(self, subject: str) -> bool:
        self.refused.clear()
        await self.nc.publish(subject, b"{}")
        await self.nc.flush()  # the server answers in order: a refusal of the publish comes before the flush's PONG,
        await asyncio.sleep(0.02)  # and the client hands it to its error callback as it reads it (given a moment)
        await self.nc.flush()
        return not self.refused


async def _client(url: str, user: str) -> Client:
    refused: list[str] = []

    async def on_error(err: Exception) -> None:
        if "permissions violation" in str(err).lower():
            refused.append(str(err))

    nc = await nats.connect(url, user=user, password=PASSWORDS[user], error_cb=on_error)
    return Client(nc, refused)


async def test_a_client_without_credentials_is_refused_at_once(secured: str) -> None:
    started = time.monotonic()
    with pytest.raises(bus.BusError, match="refused a client without credentials") as refused:
        await bus.connect(_as(secured, None), "anonymous")
    assert not refused.value.restartable  # a configuration error: exit 78, never restarted
    assert time.monotonic() - started < 10  # not after NATS_CONNECT_TIMEOUT_S of retries


async def test_a_wrong_password_is_refused(secured: str) -> None:
    with pytest.raises(bus.BusError, match="refused user 'classifier'") as refused:
        await bus.connect(_as(secured, "classifier", "not-the-password"), "classifier")
    assert not refused.value.restartable
    assert "not-the-password" not in str(refused.value)


# (user, subject, allowed): what a service produces, and what belongs to another service.
WRITES = [
    ("ingest", "md.trade.ACB", True), ("ingest", "md.quote.ACB", True), ("ingest", "$KV.reference.basket.VN30", True),
    ("ingest", "trade.classified.ACB", False), ("ingest", "$KV.prices.ACB", False),
    ("classifier", "trade.classified.ACB", True), ("classifier", "$KV.prices.ACB", True),
    ("classifier", "$KV.session_stats.ACB", True), ("classifier", "$KV.checkpoints.classifier", True),
    ("classifier", "$KV.checkpoints.classifier.1-of-2", True), ("classifier", "dlq.classifier", True),
    ("classifier", "md.trade.ACB", False), ("classifier", "$KV.checkpoints.foreign", False),
    ("classifier", "$KV.checkpoints.classifierx", False), ("foreign", "$KV.checkpoints.foreign.0-of-2", True),
    ("classifier", "dlq.foreign", False), ("classifier", "foreign.flow.ACB", False),
    ("classifier", "$KV.reference.basket.VN30", False), ("classifier", "$KV.foreign.summary", False),
    ("foreign", "foreign.flow.ACB", True), ("foreign", "$KV.foreign.summary", True),
    ("foreign", "$KV.prices.ACB", False), ("foreign", "trade.classified.ACB", False),
    ("index", "index.point.VN30", True), ("index", "$KV.indices.VN30", True), ("index", "$KV.prices.ACB", False),
    ("derivatives", "basis.point.VN30F2612", True), ("derivatives", "$KV.derivatives.VN30F2612", True),
    ("derivatives", "$KV.indices.VN30", False),
    ("recorder", "dlq.recorder", True), ("recorder", "trade.classified.ACB", False),
    ("recorder", "$KV.prices.ACB", False),
    ("gateway", "$KV.prices.ACB", False), ("gateway", "md.trade.ACB", False),
    ("gateway", "trade.classified.ACB", False),
    ("gateway", "$KV.checkpoints.classifier", False), ("gateway", "$KV.reference.basket.VN30", False),
]


@pytest.mark.parametrize(("user", "subject", "allowed"), WRITES)
async def test_a_service_writes_only_what_it_produces(secured: str, user: str, subject: str, allowed: bool) -> None:
    client = await _client(secured, user)
    try:
        assert await client.may_publish(subject) is allowed, client.refused
    finally:
        await client.nc.close()


@pytest.mark.parametrize("user", list(SERVICES))
async def test_no_service_may_delete_or_purge_a_stream(secured: str, user: str) -> None:
    client = await _client(secured, user)
    try:
        for subject in ("$JS.API.STREAM.DELETE.MARKET", "$JS.API.STREAM.PURGE.DERIVED",
                        "$JS.API.STREAM.DELETE.KV_prices", "$JS.API.STREAM.PURGE.KV_checkpoints",
                        "$JS.API.STREAM.MSG.DELETE.MARKET"):
            assert not await client.may_publish(subject), subject
    finally:
        await client.nc.close()


async def test_the_operator_may_do_everything(secured: str) -> None:
    client = await _client(secured, OPERATOR)
    try:
        for subject in ("md.trade.ACB", "$KV.prices.ACB", "$JS.API.STREAM.INFO.MARKET"):
            assert await client.may_publish(subject), subject
    finally:
        await client.nc.close()


async def test_each_service_starts_with_its_own_user(secured: str) -> None:
    """What every service does at start (connect, the topology, its publisher) works with its own user."""
    for user in SERVICES:
        nc = await bus.connect(_as(secured, user), user)
        try:
            await bus.ensure_topology(nc.jetstream(), _as(secured, user))
        finally:
            await nc.close()
