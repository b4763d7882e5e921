"""The gateway's board, pure and over a socket: rows with their foreign columns, filters, the market views (breadth,
movers, contributions) on a crafted market whose answers are worked out by hand; and the filtered WebSocket
channels on an in-process aiohttp server: a client receives only what it subscribed to, seq counts per topic, a
client that falls behind is resynced with a snapshot, an idle topic is dropped, a bad request is answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from helpers import REPLAY_DAY, caught_up, eventually, expected_day, run_in_process
from stack import get
from test_board_core import _board_of_the_day
from test_gateway import gateway
from test_ingest import replay

from launcher.local import free_port
from services.board.service import BoardService
from services.classifier.service import ClassifierService
from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.gateway import hub as hub_module
from services.gateway.alerts import AlertLog
from services.gateway.board import Board, BoardFilter, read_filter
from services.gateway.history import candle_of
from services.gateway.hub import ChannelHub, serve
from services.gateway.tape import Tape
from services.gateway.topics import FilteredChannels
from services.gateway.view import MarketView
from services.index.service import IndexService
from shared.candles import minute_candles
from shared.market import EXCHANGE_TZ, Exchange
from shared.messages.domain import (
    Alert,
    AlertType,
    BoardRow,
    ClassificationRule,
    ClassifiedTrade,
    ForeignInvestorData,
    IndexBasket,
    IndexData,
    PriceLevel,
    SecurityInfo,
    Severity,
    TradeType,
)
from shared.subjects import DERIVED, TRADE_CLASSIFIED, VN30_BASKET_KEY, Bucket, foreign_stock_key, security_key

DAY = date(2026, 11, 24)
AT = datetime(2026, 11, 24, 10, 0, tzinfo=EXCHANGE_TZ)
_encode = msgspec.json.encode


def row(symbol: str, exchange: str, ref: float, last: float | None, volume: int = 1_000, **more: Any) -> BoardRow:
    limit = {"HOSE": 0.07, "HNX": 0.10, "UPCOM": 0.15, "DERIVATIVES": 0.07}[exchange]
    return BoardRow(symbol=symbol, exchange=exchange, trading_date=DAY, ref_price=ref, ceiling=round(ref * (1 + limit)),
                    floor=round(ref * (1 - limit)), last_price=last, change=None if last is None else last - ref,
                    ratio_change=None if last is None else round((last - ref) / ref * 100, 2),
                    total_volume=volume if last is not None else 0,
                    total_value=(last or 0) * volume if last is not None else 0.0, last_updated=AT, **more)


def market() -> MarketView:
    """Four HOSE stocks (two in a two-stock VN30), two HNX, one UPCOM, a contract; listed shares for the basket."""
    view = MarketView()
    rows = [
        row("ACB", "HOSE", 25_000, 26_750, 5_000),  # at the ceiling
        row("FPT", "HOSE", 100_000, 99_000, 2_000),
        row("DIG", "HOSE", 20_000, 18_600, 9_000),  # at the floor
        row("NVL", "HOSE", 10_000, None),  # no match yet
        row("SHS", "HNX", 15_000, 15_000, 3_000),
        row("PVS", "HNX", 30_000, 31_000, 4_000, bids=[PriceLevel(30_900, 100 * n) for n in range(1, 11)]),
        row("BSR", "UPCOM", 20_000, 22_000, 1_000),
        row("VN30F2612", "DERIVATIVES", 1_900.0, 1_905.5, 300),
    ]
    for board_row in rows:
        view.apply(Bucket.BOARD, board_row.symbol, _encode(board_row))
    view.apply(Bucket.REFERENCE, VN30_BASKET_KEY, _encode(IndexBasket(index_id="VN30", symbols=["ACB", "FPT"],
                                                                      source="config", trading_date=DAY)))
    for symbol, shares in (("ACB", 4_000_000_000), ("FPT", 1_500_000_000)):
        view.apply(Bucket.REFERENCE, security_key(symbol), _encode(SecurityInfo(
            symbol=symbol, trading_date=DAY, exchange="HOSE", sec_type="ST", listed_shares=shares)))
    view.apply(Bucket.FOREIGN, foreign_stock_key("ACB"), _encode(ForeignInvestorData(
        symbol="ACB", trading_date=DAY, buy_volume=700, sell_volume=200, buy_value=18.5e6, sell_value=5.3e6,
        total_room=1e9, current_room=2.5e8, last_updated=AT)))
    # VN30 at 1,900 the day before, moved exactly as its two members cap-weighted by their listed shares say
    capitalisation = 4e9 * 25_000 + 1.5e9 * 100_000
    change = 1_900 * (4e9 * 1_750 + 1.5e9 * -1_000) / capitalisation
    view.apply(Bucket.INDICES, "VN30", _encode(IndexData(index_id="VN30", trading_date=DAY, value=1_900 + change,
                                                         prior_value=1_900, change=change, last_updated=AT)))
    return view


def test_rows_carry_their_foreign_columns_and_filters_narrow_each_other() -> None:
    board = Board(market())
    acb = board.quote("ACB")
    assert acb is not None
    assert (acb.foreign_buy_volume, acb.foreign_sell_volume, acb.foreign_room, acb.foreign_total_room) == (
        700, 200, 2.5e8, 1e9)
    assert board.quote("FPT").foreign_buy_volume is None  # type: ignore[union-attr]  # no foreign figures
    symbols = {name: [r.symbol for r in board.rows(f)] for name, f in {
        "all": BoardFilter(), "hnx": BoardFilter(Exchange.HNX), "der": BoardFilter(Exchange.DER),
        "vn30": BoardFilter(group="VN30"), "vn30 & FPT,SHS": BoardFilter(group="VN30", symbols=frozenset({"FPT",
                                                                                                           "SHS"})),
        "hose & BSR": BoardFilter(Exchange.HOSE, symbols=frozenset({"BSR", "ZZZ"})),
    }.items()}
    assert symbols == {"all": ["ACB", "BSR", "DIG", "FPT", "NVL", "PVS", "SHS", "VN30F2612"], "hnx": ["PVS", "SHS"],
                       "der": ["VN30F2612"], "vn30": ["ACB", "FPT"], "vn30 & FPT,SHS": ["FPT"], "hose & BSR": []}
    book = board.book("PVS")
    assert book is not None
    assert [level.volume for level in book.bids] == [100 * n for n in range(1, 11)]  # all ten levels, as sent


def test_a_filter_is_read_strictly_and_named_canonically() -> None:
    groups = ["VN30", "HNX30"]
    chosen = read_filter("HNX", "vn30", [" fpt", "ACB", "acb"], groups)
    assert isinstance(chosen, BoardFilter)
    assert chosen.topic == "exchange=HNX&group=VN30&symbols=ACB,FPT"
    assert read_filter(None, None, None, groups) == BoardFilter()
    assert read_filter("NYSE", None, None, groups) == ("exchange", "exchange is one of HOSE, HNX, UPCOM, DER")
    assert read_filter("", None, None, groups)[0] == "exchange"  # type: ignore[index]
    assert read_filter(None, "SP500", None, groups)[0] == "group"  # type: ignore[index]
    assert read_filter(None, None, ["AC B"], groups)[0] == "symbols"  # type: ignore[index]
    assert read_filter(None, None, [f"S{n}" for n in range(201)], groups)[0] == "symbols"  # type: ignore[index]


def test_breadth_movers_and_contributions_by_hand() -> None:
    board = Board(market())
    hose = board.breadth("VNINDEX")
    assert (hose.members, hose.advances, hose.declines, hose.unchanged, hose.untraded) == (4, 1, 2, 0, 1)
    assert (hose.ceilings, hose.floors) == (1, 1)
    assert hose.total_value == 26_750 * 5_000 + 99_000 * 2_000 + 18_600 * 9_000
    hnx = board.breadth("HNXINDEX")
    assert (hnx.members, hnx.advances, hnx.unchanged, hnx.ceilings) == (2, 1, 1, 0)
    vn30 = board.breadth("VN30")
    assert (vn30.members, vn30.advances, vn30.declines, vn30.value) == (2, 1, 1, pytest.approx(board.view.indices[
        "VN30"].value))

    movers = board.movers(Exchange.HOSE, 2)
    assert [m.symbol for m in movers.gainers] == ["ACB"]
    assert [m.symbol for m in movers.losers] == ["DIG", "FPT"]
    assert [m.symbol for m in movers.volume] == ["DIG", "ACB"]
    assert [m.symbol for m in movers.value] == ["FPT", "DIG"]  # 198 M against 167.4 M

    contribution = board.contribution("VN30")
    points = {member.symbol: member.points for member in contribution.members}
    assert points == {"ACB": pytest.approx(1_900 * 4e9 * 1_750 / 2.5e14),
                      "FPT": pytest.approx(1_900 * 1.5e9 * -1_000 / 2.5e14)}
    assert contribution.explained == pytest.approx(contribution.change)  # the weights are the index's own here
    assert [member.symbol for member in contribution.members] == ["ACB", "FPT"]  # the largest first
    assert board.contribution("VNINDEX").unweighted == ["DIG", "NVL"]  # no listed shares known


# --- the filtered channels over a socket -------------------------------------------------------------------------


class Server:
    def __init__(self, view: MarketView, tape: Tape, channels: FilteredChannels, url: str) -> None:
        self.view, self.tape, self.channels, self.url = view, tape, channels, url


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """A gateway's filtered channels on a socket (in `request.param` phases, 1 unless parametrized)."""
    view, tape = market(), Tape()
    channels = FilteredChannels(Board(view), tape, queue_size=4, send_timeout_s=5,
                                phases=getattr(request, "param", 1))
    channels.broadcast()  # the market's making is no one's delta
    plain = {"index": ChannelHub("index", lambda: {}, lambda: None, 4, 5)}

    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await serve(socket, plain, [], channels)
        return socket

    app = web.Application()
    app.add_routes([web.get("/ws", handle)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Server(view, tape, channels, f"http://127.0.0.1:{port}/ws")
    finally:
        await runner.cleanup()


def classified(symbol: str, total: int, clock: str, price: float = 26_000, volume: int = 100) -> ClassifiedTrade:
    moment = datetime.combine(DAY, datetime.strptime(clock, "%H:%M:%S").time(), EXCHANGE_TZ)
    return ClassifiedTrade(symbol=symbol, trading_date=DAY, timestamp=moment, price=price, volume=volume,
                           value=price * volume, trade_type=TradeType.MUA_CHU_DONG, rule=ClassificationRule.QUOTE,
                           total_volume=total)


async def messages(socket: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    return [json.loads((await asyncio.wait_for(socket.receive(), 5)).data) for _ in range(count)]


async def test_a_client_receives_only_what_it_subscribed_to(server: Server) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as watch, \
            http.ws_connect(server.url) as hnx:
        await watch.send_json({"op": "subscribe", "channel": "board", "symbols": ["acb", "PVS"]})
        await watch.send_json({"op": "subscribe", "channel": "trades", "symbol": "ACB"})
        await watch.send_json({"op": "subscribe", "channel": "candles", "symbol": "ACB"})
        await hnx.send_json({"op": "subscribe", "channel": "board", "exchange": "HNX"})
        first = sorted(await messages(watch, 3), key=lambda m: m["channel"])
        assert [(m["type"], m["channel"], m["topic"], m["seq"]) for m in first] == [
            ("snapshot", "board", "symbols=ACB,PVS", 1), ("snapshot", "candles", "ACB", 1),
            ("snapshot", "trades", "ACB", 1)]
        assert set(first[0]["data"]) == {"ACB", "PVS"}
        assert first[0]["data"]["ACB"]["foreign_room"] == 2.5e8
        assert first[2]["data"] == {"trades": []}
        (snapshot,) = await messages(hnx, 1)
        assert set(snapshot["data"]) == {"PVS", "SHS"}
        assert server.channels.status() == {"topics": {"board": 2, "trades": 1, "candles": 1},
                                            "followers": {"board": 2, "trades": 1, "candles": 1},
                                            "sockets_by_phase": {"0": 2}}

        # ACB and SHS change and ACB trades twice in one minute: each client hears only of its own
        server.view.apply(Bucket.BOARD, "ACB", _encode(row("ACB", "HOSE", 25_000, 26_500, 6_000)))
        server.view.apply(Bucket.BOARD, "SHS", _encode(row("SHS", "HNX", 15_000, 15_100, 3_500)))
        server.tape.add(classified("ACB", 5_100, "10:01:05", 26_500))
        server.tape.add(classified("ACB", 5_300, "10:01:40", 26_550, 200))
        server.tape.add(classified("ACB", 5_300, "10:01:40", 26_550, 200))  # the same trade again: a repeat
        server.tape.add(classified("FPT", 2_100, "10:01:41", 99_100))
        server.channels.broadcast()
        deltas = {m["channel"]: m for m in await messages(watch, 3)}
        assert deltas["board"]["type"] == "delta"
        assert deltas["board"]["seq"] == 2
        assert set(deltas["board"]["data"]) == {"ACB"}
        assert deltas["board"]["data"]["ACB"]["last_price"] == 26_500
        assert [t["total_volume"] for t in deltas["trades"]["data"]["trades"]] == [5_100, 5_300]
        (candle,) = deltas["candles"]["data"]["candles"]
        assert (candle["open"], candle["close"], candle["volume"], candle["buy_volume"]) == (26_500, 26_550, 300, 300)
        (hnx_delta,) = await messages(hnx, 1)
        assert (hnx_delta["seq"], set(hnx_delta["data"])) == (2, {"SHS"})
        with pytest.raises(TimeoutError):  # nothing else: no FPT, no repeat
            await asyncio.wait_for(watch.receive(), 0.3)


async def test_same_subscriptions_share_a_topic_that_goes_with_its_last_client(server: Server) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as one, http.ws_connect(server.url) as two:
        for socket in (one, two):
            await socket.send_json({"op": "subscribe", "channel": "board", "group": "vn30"})
            await messages(socket, 1)
        assert list(server.channels.hubs) == ["board:group=VN30"]
        await one.send_json({"op": "unsubscribe", "channel": "board", "group": "VN30"})
        await eventually(lambda: len(server.channels.hubs["board:group=VN30"].clients) == 1)
        await two.close()
        await eventually(lambda: not server.channels.hubs)


async def test_bad_subscriptions_are_answered_and_change_nothing(server: Server) -> None:
    asked = [
        {"op": "subscribe", "channel": "board", "exchange": "NYSE"},
        {"op": "subscribe", "channel": "trades"},
        {"op": "subscribe", "channel": "candles", "symbol": "A B"},
        {"op": "subscribe", "channel": "trades", "symbol": "ACB", "group": "VN30"},
        {"op": "subscribe", "channel": "board", "symbols": ["ACB"], "colour": "red"},
        {"op": "subscribe", "channel": "quotes", "symbol": "ACB"},
        {"op": "subscribe", "channel": "board", "symbols": "ACB"},
    ]
    answers = []
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as socket:
        for request in asked:  # one at a time: a client flooding bad requests loses answers (its queue is bounded)
            await socket.send_json(request)
            answers += await messages(socket, 1)
        assert [answer["type"] for answer in answers] == ["error"] * len(asked)
        assert "exchange is one of" in answers[0]["data"]
        assert not server.channels.hubs


async def test_a_socket_follows_a_bounded_number_of_topics(server: Server) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as socket:
        for n in range(hub_module.MAX_FOLLOWED):
            await socket.send_json({"op": "subscribe", "channel": "trades", "symbol": f"S{n}"})
        answers = await messages(socket, hub_module.MAX_FOLLOWED)
        assert {a["type"] for a in answers} == {"snapshot"}
        await socket.send_json({"op": "subscribe", "channel": "trades", "symbol": "ONE_MORE"})
        (refused,) = await messages(socket, 1)
        assert refused["type"] == "error"
        assert len(server.channels.hubs) == hub_module.MAX_FOLLOWED  # the refused one was not kept


async def test_a_client_that_falls_behind_gets_a_fresh_snapshot(server: Server) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as socket:
        await socket.send_json({"op": "subscribe", "channel": "board", "symbols": ["ACB"]})
        await messages(socket, 1)
        for volume in range(6_001, 6_021):  # twenty ticks at once: more than its queue of four holds
            server.view.apply(Bucket.BOARD, "ACB", _encode(row("ACB", "HOSE", 25_000, 26_500, volume)))
            server.channels.broadcast()
        received = []
        while not received or received[-1]["data"]["ACB"]["total_volume"] != 6_020:
            received += await messages(socket, 1)
        assert "snapshot" in [m["type"] for m in received]  # resynced, not fed stale deltas
        seqs = [m["seq"] for m in received]
        assert seqs == sorted(seqs)
        assert hub_module.WS_DROPPED.labels("board")._value.get() > 0


@pytest.mark.parametrize("server", [2], indirect=True)
async def test_phases_serve_each_socket_once_an_interval_with_all_that_changed_since_its_turn(server: Server) -> None:
    """Two phases: the sockets take turns; each hears, at its own turn, of every change since its last one (rows,
    trades in order), whichever phase's turn it was when they happened."""
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as first, \
            http.ws_connect(server.url) as second:
        for socket in (first, second):
            await socket.send_json({"op": "subscribe", "channel": "board", "symbols": ["ACB", "SHS"]})
            await socket.send_json({"op": "subscribe", "channel": "trades", "symbol": "ACB"})
            await messages(socket, 2)
        (hub,) = [h for key, h in server.channels.hubs.items() if key.startswith("board")]
        phases = sorted(client.phase for client in hub.clients)
        assert phases == [0, 1]  # spread over the phases
        server.view.apply(Bucket.BOARD, "ACB", _encode(row("ACB", "HOSE", 25_000, 26_500, 6_000)))
        server.tape.add(classified("ACB", 5_100, "10:01:05", 26_500))
        server.channels.broadcast(0)  # the first socket's turn
        server.view.apply(Bucket.BOARD, "SHS", _encode(row("SHS", "HNX", 15_000, 15_100, 3_500)))
        server.tape.add(classified("ACB", 5_300, "10:01:40", 26_550, 200))
        server.channels.broadcast(1)  # the second's: both changes, both trades
        server.channels.broadcast(0)  # the first's again: what came after its turn
        at_first = {m["channel"] + str(n): m for n, m in enumerate(await messages(first, 4))}
        at_second = {m["channel"]: m for m in await messages(second, 2)}
        with pytest.raises(TimeoutError):  # once a turn each, no more
            await asyncio.wait_for(second.receive(), 0.3)
    first_boards = [m["data"] for m in at_first.values() if m["channel"] == "board"]
    first_trades = [t["total_volume"] for m in at_first.values() if m["channel"] == "trades"
                    for t in m["data"]["trades"]]
    assert [set(data) for data in first_boards] == [{"ACB"}, {"SHS"}]
    assert first_trades == [5_100, 5_300]
    assert set(at_second["board"]["data"]) == {"ACB", "SHS"}
    assert [t["total_volume"] for t in at_second["trades"]["data"]["trades"]] == [5_100, 5_300]


def alert(symbol: str, clock: str, kind: AlertType = AlertType.VOLUME_SPIKE,
          severity: Severity = Severity.WARNING) -> Alert:
    moment = datetime.combine(DAY, datetime.strptime(clock, "%H:%M:%S").time(), EXCHANGE_TZ)
    return Alert(type=kind, severity=severity, symbol=symbol, trading_date=DAY, timestamp=moment, rule=str(kind),
                 values={"volume": 1.0}, message_vi=f"{symbol} vi", message_en=f"{symbol} en")


def test_the_alert_log_keeps_each_alert_once_and_filters_it() -> None:
    log = AlertLog(kept=3)
    for one in (alert("FPT", "09:20:00"), alert("ACB", "09:21:00", AlertType.CEILING_HIT),
                alert("FPT", "09:22:00", severity=Severity.CRITICAL)):
        log.add(one)
    log.add(alert("FPT", "09:20:00"))  # read again after a reconnect
    assert log.repeats == 1
    assert [a.timestamp.minute for a in log.select(10)] == [22, 21, 20]  # newest first
    assert [a.symbol for a in log.select(10, symbol="FPT")] == ["FPT", "FPT"]
    assert [a.type for a in log.select(10, kind="ceiling_hit")] == [AlertType.CEILING_HIT]
    assert [a.severity for a in log.select(10, severity="critical")] == [Severity.CRITICAL]
    since = datetime.combine(DAY, datetime.strptime("09:21:00", "%H:%M:%S").time(), EXCHANGE_TZ)
    assert len(log.select(10, since=since)) == 2
    assert len(log.select(1)) == 1
    log.add(alert("HPG", "09:23:00"))  # beyond what it keeps: the oldest goes
    assert [a.symbol for a in log.select(10)] == ["HPG", "FPT", "ACB"]
    log.add(alert("FPT", "09:20:00"))  # no longer held: kept again
    assert log.repeats == 1


async def test_alerts_stream_to_whoever_subscribed_to_them(server: Server) -> None:
    server.channels.alerts.add(alert("FPT", "09:20:00"))
    server.channels.broadcast()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as every, \
            http.ws_connect(server.url) as fpt:
        await every.send_json({"op": "subscribe", "channel": "alerts"})
        await fpt.send_json({"op": "subscribe", "channel": "alerts", "symbol": "fpt"})
        (snapshot,) = await messages(every, 1)
        assert (snapshot["topic"], [a["symbol"] for a in snapshot["data"]["alerts"]]) == ("all", ["FPT"])
        (only_fpt,) = await messages(fpt, 1)
        assert only_fpt["topic"] == "FPT"
        server.channels.alerts.add(alert("ACB", "09:21:00", AlertType.CEILING_HIT))
        server.channels.alerts.add(alert("FPT", "09:22:00"))
        server.channels.broadcast()
        (delta,) = await messages(every, 1)
        assert [(a["symbol"], a["type"]) for a in delta["data"]["alerts"]] == [("ACB", "ceiling_hit"),
                                                                             ("FPT", "volume_spike")]
        (fpt_delta,) = await messages(fpt, 1)
        assert [a["symbol"] for a in fpt_delta["data"]["alerts"]] == ["FPT"]
        await every.send_json({"op": "subscribe", "channel": "alerts", "group": "VN30"})
        (refused,) = await messages(every, 1)
        assert refused["type"] == "error"


# --- the recorded day, live, through a real nats-server ------------------------------------------------------------


class Listener:
    """A WebSocket client keeping every message it receives, and the board state they make."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.received: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        async for message in self.socket:
            self.received.append(json.loads(message.data))

    def of(self, channel: str) -> list[dict[str, Any]]:
        return [message for message in self.received if message["channel"] == channel]

    def board(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for message in self.of("board"):
            if message["type"] == "snapshot":
                state = {}
            state.update(message["data"])
        return {symbol: quote for symbol, quote in state.items() if quote is not None}


async def classified_of(nc: Any, symbol: str) -> list[ClassifiedTrade]:
    """The symbol's classified trades as the DERIVED stream holds them."""
    js = nc.jetstream()
    subject = TRADE_CLASSIFIED(symbol)
    count = (await js.stream_info(DERIVED.name, subjects_filter=subject)).state.subjects[subject]
    sub = await js.subscribe(subject, stream=DERIVED.name, ordered_consumer=True)
    events = [msgspec.json.decode((await sub.next_msg(timeout=5)).data, type=ClassifiedTrade) for _ in range(count)]
    await sub.unsubscribe()
    return events


@pytest.mark.integration
async def test_the_recorded_day_live_on_the_board(nc: Any, settings: Any) -> None:
    """The trackers, the board service and the gateway running while the recorded day is replayed: REST answers
    the board service's rows with their foreign columns and the book as sent; each WebSocket client receives only
    the topics it asked for, in seq order, and its snapshot plus deltas end equal to REST; the trades channel
    delivers each of the symbol's classified trades once, in order, without a REST poll."""
    run = msgspec.structs.replace(settings, metrics_port=0, vn30_symbols=expected_day()["vn30_basket"])
    trackers = [ClassifierService(), ForeignService(), IndexService(), DerivativesService(), BoardService()]
    running = [await run_in_process(actor, run) for actor in trackers]
    async with gateway(run, ws_throttle_ms=50) as served, aiohttp.ClientSession() as http:
        watch = Listener(await http.ws_connect(f"{served.url}/ws"))
        futures = Listener(await http.ws_connect(f"{served.url}/ws"))
        await watch.socket.send_json({"op": "subscribe", "channel": "board", "symbols": ["ACB", "FPT"]})
        await watch.socket.send_json({"op": "subscribe", "channel": "trades", "symbol": "ACB"})
        await watch.socket.send_json({"op": "subscribe", "channel": "candles", "symbol": "ACB"})
        await futures.socket.send_json({"op": "subscribe", "channel": "board", "exchange": "DER"})
        await eventually(lambda: len(watch.received) == 3 and len(futures.received) == 1)
        await replay(run, REPLAY_DAY)
        await eventually(lambda: all(caught_up(actor) for actor in trackers), timeout=60)
        acb_trades = await classified_of(nc, "ACB")
        await eventually(lambda: sum(len(m["data"]["trades"]) for m in watch.of("trades")) >= len(acb_trades))
        await asyncio.sleep(0.3)  # a last throttled delta

        # REST: the board service's rows, the foreign columns joined, filters, the book's levels as sent
        status, rows, _ = await get(f"{served.url}/api/market/board?group=VN30")
        assert status == 200
        expected = _board_of_the_day().rows
        assert [r["symbol"] for r in rows] == sorted(set(expected_day()["vn30_basket"]) & set(expected))
        for quote in rows:
            assert {k: v for k, v in quote.items() if not k.startswith("foreign_")} == json.loads(
                msgspec.json.encode(expected[quote["symbol"]])), quote["symbol"]
        foreign = expected_day()["foreign"]["stocks"]
        for quote in rows:
            if quote["symbol"] in foreign:
                assert quote["foreign_buy_volume"] == foreign[quote["symbol"]]["buy_volume"]
                assert quote["foreign_sell_volume"] == foreign[quote["symbol"]]["sell_volume"]
        for symbol in ("vn30f2612", "ACB"):  # the last book as sent (test_board_core checks it against the frames)
            status, book, _ = await get(f"{served.url}/api/market/book/{symbol}")
            row = expected[symbol.upper()]
            assert (status, book["bids"], book["asks"]) == (200, *json.loads(msgspec.json.encode([row.bids, row.asks])))
        assert (await get(f"{served.url}/api/market/book/NOSUCH"))[0] == 404
        assert (await get(f"{served.url}/api/market/board?exchange=NYSE"))[0] == 422
        status, only, _ = await get(f"{served.url}/api/market/board?symbols=acb,HAG&group=VN30")
        assert [r["symbol"] for r in only] == ["ACB"]  # HAG is no VN30 member
        status, breadth, _ = await get(f"{served.url}/api/market/breadth")
        vn30 = next(b for b in breadth if b["index_id"] == "VN30")
        assert vn30["members"] == len(rows)
        assert vn30["advances"] + vn30["declines"] + vn30["unchanged"] + vn30["untraded"] == len(rows)
        assert vn30["total_volume"] == sum(r["total_volume"] for r in rows)

        # WebSocket: only what was asked, in seq order per topic, ending where REST stands
        assert {(m["channel"], m.get("topic")) for m in watch.received} == {
            ("board", "symbols=ACB,FPT"), ("trades", "ACB"), ("candles", "ACB")}
        assert {(m["channel"], m.get("topic")) for m in futures.received} == {("board", "exchange=DER")}
        for listener in (watch, futures):
            for topic in {(m["channel"], m["topic"]) for m in listener.received}:
                seqs = [m["seq"] for m in listener.received if (m["channel"], m["topic"]) == topic]
                assert seqs == list(range(1, len(seqs) + 1)), topic
        _, acb_fpt, _ = await get(f"{served.url}/api/market/board?symbols=ACB,FPT")
        assert watch.board() == {quote["symbol"]: quote for quote in acb_fpt}
        _, contracts, _ = await get(f"{served.url}/api/market/board?exchange=DER")
        assert futures.board() == {quote["symbol"]: quote for quote in contracts}
        assert set(futures.board()) == {s for s in expected if s.startswith("VN30F")}
        delivered = [t for m in watch.of("trades") for t in m["data"]["trades"]]
        assert [t["total_volume"] for t in delivered] == [t.total_volume for t in acb_trades]  # each once, in order
        candles: dict[str, Any] = {}
        for message in watch.of("candles"):
            candles.update({c["time"]: c for c in message["data"]["candles"]})
        assert list(candles.values()) == [json.loads(msgspec.json.encode(candle_of(c)))
                                          for c in minute_candles(acb_trades)]  # as /api/history shows candles
        for listener in (watch, futures):
            await listener.socket.close()
            await listener.task
    for task, stop in running:
        stop.set()
        assert await task == 0
