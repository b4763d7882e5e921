"""The whole pipeline, end to end: a simulated day through `stocktracker up` (every service its own process).

Throughput: a day of at least --frames SSI frames (trades, quotes, foreign, indices, bars, futures) replayed as fast
as possible; timed from the first frame ingest reads to the last row the recorder commits. Per-stage rates from the
services' own status (NATS micro). Peak RSS of every process.

Latency, at a fixed --rate frames/s (not saturation): a second stretch of the day replayed at the pace that gives
that rate, after a lead-in of LEAD_IN_S seconds (one earlier frame of the day, so the pacer holds the stretch back
while the services that started after ingest come up: what is measured is the steady state, not a start's
catch-up). The bench watches the subjects itself: from a trade's publication by ingest (md.trade) to (a) its
classified trade (trade.classified), (b) the KV update carrying its symbol's new total volume, (c) the arrival at a
WebSocket client of the delta carrying it (throttled by WS_THROTTLE_MS, default 500 ms): p50, p99, max.
SSI stamps a frame to the second, so a replay by exchange time sends each second's frames at once (at 2,000 frames/s,
a burst every few milliseconds); a live feed spreads them over the second. So the stretch is measured twice: by
exchange time (`latency`, bursts) and at a steady --rate (`latency_steady`, REPLAY_RATE: the frames evenly spaced,
after WARM_UP_S seconds of the day's earlier frames at the same pace, left out of the figures).

Baseline, same run: the same frames through a bare nats-py chain: publish, subscribe, decode both JSON layers (the
best of BASELINE_RUNS runs).

Channels (--channel): `split`, the default universe (HOSE, HNX, UPCOM, VN30F) with trades and books as X-TRADE and
X-QUOTE frames and every other type; `x`, the live default X:ALL on the 30 stocks of the VN30 basket: every book
change and every match one combined X frame (trade fields and a 10-level book), with the R, MI and F channels beside
it (about nine frames in ten are X frames; the simulator's futures are left out).

Writes the figures as JSON (--out, default bench/results/pipeline.json, pipeline-x.json for the X channel) and prints
a one-line summary.

With --cluster 3, everything runs twice in the same run: on one nats-server (R1) and on a three-node cluster with
streams and buckets replicated three times (R3, the deployment's), and the summary gives R3's figures against R1's.

    python bench/pipeline.py [--channel split|x] [--frames 500000] [--rate 2000] [--latency-seconds 20] [--cluster 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import psutil

from launcher.local import CLUSTER_NODES, NatsCluster, NatsServer, free_port
from services.ingest.normalize import Normalized, Normalizer
from services.ingest.simulator import MarketSimulator
from shared.market import DEFAULT_VN30_BASKET, exchange_datetime, parse_clock, parse_trading_date
from shared.messages.domain import ClassifiedTrade, SessionStats, Trade
from shared.subjects import MD_TRADE

REPO = Path(__file__).resolve().parent.parent


CHANNELS = ("split", "x")
X_CHANNELS = (b"X", b"R", b"MI", b"F")  # the DataTypes of X:ALL, R:ALL, MI:ALL and F:ALL
FRAMES_PER_INTENSITY = {"split": 65_000, "x": 30_000}  # a day's frames at intensity 1, roughly


def generate(path: Path, frames: int, day: date, channel: str) -> tuple[int, int, dict[str, int]]:
    """A day of at least `frames` simulated frames (the intensity raised until there are enough): (frames, trades
    of stocks, frames by DataType)."""
    intensity = max(1.0, frames / FRAMES_PER_INTENSITY[channel])
    while True:
        if channel == "x":
            simulator = MarketSimulator(seed=2026, trading_date=day, intensity=intensity, stocks=DEFAULT_VN30_BASKET,
                                        hnx_stocks=[], upcom_stocks=[], combined=True)
        else:
            simulator = MarketSimulator(seed=2026, trading_date=day, intensity=intensity)
        kinds: Counter[str] = Counter()
        normalizer = Normalizer()  # ingest's own: the stock trades it will publish, which the recorder must commit
        trades = 0
        with path.open("wb") as out:
            for frame in simulator.day():
                data_type = frame.payload[13:frame.payload.index(b'"', 13)]  # {"DataType":"<type>",...
                if channel == "x" and (data_type not in X_CHANNELS or b"VN30F" in frame.payload):
                    continue
                out.write(frame.payload + b"\n")
                kinds[data_type.decode()] += 1
                result = normalizer.normalize(frame.payload)
                if isinstance(result, Normalized):
                    trades += sum(MD_TRADE.matches(message.subject) for message in result.messages)
        written = sum(kinds.values())
        if written >= frames:
            return written, trades, dict(kinds.most_common())
        intensity *= 1.05 * frames / written


def timed_lines(source: Path) -> Iterator[tuple[datetime, bytes]]:
    """A day's frames with their exchange times."""
    with source.open("rb") as lines:
        for line in lines:
            content = json.loads(json.loads(line)["Content"])
            yield exchange_datetime(parse_trading_date(content["TradingDate"]), parse_clock(content["Time"])), line


