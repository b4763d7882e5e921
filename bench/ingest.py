"""Ingest throughput: a generated day of SSI frames replayed as fast as possible through the ingest service.

1. Generates a recorded-feed file of at least --frames frames with the built-in simulator.
2. Baseline, same run, same server: bare nats-py `publish_async` of the same lines into the same stream (MARKET),
   without decoding, every ack awaited.
3. The ingest service replays the file (REPLAY_SPEED=0) into a fresh MARKET stream: decode, validate, normalize,
   publish with natural-key ids, ordered and acknowledged. Timed from the first frame read to the last ack.
Prints frames/s for both, their ratio, and the accounting (published + rejected = read).

    python bench/ingest.py [--frames 200000] [--nats-url nats://...]
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

from launcher.local import NatsServer
from services.ingest.service import Ingest
from services.ingest.simulator import MarketSimulator
from services.ingest.sources import next_trading_day
from shared import bus, config
from shared.runtime import serve
from shared.subjects import STREAMS


def generate(path: Path, frames: int) -> int:
    written = 0
    day = date(2026, 11, 24)
    with path.open("wb") as out:
        while written < frames:
            for frame in MarketSimulator(seed=day.toordinal(), trading_date=day, intensity=4.0).day():
                out.write(frame.payload + b"\n")
                written += 1
            day = next_trading_day(day)
    return written


async def fresh_topology(settings: config.Settings) -> None:
    nc = await bus.connect(settings, "bench")
    js = nc.jetstream()
    for spec in STREAMS:
        with contextlib.suppress(Exception):
            await js.delete_stream(spec.name)
    await bus.ensure_topology(js, settings)
    await nc.close()


async def baseline(settings: config.Settings, lines: list[bytes]) -> float:
    await fresh_topology(settings)
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream(publish_async_max_pending=4096)
    started = time.perf_counter()
    for line in lines:
        await js.publish_async("md.bench", line)
    await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    await nc.close()
    return len(lines) / elapsed


async def through_ingest(settings: config.Settings, path: Path, frames: int) -> tuple[float, Ingest]:
    await fresh_topology(settings)
    actor = Ingest()
    run_settings = msgspec.structs.replace(settings, ingest_source="replay", replay_file=str(path), replay_speed=0.0,
                                           metrics_port=0, log_level="warning")
    stop = asyncio.Event()
    task = asyncio.create_task(serve(actor, run_settings, stop))
    while actor.frames_read == 0:
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    while not (actor.frames_read == frames and actor._ctx and actor._ctx.publisher.pending == 0):
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return frames / elapsed, actor


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    path = workdir / "day.jsonl"
    frames = generate(path, args.frames)
    lines = path.read_bytes().splitlines()
    server = None
    if args.nats_url is None:
        server = NatsServer(workdir / "nats")
        args.nats_url = server.start()
    settings = config.load({"NATS_URL": args.nats_url, "LOG_LEVEL": "warning"})
    try:
        base_rate = await baseline(settings, lines)
        ingest_rate, actor = await through_ingest(settings, path, frames)
    finally:
        if server:
            server.stop()
    print(f"frames: {frames:,} in {path.stat().st_size / 1e6:.0f} MB ({os.cpu_count()} cores)")
    print(f"baseline bare publish_async, no decoding: {base_rate:,.0f} frames/s")
    print(f"ingest service (decode, normalize, publish): {ingest_rate:,.0f} frames/s "
          f"({actor.messages_published:,} messages)")
    print(f"ratio ingest / baseline: {ingest_rate / base_rate:.2f}")
    accounted = actor.frames_published + actor.frames_rejected
    print(f"accounting: read {actor.frames_read:,} = published {actor.frames_published:,} + rejected "
          f"{actor.frames_rejected:,}: {'OK' if accounted == actor.frames_read == frames else 'MISMATCH'}")


if __name__ == "__main__":
    asyncio.run(main())
