"""WebSocket fan-out: N clients on the gateway while the market changes fast.

Every part runs in a process of its own: the gateway (default WS_THROTTLE_MS), nats-server, a writer, the clients
(spread over --client-processes), so that a busy client process neither holds back the writes it stamps nor the
arrivals it times more than a client machine would. CPU seconds of each process over the measured window are
printed.

A writer updates every symbol's session stats in KV at --rate updates/s (as the classifier would at a busy open),
each value stamped with the wall-clock time of the write. The gateway coalesces them into one delta per throttle
tick for all clients of `/ws/market`. Measured over --seconds:
- delivered messages/s across all clients;
- staleness: arrival at a client minus the write time of the newest update the message carries (p50, p99);
- the gateway process's RSS.
Baseline, same run: a bare aiohttp server broadcasting a same-sized payload to the same number of clients at the
same tick, naive `send_str` loop.

With --board, the price board of the whole simulated market (SIM_UNIVERSE=market: ~1,550 instruments across HOSE,
HNX, UPCOM and VN30F): the simulated day's frames go through ingest's normalizer and the board tracker's core, the
rows of the morning are loaded into KV `board`, then the writer writes the rest of the day's row changes at --rate
updates/s, each stamped with the wall-clock time of the write (`last_updated`). Every client subscribes, on one
socket, to the VN30 board and to a watchlist of 20 random symbols (1,000 distinct watchlists: one topic each).
Measured: board rows delivered/s across all clients, staleness of every row delivered (arrival minus its write
time: it includes the wait for the client's next turn, at most a throttle interval), the gateway's RSS. Baseline,
same run: a bare aiohttp server sending every client, each tick, one shared message the size of the gateway's VN30
deltas and one encoded for it alone the size of its watchlist deltas.

    python bench/fanout.py [--clients 1000] [--seconds 10] [--rate 500] [--client-processes 2]
    python bench/fanout.py --board [--clients 1000] [--seconds 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil
from aiohttp import web
from nats.js.kv import KeyValue

from launcher.local import NatsServer, free_port
from services.board.core import BoardCore
from services.ingest.normalize import Normalized, Normalizer
from services.ingest.simulator import MarketSimulator
from shared import bus, config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import BoardRow, Quote, SessionStats, Trade
from shared.subjects import Bucket

SYMBOLS = [f"S{n:03d}" for n in range(35)]
WATCHLIST = 20  # symbols per client, beside the VN30 board
BOARD_DAY = datetime(2026, 11, 24).date()
MORNING_SHARE = 0.4  # of the day's row changes loaded before the clients connect


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def write_stats(kv: KeyValue, rate: float, stop: asyncio.Event) -> int:
    """Session stats of SYMBOLS in turn, `rate` a second, each stamped with the time it is written."""
    day = datetime.now(EXCHANGE_TZ).date()
    written = 0
    interval = 1 / rate
    while not stop.is_set():
        symbol = SYMBOLS[written % len(SYMBOLS)]
        stats = SessionStats(symbol=symbol, trading_date=day, total_volume=written,
                             last_updated=datetime.now(EXCHANGE_TZ))
        await kv.put(symbol, msgspec.json.encode(stats))
        written += 1
        await asyncio.sleep(interval)
    return written


def board_day(seed: int) -> tuple[list[str], list[BoardRow]]:
    """The whole simulated market's day as board row changes, in order: (every instrument, the changes)."""
    simulator = MarketSimulator(seed=seed, trading_date=BOARD_DAY, universe="market")
    normalizer, core, changes = Normalizer(today=lambda: BOARD_DAY), BoardCore(), []
    trade_of, quote_of = msgspec.json.Decoder(Trade).decode, msgspec.json.Decoder(Quote).decode
    for frame in simulator.day():
        result = normalizer.normalize(frame.payload)
        for message in result.messages if isinstance(result, Normalized) else ():
            family = message.subject.rsplit(".", 1)[0]
            if family in ("md.trade", "md.futures.trade"):
                row = core.on_trade(trade_of(message.payload))
            elif family in ("md.quote", "md.futures.quote"):
                row = core.on_quote(quote_of(message.payload))
            else:
                continue
            if row is not None:
                changes.append(row)
    return sorted(core.rows), changes


