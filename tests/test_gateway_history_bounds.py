"""History answers stay bounded whatever the clients do: streamed in batches (the same rows as a whole answer), ticks
in pages with a cursor, at most HISTORY_MAX_QUERIES at once, a statement timeout, and clients that never read cut off
after HISTORY_WRITE_TIMEOUT_S, the gateway's memory flat while 40 of them ask for the biggest answers it gives."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta

import asyncpg
import msgspec
import psutil
import pytest
from helpers import eventually
from nats.aio.client import Client
from stack import get
from test_gateway import Running, gateway
from test_recorder import reset_database

from services.gateway import history
from services.recorder.schema import ensure_partitions, migrate
from shared import config
from shared.market import EXCHANGE_TZ

pytestmark = pytest.mark.integration
DAY = date(2026, 11, 24)
TICKS = 120_000  # of one symbol in a day: a full page (50,000 ticks) is about 11 MB of JSON


@pytest.fixture(scope="module")
async def big_day(database_url: str) -> AsyncIterator[str]:
    await reset_database(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await ensure_partitions(conn, {DAY})
        opening = datetime(2026, 11, 24, 9, 15, tzinfo=EXCHANGE_TZ)
        rows = [("BIG", DAY, (n + 1) * 100, opening + timedelta(milliseconds=150 * n), 25_000.0 + n % 50 * 50, 100,
                 100 * (25_000.0 + n % 50 * 50), "mua_chu_dong" if n % 3 else "ban_chu_dong", "quote", 24_950.0,
                 25_050.0, "LO", 0) for n in range(TICKS)]
        await conn.copy_records_to_table(
            "ticks", records=rows, columns=["symbol", "trading_date", "total_volume", "ts", "price", "volume", "value",
                                            "trade_type", "rule", "bid_price", "ask_price", "session",
                                            "unseen_volume"])
        await conn.execute("INSERT INTO instrument_days VALUES ('ticks', 'BIG', $1)", DAY)
    finally:
        await conn.close()
    yield database_url
    await reset_database(database_url)


@contextlib.asynccontextmanager
async def serving(settings: config.Settings, database_url: str, **overrides: object) -> AsyncIterator[Running]:
    async with gateway(msgspec.structs.replace(settings, database_url=database_url), **overrides) as running:
        await eventually(lambda: running.gateway.history is not None and running.gateway.history.pool is not None)
        yield running


async def test_pages_of_ticks_follow_each_other_by_their_cursor(nc: Client, settings: config.Settings,
                                                                 big_day: str) -> None:
    async with serving(settings, big_day) as running:
        url = f"{running.url}/api/history/BIG/ticks"
        pages, cursor = [], None
        while True:
            status, page, response = await get(url, params={"limit": "50000", **({"cursor": cursor} if cursor else {})})
            assert status == 200
            pages.append(page)
            cursor = response.headers.get("X-Next-Cursor")
            if cursor is None:
                break
        assert [len(page) for page in pages] == [50_000, 50_000, 20_000]
        volumes = [tick["total_volume"] for page in pages for tick in page]
        assert volumes == [(n + 1) * 100 for n in range(TICKS)]  # every tick once, in trading order
        status, _, _ = await get(url, params={"cursor": "2026-11-24:x"})
        assert status == 400
        status, _, _ = await get(url, params={"cursor": "9999-12-31:100"})
        assert status == 400


async def test_an_answer_streamed_in_batches_is_the_whole_answer(nc: Client, settings: config.Settings,
                                                                big_day: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(settings, big_day) as running:
        url = f"{running.url}/api/history/BIG/ticks"
        _, whole, _ = await get(url, params={"limit": "2345"})
        monkeypatch.setattr(history, "BATCH_ROWS", 7)
        status, batched, _ = await get(url, params={"limit": "2345"}, headers={"Accept-Encoding": "gzip"})
        assert status == 200
        assert batched == whole
        status, candles, _ = await get(f"{running.url}/api/history/BIG/candles")
        assert (status, candles) == (200, [])  # none were stored for BIG: an empty list, streamed as one


def _never_reading(port: int, path: str) -> socket.socket:
    """A client that asks and then never reads: its receive window closes, and the gateway's writes wait."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return client


async def test_clients_that_never_read_are_bounded_and_cut_off(nc: Client, settings: config.Settings,
                                                               big_day: str) -> None:
    async with serving(settings, big_day, history_max_queries=2, history_write_timeout_s=3.0) as running:
        url = f"{running.url}/api/history/BIG/ticks?limit=50000"
        await get(url)  # warm: the pool's connections and the first plans
        rss_before = psutil.Process().memory_info().rss
        stuck = [_never_reading(running.gateway.port, "/api/history/BIG/ticks?limit=50000") for _ in range(40)]
        try:
            await asyncio.sleep(1.0)
            status, health, _ = await get(f"{running.url}/healthz")
            assert status == 200  # the gateway answers meanwhile
            assert health["live"]
            status, _, response = await get(url)  # both slots are taken: a busy answer, not a pile-up
            assert status == 503
            assert response.headers["Retry-After"] == "1"
            grown = psutil.Process().memory_info().rss - rss_before
            assert grown < 100 * 2**20, f"the gateway grew by {grown / 2**20:.0f} MB"
            await asyncio.sleep(8.0)  # the stuck ones are cut off after the write timeout, freeing their slots
            status, page, _ = await asyncio.wait_for(get(url), 30)
            assert status == 200
            assert len(page) == 50_000
        finally:
            for client in stuck:
                client.close()


async def test_a_query_longer_than_the_statement_timeout_is_cancelled(nc: Client, settings: config.Settings,
                                                                      big_day: str) -> None:
    async with serving(settings, big_day, history_statement_timeout_s=0.001) as running:
        status, body, _ = await get(f"{running.url}/api/history/BIG/candles", params={"resolution": "1d"})
        assert status == 503
        assert "longer than" in body["error"]
