"""The private servers the fixtures and `stocktracker up` run: real, recent enough, and gone when stopped."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import asyncpg
import nats
import pytest

from launcher import local
from launcher.local import NatsServer, PostgresServer
from shared.bus import MIN_NATS_VERSION, version_tuple

pytestmark = pytest.mark.integration


async def test_postgres_is_real_and_at_least_14(pg: asyncpg.Connection) -> None:
    version = await pg.fetchval("SHOW server_version_num")
    assert int(version) >= 140000
    assert await pg.fetchval("SELECT now() AT TIME ZONE 'Asia/Ho_Chi_Minh' IS NOT NULL")


async def test_nats_is_real_with_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        assert version_tuple(nc.connected_server_version._server_version) >= MIN_NATS_VERSION
        account = await nc.jetstream().account_info()
        assert account.limits is not None
    finally:
        await nc.close()


async def test_servers_keep_their_data_across_restarts(tmp_path: Path) -> None:
    postgres = PostgresServer(tmp_path / "pg", durable=False)
    postgres.start()
    conn = await asyncpg.connect(postgres.url)
    await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    await conn.close()
    postgres.stop()
    assert not postgres.running

    nats_server = NatsServer(tmp_path / "nats")
    nats_server.start()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="KEPT", subjects=["kept"])
    await js.publish("kept", b"1")
    await nc.close()
    nats_server.stop()

    postgres.start()
    nats_server.start()
    try:
        conn = await asyncpg.connect(postgres.url)
        assert await conn.fetchval("SELECT n FROM kept") == 42
        await conn.close()
        nc = await nats.connect(nats_server.url)
        assert (await nc.jetstream().stream_info("KEPT")).state.messages == 1
        await nc.close()
    finally:
        postgres.stop()
        nats_server.stop()


def test_a_cluster_whose_port_was_taken_starts_again_on_fresh_ones(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A port chosen free can be taken before its node binds it (seen in CI: a route port, one node exited, the
    others waited a minute for a meta leader). The cluster notices at once and starts again on fresh ports."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = [(local.free_port(), local.free_port(), local.free_port()) for _ in range(local.CLUSTER_NODES)]
        first[2] = (first[2][0], first[2][1], taken.getsockname()[1])  # nats-3's route port is in use
        plans = iter([first])
        real = local.NatsCluster._free_ports
        monkeypatch.setattr(local.NatsCluster, "_free_ports", staticmethod(lambda: next(plans, None) or real()))
        cluster = local.NatsCluster(tmp_path)
        started = time.monotonic()
        try:
            cluster.start()
            assert time.monotonic() - started < 30
            assert all(node.route_port != taken.getsockname()[1] for node in cluster.nodes)
            assert all(node.running for node in cluster.nodes)
        finally:
            cluster.stop()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        ports = [(local.free_port(), local.free_port(), local.free_port()) for _ in range(local.CLUSTER_NODES)]
        ports[0] = (ports[0][0], ports[0][1], held.getsockname()[1])
        given = local.NatsCluster(tmp_path / "given", ports=ports)  # ports the caller chose are not changed
        try:
            with pytest.raises(local.LocalServerError, match="exited at start"):
                given.start()
        finally:
            given.stop()