async def write_board(kv: KeyValue, changes: list[BoardRow], rate: float, stop: asyncio.Event) -> int:
    """The day's row changes from the morning on, at `rate` a second (over again when they run out), in batches of
    a 50th of a second, each stamped with the time it is written."""
    start = int(len(changes) * MORNING_SHARE)
    written, tick = 0, 0.02
    per_tick = max(1, round(rate * tick))
    while not stop.is_set():
        began = time.perf_counter()
        batch = [changes[start + (written + n) % (len(changes) - start)] for n in range(per_tick)]
        now = datetime.now(EXCHANGE_TZ)
        await asyncio.gather(*(kv.put(row.symbol, msgspec.json.encode(msgspec.structs.replace(row, last_updated=now)))
                               for row in batch))
        written += len(batch)
        await asyncio.sleep(max(0.0, tick - (time.perf_counter() - began)))
    return written


async def writer_process(nats_url: str, changes_file: str | None, rate: float) -> None:
    """The writer's own process (a busy client process would hold back the writes it stamps): board rows from
    `changes_file`, else session stats, until SIGTERM; then prints `<written> <seconds>`."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    nc = await bus.connect(config.load({"NATS_URL": nats_url, "LOG_LEVEL": "warning"}), "bench-writer")
    first = time.perf_counter()
    if changes_file:
        changes = msgspec.json.decode(Path(changes_file).read_bytes(), type=list[BoardRow])
        first = time.perf_counter()
        written = await write_board(await nc.jetstream().key_value(str(Bucket.BOARD)), changes, rate, stop)
    else:
        written = await write_stats(await nc.jetstream().key_value(str(Bucket.SESSION_STATS)), rate, stop)
    seconds = time.perf_counter() - first
    await nc.close()
    print(written, seconds, flush=True)


async def start_writer(nats_url: str, rate: float, changes: list[BoardRow] | None = None) -> asyncio.subprocess.Process:
    board = []
    if changes is not None:
        changes_file = Path(tempfile.mkdtemp(prefix="bench-fanout-")) / "changes.json"
        changes_file.write_bytes(msgspec.json.encode(changes))
        board = ["--board-changes", str(changes_file)]
    return await asyncio.create_subprocess_exec(sys.executable, __file__, "--writer", "--nats-url", nats_url,
                                                "--rate", str(rate), *board, stdout=asyncio.subprocess.PIPE)


async def stop_writer(writer: asyncio.subprocess.Process) -> tuple[int, float]:
    """(written, over how long)"""
    writer.terminate()
    out, _ = await writer.communicate()
    written, seconds = out.split()
    return int(written), float(seconds)


async def load_morning(settings: config.Settings, changes: list[BoardRow]) -> int:
    """Every instrument's row as it stood at the end of the morning's changes."""
    rows: dict[str, BoardRow] = {}
    for row in changes[: int(len(changes) * MORNING_SHARE)]:
        rows[row.symbol] = row
    nc = await bus.connect(settings, "bench-loader")
    kv = await nc.jetstream().key_value(str(Bucket.BOARD))
    await asyncio.gather(*(kv.put(symbol, msgspec.json.encode(row)) for symbol, row in rows.items()))
    await nc.close()
    return len(rows)


class _Stamp(msgspec.Struct):
    last_updated: datetime


class _BoardMessage(msgspec.Struct):
    """What a bench client reads of a board message: each row's write time (the rest is skipped unread)."""

    type: str
    data: dict[str, _Stamp | None] | None = None
    topic: str | None = None


_read_board = msgspec.json.Decoder(_BoardMessage).decode


class Tally(msgspec.Struct):
    """What a process of clients received over the measurement (sent back to the bench's process as JSON)."""

    arrivals: int = 0  # messages
    rows: int = 0  # board rows delivered
    staleness: list[float] = msgspec.field(default_factory=list)
    sizes: dict[str, list[int]] = msgspec.field(default_factory=lambda: {"vn30": [], "watchlist": []})
    cpu: dict[str, float] = msgspec.field(default_factory=dict)  # CPU seconds over the measurement, by process

    def clear(self) -> None:
        self.arrivals = self.rows = 0
        self.staleness.clear()
        for sizes in self.sizes.values():
            sizes.clear()

    def add(self, other: Tally) -> None:
        self.arrivals += other.arrivals
        self.rows += other.rows
        self.staleness += other.staleness
        for kind, sizes in other.sizes.items():
            self.sizes[kind] += sizes


