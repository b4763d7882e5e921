"""Poison on the bus and unreadable checkpoints, against a real nats-server: messages published straight onto the
MARKET subjects that cannot be decoded, break a bound, name another instrument, carry an implausible date or make a
core compute infinity are dead-lettered with their reason, and the trackers end in exactly the recorded day's state
(one poison message sits before the day, so a core changed by it would show); a checkpoint that cannot be read is
rebuilt from the stream into the very state an undisturbed run reaches."""

from __future__ import annotations

import zlib
from datetime import date, datetime
from typing import Any

import msgspec
import pytest
from helpers import REPLAY_DAY, caught_up, eventually, expected_day, kv_entries, run_in_process
from nats.aio.client import Client
from test_classifier_service import kv_state
from test_ingest import replay

from services.board.service import BoardService
from services.classifier.service import ClassifierService
from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.index.service import IndexService
from shared import bus, config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import DeadLetter, IndexUpdate, Quote, SessionStats
from shared.subjects import DEADLETTER, MARKET, Bucket

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 24)
AT = datetime(2026, 11, 24, 10, 30, tzinfo=EXCHANGE_TZ)
AFTER_THE_CLOSE = datetime(2026, 11, 24, 15, 0, tzinfo=EXCHANGE_TZ)  # later than the day's last VN30


def trade(symbol: str, **fields: Any) -> bytes:
    base: dict[str, Any] = {"symbol": symbol, "trading_date": DAY, "timestamp": AT, "price": 24600.0, "volume": 100,
                            "total_volume": 100, "ref_price": 24550.0, "session": "LO"}
    return msgspec.json.encode({**base, **fields})


def index(value: float, **fields: Any) -> bytes:
    return msgspec.json.encode(IndexUpdate(**{"index_id": "VN30", "trading_date": DAY, "timestamp": AT,
                                              "value": value, **fields}))


def room(symbol: str, **fields: Any) -> bytes:
    base: dict[str, Any] = {"symbol": symbol, "trading_date": DAY, "timestamp": AT, "buy_volume": 1, "sell_volume": 1,
                            "buy_value": 1.0, "sell_value": 1.0}
    return msgspec.json.encode({**base, **fields})


# (subject, payload, the services that must dead-letter it, the reason)
BEFORE_THE_DAY = [
    # a classifier changed by this would count ACB's real trades as stale for the rest of the day
    ("md.trade.ACB", trade("ACB", price=1e8, ref_price=1e-300, total_volume=10**9), ("classifier", "board"),
     "non_finite"),
]
AFTER_THE_DAY = [
    ("md.trade.ACB", b"{not json", ("classifier", "board"), "undecodable"),
    ("md.trade.ACB", trade("ACB", price="inf"), ("classifier", "board"), "invalid"),
    ("md.trade.ACB", trade("ACB", total_volume=10**15), ("classifier", "board"), "invalid"),
    ("md.trade.ACB", trade("ACB", trading_date="2099-01-01", total_volume=10**9), ("classifier", "board"),
     "implausible_date"),
    ("md.quote.ACB", msgspec.json.encode(Quote(symbol="VNM", trading_date=DAY, timestamp=AT)),
     ("classifier", "board"),
     "subject_mismatch"),
    ("md.trade.ACB", trade("ACB", session="x" * 1000, total_volume=10**9), ("classifier", "board"), "invalid"),
    ("md.foreign.FPT", room("FPT", buy_value=-1.0), ("foreign",), "invalid"),
    ("md.foreign.FPT", room("FPT", trading_date="2099-01-01"), ("foreign",), "implausible_date"),
    ("md.index.VN30", index(1.0, trading_date=date(2099, 1, 1)), ("index", "derivatives"), "implausible_date"),
    ("md.index.VN30", b"[]", ("index", "derivatives"), "invalid"),
    ("md.futures.trade.VN30F2612", trade("VN30F2612", price=1e9), ("derivatives", "board"), "invalid"),
    # VN30 near zero: the basis in percent would be infinite, so derivatives refuses it (an index value it is)
    ("md.index.VN30", index(5e-324, timestamp=AFTER_THE_CLOSE), ("derivatives",), "non_finite"),
]
VALID_AFTER = ("md.trade.ZZZ", trade("ZZZ", total_volume=700, volume=700))  # the next valid message is counted


