"""Classifier throughput: trades/s through the running service, stream in to events and KV out.

1. A simulated day (trades and quotes of the VN30 basket and more) is ingested into MARKET (not timed).
2. Baselines, same run, same stream: bare loops over md.trade.* and md.quote.* that only decode, one on nats-py's
   ordered consumer (the plain way), one on the `bus.StreamReader` the classifier itself reads with.
3. The classifier service from an empty checkpoint: every trade classified, published to DERIVED (acknowledged),
   session stats and prices written to KV. Timed from the first message to the last acknowledgement and KV write.

    python bench/classifier.py [--intensity 8] [--nats-url nats://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import msgspec
import nats
from nats.js.api import ConsumerConfig

from launcher.local import NatsServer
from services.classifier.service import ClassifierService
from services.ingest.service import Ingest
from services.ingest.simulator import MarketSimulator
from shared import bus, config
from shared.messages.domain import Quote, Trade
from shared.runtime import serve
from shared.subjects import MARKET, MD_QUOTE, MD_TRADE, STREAMS, Bucket


async def prepare(settings: config.Settings, path: Path) -> None:
    nc = await bus.connect(settings, "bench")
    js = nc.jetstream()
    for spec in STREAMS:
        with contextlib.suppress(Exception):
            await js.delete_stream(spec.name)
    for bucket in Bucket:
        with contextlib.suppress(Exception):
            await js.delete_key_value(str(bucket))
    await nc.close()
    ingest = Ingest()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(ingest, msgspec.structs.replace(
        settings, ingest_source="replay", replay_file=str(path), replay_speed=0.0, metrics_port=0), stop))
    while not (ingest.status()["source"] or {}).get("finished"):
        await asyncio.sleep(0.05)
    stop.set()
    await task


async def stock_messages(settings: config.Settings) -> tuple[int, int]:
    """Trades and quotes of stocks in MARKET."""
    nc = await nats.connect(settings.nats_url)
    counts = []
    for family in (MD_TRADE, MD_QUOTE):
        info = await nc.jetstream().stream_info(MARKET.name, subjects_filter=family.wildcard)
        counts.append(sum((info.state.subjects or {}).values()))
    await nc.close()
    return counts[0], counts[1]


async def baseline(settings: config.Settings, messages: int, *, lean: bool) -> float:
    """Trades/s of a bare loop that only decodes: nats-py's ordered consumer (`lean=False`, the plain way to read a
    stream in order), or the `bus.StreamReader` the classifier reads with."""
    nc = await (bus.connect(settings, "bench") if lean else nats.connect(settings.nats_url))
    trades, quotes = msgspec.json.Decoder(Trade), msgspec.json.Decoder(Quote)
    done = asyncio.Event()
    counted = {"trades": 0, "messages": 0, "started": 0.0}

    def decode(subject: str, payload: bytes) -> None:
        if not counted["started"]:
            counted["started"] = time.perf_counter()
        if subject.startswith(MD_TRADE.prefix):
            trades.decode(payload)
            counted["trades"] += 1
        else:
            quotes.decode(payload)
        counted["messages"] += 1
        if counted["messages"] == messages:
            done.set()

    subjects = [MD_TRADE.wildcard, MD_QUOTE.wildcard]
    if lean:
        async def handle_read(subject: str, payload: bytes, position: bus.Delivery) -> None:
            decode(subject, payload)

        reader = await bus.consume_from(nc.jetstream(), MARKET, subjects, handle_read)
        await done.wait()
        await reader.stop()
    else:
        async def handle_msg(msg: nats.aio.msg.Msg) -> None:
            decode(msg.subject, msg.data)

        sub = await nc.jetstream().subscribe(subjects[0], stream=MARKET.name, cb=handle_msg, ordered_consumer=True,
                                             config=ConsumerConfig(filter_subjects=subjects))
        await done.wait()
        await sub.unsubscribe()
    elapsed = time.perf_counter() - counted["started"]
    await nc.close()
    return counted["trades"] / elapsed


async def through_classifier(settings: config.Settings) -> tuple[float, ClassifierService]:
    actor = ClassifierService()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(actor, msgspec.structs.replace(settings, metrics_port=0), stop))
    while actor.processed == 0:
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    while actor.pending or not actor.processed:
        await asyncio.sleep(0.002)
    assert actor.kv is not None
    await actor.kv.flush()  # the last KV writes, and every event and write acknowledged
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return actor.classified / elapsed, actor


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intensity", type=float, default=8.0)
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-classifier-"))
    path = workdir / "day.jsonl"
    with path.open("wb") as out:
        for frame in MarketSimulator(seed=3, trading_date=date(2026, 11, 24), intensity=args.intensity).day():
            out.write(frame.payload + b"\n")
    server = None
    if args.nats_url is None:
        server = NatsServer(workdir / "nats")
        args.nats_url = server.start()
    settings = config.load({"NATS_URL": args.nats_url, "LOG_LEVEL": "warning"})
    try:
        await prepare(settings, path)
        all_trades, all_quotes = await stock_messages(settings)
        nats_py_rate = await baseline(settings, all_trades + all_quotes, lean=False)
        reader_rate = await baseline(settings, all_trades + all_quotes, lean=True)
        rate, actor = await through_classifier(settings)
    finally:
        if server:
            server.stop()
    tally = actor.core.tally()
    print(f"stream: {all_trades:,} stock trades and {all_quotes:,} quotes ({os.cpu_count()} cores)")
    print(f"baseline nats-py ordered consumer + decode: {nats_py_rate:,.0f} trades/s")
    print(f"bare bus.StreamReader + decode: {reader_rate:,.0f} trades/s")
    print(f"classifier service (classify, publish, KV): {rate:,.0f} trades/s over {actor.classified:,} stock "
          f"trades, {actor.kv.writes if actor.kv else 0:,} KV writes, {len(actor.core.days)} symbols, "
          f"{tally.unseen_volume:,} unseen shares")
    print(f"ratio classifier / nats-py baseline: {rate / nats_py_rate:.2f}; "
          f"classifier / bare reader: {rate / reader_rate:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
