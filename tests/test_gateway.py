"""The gateway against a real nats-server, its KV filled by the real trackers from the recorded day: every REST
endpoint's shape and values, bad parameters, the token, CORS and gzip, headers holding bytes that are not UTF-8
(never a 500), WebSocket snapshots and throttled deltas, the per-address limit (abrupt disconnects included), a slow
client not holding back a fast one, and a resync after a NATS restart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from conftest import _wipe_topology
from helpers import REPLAY_DAY, caught_up, eventually, expected_day, run_in_process
from stack import get
from test_ingest import replay

from launcher.local import NatsServer, free_port
from services.alerts.service import AlertsService
from services.board.service import BoardService
from services.classifier.service import ClassifierService
from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.gateway.board import MAX_SYMBOLS
from services.gateway.service import Gateway
from services.index.service import IndexService
from shared import bus, config
from shared.market import EXCHANGE_TZ, SCHEDULES
from shared.messages.domain import Alert, AlertType, SessionStats, Severity
from shared.subjects import Bucket, derived_subject

pytestmark = pytest.mark.integration


ALERT_DAY = date(2026, 11, 30)


class Running:
    def __init__(self, settings: config.Settings, gateway: Gateway, url: str) -> None:
        self.settings = settings
        self.gateway = gateway
        self.url = url


async def fill(settings: config.Settings, *, wipe: bool = True) -> None:
    """The recorded day through ingest and every tracker (into a fresh topology, unless told to keep it)."""
    if wipe:
        nc = await bus.connect(settings, "fill")
        await _wipe_topology(nc)
        await bus.ensure_topology(nc.jetstream(), settings)
        await nc.close()
    await replay(settings, REPLAY_DAY)
    trackers = [ClassifierService(), ForeignService(), IndexService(), DerivativesService(), BoardService(),
                AlertsService()]
    running = [await run_in_process(actor, settings) for actor in trackers]
    await eventually(lambda: all(caught_up(actor) for actor in trackers))
    for task, stop in running:
        stop.set()
        assert await task == 0


@contextlib.asynccontextmanager
async def gateway(settings: config.Settings, **overrides: Any) -> AsyncIterator[Running]:
    run = msgspec.structs.replace(settings, metrics_port=0, gateway_port=free_port(), **overrides)
    actor = Gateway()
    task, stop = await run_in_process(actor, run)
    await eventually(actor.ready)
    try:
        yield Running(run, actor, f"http://127.0.0.1:{actor.port}")
    finally:
        stop.set()
        assert await task == 0


@pytest.fixture(scope="module")
async def filled(nats_url: str, database_url: str) -> config.Settings:
    settings = config.load({"NATS_URL": nats_url, "DATABASE_URL": database_url, "METRICS_PORT": "0",
                            "VN30_SYMBOLS": ",".join(expected_day()["vn30_basket"])})
    await fill(settings)
    return settings


@pytest.fixture(scope="module")
async def served(filled: config.Settings) -> AsyncIterator[Running]:
    async with gateway(filled, ws_throttle_ms=50) as running:
        yield running


# --- REST --------------------------------------------------------------------------------------------------------


async def test_snapshot(served: Running) -> None:
    status, body, _ = await get(f"{served.url}/api/market/snapshot")
    assert status == 200
    expected = expected_day()
    assert body["trading_date"] == expected["trading_date"]
    assert set(body["quotes"]) == set(expected["quotes"])
    for symbol, figures in expected["quotes"].items():
        for field, value in figures.items():
            assert body["quotes"][symbol][field] == (value if field == "symbol" else pytest.approx(value, abs=0.5))
    for symbol, figures in expected["prices"].items():
        for field, value in figures.items():
            assert body["prices"][symbol][field] == pytest.approx(value, abs=1e-6)
    for index_id, figures in expected["indices"].items():
        for field, value in figures.items():
            assert body["indices"][index_id][field] == (value if field == "index_id" else pytest.approx(value))
    assert [d["symbol"] for d in body["foreign"]["top_buy"]] == expected["foreign"]["summary"]["top_buy"]
    for field, value in expected["derivatives"].items():
        assert body["derivatives"][field] == (value if isinstance(value, str | bool) else pytest.approx(value))


async def test_foreign_detail_and_volume_stats(served: Running) -> None:
    expected = expected_day()
    status, body, _ = await get(f"{served.url}/api/market/foreign-detail")
    assert status == 200
    assert [s["symbol"] for s in body["stocks"]] == sorted(expected["foreign"]["stocks"])  # the basket, not HAG
    assert body["summary"]["total_net_value"] == pytest.approx(expected["foreign"]["summary"]["total_net_value"])
    status, body, _ = await get(f"{served.url}/api/market/volume-stats")
    assert status == 200
    assert [s["symbol"] for s in body["stats"]] == sorted(expected["quotes"])
    assert body["stats"][0]["mua_chu_dong_volume"] == expected["quotes"]["ACB"]["mua_chu_dong_volume"]


async def test_the_trading_schedule_is_the_one_the_system_uses(served: Running) -> None:
    status, body, _ = await get(f"{served.url}/api/market/schedule")
    assert status == 200
    assert body["utc_offset"] == "+07:00"
    assert set(body["exchanges"]) == {str(exchange) for exchange in SCHEDULES}
    for exchange, phases in SCHEDULES.items():
        assert [(p["start"], p["phase"]) for p in body["exchanges"][str(exchange)]] == [
            (start.strftime("%H:%M"), str(phase)) for start, phase in phases]
    hose = {p["start"]: p["phase"] for p in body["exchanges"]["HOSE"]}
    assert hose["14:45"] == "post_close"  # put-through runs to 15:00
    assert hose["15:00"] == "closed"


async def test_basis_trend_counts_back_from_the_latest_point(served: Running) -> None:
    expected = [round(b, 2) for b in expected_day()["basis_points"]]
    status, everything, _ = await get(f"{served.url}/api/market/basis-trend", params={"minutes": "120"})
    assert status == 200
    assert [round(p["basis"], 2) for p in everything] == expected[-len(everything):]
    latest = everything[-1]["timestamp"]
    status, recent, _ = await get(f"{served.url}/api/market/basis-trend")  # default: 30 minutes
    assert status == 200
    assert recent[-1]["timestamp"] == latest
    assert 0 < len(recent) <= len(everything)
    from datetime import datetime
    span = datetime.fromisoformat(recent[-1]["timestamp"]) - datetime.fromisoformat(recent[0]["timestamp"])
    assert span.total_seconds() <= 30 * 60
    assert all(p["futures_symbol"] == "VN30F2612" for p in recent)


@pytest.mark.parametrize(("value", "status"), [("abc", 400), ("1.5", 400), ("0", 422), ("121", 422), ("-3", 422)])
async def test_bad_parameters_name_the_parameter(served: Running, value: str, status: int) -> None:
    got, body, _ = await get(f"{served.url}/api/market/basis-trend", params={"minutes": value})
    assert got == status
    assert body["parameter"] == "minutes"
    assert "minutes" in body["error"]


async def test_unknown_paths_are_json_404(served: Running) -> None:
    status, body, _ = await get(f"{served.url}/api/market/nothing-here")
    assert status == 404
    assert body == {"error": "Not Found", "parameter": None}


async def test_health_openapi_metrics_and_gzip(served: Running) -> None:
    status, body, _ = await get(f"{served.url}/healthz")
    assert (status, body["ready"]) == (200, True)
    status, document, _ = await get(f"{served.url}/api/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) >= {"/api/market/snapshot", "/api/market/foreign-detail",
                                      "/api/market/volume-stats", "/api/market/basis-trend", "/healthz"}
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(f"{served.url}/api/market/snapshot", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers.get("Content-Encoding") == "gzip"
        async with http.get(f"{served.url}/metrics") as response:
            assert "stocktracker_gateway_requests_total" in await response.text()


async def test_the_document_is_the_route_table(served: Running) -> None:
    """Every path the document names is served, every route it serves is in the document, and each integer
    parameter's documented bounds are the ones the handler enforces (they come from one declaration)."""
    _, document, _ = await get(f"{served.url}/api/openapi.json")
    app = served.gateway.make_app()
    served_paths = {(route.resource.canonical, route.method.lower()) for route in app.router.routes()
                    if route.method in ("GET", "POST", "DELETE") and route.resource is not None
                    and route.resource.canonical.startswith(("/api/market", "/api/history", "/api/alerts",
                                                             "/healthz"))}
    assert served_paths == {(path, method) for path, item in document["paths"].items() for method in item}
    checked = 0
    for path, item in document["paths"].items():
        concrete = path.replace("{symbol}", "ACB").replace("{name}", "VN30").replace("{contract}", "VN30F2612")
        for param in item.get("get", {}).get("parameters", []):
            schema = param["schema"]
            if schema.get("type") != "integer":
                continue
            checked += 1
            status, body, _ = await get(f"{served.url}{concrete}?{param['name']}={schema['maximum'] + 1}")
            assert (status, body["parameter"]) == (422, param["name"]), path
            status, _, _ = await get(f"{served.url}{concrete}?{param['name']}={schema['maximum']}")
            assert status not in (400, 422), path  # taken (this gateway's history database may not be there: 503)
            status, _, _ = await get(f"{served.url}{concrete}?{param['name']}={schema['minimum'] - 1}")
            assert status == 422, path
    assert checked == 5  # minutes, limit, days, the movers' limit, the alerts' limit