async def publish(nc: Client, messages: list[tuple[str, bytes]]) -> None:
    js = nc.jetstream()
    for subject, payload in messages:
        await js.publish(subject, payload, stream=MARKET.name, headers={"Nats-Msg-Id": f"poison-{hash(payload)}"})


async def dead_letters(nc: Client) -> list[DeadLetter]:
    js = nc.jetstream()
    count = (await js.stream_info(DEADLETTER.name)).state.messages
    if not count:
        return []
    sub = await js.subscribe("dlq.>", stream=DEADLETTER.name, ordered_consumer=True)
    letters = [msgspec.json.decode((await sub.next_msg(timeout=5)).data, type=DeadLetter) for _ in range(count)]
    await sub.unsubscribe()
    return letters


async def run_trackers(settings: config.Settings, actors: list[Any]) -> None:
    running = [await run_in_process(actor, settings) for actor in actors]
    await eventually(lambda: all(caught_up(actor) for actor in actors), timeout=60)
    for task, stop in running:
        stop.set()
        assert await task == 0


async def test_poison_on_the_bus_is_dead_lettered_and_the_day_stays_exact(nc: Client,
                                                                         settings: config.Settings) -> None:
    expected = expected_day()
    run = msgspec.structs.replace(settings, metrics_port=0, vn30_symbols=expected["vn30_basket"])
    await publish(nc, [(subject, payload) for subject, payload, _, _ in BEFORE_THE_DAY])
    await replay(run, REPLAY_DAY)
    await publish(nc, [*[(subject, payload) for subject, payload, _, _ in AFTER_THE_DAY], VALID_AFTER])
    actors = [ClassifierService(), ForeignService(), IndexService(), DerivativesService(), BoardService()]
    await run_trackers(run, actors)

    letters = await dead_letters(nc)
    expected_letters = sorted((service, subject, reason) for subject, _, services, reason in
                              [*BEFORE_THE_DAY, *AFTER_THE_DAY] for service in services)
    assert sorted((letter.service, letter.subject, letter.reason) for letter in letters) == expected_letters
    assert all(letter.stream == MARKET.name and letter.sequence > 0 and letter.error for letter in letters)
    assert {letter.payload for letter in letters} == {payload.decode() for _, payload, _, _ in
                                                      [*BEFORE_THE_DAY, *AFTER_THE_DAY]}
    for actor in actors:
        assert actor.status()["dead_letters"] == sum(1 for service, _, _ in expected_letters if service == actor.name)

    stats, prices = await kv_state(nc)  # the day exactly as without the poison
    for symbol, figures in expected["quotes"].items():
        for field, value in figures.items():
            assert getattr(stats[symbol], field) == pytest.approx(value, abs=0.5), (symbol, field)
    for symbol, figures in expected["prices"].items():
        for field, value in figures.items():
            assert getattr(prices[symbol], field) == pytest.approx(value, abs=1e-6), (symbol, field)
    assert stats["ZZZ"].total_volume == 700  # the valid message after the poison
    indices = {key: msgspec.json.decode(value) for key, value in
               (await kv_entries(nc.jetstream(), str(Bucket.INDICES))).items()}
    assert indices["VN30"]["trading_date"] == "2026-11-24"
    assert indices["VNINDEX"]["value"] == pytest.approx(expected["indices"]["VNINDEX"]["value"], abs=1e-6)
    contracts = {key: msgspec.json.decode(value) for key, value in
                 (await kv_entries(nc.jetstream(), str(Bucket.DERIVATIVES))).items()}
    front = contracts[expected["derivatives"]["symbol"]]
    assert front["basis"] == pytest.approx(expected["derivatives"]["basis"], abs=1e-6)
    foreign = msgspec.json.decode((await kv_entries(nc.jetstream(), str(Bucket.FOREIGN)))["stock.FPT"])
    assert foreign["trading_date"] == "2026-11-24"

    # Started again, each resumes at its checkpoint: nothing is read twice, no dead letter is written twice.
    again = [ClassifierService(), ForeignService(), IndexService(), DerivativesService(), BoardService()]
    running = [await run_in_process(actor, run) for actor in again]
    await eventually(lambda: all(actor.pending == 0 and actor.restored_from > 0 for actor in again))
    for task, stop in running:
        stop.set()
        assert await task == 0
    assert all(actor.processed == 0 for actor in again)
    assert len(await dead_letters(nc)) == len(expected_letters)


