"""Recorder throughput and history latency.

1. --ticks classified trades of 30 symbols, spread over a trading day's continuous sessions, are published to
   DERIVED in time order (not timed).
2. Baseline, same run, same server: the same rows with a bare asyncpg `copy_records_to_table` into a table like
   `ticks` (same primary key), in batches of RECORDER_BATCH.
3. The recorder from its position: read the stream, COPY each batch into `ticks` (through staging only when a row
   is stored already), fold into 1-minute candles, move the position, commit. Timed from start to the last row.
4. History: --days trading days of 30 symbols loaded (about 350 trades per symbol-day, with their candles); then
   the gateway's /api/history/<symbol>/ticks and /candles for one symbol-day, --queries times each: p50 and p99.

    python bench/recorder.py [--ticks 200000] [--days 30] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import msgspec

from launcher.local import NatsServer, PostgresServer, free_port
from services.gateway.service import Gateway
from services.recorder import schema
from services.recorder.service import Recorder
from services.recorder.writer import TICKS, as_row, write_ticks
from shared import bus, config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import ClassificationRule, ClassifiedTrade, TradeType
from shared.runtime import serve
from shared.subjects import derived_subject

SYMBOLS = [f"S{n:02d}" for n in range(30)]
TYPES = (TradeType.MUA_CHU_DONG, TradeType.BAN_CHU_DONG, TradeType.NEUTRAL)


MORNING_S, LUNCH_S, AFTERNOON_S = 8_100, 5_400, 5_400  # 09:15-11:30 continuous, lunch to 13:00, then to 14:30


def synthetic_day(day: date, per_symbol: int, rng: random.Random) -> list[ClassifiedTrade]:
    """Each symbol's trades spread evenly over the continuous sessions, all symbols interleaved in time as the
    stream carries them."""
    trades = []
    open_at = datetime(day.year, day.month, day.day, 9, 15, tzinfo=EXCHANGE_TZ)
    for symbol in SYMBOLS:
        price, total = rng.randrange(200, 1200) * 50.0, 0
        for n in range(per_symbol):
            volume = rng.randrange(1, 50) * 100
            total += volume
            price = max(1000.0, price + rng.choice((-50.0, 0.0, 50.0)))
            offset = n * (MORNING_S + AFTERNOON_S) / per_symbol
            offset += LUNCH_S if offset >= MORNING_S else 0
            trades.append(ClassifiedTrade(
                symbol=symbol, trading_date=day, timestamp=open_at + timedelta(seconds=offset), price=price,
                volume=volume, value=price * volume, trade_type=rng.choice(TYPES), rule=ClassificationRule.QUOTE,
                bid_price=price - 50, ask_price=price, total_volume=total, session="LO"))
    trades.sort(key=lambda trade: trade.timestamp)
    return trades


async def publish(settings: config.Settings, trades: list[ClassifiedTrade]) -> None:
    nc = await bus.connect(settings, "bench")
    await bus.ensure_topology(nc.jetstream(), settings)
    publisher = bus.Publisher(nc)
    await publisher.start()
    encode = msgspec.json.Encoder().encode
    for trade in trades:
        await publisher.publish(derived_subject(trade), encode(trade), f"classified:{trade.natural_key()}")
    await publisher.stop(60)
    await nc.close()


async def baseline(url: str, trades: list[ClassifiedTrade], batch: int) -> float:
    conn = await asyncpg.connect(url)
    await conn.execute("DROP TABLE IF EXISTS bench_ticks; CREATE TABLE bench_ticks (LIKE ticks INCLUDING ALL)")
    rows = [as_row(trade) for trade in trades]
    started = time.perf_counter()
    for offset in range(0, len(rows), batch):
        await conn.copy_records_to_table("bench_ticks", records=rows[offset:offset + batch],
                                         columns=TICKS.columns)
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


async def through_recorder(settings: config.Settings, expected: int) -> float:
    recorder = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(recorder, settings, stop))
    while recorder.families[0].recorded == 0:
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    while recorder.families[0].recorded < expected:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return expected / elapsed


async def load_history(url: str, days: int, rng: random.Random) -> list[date]:
    conn = await asyncpg.connect(url, server_settings={"timezone": "Asia/Ho_Chi_Minh"})
    loaded, day = [], date(2026, 10, 1)
    while len(loaded) < days:
        if day.weekday() < 5:
            await schema.ensure_partitions(conn, {day})
            async with conn.transaction():
                await write_ticks(conn, synthetic_day(day, 350, rng))
            loaded.append(day)
        day += timedelta(days=1)
    await conn.execute("ANALYZE")
    await conn.close()
    return loaded


async def query_latency(base: str, days: list[date], queries: int, rng: random.Random) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"ticks": [], "candles": []}
    async with aiohttp.ClientSession() as http:
        for _ in range(queries):
            symbol, day = rng.choice(SYMBOLS), rng.choice(days).isoformat()
            for kind, path in (("ticks", "ticks"), ("candles", "candles")):
                started = time.perf_counter()
                async with http.get(f"{base}/api/history/{symbol}/{path}",
                                    params={"start": day, "end": day, "limit": "1000"}) as reply:
                    body = await reply.read()
                    if reply.status != 200 or len(body) <= 2:
                        raise RuntimeError(f"history query failed: {reply.status} {body[:200]!r}")
                timings[kind].append(time.perf_counter() - started)
    return timings


def p(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    workdir = Path(tempfile.mkdtemp(prefix="bench-recorder-"))
    nats, postgres = NatsServer(workdir / "nats"), PostgresServer(workdir / "pg", durable=False)
    nats.start()
    postgres.start()
    settings = config.load({"NATS_URL": nats.url, "DATABASE_URL": postgres.url, "METRICS_PORT": "0",
                            "LOG_LEVEL": "warning", "GATEWAY_PORT": str(free_port())})
    try:
        per_symbol = args.ticks // len(SYMBOLS)
        trades = synthetic_day(date(2026, 11, 24), per_symbol, rng)
        conn = await asyncpg.connect(postgres.url)
        await schema.migrate(conn)
        await conn.close()
        await publish(settings, trades)
        base_rate = await baseline(postgres.url, trades, settings.recorder_batch)
        rate = await through_recorder(settings, len(trades))
        days = await load_history(postgres.url, args.days, rng)
        gateway = Gateway()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(gateway, settings, stop))
        while gateway.history is None or gateway.history.pool is None:
            await asyncio.sleep(0.05)
        timings = await query_latency(f"http://127.0.0.1:{gateway.port}", days, args.queries, rng)
        stop.set()
        await task
    finally:
        postgres.stop()
        nats.stop()
    print(f"{len(trades):,} classified trades, batches of {settings.recorder_batch} ({os.cpu_count()} cores)")
    print(f"baseline bare copy_records_to_table (same primary key): {base_rate:,.0f} rows/s")
    print(f"recorder (stream -> COPY skipping stored rows -> candles + position -> commit): "
          f"{rate:,.0f} ticks/s; ratio {rate / base_rate:.2f}")
    for kind, values in timings.items():
        print(f"history {kind} for one symbol-day, {args.days} days of 30 symbols loaded: p50 {p(values, 0.5):.1f} ms, "
              f"p99 {p(values, 0.99):.1f} ms (mean {statistics.mean(values) * 1000:.1f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