async def client(http: aiohttp.ClientSession, url: str, subscriptions: list[dict[str, Any]],
                 read: Callable[[str, float, Tally], None], tally: Tally, ready: Callable[[], None],
                 stop: asyncio.Event, compress: bool) -> None:
    """One socket: `subscriptions` sent, then every message counted and timed (`read` for the gateway's); with
    `compress`, asking for permessage-deflate as browsers do."""
    async with http.ws_connect(url, max_msg_size=0, compress=15 if compress else 0) as socket:
        for subscription in subscriptions:
            await socket.send_json(subscription)
        ready()
        async for message in socket:
            now = time.time()
            if stop.is_set():
                break
            tally.arrivals += 1
            if message.data.startswith('{"sent"'):  # the baseline's
                tally.staleness.append(now - json.loads(message.data)["sent"])
            else:
                read(message.data, now, tally)


def read_board(data: str, now: float, tally: Tally) -> None:
    """A board delta: the staleness of every row it carries."""
    body = _read_board(data)
    if body.type != "delta" or not body.data:
        return
    tally.sizes["vn30" if body.topic == "group=VN30" else "watchlist"].append(len(data))
    for stamp in body.data.values():
        if stamp is not None:
            tally.rows += 1
            tally.staleness.append(now - stamp.last_updated.timestamp())


class _Stats(msgspec.Struct):
    last_updated: datetime


class _MarketDelta(msgspec.Struct):
    quotes: dict[str, _Stats | None] = {}


class _MarketMessage(msgspec.Struct):
    """What a bench client reads of a `market` message: the write time of each quote in a delta."""

    type: str
    data: _MarketDelta | None = None


_read_market = msgspec.json.Decoder(_MarketMessage).decode


def read_market(data: str, now: float, tally: Tally) -> None:
    """A `/ws/market` delta: its staleness is that of the newest quote it carries."""
    body = _read_market(data)
    stamps = [q.last_updated.timestamp() for q in (body.data.quotes if body.data else {}).values() if q]
    if body.type == "delta" and stamps:
        tally.staleness.append(now - max(stamps))


async def clients_process(url: str, watchlists_file: str, part: int, parts: int, seconds: float,
                          compress: bool) -> None:
    """A process of clients (its `part` of the clients, every `parts`-th; a watchlist each: on the board, else
    None: on `/ws/market`): connects them, says `ready`, waits for `go` on stdin, lets 2 s pass (every snapshot
    sent), then measures `seconds` and prints its Tally."""
    watchlists = msgspec.json.decode(Path(watchlists_file).read_bytes(), type=list[list[str] | None])[part::parts]
    tally, ready, stop = Tally(), asyncio.Event(), asyncio.Event()
    connected = [0]

    def one_more() -> None:
        connected[0] += 1
        if connected[0] == len(watchlists):
            ready.set()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = [asyncio.create_task(
            client(http, url, [{"op": "subscribe", "channel": "board", "group": "VN30"},
                               {"op": "subscribe", "channel": "board", "symbols": watchlist}], read_board, tally,
                   one_more, stop, compress) if watchlist
            else client(http, url, [], read_market, tally, one_more, stop, compress))
            for watchlist in watchlists]
        await asyncio.wait_for(ready.wait(), 180)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.sleep(2.0)
        tally.clear()
        await asyncio.sleep(seconds)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    sys.stdout.buffer.write(msgspec.json.encode(tally))
    sys.stdout.flush()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    times = {name: psutil.Process(pid).cpu_times() for name, pid in pids.items()}
    return {name: spent.user + spent.system for name, spent in times.items()}


