"""Real servers for the tests: a private nats-server with JetStream and a private PostgreSQL, started once per test
session from the pip wheels, unless NATS_URL / DATABASE_URL name servers to use instead.

Against a NATS_URL server the tests delete and re-create stock-tracker's streams and buckets (MARKET, DERIVED, the
KV buckets), so point it only at a server whose stock-tracker data may be lost. Against a DATABASE_URL server they
work in a database of their own, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats.js.errors
import pytest
from nats.aio.client import Client

from launcher.local import NatsCluster, NatsServer, PostgresServer
from shared import bus, config
from shared.subjects import STREAMS, Bucket


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store")
    yield server.start()
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A three-node JetStream cluster of the test's own (private ports and stores), from the deployment's cluster
    file: for drills that stop, kill and restart nodes."""
    cluster = NatsCluster(tmp_path / "cluster")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield from _scratch_database(os.environ["DATABASE_URL"])
        return
    server = PostgresServer(tmp_path_factory.mktemp("pg") / "data", durable=False)
    yield server.start()
    server.stop()


def _scratch_database(url: str) -> Iterator[str]:
    import asyncio

    name = f"stocktracker_test_{secrets.token_hex(4)}"
    parts = urlsplit(url)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def scratch_database_url(database_url: str) -> Iterator[str]:
    """A database of the test's own on the same server, dropped afterwards."""
    yield from _scratch_database(database_url)


@pytest.fixture
def settings(nats_url: str, database_url: str) -> config.Settings:
    return config.load({"NATS_URL": nats_url, "DATABASE_URL": database_url, "NATS_CONNECT_TIMEOUT_S": "10"})


async def _wipe_topology(nc: Client) -> None:
    js = nc.jetstream()
    for spec in STREAMS:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(spec.name)
    for bucket in Bucket:
        with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
            await js.delete_key_value(str(bucket))


@pytest.fixture
async def nc(settings: config.Settings) -> AsyncIterator[Client]:
    """A connection to the test NATS server, with stock-tracker's streams and buckets freshly created."""
    client = await bus.connect(settings, "tests")
    await _wipe_topology(client)
    await bus.ensure_topology(client.jetstream(), settings)
    yield client
    await client.drain()


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def reap() -> Iterator[Any]:
    """`reap(process)` registers a child process (Popen or asyncio) to be stopped when the test ends, passed or
    failed: a failing assertion must not leave a service running."""
    import signal
    import subprocess

    processes: list[Any] = []
    yield processes.append
    for process in processes:
        running = process.poll() is None if isinstance(process, subprocess.Popen) else process.returncode is None
        if not running:
            continue
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        deadline = 30
        if isinstance(process, subprocess.Popen):
            try:
                process.wait(deadline)
            except subprocess.TimeoutExpired:
                process.kill()
        else:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


@pytest.fixture
def launch(reap: Any) -> Any:
    """Start `stocktracker up` (tests/stack.py: Up); it is stopped when the test ends, whatever happens."""
    from stack import Up

    def start(*args: Any, **kwargs: Any) -> Up:
        up = Up(*args, **kwargs)
        reap(up.process)
        return up

    return start