async def test_cors(filled: config.Settings) -> None:
    async with gateway(filled, gateway_cors_origins=["https://board.example"]) as running:
        _, _, response = await get(f"{running.url}/api/market/snapshot", headers={"Origin": "https://board.example"})
        assert response.headers["Access-Control-Allow-Origin"] == "https://board.example"
        _, _, response = await get(f"{running.url}/api/market/snapshot", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in response.headers
        async with aiohttp.ClientSession() as http, http.options(
                f"{running.url}/api/market/snapshot",
                headers={"Origin": "https://board.example", "Access-Control-Request-Method": "GET"}) as preflight:
            assert preflight.status == 204
            assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


# --- token -------------------------------------------------------------------------------------------------------


async def test_token_on_websocket_and_optionally_rest(filled: config.Settings) -> None:
    async with gateway(filled, gateway_token="s3cret") as running, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{running.url}/ws/foreign") as refused:
            await refused.receive()
            assert refused.close_code == 1008
        async with http.ws_connect(f"{running.url}/ws/foreign?token=wrong") as refused:
            await refused.receive()
            assert refused.close_code == 1008
        async with http.ws_connect(f"{running.url}/ws/foreign?token=s3cret") as accepted:
            assert json.loads((await accepted.receive()).data)["type"] == "snapshot"
        async with http.ws_connect(f"{running.url}/ws/foreign",
                                   headers={"Authorization": "Bearer s3cret"}) as accepted:
            assert json.loads((await accepted.receive()).data)["type"] == "snapshot"
        assert (await get(f"{running.url}/api/market/snapshot"))[0] == 200  # REST stays open by default
    async with gateway(filled, gateway_token="s3cret", gateway_token_rest=True) as running:
        assert (await get(f"{running.url}/api/market/snapshot"))[0] == 401
        assert (await get(f"{running.url}/api/market/snapshot", params={"token": "s3cret"}))[0] == 200
        assert (await get(f"{running.url}/api/market/snapshot",
                          headers={"Authorization": "Bearer s3cret"}))[0] == 200
        assert (await get(f"{running.url}/healthz"))[0] == 200  # probes stay open


# --- headers that are not UTF-8 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def guarded(filled: config.Settings) -> AsyncIterator[Running]:
    async with gateway(filled, gateway_token="s3cret", gateway_token_rest=True,
                       gateway_cors_origins=["https://board.example"]) as running:
        yield running


async def raw_exchange(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """`request` as bytes on a socket of its own (no client library cleans them up); (status, head, what follows
    the head within a second: a WebSocket's first frame)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 101") and not rest:
            with contextlib.suppress(TimeoutError):
                rest = await asyncio.wait_for(reader.read(65536), 1)
        return int(head.split(b" ", 2)[1]), head, rest
    finally:
        writer.close()


HANDSHAKE = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
WS_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
WS_TEXT, WS_CLOSE = b"\x81", b"\x88"  # the first byte of a frame: FIN and the opcode


@pytest.mark.parametrize(("request_line", "headers", "status"), [
    (b"GET /api/market/snapshot", b"Authorization: Bearer \xff\xfe\r\n", 401),  # no token, not a 500
    (b"GET /api/market/snapshot", b"Authorization: Bearer s3cret\xff\r\n", 401),
    (b"GET /api/market/snapshot?token=s3cret", b"Origin: https://board\xff.example\r\n", 200),
    (b"GET /api/market/snapshot?token=s3cret", b"Accept-Encoding: gzip\xff\r\n", 200),
    (b"GET /api/market/snapshot?token=s3cret", b"Host: \xff\r\nUser-Agent: \xc3\x28\r\n", 421),  # no Host
    (b"OPTIONS /api/market/snapshot", b"Origin: \xff\r\nAccess-Control-Request-Method: GET\r\n", 405),
    (b"OPTIONS /api/market/snapshot",
     b"Origin: https://board.example\r\nAccess-Control-Request-Method: \xff\r\n", 405),
    (b"GET /", b"If-None-Match: \xff\r\nIf-Modified-Since: \xff\r\n", 200),  # the dashboard, served by aiohttp
    (b"GET /static/app.js", b"Range: bytes=\xff\r\n", 416),  # as any unreadable range
    (b"GET /ws/market", b"Authorization: Bearer \xff\r\n" + HANDSHAKE + WS_KEY, 101),  # then closed: 1008
    (b"GET /ws/market?token=s3cret", HANDSHAKE + b"Sec-WebSocket-Key: \xff\xfehlIHNhbXBsZSBub25jZQ==\r\n", 400),
    (b"GET /ws/market?token=s3cret",
     b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 1\xff\r\n" + WS_KEY, 400),
    (b"GET /ws/market?token=s3cret", HANDSHAKE + WS_KEY + b"Sec-WebSocket-Protocol: \xff\r\n", 101),
])
async def test_headers_that_are_not_utf8_are_treated_as_absent(guarded: Running, request_line: bytes,
                                                               headers: bytes, status: int) -> None:
    host = b"" if headers.startswith(b"Host:") else b"Host: 127.0.0.1\r\n"
    request = request_line + b" HTTP/1.1\r\n" + host + headers + b"\r\n"
    got, head, rest = await raw_exchange(guarded.gateway.port, request)
    assert got == status, head
    assert b"access-control-allow-origin" not in head.lower()  # an undecodable Origin is no origin
    assert b"content-encoding" not in head.lower()  # nor an undecodable Accept-Encoding a wish for gzip
    if got == 101 and b"Authorization" in headers:  # refused as without a token: a close frame, code 1008
        assert rest[:1] == WS_CLOSE
        assert rest[2:4] == (1008).to_bytes(2, "big")
    elif got == 101:  # accepted: the channel's snapshot first
        assert rest[:1] == WS_TEXT
        assert b'"type":"snapshot"' in rest


# --- WebSocket ---------------------------------------------------------------------------------------------------


async def put_stats(settings: config.Settings, symbol: str, volume: int) -> None:
    nc = await bus.connect(settings, "writer")
    kv = await nc.jetstream().key_value(str(Bucket.SESSION_STATS))
    current = msgspec.json.decode((await kv.get(symbol)).value, type=SessionStats)
    await kv.put(symbol, msgspec.json.encode(msgspec.structs.replace(current, total_volume=volume)))
    await nc.close()


async def test_one_socket_carries_the_channels_it_asks_for(served: Running) -> None:
    """/ws?channels=...: the dashboard's single socket, a snapshot of each channel, then their deltas, and a channel
    subscribed to later; an unknown channel is refused before the upgrade."""
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{served.url}/ws?channels=market,index") as socket:
        first = [json.loads((await socket.receive(timeout=5)).data) for _ in range(2)]
        assert {(m["type"], m["channel"]) for m in first} == {("snapshot", "market"), ("snapshot", "index")}
        market = next(m for m in first if m["channel"] == "market")
        assert set(market["data"]["quotes"]) == set(expected_day()["quotes"])
        await socket.send_json({"op": "subscribe", "channel": "derivatives"})
        later = json.loads((await socket.receive(timeout=5)).data)
        assert (later["type"], later["channel"]) == ("snapshot", "derivatives")
        assert later["data"]["contract"]["symbol"] == expected_day()["derivatives"]["symbol"]
        await put_stats(served.settings, "ACB", 900_004)
        delta = json.loads((await socket.receive(timeout=5)).data)
        while delta["channel"] != "market":
            delta = json.loads((await socket.receive(timeout=5)).data)
        assert delta["type"] == "delta"
        assert delta["data"]["quotes"]["ACB"]["total_volume"] == 900_004
    await put_stats(served.settings, "ACB", int(expected_day()["quotes"]["ACB"]["total_volume"]))
    status, body, _ = await get(f"{served.url}/ws?channels=market,secrets")
    assert (status, body["parameter"]) == (400, "channels")


async def test_a_watchlist_of_the_most_symbols_is_answered_and_one_more_is_refused(served: Running) -> None:
    """The largest board subscription a client may ask (MAX_SYMBOLS symbols of the longest length, spaced out) fits
    in a socket message and is served; one more symbol is answered with an error, the socket kept."""
    longest = [f"S{n:03d}".ljust(30, "X") for n in range(MAX_SYMBOLS)]
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{served.url}/ws") as socket:
        await socket.send_str(json.dumps({"op": "subscribe", "channel": "board", "symbols": [*longest, "ACB"][1:]},
                                         indent=1))
        served_now = json.loads((await socket.receive(timeout=5)).data)
        assert (served_now["type"], len(served_now["data"])) == ("snapshot", MAX_SYMBOLS)
        assert served_now["data"]["ACB"]["symbol"] == "ACB"  # the others are not listed: null
        await socket.send_str(json.dumps({"op": "subscribe", "channel": "board", "symbols": [*longest, "ACB"]},
                                         indent=1))
        refused = json.loads((await socket.receive(timeout=5)).data)
        assert refused["type"] == "error"
        assert f"at most {MAX_SYMBOLS} symbols" in refused["data"]
        assert not socket.closed


async def test_alerts_are_listed_newest_first_and_filtered(served: Running) -> None:
    """Alerts published on DERIVED come to /api/market/alerts, newest first, each once; bad filters name the
    parameter."""
    moment = datetime(2026, 11, 30, 10, 5, tzinfo=EXCHANGE_TZ)  # ALERT_DAY: not the recorded day, theirs apart
    raised = [Alert(type=kind, severity=severity, symbol=symbol, trading_date=ALERT_DAY,
                    timestamp=moment + timedelta(minutes=n), rule=str(kind), values={"price": 1.0},
                    message_vi="vi", message_en="en")
              for n, (kind, severity, symbol) in enumerate([
                  (AlertType.VOLUME_SPIKE, Severity.WARNING, "ACB"), (AlertType.CEILING_HIT, Severity.WARNING, "FPT"),
                  (AlertType.VOLUME_SPIKE, Severity.CRITICAL, "FPT")])]
    nc = await bus.connect(served.settings, "test-alerts")
    js = nc.jetstream()
    for one in [*raised, raised[0]]:  # the first twice: JetStream keeps it once (its message id)
        await js.publish(derived_subject(one), msgspec.json.encode(one), headers={"Nats-Msg-Id": one.natural_key()})
    await nc.close()
    url = f"{served.url}/api/market/alerts"
    await eventually(lambda: len(served.gateway.alerts.select(10)) >= 3)
    status, body, _ = await get(url)
    assert status == 200
    assert [(a["symbol"], a["type"]) for a in body[:3]] == [("FPT", "volume_spike"), ("FPT", "ceiling_hit"),
                                                             ("ACB", "volume_spike")]
    _, fpt, _ = await get(f"{url}?symbol=fpt&severity=critical&since=2026-11-30T00:00:00%2B07:00")
    assert [(a["symbol"], a["severity"]) for a in fpt] == [("FPT", "critical")]
    _, recent, _ = await get(f"{url}?since=2026-11-30T10:06:00&type=volume_spike&limit=5")
    assert [a["symbol"] for a in recent] == ["FPT"]
    for query, parameter, code in (("limit=0", "limit", 422), ("type=nope", "type", 422), ("since=yesterday",
                                   "since", 400), ("symbol=A%20B", "symbol", 400), ("severity=loud", "severity", 422)):
        status, problem, _ = await get(f"{url}?{query}")
        assert (status, problem["parameter"]) == (code, parameter), query


async def test_alert_rules_are_created_listed_and_deleted_with_the_token(filled: config.Settings) -> None:
    """The rules live in KV alert_rules (where the alerts service reads them); with GATEWAY_TOKEN set, reading or
    changing them needs it even when REST reads are open; a body that is not a rule, or too large, is refused."""
    rule = {"id": "fpt-above", "symbol": "FPT", "kind": "price_above", "value": 101000, "severity": "warning"}
    url_of = "/api/alerts/rules"
    async with gateway(filled, gateway_token="s3cret") as running, aiohttp.ClientSession() as http:
        url = f"{running.url}{url_of}"
        bearer = {"Authorization": "Bearer s3cret"}
        async with http.post(url, json=rule) as refused:
            assert refused.status == 401
        async with http.get(url) as refused:
            assert refused.status == 401
        async with http.post(url, json=rule, headers=bearer) as created:
            assert (created.status, await created.json()) == (201, rule)
        nc = await bus.connect(filled, "test-rules")
        stored = await (await nc.jetstream().key_value(str(Bucket.ALERT_RULES))).get("fpt-above")
        assert msgspec.json.decode(stored.value) == rule
        async with http.get(url, headers=bearer) as listed:
            assert await listed.json() == [rule]
        for body in (b"{}", b"not json", json.dumps({**rule, "kind": "moon"}).encode(),
                     json.dumps({**rule, "value": -1}).encode(), json.dumps({**rule, "id": "a b"}).encode()):
            async with http.post(url, data=body, headers=bearer) as bad:
                assert bad.status == 422, body
        async with http.post(url, data=b"x" * 5_000, headers=bearer) as large:
            assert large.status == 413
        async with http.delete(f"{url}/nope", headers=bearer) as missing:
            assert missing.status == 404
        async with http.delete(f"{url}/fpt-above", headers=bearer) as deleted:
            assert (deleted.status, await deleted.json()) == (200, {"deleted": "fpt-above"})
        async with http.get(url, headers=bearer) as listed:
            assert await listed.json() == []
        await nc.close()


async def test_sockets_are_not_compressed_even_when_the_client_asks(served: Running) -> None:
    """A browser asks for permessage-deflate; the gateway declines (it would compress each message once per
    socket), and the socket works."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{served.url}/ws/index", compress=15) as socket:
        assert socket.compress == 0  # not negotiated
        assert json.loads((await socket.receive(timeout=5)).data)["type"] == "snapshot"


async def test_snapshot_first_then_throttled_deltas_to_every_client(served: Running) -> None:
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{served.url}/ws/market") as first, http.ws_connect(f"{served.url}/ws/market") as second:
        for client in (first, second):
            message = json.loads((await client.receive(timeout=5)).data)
            assert (message["type"], message["channel"]) == ("snapshot", "market")
            assert set(message["data"]["quotes"]) == set(expected_day()["quotes"])
        for volume in (900_001, 900_002, 900_003):  # a burst
            await put_stats(served.settings, "ACB", volume)
        for client in (first, second):
            deltas = []
            while not deltas or deltas[-1]["data"]["quotes"].get("ACB", {}).get("total_volume") != 900_003:
                deltas.append(json.loads((await client.receive(timeout=5)).data))
            assert all(d["type"] == "delta" for d in deltas)
            assert len(deltas) <= 3
            assert set(deltas[-1]["data"]["quotes"]) == {"ACB"}  # only what changed
    await put_stats(served.settings, "ACB", int(expected_day()["quotes"]["ACB"]["total_volume"]))


async def test_per_address_limit_holds_and_never_leaks(filled: config.Settings) -> None:
    async with gateway(filled, ws_max_connections_per_ip=2, ws_heartbeat_s=0.5) as running:
        async with aiohttp.ClientSession() as http:
            first = await http.ws_connect(f"{running.url}/ws/index")
            second = await http.ws_connect(f"{running.url}/ws/index")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{running.url}/ws/index")
            assert refused.value.status == 429
            await first.close()
            third = await http.ws_connect(f"{running.url}/ws/index")  # a closed one frees its place
            # An abrupt death: the socket vanishes without a close handshake.
            second._response.connection.transport.abort()  # type: ignore[union-attr]
            third._response.connection.transport.abort()  # type: ignore[union-attr]
        await eventually(lambda: not running.gateway.admission.open, timeout=10)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            clients = [await http.ws_connect(f"{running.url}/ws/index") for _ in range(2)]
            for client in clients:
                await client.close()


async def test_a_slow_client_does_not_hold_back_a_fast_one(filled: config.Settings) -> None:
    async with gateway(filled, ws_throttle_ms=20, ws_queue_size=4, ws_send_timeout_s=2.0) as running:
        port = running.gateway.port
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /ws/market HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        arrivals: list[float] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{running.url}/ws/market") as fast:
            await fast.receive(timeout=5)
            deadline = time.monotonic() + 4
            volume = 1_000_000
            while time.monotonic() < deadline:
                volume += 1
                await put_stats(running.settings, "ACB", volume)  # the slow client never reads any of it
                with contextlib.suppress(TimeoutError):
                    while True:
                        message = await fast.receive(timeout=0.01)
                        arrivals.append(time.monotonic())
                        assert json.loads(message.data)["type"] in ("delta", "snapshot")
            gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        slow.close()
        assert len(arrivals) > 20
        assert max(gaps) < 1.0  # never stalled behind the slow one
        assert all(client.queue.qsize() <= 4 for client in running.gateway.hubs["market"].clients)
    await put_stats(filled, "ACB", int(expected_day()["quotes"]["ACB"]["total_volume"]))


# --- resync after a NATS restart -----------------------------------------------------------------------------------


async def test_the_view_resyncs_after_a_nats_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "store")
    server.start()
    settings = config.load({"NATS_URL": server.url, "METRICS_PORT": "0"})
    try:
        nc = await bus.connect(settings, "seed")
        await bus.ensure_topology(nc.jetstream(), settings)
        stats = SessionStats(symbol="ACB", trading_date=expected_day_date(), total_volume=100,
                             last_updated=expected_day_stamp())
        kv = await nc.jetstream().key_value(str(Bucket.SESSION_STATS))
        await kv.put("ACB", msgspec.json.encode(stats))
        await nc.close()
        async with gateway(settings) as running:
            assert running.gateway.view.stats["ACB"].total_volume == 100
            await asyncio.to_thread(server.stop)
            await eventually(lambda: not running.gateway._ctx.nc.is_connected, timeout=10)  # type: ignore[union-attr]
            await asyncio.to_thread(server.start)
            writer = await bus.connect(settings, "writer")
            kv = await writer.jetstream().key_value(str(Bucket.SESSION_STATS))
            await kv.put("ACB", msgspec.json.encode(msgspec.structs.replace(stats, total_volume=200)))
            await kv.put("FPT", msgspec.json.encode(msgspec.structs.replace(stats, symbol="FPT")))
            await writer.close()
            await eventually(lambda: running.gateway.view.stats.get("ACB") is not None
                             and running.gateway.view.stats["ACB"].total_volume == 200
                             and "FPT" in running.gateway.view.stats, timeout=40)
            status, body, _ = await get(f"{running.url}/api/market/volume-stats")
            assert status == 200
            assert {s["symbol"]: s["total_volume"] for s in body["stats"]} == {"ACB": 200, "FPT": 100}
    finally:
        server.stop()


def expected_day_date():  # type: ignore[no-untyped-def]
    from datetime import date

    return date.fromisoformat(expected_day()["trading_date"])


def expected_day_stamp():  # type: ignore[no-untyped-def]
    from datetime import datetime

    from shared.market import EXCHANGE_TZ

    day = expected_day_date()
    return datetime(day.year, day.month, day.day, 14, 45, tzinfo=EXCHANGE_TZ)