async def measure(url: str, watchlists: list[list[str]] | list[None], seconds: float, processes: int,
                  cpu_of: dict[str, int], compress: bool = False) -> Tally:
    """What the clients, spread over `processes` processes of their own, receive over `seconds` once all are
    connected and have their snapshots; and the CPU seconds each process (`cpu_of`, by name, and the clients'
    processes) spent meanwhile."""
    watchlists_file = Path(tempfile.mkdtemp(prefix="bench-fanout-")) / "watchlists.json"
    watchlists_file.write_bytes(msgspec.json.encode(watchlists))
    parts = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--clients-of", url, "--watchlists", str(watchlists_file), "--part", str(part),
        "--parts", str(processes), "--seconds", str(seconds), *(["--compress"] if compress else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=2**30) for part in range(processes)]
    for process in parts:
        assert process.stdout is not None
        if await asyncio.wait_for(process.stdout.readline(), 240) != b"ready\n":
            raise RuntimeError("a process of clients did not connect")
    for process in parts:
        process.stdin.write(b"go\n")  # type: ignore[union-attr]
        await process.stdin.drain()  # type: ignore[union-attr]
    watched = {**cpu_of, **{f"clients {n + 1}": process.pid for n, process in enumerate(parts)}}
    await asyncio.sleep(2.0)
    cpu_before = cpu_seconds(watched)
    await asyncio.sleep(seconds)
    cpu_after = cpu_seconds(watched)
    tally = Tally(cpu={name: spent - cpu_before[name] for name, spent in cpu_after.items()})
    for process in parts:
        out, _ = await process.communicate()
        tally.add(msgspec.json.decode(out, type=Tally))
    return tally


async def wait_until_serving(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url) as reply:
                    if reply.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def bare_server(port: int, tick_s: float, payload_bytes: int, own_payload_bytes: int, own_share: float) -> None:
    """The baseline: a bare aiohttp broadcast of a same-sized JSON payload every tick, and (`own_payload_bytes`) one
    more message encoded for a client alone, to `own_share` of the clients each tick (in turn)."""
    sockets: set[web.WebSocketResponse] = set()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sockets.add(socket)
        try:
            async for _ in socket:
                pass
        finally:
            sockets.discard(socket)
        return socket

    async def broadcast(app: web.Application) -> None:
        async def loop() -> None:
            padding, own, owed = "x" * payload_bytes, "y" * own_payload_bytes, 0.0
            while True:
                await asyncio.sleep(tick_s)
                message = json.dumps({"sent": time.time(), "padding": padding})
                for number, socket in enumerate(list(sockets)):
                    await socket.send_str(message)
                    owed += own_share
                    if own_payload_bytes and owed >= 1:
                        owed -= 1
                        await socket.send_str(json.dumps({"sent": time.time(), "client": number, "padding": own}))

        app["loop"] = asyncio.create_task(loop())

    app = web.Application()
    app.router.add_get("/ws", handle)
    app.on_startup.append(broadcast)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def start_nats() -> tuple[NatsServer, config.Settings]:
    """A nats-server of the bench's own, with the system's streams and buckets."""
    nats = NatsServer(Path(tempfile.mkdtemp(prefix="bench-fanout-")) / "nats")
    nats.start()
    settings = config.load({"NATS_URL": nats.url, "LOG_LEVEL": "warning"})
    seed = await bus.connect(settings, "bench")
    await bus.ensure_topology(seed.jetstream(), settings)
    await seed.close()
    return nats, settings


async def stop(*processes: asyncio.subprocess.Process | None, nats: NatsServer) -> None:
    for process in processes:
        if process is not None:
            process.terminate()
            await process.wait()
    nats.stop()


async def start_bare(port: int, throttle_ms: int, payload: int, own_payload: int = 0,
                     own_share: float = 0.0) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, __file__, "--bare-server", str(port), "--throttle-ms",
                                                str(throttle_ms), "--payload", str(payload), "--own-payload",
                                                str(own_payload), "--own-share", str(own_share))


async def start_gateway(nats_url: str, port: int, args: argparse.Namespace) -> asyncio.subprocess.Process:
    env = {**os.environ, "NATS_URL": nats_url, "GATEWAY_PORT": str(port), "METRICS_PORT": "0",
           "WS_MAX_CONNECTIONS_PER_IP": str(args.clients + 10), "WS_THROTTLE_MS": str(args.throttle_ms),
           "LOG_LEVEL": "warning"}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "services.gateway", env=env)


