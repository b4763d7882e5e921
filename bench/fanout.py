"""WebSocket fan-out: N clients on the gateway's /ws/market while the market changes fast.

A writer updates every symbol's session stats in KV at --rate updates/s (as the classifier would at a busy open),
each value stamped with the wall-clock time of the write. The gateway (its own process, default WS_THROTTLE_MS)
coalesces them into one delta per throttle tick for all clients. Measured over --seconds:
- delivered messages/s across all clients;
- staleness: arrival at a client minus the write time of the newest update the message carries (p50, p99);
- the gateway process's RSS.
Baseline, same run: a bare aiohttp server (its own process) broadcasting a same-sized payload to the same number of
clients at the same tick, naive `send_bytes` loop.

    python bench/fanout.py [--clients 1000] [--seconds 10] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import msgspec
import psutil
from aiohttp import web

from launcher.local import NatsServer, free_port
from shared import bus, config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import SessionStats
from shared.subjects import Bucket

SYMBOLS = [f"S{n:03d}" for n in range(35)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def write_updates(settings: config.Settings, rate: float, stop: asyncio.Event) -> int:
    nc = await bus.connect(settings, "bench-writer")
    kv = await nc.jetstream().key_value(str(Bucket.SESSION_STATS))
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
    await nc.close()
    return written


async def client(http: aiohttp.ClientSession, url: str, arrivals: list[float], staleness: list[float], stamped: bool,
                 ready: asyncio.Event, connected: list[int], stop: asyncio.Event) -> None:
    async with http.ws_connect(url, max_msg_size=0) as socket:
        connected[0] += 1
        if connected[0] == connected[1]:
            ready.set()
        async for message in socket:
            now = time.time()
            if stop.is_set():
                break
            arrivals.append(now)
            body = json.loads(message.data)
            if stamped and body.get("type") == "delta":
                newest = max(datetime.fromisoformat(q["last_updated"]).timestamp()
                             for q in body["data"]["quotes"].values() if q)
                staleness.append(now - newest)
            elif not stamped:
                staleness.append(now - body["sent"])


async def measure(url: str, clients: int, seconds: float, stamped: bool) -> tuple[float, list[float]]:
    arrivals: list[float] = []
    staleness: list[float] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    connected = [0, clients]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = [asyncio.create_task(client(http, url, arrivals, staleness, stamped, ready, connected, stop))
                 for _ in range(clients)]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(1.0)
        arrivals.clear()
        staleness.clear()
        await asyncio.sleep(seconds)
        stop.set()
        delivered = len(arrivals) / seconds
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return delivered, staleness


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


def bare_server(port: int, tick_s: float, payload_bytes: int) -> None:
    """The baseline: a bare aiohttp broadcast of a same-sized JSON payload every tick."""
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
            padding = "x" * payload_bytes
            while True:
                await asyncio.sleep(tick_s)
                message = json.dumps({"sent": time.time(), "padding": padding})
                for socket in list(sockets):
                    await socket.send_str(message)

        app["loop"] = asyncio.create_task(loop())

    app = web.Application()
    app.router.add_get("/ws", handle)
    app.on_startup.append(broadcast)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    nats = NatsServer(workdir / "nats")
    nats.start()
    settings = config.load({"NATS_URL": nats.url, "LOG_LEVEL": "warning"})
    seed = await bus.connect(settings, "bench")
    await bus.ensure_topology(seed.jetstream(), settings)
    await seed.close()
    port = free_port()
    env = {**os.environ, "NATS_URL": nats.url, "GATEWAY_PORT": str(port), "METRICS_PORT": "0",
           "WS_MAX_CONNECTIONS_PER_IP": str(args.clients + 10), "WS_THROTTLE_MS": str(args.throttle_ms),
           "LOG_LEVEL": "warning"}
    gateway = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.gateway", env=env)
    stop_writing = asyncio.Event()
    writer = asyncio.create_task(write_updates(settings, args.rate, stop_writing))
    bare_port = free_port()
    bare = None
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz")
        await asyncio.sleep(1)
        rss_before = psutil.Process(gateway.pid).memory_info().rss
        delivered, staleness = await measure(f"http://127.0.0.1:{port}/ws/market", args.clients, args.seconds, True)
        rss = psutil.Process(gateway.pid).memory_info().rss
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/market/snapshot") as r:
            payload = len(await r.read()) // 2
        bare = await asyncio.create_subprocess_exec(sys.executable, __file__, "--bare-server", str(bare_port),
                                                    "--throttle-ms", str(args.throttle_ms), "--payload", str(payload))
        await wait_until_serving(f"http://127.0.0.1:{bare_port}/")
        bare_delivered, bare_latency = await measure(f"http://127.0.0.1:{bare_port}/ws", args.clients, args.seconds,
                                                     False)
    finally:
        stop_writing.set()
        written = await writer
        gateway.terminate()
        await gateway.wait()
        if bare is not None:
            bare.terminate()
            await bare.wait()
        nats.stop()
    print(f"{args.clients} clients on /ws/market, WS_THROTTLE_MS={args.throttle_ms}, "
          f"{written / (args.seconds + 3):,.0f} KV updates/s over {len(SYMBOLS)} symbols, {os.cpu_count()} cores")
    print(f"gateway: {delivered:,.0f} messages/s delivered; staleness p50 {percentile(staleness, 0.5) * 1000:.0f} ms,"
          f" p99 {percentile(staleness, 0.99) * 1000:.0f} ms; RSS {rss / 1e6:.0f} MB "
          f"(before clients {rss_before / 1e6:.0f} MB)")
    print(f"baseline bare aiohttp broadcast: {bare_delivered:,.0f} messages/s; latency p50 "
          f"{percentile(bare_latency, 0.5) * 1000:.0f} ms, p99 {percentile(bare_latency, 0.99) * 1000:.0f} ms")
    p99_ms = percentile(staleness, 0.99) * 1000
    print(f"ratio delivered gateway / baseline: {delivered / bare_delivered:.2f}; target p99 staleness < "
          f"{args.throttle_ms + 100} ms: {'met' if p99_ms < args.throttle_ms + 100 else 'MISSED'}; "
          f"RSS < 200 MB: {'met' if rss < 200e6 else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0, help="KV updates per second")
    parser.add_argument("--throttle-ms", type=int, default=500)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--payload", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.bare_server:
        bare_server(arguments.bare_server, arguments.throttle_ms / 1000, arguments.payload)
    else:
        asyncio.run(main(arguments))