def window(source: Path, target: Path, start: str, seconds: int) -> tuple[int, float]:
    """The frames of `seconds` of exchange time from `start` (HH:MM:SS): (frames, span in seconds)."""
    begin = parse_clock(start)
    count = 0
    first = last = None
    with target.open("wb") as out:
        for moment, line in timed_lines(source):
            if moment.time() < begin:
                continue
            first = first or moment
            if (moment - first).total_seconds() > seconds:
                break
            last = moment
            out.write(line)
            count += 1
    if first is None or last is None:
        raise ValueError(f"no frames after {start}")
    return count, max(1.0, (last - first).total_seconds())


LEAD_IN_S = 5.0  # seconds the latency stretch waits for every service to run


def lead_in(source: Path, start: str, seconds: float) -> bytes:
    """The day's last frame at least `seconds` of exchange time before `start` (HH:MM:SS), else its first frame (a
    shorter lead-in, at a pace so fast that the day does not reach back that far)."""
    found = b""
    for moment, line in timed_lines(source):
        if found and (exchange_datetime(moment.date(), parse_clock(start)) - moment).total_seconds() < seconds:
            break
        found = line
    return found


def warm_up(source: Path, start: str, count: int) -> list[bytes]:
    """The day's last `count` frames before `start` (HH:MM:SS)."""
    begin = parse_clock(start)
    earlier: deque[bytes] = deque(maxlen=count)
    for moment, line in timed_lines(source):
        if moment.time() >= begin:
            break
        earlier.append(line)
    return list(earlier)