async def main_board(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    symbols, changes = board_day(args.seed)
    made_s, changed = time.perf_counter() - began, len(changes)
    picker = random.Random(args.seed)
    watchlists = [picker.sample(symbols, WATCHLIST) for _ in range(args.clients)]
    nats, settings = await start_nats()
    loaded = await load_morning(settings, changes)
    port, bare_port = free_port(), free_port()
    gateway = await start_gateway(nats.url, port, args)
    writer = bare = None
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz")
        await wait_until(lambda: board_rows(port), loaded)
        rss_before = psutil.Process(gateway.pid).memory_info().rss
        writer = await start_writer(nats.url, args.rate, changes)
        assert nats.process is not None
        tally = await measure(f"http://127.0.0.1:{port}/ws", watchlists, args.seconds, args.client_processes,
                              {"gateway": gateway.pid, "nats-server": nats.process.pid, "writer": writer.pid},
                              args.compress)
        rss = psutil.Process(gateway.pid).memory_info().rss
        written, writing_s = await stop_writer(writer)
        writer = None
        shared_bytes = int(sum(tally.sizes["vn30"]) / max(1, len(tally.sizes["vn30"])))
        own_bytes = int(sum(tally.sizes["watchlist"]) / max(1, len(tally.sizes["watchlist"])))
        # the watchlist deltas the gateway sent, as a share of (clients x ticks): a watchlist that did not change
        # in a tick gets no message
        own_share = len(tally.sizes["watchlist"]) / (args.clients * args.seconds * 1000 / args.throttle_ms)
        bare = await start_bare(bare_port, args.throttle_ms, shared_bytes, own_bytes, min(1.0, own_share))
        await wait_until_serving(f"http://127.0.0.1:{bare_port}/")
        baseline = await measure(f"http://127.0.0.1:{bare_port}/ws", watchlists, args.seconds,
                                 args.client_processes, {"bare server": bare.pid}, args.compress)
    finally:
        if writer is not None:
            await stop_writer(writer)
        await stop(gateway, bare, nats=nats)
    delivered, bare_delivered = tally.arrivals / args.seconds, baseline.arrivals / args.seconds
    p99_ms = percentile(tally.staleness, 0.99) * 1000
    print(f"board of the whole simulated market: {len(symbols):,} instruments ({loaded:,} rows loaded), "
          f"{changed:,} row changes in the day (made in {made_s:.1f} s); {written / writing_s:,.0f} row "
          f"updates/s written; {args.clients} clients each on VN30 + a watchlist of {WATCHLIST}; "
          f"WS_THROTTLE_MS={args.throttle_ms}; {os.cpu_count()} cores")
    print(f"gateway: {delivered:,.0f} messages/s, {tally.rows / args.seconds:,.0f} board rows/s delivered; "
          f"staleness p50 {percentile(tally.staleness, 0.5) * 1000:.0f} ms, p99 {p99_ms:.0f} ms; RSS "
          f"{rss / 1e6:.0f} MB (before clients {rss_before / 1e6:.0f} MB); messages {shared_bytes:,} B (VN30) and "
          f"{own_bytes:,} B (watchlist) on average")
    print(f"CPU over the {args.seconds:.0f} s measured: {cpu_shares(tally)}")
    bare_p50, bare_p99 = (percentile(baseline.staleness, share) * 1000 for share in (0.5, 0.99))
    print(f"baseline bare aiohttp, same payload sizes: {bare_delivered:,.0f} messages/s; latency p50 "
          f"{bare_p50:.0f} ms, p99 {bare_p99:.0f} ms; CPU {cpu_shares(baseline)}")
    print(f"ratio delivered gateway / baseline: {delivered / bare_delivered:.2f}; target p99 staleness < "
          f"{args.throttle_ms + 100} ms: {'met' if p99_ms < args.throttle_ms + 100 else 'MISSED'}; "
          f"RSS < 300 MB: {'met' if rss < 300e6 else 'MISSED'}")


async def board_rows(port: int) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/market/board") as reply:
        return len(await reply.json()) if reply.status == 200 else 0


async def wait_until(count: Callable[[], Awaitable[int]], wanted: int) -> None:
    for _ in range(600):
        if await count() >= wanted:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the gateway did not load {wanted} rows")


async def main(args: argparse.Namespace) -> None:
    nats, _ = await start_nats()
    port, bare_port = free_port(), free_port()
    gateway = await start_gateway(nats.url, port, args)
    writer = bare = None
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz")
        writer = await start_writer(nats.url, args.rate)
        await asyncio.sleep(1)
        rss_before = psutil.Process(gateway.pid).memory_info().rss
        assert nats.process is not None
        tally = await measure(f"http://127.0.0.1:{port}/ws/market", [None] * args.clients, args.seconds,
                              args.client_processes,
                              {"gateway": gateway.pid, "nats-server": nats.process.pid, "writer": writer.pid},
                              args.compress)
        rss = psutil.Process(gateway.pid).memory_info().rss
        written, writing_s = await stop_writer(writer)
        writer = None
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/market/snapshot") as r:
            payload = len(await r.read()) // 2
        bare = await start_bare(bare_port, args.throttle_ms, payload)
        await wait_until_serving(f"http://127.0.0.1:{bare_port}/")
        baseline = await measure(f"http://127.0.0.1:{bare_port}/ws", [None] * args.clients, args.seconds,
                                 args.client_processes, {"bare server": bare.pid}, args.compress)
    finally:
        if writer is not None:
            await stop_writer(writer)
        await stop(gateway, bare, nats=nats)
    delivered, bare_delivered = tally.arrivals / args.seconds, baseline.arrivals / args.seconds
    p99_ms = percentile(tally.staleness, 0.99) * 1000
    print(f"{args.clients} clients on /ws/market, WS_THROTTLE_MS={args.throttle_ms}, "
          f"{written / writing_s:,.0f} KV updates/s over {len(SYMBOLS)} symbols, {os.cpu_count()} cores")
    print(f"gateway: {delivered:,.0f} messages/s delivered; staleness p50 "
          f"{percentile(tally.staleness, 0.5) * 1000:.0f} ms, p99 {p99_ms:.0f} ms; RSS {rss / 1e6:.0f} MB "
          f"(before clients {rss_before / 1e6:.0f} MB)")
    print(f"CPU over the {args.seconds:.0f} s measured: {cpu_shares(tally)}")
    print(f"baseline bare aiohttp broadcast: {bare_delivered:,.0f} messages/s; latency p50 "
          f"{percentile(baseline.staleness, 0.5) * 1000:.0f} ms, p99 {percentile(baseline.staleness, 0.99) * 1000:.0f}"
          f" ms; CPU {cpu_shares(baseline)}")
    print(f"ratio delivered gateway / baseline: {delivered / bare_delivered:.2f}; target p99 staleness < "
          f"{args.throttle_ms + 100} ms: {'met' if p99_ms < args.throttle_ms + 100 else 'MISSED'}; "
          f"RSS < 200 MB: {'met' if rss < 200e6 else 'MISSED'}")


def cpu_shares(tally: Tally) -> str:
    return ", ".join(f"{name} {spent:.1f} s" for name, spent in tally.cpu.items())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=None, help="KV updates per second (500; --board 1,000)")
    parser.add_argument("--board", action="store_true", help="the whole market's board, VN30 + watchlists")
    parser.add_argument("--seed", type=int, default=1, help="--board: the simulated market and the watchlists")
    parser.add_argument("--throttle-ms", type=int, default=500)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--payload", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--own-payload", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--own-share", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--client-processes", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--compress", action="store_true",
                        help="clients ask for permessage-deflate, as browsers do (both the gateway and the baseline)")
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--board-changes", help=argparse.SUPPRESS)
    parser.add_argument("--clients-of", help=argparse.SUPPRESS)
    parser.add_argument("--watchlists", help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.rate is None:
        arguments.rate = 1_000.0 if arguments.board else 500.0
    if arguments.clients_of:
        asyncio.run(clients_process(arguments.clients_of, arguments.watchlists, arguments.part, arguments.parts,
                                    arguments.seconds, arguments.compress))
    elif arguments.writer:
        asyncio.run(writer_process(arguments.nats_url, arguments.board_changes, arguments.rate))
    elif arguments.bare_server:
        bare_server(arguments.bare_server, arguments.throttle_ms / 1000, arguments.payload, arguments.own_payload,
                    arguments.own_share)
    else:
        asyncio.run(main_board(arguments) if arguments.board else main(arguments))
