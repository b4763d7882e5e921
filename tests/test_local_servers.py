"""The private servers the fixtures and `stocktracker up` run: real, recent enough, and gone when stopped."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import nats
import pytest

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