class System:
    """`stocktracker up` on free ports, with a NATS server of ours (so the bench can watch its subjects)."""

    def __init__(self, workdir: Path, nats_url: str, replay: Path, speed: float, nats_pids: list[int],
                 rate: float = 0.0) -> None:
        self.gateway_port = free_port()
        env = {**os.environ, "NATS_URL": nats_url, "GATEWAY_PORT": str(self.gateway_port), "LOG_LEVEL": "warning",
               "STREAM_REPLICAS": str(len(nats_pids)), "REPLAY_RATE": str(rate)}
        env.pop("DATABASE_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "up", "--state-dir", str(workdir / "state"), "--source", "replay",
             "--replay-file", str(replay), "--speed", str(speed)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.peak_rss: dict[str, int] = {}
        self.cpu_seconds: dict[str, float] = {}  # user + system, so far: where the machine's two cores went
        self.nats_pids = nats_pids
        self.nats_cpu_before = _cpu(nats_pids)  # the baseline ran on these servers too

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("Ready:"):
                return
        raise RuntimeError("up ended early:\n" + "\n".join(self.lines))

    def pids(self) -> dict[str, int]:
        found = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.Error:
                continue
            match = re.search(r"services\.(\w+)", cmdline)
            if match:
                found[match[1]] = child.pid
            elif "postgres" in cmdline and "-D" in cmdline:
                found["postgres"] = child.pid
        return found

    def sample(self) -> None:
        """Peak RSS of each process, and the CPU seconds each has used (PostgreSQL's with its backends')."""
        for name, pid in self.pids().items():
            try:
                process = psutil.Process(pid)
                rss = process.memory_info().rss
                family = [process, *process.children()] if name == "postgres" else [process]
                cpu = sum(sum(member.cpu_times()[:2]) for member in family)
            except psutil.Error:
                continue
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            self.cpu_seconds[name] = max(self.cpu_seconds.get(name, 0.0), cpu)
        with contextlib.suppress(psutil.Error):  # every node together
            self.cpu_seconds["nats-server"] = max(self.cpu_seconds.get("nats-server", 0.0),
                                                  _cpu(self.nats_pids) - self.nats_cpu_before)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _cpu(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


async def statuses(nc: Any) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in ("ingest", "classifier", "foreign", "index", "derivatives", "recorder", "gateway"):
        try:
            reply = await nc.request(f"stocktracker.{name}.status", b"", timeout=1)
            found[name] = json.loads(reply.data)
        except Exception:
            found[name] = {}
    return found


async def throughput(workdir: Path, nats_url: str, nats_pids: list[int], path: Path, frames: int,
                     stock_trades: int) -> dict[str, Any]:
    system = System(workdir / "throughput", nats_url, path, 0, nats_pids)
    await asyncio.to_thread(system.wait_ready)
    nc = await nats.connect(nats_url.split(","))
    started = None
    stages: dict[str, float] = {}
    try:
        while True:
            system.sample()
            status = await statuses(nc)
            ingest, recorder = status["ingest"], status["recorder"]
            now = time.perf_counter()
            if started is None and ingest.get("frames_read"):
                started = now
            if ingest.get("frames_read") == frames and "ingest" not in stages:
                stages["ingest"] = now
            classifier = status["classifier"]
            if classifier.get("classified", 0) >= stock_trades and "classifier" not in stages:
                stages["classifier"] = now
            ticks = recorder.get("ticks", {})
            if ticks.get("recorded", 0) >= stock_trades and ticks.get("pending", 1) == 0 and "ingest" in stages:
                stages["recorder"] = now
                break
            await asyncio.sleep(0.05)
        final = await statuses(nc)
    finally:
        await nc.close()
        system.stop()
    assert started is not None
    elapsed = stages["recorder"] - started
    recorded = sum(family["recorded"] for family in final["recorder"].values() if isinstance(family, dict))
    return {
        "frames": frames, "seconds": elapsed, "frames_per_s": frames / elapsed,
        "stages": {
            "ingest_frames_per_s": frames / (stages["ingest"] - started),
            "classifier_trades_per_s": stock_trades / (stages.get("classifier", stages["recorder"]) - started),
            "recorder_rows_per_s": recorded / elapsed,
        },
        "messages_published_by_ingest": final["ingest"].get("messages_published"),
        "rows_recorded": recorded,
        "peak_rss_mb": {name: round(rss / 1e6, 1) for name, rss in sorted(system.peak_rss.items())},
        "cpu_seconds": {name: round(cpu, 1) for name, cpu in sorted(system.cpu_seconds.items())},
    }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    pick = lambda share: ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000  # noqa: E731
    return {"count": len(values), "p50_ms": round(pick(0.5), 2), "p99_ms": round(pick(0.99), 2),
            "max_ms": round(ordered[-1] * 1000, 2)}


async def latency(workdir: Path, nats_url: str, nats_pids: list[int], path: Path, speed: float, *, rate: float = 0.0,
                  skip_s: float = 0.0) -> dict[str, Any]:
    """`rate`: REPLAY_RATE (a steady pace, `speed` then unused); `skip_s`: trades published in the first seconds are
    left out (a warm-up)."""
    nc = await nats.connect(nats_url.split(","))
    published: dict[str, float] = {}  # "SYM:TotalVol" -> when ingest's trade appeared
    latest_total: dict[str, tuple[int, float]] = {}
    to_event: list[float] = []
    to_kv: list[float] = []
    to_ws: list[float] = []
    measured_from: list[float] = []  # when the first trade appeared, plus skip_s
    seen_trades = [0]  # measured or not
    trade, classified, stats = (msgspec.json.Decoder(Trade), msgspec.json.Decoder(ClassifiedTrade),
                                msgspec.json.Decoder(SessionStats))

    async def on_trade(msg: Any) -> None:
        item = trade.decode(msg.data)
        now = time.perf_counter()
        seen_trades[0] += 1
        if not measured_from:
            measured_from.append(now + skip_s)
        if now >= measured_from[0]:
            published[f"{item.symbol}:{item.total_volume}"] = now

    async def on_classified(msg: Any) -> None:
        item = classified.decode(msg.data)
        at = published.get(f"{item.symbol}:{item.total_volume}")
        if at is not None:
            to_event.append(time.perf_counter() - at)

    async def on_kv(msg: Any) -> None:
        item = stats.decode(msg.data)
        at = published.get(f"{item.symbol}:{item.total_volume}")
        if at is not None:
            to_kv.append(time.perf_counter() - at)

    await nc.subscribe("md.trade.*", cb=on_trade)
    await nc.subscribe("trade.classified.*", cb=on_classified)
    await nc.subscribe("$KV.session_stats.*", cb=on_kv)
    system = System(workdir / ("latency-steady" if rate else "latency"), nats_url, path, speed, nats_pids, rate)
    await asyncio.to_thread(system.wait_ready)

    async def websocket() -> None:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(f"http://127.0.0.1:{system.gateway_port}/ws/market", max_msg_size=0) as socket:
            async for message in socket:
                body = json.loads(message.data)
                if body["type"] != "delta":
                    continue
                now = time.perf_counter()
                for symbol, item in body["data"].get("quotes", {}).items():
                    if item:
                        at = published.get(f"{symbol}:{item['total_volume']}")
                        if at is not None:
                            to_ws.append(now - at)
                            latest_total[symbol] = (item["total_volume"], now)

    watcher = asyncio.create_task(websocket())
    try:
        idle_since = time.perf_counter()
        seen = 0
        # Until the replay has been quiet for 5 s. Nothing is sampled meanwhile: psutil's walk over the processes
        # blocks this loop for tens of milliseconds, and every message stamped after it would look that late.
        while time.perf_counter() - idle_since < 5:
            await asyncio.sleep(0.5)
            if seen_trades[0] != seen:
                seen, idle_since = seen_trades[0], time.perf_counter()
    finally:
        watcher.cancel()
        await nc.close()
        system.stop()
    return {"trades": len(published), "publish_to_classified": percentiles(to_event),
            "publish_to_kv": percentiles(to_kv), "publish_to_websocket": percentiles(to_ws)}


WARM_UP_S = 10.0  # seconds of frames at the steady rate before the measured stretch, while every service comes up
BASELINE_RUNS = 3
BASELINE_WINDOW = 50_000  # frames the bare chain's publisher may be ahead of its subscriber (about 10 MB)


async def baseline(nats_url: str, path: Path) -> float:
    """Bare nats-py: publish every frame, a subscriber decodes both JSON layers."""
    lines = path.read_bytes().splitlines()
    pub, sub = await nats.connect(nats_url.split(",")), await nats.connect(nats_url.split(","))
    done = asyncio.Event()
    received = 0

    async def decode(msg: Any) -> None:
        nonlocal received
        envelope = json.loads(msg.data)
        if isinstance(envelope, dict) and isinstance(envelope.get("Content"), str):
            json.loads(envelope["Content"])
        received += 1
        if received == len(lines):
            done.set()

    await sub.subscribe("bench.frames", cb=decode, pending_msgs_limit=-1, pending_bytes_limit=-1)
    await sub.flush()
    started = time.perf_counter()
    for sent, line in enumerate(lines, start=1):
        await pub.publish("bench.frames", line)
        if sent % 1000 == 0 and sent - received > BASELINE_WINDOW:
            # Unpaced, the publisher outruns the decoding subscriber until the server drops it as a slow consumer.
            await pub.flush()
            while sent - received > BASELINE_WINDOW // 2:  # the subscriber runs on this loop
                await asyncio.sleep(0.001)
    await pub.flush()
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    await pub.close()
    await sub.close()
    return len(lines) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channel", choices=CHANNELS, default="split",
                        help="split: X-TRADE and X-QUOTE frames; x: the combined X frames of X:ALL")
    parser.add_argument("--frames", type=int, default=500_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="frames/s for the latency stretch")
    parser.add_argument("--latency-seconds", type=int, default=20)
    parser.add_argument("--out", type=Path, help="default bench/results/pipeline.json (pipeline-x.json for x)")
    parser.add_argument("--cluster", type=int, choices=[CLUSTER_NODES],
                        help="also on a three-node cluster at STREAM_REPLICAS=3, against one server in the same run")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    day = date(2026, 11, 24)
    path = workdir / "day.jsonl"
    frames, stock_trades, kinds = generate(path, args.frames, day, args.channel)
    stretch = workdir / "stretch.jsonl"
    stretch_frames, span = window(path, stretch, "10:00:00", 3600)
    speed = max(1.0, args.rate * span / stretch_frames)
    budget = int(args.rate * args.latency_seconds)
    with stretch.open("rb") as source:
        kept = source.readlines()[:budget]  # the stretch kept to --latency-seconds at that pace
    stretch.write_bytes(lead_in(path, "10:00:00", LEAD_IN_S * speed) + b"".join(kept))
    steady = workdir / "steady.jsonl"
    steady.write_bytes(b"".join(warm_up(path, "10:00:00", int(args.rate * WARM_UP_S)) + kept))
    results: dict[str, Any] = {"cores": os.cpu_count(), "channel": args.channel, "frames_by_type": kinds,
                               "stock_trades": stock_trades}
    topologies = ["R1", "R3"] if args.cluster == CLUSTER_NODES else ["R1"]
    for topology in topologies:
        results[topology] = await run_on(topology, workdir / topology, path, frames, stock_trades, stretch, speed,
                                         args.rate, steady)
    args.out = args.out or REPO / "bench" / "results" / ("pipeline-x.json" if args.channel == "x" else "pipeline.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for topology in topologies:
        figures = results[topology]
        run, lat, base = figures["throughput"], figures["latency"], figures["baseline_frames_per_s"]
        print(f"SUMMARY {topology} {args.channel} channel, {results['cores']} cores: {run['frames']:,} frames in "
              f"{run['seconds']:.1f} s "
              f"({run['frames_per_s']:,.0f} frames/s end to end, {run['frames_per_s'] / base:.2f} of the bare chain's "
              f"{base:,.0f}); at {args.rate:,.0f} frames/s p99 publish->classified "
              f"{lat['publish_to_classified'].get('p99_ms')} ms, ->KV {lat['publish_to_kv'].get('p99_ms')} ms, "
              f"->WebSocket {lat['publish_to_websocket'].get('p99_ms')} ms (each exchange second's frames at once); "
              f"steady: ->classified {figures['latency_steady']['publish_to_classified'].get('p99_ms')} ms, ->KV "
              f"{figures['latency_steady']['publish_to_kv'].get('p99_ms')} ms; peak RSS max "
              f"{max(run['peak_rss_mb'].values()):.0f} MB")
    if len(topologies) == 2:
        one, three = (results[t]["throughput"]["frames_per_s"] for t in topologies)
        print(f"SUMMARY R3 / R1 end to end: {three / one:.2f} ({three:,.0f} against {one:,.0f} frames/s, same run)")


async def run_on(topology: str, workdir: Path, path: Path, frames: int, stock_trades: int, stretch: Path,
                 speed: float, rate: float, steady: Path) -> dict[str, Any]:
    """Throughput and latency on one server (R1) or a three-node cluster (R3); each phase on servers of its own (the
    same day twice would be deduplicated)."""
    figures: dict[str, Any] = {}
    for phase in ("throughput", "latency", "latency_steady"):
        servers: NatsServer | NatsCluster = (NatsCluster(workdir / f"nats-{phase}") if topology == "R3"
                                            else NatsServer(workdir / f"nats-{phase}"))
        nats_url = servers.start()
        nodes = servers.nodes if isinstance(servers, NatsCluster) else [servers]
        pids = [node.process.pid for node in nodes if node.process is not None]
        try:
            if phase == "throughput":
                # The best of BASELINE_RUNS: one run of the bare chain varies by a third on this machine, and the
                # ratio to its best is the one that does not flatter the system.
                runs = [await baseline(nats_url, path) for _ in range(BASELINE_RUNS)]
                figures["baseline_frames_per_s"] = max(runs)
                figures["baseline_runs_frames_per_s"] = [round(run) for run in runs]
                figures["throughput"] = await throughput(workdir, nats_url, pids, path, frames, stock_trades)
            elif phase == "latency":
                figures["latency"] = {"rate_frames_per_s": rate, "speed": round(speed, 1),
                                      **await latency(workdir, nats_url, pids, stretch, speed)}
            else:
                figures["latency_steady"] = {"rate_frames_per_s": rate, "warm_up_s": WARM_UP_S, **await latency(
                    workdir, nats_url, pids, steady, speed, rate=rate, skip_s=WARM_UP_S)}
        finally:
            servers.stop()
    return figures


if __name__ == "__main__":
    asyncio.run(main())
