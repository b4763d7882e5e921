"""The recorder and the history API against a real nats-server and a real PostgreSQL: the recorded day ends with
exactly one row per trade and candles equal to those computed from the ticks (and to the expected ones), every
history endpoint answers the expected rows and refuses bad parameters (far dates, extreme offsets, huge numbers: 4xx
naming the parameter, never 500), and a query without dates opens no other day's partition; killed with SIGKILL
mid-batch, or with PostgreSQL gone for a while, the recorder ends with no row missing and none twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import _wipe_topology
from helpers import DAY_ALERTS, caught_up, eventually, expected_day, run_in_process
from stack import get
from test_gateway import fill, gateway
from test_ingest import replay

from launcher.local import PostgresServer
from services.classifier.service import ClassifierService
from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.index.service import IndexService
from services.ingest.simulator import MarketSimulator
from services.recorder import schema
from services.recorder.service import Recorder
from shared import bus, config
from shared.subjects import ALERTS, DERIVED

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent
TABLES = {"ticks": "trade.classified.*", "foreign_flows": "foreign.flow.*", "index_points": "index.point.*",
          "basis_points": "basis.point.*", "alerts": "alert.>"}


async def reset_database(url: str) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute("DROP TABLE IF EXISTS ticks, candles_1m, foreign_flows, index_points, basis_points, alerts, "
                       "recorder_positions, recorder_rejects, instrument_days, schema_migrations CASCADE")
    await conn.close()


async def record_all(settings: config.Settings) -> Recorder:
    recorder = Recorder()
    task, stop = await run_in_process(recorder, settings)
    await eventually(lambda: recorder.pool is not None)
    await eventually(lambda: all(f.pending == 0 and f.buffer is not None and f.buffer.empty()
                                 for f in recorder.families)
                     and recorder.status()["ticks"]["recorded"] > 0, timeout=60)
    await asyncio.sleep(0.5)  # one more empty fetch: nothing left
    stop.set()
    assert await task == 0
    return recorder


async def stream_counts(settings: config.Settings) -> dict[str, int]:
    nc = await bus.connect(settings, "counts")
    info = await nc.jetstream().stream_info(DERIVED.name, subjects_filter=">")
    await nc.close()
    subjects = info.state.subjects or {}
    return {table: sum(n for s, n in subjects.items() if s.startswith(prefix[:-1])) for table, prefix in TABLES.items()}


async def table_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
    await conn.close()
    return counts


@pytest.fixture(scope="module")
async def recorded(nats_url: str, database_url: str) -> config.Settings:
    settings = config.load({"NATS_URL": nats_url, "DATABASE_URL": database_url, "METRICS_PORT": "0",
                            "VN30_SYMBOLS": ",".join(expected_day()["vn30_basket"])})
    await reset_database(database_url)
    await fill(settings)
    await record_all(settings)
    return settings


@pytest.fixture(scope="module")
async def history(recorded: config.Settings) -> AsyncIterator[str]:
    async with gateway(recorded) as running:
        await eventually(lambda: running.gateway.history is not None and running.gateway.history.pool is not None)
        yield running.url


async def candle_mismatches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The 1-minute candles that differ from those computed straight from the stored ticks (none, when exact)."""
    return await conn.fetch("""
            WITH direct AS (
                SELECT symbol, trading_date, date_trunc('minute', ts) AS minute,
                       (array_agg(price ORDER BY total_volume))[1] AS open, max(price) AS high, min(price) AS low,
                       (array_agg(price ORDER BY total_volume DESC))[1] AS close, sum(volume) AS volume,
                       sum(value) AS value, sum(unseen_volume) AS unseen, count(*) AS trades,
                       sum(volume) FILTER (WHERE trade_type = 'mua_chu_dong') AS buy
                FROM ticks GROUP BY 1, 2, 3)
            SELECT * FROM direct d FULL JOIN candles_1m c USING (symbol, trading_date, minute)
            WHERE c.open IS DISTINCT FROM d.open OR c.high IS DISTINCT FROM d.high OR c.low IS DISTINCT FROM d.low
               OR c.close IS DISTINCT FROM d.close OR c.volume IS DISTINCT FROM d.volume
               OR c.trades IS DISTINCT FROM d.trades OR c.unseen_volume IS DISTINCT FROM d.unseen
               OR c.buy_volume IS DISTINCT FROM coalesce(d.buy, 0)""")


