"""Fault drills over the whole system (`stocktracker up`, the recorded day replayed): each service killed with
SIGKILL in turn, nats-server restarted, PostgreSQL gone for 20 s, a slow WebSocket client and a flood of connections
from one address. Each drill ends with the exact figures: the REST snapshot, the history and every table's rows."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from helpers import DAY_ALERTS, REPLAY_DAY, eventually, expected_day
from stack import Up, exact, get, history_complete, snapshot_differences_at

from launcher.catalog import SERVICES
from launcher.local import NatsServer, PostgresServer, free_port

pytestmark = pytest.mark.integration
ROWS = {"ticks": 347, "foreign_flows": 99, "index_points": 130, "basis_points": 159, "alerts": DAY_ALERTS}


async def rows(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        return {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in ROWS}
    finally:
        await conn.close()


async def ends_exact(up: Up, database_url: str) -> None:
    try:
        await eventually(lambda: exact(up.url), timeout=120, interval=0.5)
    except AssertionError:
        differences = await snapshot_differences_at(up.url)
        raise AssertionError(f"snapshot {differences}; warnings:\n{up.service_warnings()}") from None
    await eventually(lambda: history_complete(up.url), timeout=120, interval=0.5)

    async def all_rows() -> bool:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            return await rows(database_url) == ROWS
        return False

    try:
        await eventually(all_rows, timeout=120, interval=0.5)
    except AssertionError:
        raise AssertionError(f"rows {await rows(database_url)} != {ROWS}; warnings:\n{up.service_warnings()}") from None
    assert len(expected_day()["classes"]) == ROWS["ticks"]


def database_url_of(up: Up) -> str:
    return next(line.split()[1] for line in up.lines if line.strip().startswith("PostgreSQL"))


async def replaying(launch: Any, tmp_path: Path, speed: str, **servers: str) -> Up:
    up = launch(tmp_path / "state", free_port(), "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed",
                speed, basket=expected_day()["vn30_basket"], servers=servers)
    await up.read_until("Ready:")
    return up


async def test_each_service_killed_in_turn(tmp_path: Path, launch: Any) -> None:
    up = await replaying(launch, tmp_path, "800")  # the day takes about 27 s
    try:
        for spec in SERVICES:
            await asyncio.sleep(1.5)
            os.kill(up.pid_of(spec.name), signal.SIGKILL)
            await up.read_until(f"{spec.name} restarted", timeout=30)
        await ends_exact(up, database_url_of(up))
        exits = [line for line in up.lines if " exited with code " in line]
        assert len(exits) == len(SERVICES)  # only the ones we killed: none crashed by itself
        assert all("exited with code -9" in line for line in exits)
    finally:
        assert await up.stop() == 0


async def test_nats_restarted_mid_replay(tmp_path: Path, launch: Any) -> None:
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    up = await replaying(launch, tmp_path, "1500", NATS_URL=nats.url)
    try:
        assert f"  NATS          {nats.url}  (from NATS_URL)" in up.lines
        await asyncio.sleep(4)
        await asyncio.to_thread(nats.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(nats.start)  # same store, same port
        await ends_exact(up, database_url_of(up))
        assert not [line for line in up.lines if " exited with code " in line]  # all rode it out, none crashed
    finally:
        assert await up.stop() == 0
        nats.stop()


async def test_postgres_unavailable_for_20_seconds(tmp_path: Path, launch: Any) -> None:
    postgres = PostgresServer(tmp_path / "pg", durable=False)
    postgres.start()
    up = await replaying(launch, tmp_path, "1500", DATABASE_URL=postgres.url)
    try:
        assert database_url_of(up) == postgres.url
        await asyncio.sleep(3)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(20)
        await asyncio.to_thread(postgres.start)
        await ends_exact(up, postgres.url)
    finally:
        assert await up.stop() == 0
        postgres.stop()


async def test_slow_client_and_flood_from_one_address(tmp_path: Path, launch: Any) -> None:
    up = await replaying(launch, tmp_path, "1500")
    port = int(up.url.rsplit(":", 1)[1])
    slow = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(f"GET /ws/market HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    flood_connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)
    try:
        async with aiohttp.ClientSession(connector=flood_connector) as flood, aiohttp.ClientSession() as calm:
            attempts = await asyncio.gather(*(flood.ws_connect(f"{up.url}/ws/index") for _ in range(30)),
                                            return_exceptions=True)
            accepted = [a for a in attempts if isinstance(a, aiohttp.ClientWebSocketResponse)]
            refused = [a for a in attempts if isinstance(a, aiohttp.WSServerHandshakeError) and a.status == 429]
            assert len(accepted) == 10 - 1  # the per-address limit (10), the slow client holding one place
            assert len(refused) == 30 - len(accepted)
            async with calm.ws_connect(f"{up.url}/ws/market") as client:  # another address: unaffected
                first = await client.receive(timeout=10)
                assert first.json()["type"] == "snapshot"
                arrivals = 0
                with contextlib.suppress(TimeoutError):
                    while arrivals < 5:
                        await client.receive(timeout=3)
                        arrivals += 1
                assert arrivals == 5
            for socket_ in accepted:
                await socket_.close()
        await ends_exact(up, database_url_of(up))
        status, _, _ = await get(f"{up.url}/healthz")
        assert status == 200
    finally:
        slow.close()
        assert await up.stop() == 0