def _garbage() -> bytes:
    return b"not a checkpoint"


def _older_schema() -> bytes:
    return zlib.compress(b'{"sequence": 500, "state": {"days": {"ACB": {"symbol": "ACB", "price": 1}}}}')


def _non_finite() -> bytes:  # what msgspec writes for an infinite value: null where a number belongs
    return zlib.compress(b'{"sequence": 500, "version": 1, "state": {"days": {"ACB": {"symbol": "ACB", '
                         b'"trading_date": "2026-11-24", "bid1": null, "stats": {"symbol": "ACB", '
                         b'"trading_date": "2026-11-24", "last_updated": "2026-11-24T10:00:00+07:00"}}}}}')


@pytest.mark.parametrize("corrupt", [_garbage, _older_schema, _non_finite], ids=["garbage", "older-schema",
                                                                                 "non-finite"])
async def test_an_unreadable_checkpoint_is_rebuilt_from_the_stream(nc: Client, settings: config.Settings,
                                                                   corrupt: Any) -> None:
    run = msgspec.structs.replace(settings, metrics_port=0)
    await replay(run, REPLAY_DAY)
    undisturbed = ClassifierService()
    await run_trackers(run, [undisturbed])
    reference = await kv_state(nc)

    js = nc.jetstream()
    await (await js.key_value(str(Bucket.CHECKPOINTS))).put("classifier", corrupt())
    for bucket in (Bucket.SESSION_STATS, Bucket.PRICES):  # emptied, so what the rebuild writes is all there is
        await js.delete_key_value(str(bucket))
    await bus.ensure_topology(js, run)
    assert await kv_state(nc) == ({}, {})

    rebuilt = ClassifierService()
    await run_trackers(run, [rebuilt])
    assert rebuilt.status()["rebuilt"] is True
    assert rebuilt.status()["restored_from"] == 0
    assert await kv_state(nc) == reference  # the state of an undisturbed run
    stats: dict[str, SessionStats] = reference[0]
    assert stats["ACB"].total_volume > 0


async def test_a_state_that_would_not_read_back_is_never_checkpointed(nc: Client, settings: config.Settings) -> None:
    run = msgspec.structs.replace(settings, metrics_port=0)
    await nc.jetstream().publish("md.trade.ACB", trade("ACB"), stream=MARKET.name)
    actor = ClassifierService()
    task, stop = await run_in_process(actor, run)
    await eventually(lambda: actor.processed == 1 and actor.status()["checkpointed"] == 1)
    actor.core.days["ACB"].bid1 = float("inf")  # what a bug in a core could leave behind
    await nc.jetstream().publish("md.trade.ACB", trade("ACB", total_volume=200), stream=MARKET.name)
    await eventually(lambda: actor.processed == 2)
    await actor.save_checkpoint()
    stop.set()
    assert await task == 0
    entry = await (await nc.jetstream().key_value(str(Bucket.CHECKPOINTS))).get("classifier")
    saved = msgspec.json.decode(zlib.decompress(entry.value))
    assert saved["sequence"] == 1  # the last state that read back
    assert actor.status()["checkpointed"] == 1