async def test_one_row_per_trade_and_candles_from_the_ticks(recorded: config.Settings) -> None:
    expected = expected_day()
    conn = await asyncpg.connect(recorded.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ticks") == len(expected["classes"])
        stored = {f"{r['symbol']}:{r['total_volume']}": r["trade_type"]
                  for r in await conn.fetch("SELECT symbol, total_volume, trade_type FROM ticks")}
        assert stored == dict(expected["classes"].items())
        assert await candle_mismatches(conn) == []
        by_table = await table_counts(recorded.database_url)
        assert by_table == await stream_counts(recorded)
    finally:
        await conn.close()


async def test_candles_endpoint_matches_the_expected_candles(history: str) -> None:
    expected = expected_day()
    for symbol, candles in expected["candles"].items():
        status, body, _ = await get(f"{history}/api/history/{symbol.lower()}/candles")  # symbols in any case
        assert status == 200
        assert [c["time"] for c in body] == [c["time"] for c in candles]
        for got, want in zip(body, candles, strict=True):
            for field in ("open", "high", "low", "close", "volume", "trades"):
                assert got[field] == pytest.approx(want[field]), (symbol, want["time"], field)
        unseen = {c["time"]: c["unseen_volume"] for c in body if c["unseen_volume"]}
        assert unseen == expected["unseen_by_minute"].get(symbol, {})


async def test_candle_rollups_add_up(history: str) -> None:
    _, minutes, _ = await get(f"{history}/api/history/ACB/candles", params={"start": "2026-11-24"})
    for resolution in ("5m", "15m", "30m", "1h", "1d"):
        status, rolled, _ = await get(f"{history}/api/history/ACB/candles",
                                      params={"start": "2026-11-24", "end": "2026-11-24", "resolution": resolution})
        assert status == 200
        assert sum(c["volume"] for c in rolled) == sum(c["volume"] for c in minutes)
        assert sum(c["buy_volume"] for c in rolled) == sum(c["buy_volume"] for c in minutes)
        assert rolled[0]["open"] == minutes[0]["open"]
        assert rolled[-1]["close"] == minutes[-1]["close"]
        assert max(c["high"] for c in rolled) == max(c["high"] for c in minutes)
    _, daily, _ = await get(f"{history}/api/history/ACB/candles", params={"resolution": "1d"})
    assert [c["time"] for c in daily] == ["2026-11-24T00:00:00+07:00"]


async def test_ticks_endpoint(history: str) -> None:
    expected = expected_day()
    status, ticks, _ = await get(f"{history}/api/history/ACB/ticks")
    assert status == 200
    assert len(ticks) == expected["ticks"]["ACB"]
    assert [t["total_volume"] for t in ticks] == sorted(t["total_volume"] for t in ticks)  # oldest first
    assert ticks[-1]["total_volume"] == expected["last_total_vol"]["ACB"]
    first = ticks[0]
    assert set(first) >= {"timestamp", "price", "volume", "value", "trade_type", "rule", "bid_price", "ask_price"}
    assert first["timestamp"].endswith("+07:00")
    assert {f"ACB:{t['total_volume']}": t["trade_type"] for t in ticks} == {
        k: v for k, v in expected["classes"].items() if k.startswith("ACB:")}
    _, five, _ = await get(f"{history}/api/history/ACB/ticks", params={"limit": "5"})
    assert five == ticks[:5]
    _, morning, _ = await get(f"{history}/api/history/ACB/ticks",
                              params={"start": "2026-11-24T09:00:00", "end": "2026-11-24T10:00:00"})
    assert morning
    assert all("T09:" in t["timestamp"] for t in morning)
    status, futures, _ = await get(f"{history}/api/history/VN30F2612/ticks")
    assert (status, len(futures)) == (200, expected["ticks"]["VN30F2612"])


async def test_foreign_index_and_derivatives_endpoints(history: str) -> None:
    expected = expected_day()
    status, flows, _ = await get(f"{history}/api/history/FPT/foreign")
    assert status == 200
    assert flows[-1]["cumulative_buy_volume"] == expected["foreign"]["stocks"]["FPT"]["buy_volume"]
    status, daily, _ = await get(f"{history}/api/history/FPT/foreign/daily", params={"days": "5"})
    assert status == 200
    assert daily == [{"trading_date": "2026-11-24",
                      "buy_volume": expected["foreign"]["stocks"]["FPT"]["buy_volume"],
                      "sell_volume": expected["foreign"]["stocks"]["FPT"]["sell_volume"],
                      "net_volume": expected["foreign"]["stocks"]["FPT"]["net_volume"],
                      "buy_value": expected["foreign"]["stocks"]["FPT"]["buy_value"],
                      "sell_value": expected["foreign"]["stocks"]["FPT"]["sell_value"],
                      "net_value": expected["foreign"]["stocks"]["FPT"]["net_value"]}]
    status, points, _ = await get(f"{history}/api/history/index/vnindex")
    assert status == 200
    assert points[-1]["value"] == expected["indices"]["VNINDEX"]["value"]
    status, basis, _ = await get(f"{history}/api/history/derivatives/VN30F2612")
    assert status == 200
    assert [round(p["basis"], 2) for p in basis] == [round(b, 2) for b in expected["basis_points"]]


async def derived_alerts(settings: config.Settings) -> list[dict[str, Any]]:
    """Every alert on DERIVED, in stream order, as JSON."""
    nc = await bus.connect(settings, "alerts-read")
    js = nc.jetstream()
    count = sum(((await js.stream_info(DERIVED.name, subjects_filter=ALERTS)).state.subjects or {}).values())
    consumer = await js.subscribe(ALERTS, stream=DERIVED.name, ordered_consumer=True)
    try:
        return [json.loads((await consumer.next_msg(timeout=5)).data) for _ in range(count)]
    finally:
        await nc.close()


def in_history_order(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(alerts, key=lambda a: (datetime.fromisoformat(a["timestamp"]), a["symbol"], a["rule"]))


async def test_every_alert_is_stored_once_and_listed_by_the_history_endpoint(recorded: config.Settings,
                                                                              history: str) -> None:
    raised = await derived_alerts(recorded)
    assert len(raised) == DAY_ALERTS
    assert len({(a["type"], a["symbol"]) for a in raised}) >= 3  # the recorded day raises several kinds of alert
    status, listed, _ = await get(f"{history}/api/history/alerts")
    assert status == 200
    assert listed == in_history_order(raised)  # every field, the values and both messages included
    conn = await asyncpg.connect(recorded.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM alerts") == len(raised)
        first = raised[0]
        stored = await conn.fetchval('SELECT "values" FROM alerts WHERE rule = $1 AND symbol = $2 AND ts = $3',
                                     first["rule"], first["symbol"], datetime.fromisoformat(first["timestamp"]))
        assert json.loads(stored) == first["values"]  # jsonb: an analyst can query into it
    finally:
        await conn.close()
    kind, symbol = raised[0]["type"], raised[0]["symbol"]
    _, narrowed, _ = await get(f"{history}/api/history/alerts",
                               params={"type": kind, "symbol": symbol.lower(), "start": raised[0]["trading_date"]})
    assert narrowed == [a for a in in_history_order(raised) if a["type"] == kind and a["symbol"] == symbol]
    assert narrowed
    _, none_before, _ = await get(f"{history}/api/history/alerts", params={"start": "2026-11-23", "end": "2026-11-23"})
    assert none_before == []


@pytest.mark.parametrize(("path", "params", "status", "parameter"), [
    ("alerts", {"type": "nope"}, 422, "type"),
    ("alerts", {"severity": "loud"}, 422, "severity"),
    ("alerts", {"symbol": "A B"}, 400, "symbol"),
    ("alerts", {"start": "2026-01-01", "end": "2026-11-24"}, 400, "end"),
    ("alerts", {"start": "9999-12-31T23:59:59.999999"}, 400, "start"),
    ("ACB/candles", {"start": "2026-11-25", "end": "2026-11-24"}, 400, "end"),
    ("ACB/candles", {"start": "2026-01-01", "end": "2026-11-24"}, 400, "end"),
    ("ACB/candles", {"resolution": "2m"}, 400, "resolution"),
    ("ACB/candles", {"start": "24/11/2026"}, 400, "start"),
    ("ACB/ticks", {"limit": "0"}, 422, "limit"),
    ("ACB/ticks", {"limit": "50001"}, 422, "limit"),
    ("ACB/ticks", {"limit": "many"}, 400, "limit"),
    ("ACB/foreign/daily", {"days": "366"}, 422, "days"),
    ("A.C.B/ticks", {}, 400, "symbol"),
    # the ends of the calendar and beyond the market's era: 400, not the 500 of an overflowing date
    ("ACB/ticks", {"end": "9999-12-31"}, 400, "end"),
    ("ACB/candles", {"start": "0001-01-01"}, 400, "start"),
    ("ACB/candles", {"start": "1999-12-31", "end": "2000-01-05"}, 400, "start"),
    ("ACB/ticks", {"start": "0001-01-01T00:00:00+14:00"}, 400, "start"),  # before year 1 in exchange time
    ("ACB/foreign", {"start": "2026-11-24", "end": "9999-12-31T23:59:59-23:59"}, 400, "end"),  # after 9999
    ("index/VNINDEX", {"start": "9999-12-31T23:59:59.999999"}, 400, "start"),
    ("derivatives/VN30F2612", {"start": "2026-11-24T09:00:00+24:00"}, 400, "start"),  # no such offset
    ("ACB/candles", {"start": "2026-11-24", "end": "2099-12-31T23:00:00-23:59"}, 400, "end"),  # 2100 in UTC+7
    # numbers of thousands of digits: out of range (Python refuses to convert beyond 4,300)
    ("ACB/ticks", {"limit": "9" * 5000}, 422, "limit"),
    ("ACB/ticks", {"limit": "-" + "9" * 40}, 422, "limit"),
    ("ACB/foreign/daily", {"days": "1" * 4301}, 422, "days"),
    ("ACB/ticks", {"limit": "1e3"}, 400, "limit"),
])
async def test_bad_history_parameters(history: str, path: str, params: dict[str, str], status: int,
                                      parameter: str) -> None:
    got, body, _ = await get(f"{history}/api/history/{path}", params=params)
    assert got == status
    assert body["parameter"] == parameter


@pytest.mark.parametrize("path", ["ACB/candles", "ACB/candles?resolution=1d", "ACB/ticks", "FPT/foreign",
                                  "FPT/foreign/daily", "index/VNINDEX", "derivatives/VN30F2612", "alerts",
                                  "ZZZ/ticks", "alerts?symbol=ZZZ"])
async def test_a_query_without_dates_opens_only_its_day(recorded: config.Settings, history: str, path: str) -> None:
    """Every table's partition of another day is locked: a query that opened it (max() over the partitioned
    table to find the latest day, or a generic plan, which prepared statements switch to after five runs and which
    covers every partition) would wait for the lock. Each query runs more often than that."""
    other_day = date(2031, 1, 6)
    conn = await asyncpg.connect(recorded.database_url)
    try:
        await schema.ensure_partitions(conn, {other_day})
        partitions = ", ".join(schema.partition_name(table, other_day) for table in schema.PARTITIONED)
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {partitions} IN ACCESS EXCLUSIVE MODE")
            for _ in range(8):
                status, body, _ = await asyncio.wait_for(get(f"{history}/api/history/{path}"), 5)
                assert status == 200
                assert bool(body) == ("ZZZ" not in path)
    finally:
        await conn.close()


async def test_unknown_symbols_answer_an_empty_list(history: str) -> None:
    for path in ("ZZZ/candles", "ZZZ/ticks", "ZZZ/foreign", "ZZZ/foreign/daily", "index/NOPE", "derivatives/XYZ",
                 "alerts?symbol=ZZZ"):
        assert (await get(f"{history}/api/history/{path}"))[:2] == (200, []), path


# --- faults ------------------------------------------------------------------------------------------------------


async def fill_simulated(settings: config.Settings, tmp_path: Path) -> None:
    """A simulated day through ingest and every tracker: tens of thousands of DERIVED events."""
    nc = await bus.connect(settings, "fill")
    await _wipe_topology(nc)
    await bus.ensure_topology(nc.jetstream(), settings)
    await nc.close()
    path = tmp_path / "day.jsonl"
    with path.open("wb") as out:
        for frame in MarketSimulator(seed=9, trading_date=date(2026, 11, 24)).day():
            out.write(frame.payload + b"\n")
    await replay(settings, path)
    trackers = [ClassifierService(), ForeignService(), IndexService(), DerivativesService()]
    running = [await run_in_process(actor, settings) for actor in trackers]
    await eventually(lambda: all(caught_up(actor) for actor in trackers), timeout=120)
    for task, stop in running:
        stop.set()
        assert await task == 0


async def recorder_status(settings: config.Settings) -> dict[str, Any] | None:
    import json

    nc = await bus.connect(settings, "probe")
    try:
        return json.loads((await nc.request("stocktracker.recorder.status", b"", timeout=1)).data)
    except Exception:
        return None
    finally:
        await nc.close()


async def test_kill_9_mid_batch_then_restart_loses_and_doubles_nothing(nats_url: str, database_url: str,
                                                                        tmp_path: Path, reap: Any) -> None:
    settings = config.load({"NATS_URL": nats_url, "DATABASE_URL": database_url, "METRICS_PORT": "0"})
    await reset_database(database_url)
    await fill_simulated(settings, tmp_path)
    env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url, "METRICS_PORT": "0",
           "RECORDER_BATCH": "400"}
    command = [sys.executable, "-m", "services.recorder"]

    async def some_recorded() -> bool:
        current = await recorder_status(settings)
        return current is not None and current["ticks"]["recorded"] > 1_000

    first = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(first)
    await eventually(some_recorded, timeout=60, interval=0.02)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    partial = await table_counts(database_url)
    expected = await stream_counts(settings)
    assert partial["ticks"] < expected["ticks"]  # killed mid-stream

    async def all_recorded() -> bool:
        return await table_counts(database_url) == expected

    second = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(second)
    await eventually(all_recorded, timeout=120, interval=0.5)
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0
    assert await table_counts(database_url) == expected  # still exact after the redelivered batch


async def test_postgres_down_for_a_while_then_back(nats_url: str, tmp_path: Path) -> None:
    postgres = PostgresServer(tmp_path / "pg", durable=False)
    postgres.start()
    settings = config.load({"NATS_URL": nats_url, "DATABASE_URL": postgres.url, "METRICS_PORT": "0",
                            "VN30_SYMBOLS": ",".join(expected_day()["vn30_basket"])})
    try:
        nc = await bus.connect(settings, "wipe")
        await _wipe_topology(nc)
        await bus.ensure_topology(nc.jetstream(), settings)
        await nc.close()
        recorder = Recorder()
        task, stop = await run_in_process(recorder, settings)
        await eventually(lambda: all(family.reader is not None for family in recorder.families))  # started
        await asyncio.to_thread(postgres.stop)  # PostgreSQL goes away...
        await fill(settings, wipe=False)  # ...while the day flows in
        await eventually(lambda: recorder.status()["ticks"]["retries"] > 0, timeout=30)
        await asyncio.sleep(3)
        await asyncio.to_thread(postgres.start)
        expected = await stream_counts(settings)

        async def caught_up() -> bool:
            try:
                return await table_counts(postgres.url) == expected
            except (OSError, asyncpg.PostgresError):
                return False

        await eventually(caught_up, timeout=90, interval=0.5)
        stop.set()
        assert await task == 0
        assert (await table_counts(postgres.url))["ticks"] == len(expected_day()["classes"])
    finally:
        postgres.stop()
