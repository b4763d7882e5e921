"""The classifier service against a real nats-server: the recorded day through ingest and the classifier ends in
exactly the expected KV state and events; killed with SIGKILL mid-stream and restarted, it ends in the identical
state, with every classified trade in DERIVED exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers import (
    REPLAY_DAY,
    caught_up,
    classify_recorded,
    eventually,
    expected_day,
    kv_entries,
    run_in_process,
    stock_feed,
)
from nats.aio.client import Client
from test_ingest import replay

from services.classifier.service import ClassifierService
from services.ingest.simulator import MarketSimulator
from shared import config
from shared.messages.domain import ClassifiedTrade, PriceData, SessionStats, Trade
from shared.subjects import DERIVED, MARKET, Bucket

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


async def stream_last_sequence(nc: Client) -> int:
    return (await nc.jetstream().stream_info(MARKET.name)).state.last_seq


async def kv_state(nc: Client) -> tuple[dict[str, SessionStats], dict[str, PriceData]]:
    js = nc.jetstream()
    stats = {key: msgspec.json.decode(value, type=SessionStats)
             for key, value in (await kv_entries(js, str(Bucket.SESSION_STATS))).items()}
    prices = {key: msgspec.json.decode(value, type=PriceData)
              for key, value in (await kv_entries(js, str(Bucket.PRICES))).items()}
    return stats, prices


async def classified_events(nc: Client) -> list[ClassifiedTrade]:
    js = nc.jetstream()
    count = (await js.stream_info(DERIVED.name)).state.messages
    sub = await js.subscribe("trade.classified.*", stream=DERIVED.name, ordered_consumer=True)
    events = [msgspec.json.decode((await sub.next_msg(timeout=5)).data, type=ClassifiedTrade) for _ in range(count)]
    await sub.unsubscribe()
    return events


async def test_recorded_day_ends_in_the_expected_state(nc: Client, settings: config.Settings) -> None:
    await replay(settings, REPLAY_DAY)
    actor = ClassifierService()
    task, stop = await run_in_process(actor, msgspec.structs.replace(settings, metrics_port=0))
    await eventually(lambda: caught_up(actor))  # the stream holds nothing more for it
    stop.set()
    assert await task == 0

    expected = expected_day()
    stats, prices = await kv_state(nc)
    assert set(stats) == set(expected["quotes"]) == set(prices)
    for symbol, figures in expected["quotes"].items():
        for field, value in figures.items():
            assert getattr(stats[symbol], field) == pytest.approx(value, abs=0.5), (symbol, field)
        assert stats[symbol].trading_date == date(2026, 11, 24)
    for symbol, figures in expected["prices"].items():
        for field, value in figures.items():
            assert getattr(prices[symbol], field) == pytest.approx(value, abs=1e-6), (symbol, field)

    events = await classified_events(nc)
    stock_classes = {key: value for key, value in expected["classes"].items() if not key.startswith("VN30F")}
    assert {f"{e.symbol}:{e.total_volume}": e.trade_type.value for e in events} == stock_classes
    assert len(events) == len(stock_classes)
    assert sum(e.unseen_volume for e in events) == expected["counts"]["gap_unseen_volume"]
    assert actor.status()["duplicates"] == 0  # JetStream already dropped the repeated frames


async def status(nc: Client) -> dict:
    return json.loads((await nc.request("stocktracker.classifier.status", b"", timeout=2)).data)


async def test_kill_9_mid_stream_and_restart_ends_identical(nc: Client, settings: config.Settings,
                                                            nats_url: str, tmp_path: Path, reap: Any) -> None:
    path = tmp_path / "day.jsonl"
    with path.open("wb") as out:
        for frame in MarketSimulator(seed=11, trading_date=date(2026, 11, 24), intensity=3.0).day():
            out.write(frame.payload + b"\n")
    await replay(settings, path)
    last = await stream_last_sequence(nc)

    env = {**os.environ, "NATS_URL": nats_url, "METRICS_PORT": "0", "CHECKPOINT_INTERVAL_S": "0.1"}
    command = [sys.executable, "-m", "services.classifier"]
    first = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(first)
    await eventually(lambda: _checkpointed_beyond(nc, last // 4), timeout=60)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert await _safe_status(nc) is None  # really gone

    second = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(second)
    await eventually(lambda: _caught_up(nc), timeout=120)
    resumed = await status(nc)
    assert 0 < resumed["restored_from"] < last  # it resumed from its checkpoint, not from scratch
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0

    reference = classify_recorded(path)
    stats, prices = await kv_state(nc)
    assert set(stats) == set(reference.days)
    for symbol, day in reference.days.items():
        assert stats[symbol] == day.stats, symbol
        assert prices[symbol] == day.price, symbol
    events = await classified_events(nc)
    keys = [event.natural_key() for event in events]
    assert len(keys) == len(set(keys))  # nothing twice
    assert len(keys) == len(list(_stock_trades(path)))  # nothing lost


def _stock_trades(path: Path):  # type: ignore[no-untyped-def]
    seen: set[str] = set()
    for message in stock_feed(path):
        if isinstance(message, Trade) and message.natural_key() not in seen:
            seen.add(message.natural_key())
            yield message


async def _safe_status(nc: Client) -> dict | None:
    try:
        return await status(nc)
    except Exception:
        return None


async def _checkpointed_beyond(nc: Client, sequence: int) -> bool:
    current = await _safe_status(nc)
    return current is not None and current["checkpointed"] > sequence


async def _caught_up(nc: Client) -> bool:
    current = await _safe_status(nc)
    return current is not None and current["processed"] > 0 and current["pending"] == 0


async def test_two_instances_side_by_side_count_nothing_twice(nc: Client, settings: config.Settings) -> None:
    await replay(settings, REPLAY_DAY)
    run = msgspec.structs.replace(settings, metrics_port=0)
    first, second = ClassifierService(), ClassifierService()
    running = [await run_in_process(first, run), await run_in_process(second, run)]
    await eventually(lambda: all(caught_up(actor) for actor in (first, second)))
    for task, stop in running:
        stop.set()
        assert await task == 0
    expected = expected_day()
    events = await classified_events(nc)
    stock_classes = {key: value for key, value in expected["classes"].items() if not key.startswith("VN30F")}
    assert len(events) == len(stock_classes)  # each event once, though both instances published it
    stats, _ = await kv_state(nc)
    for symbol, figures in expected["quotes"].items():
        assert stats[symbol].total_volume == figures["total_volume"]
        assert stats[symbol].mua_chu_dong_volume == figures["mua_chu_dong_volume"]


async def test_partitions_split_the_symbols(nc: Client, settings: config.Settings) -> None:
    await replay(settings, REPLAY_DAY)
    halves = [ClassifierService(), ClassifierService()]
    running = [await run_in_process(actor, msgspec.structs.replace(settings, metrics_port=0, partition=f"{i}/2"))
               for i, actor in enumerate(halves)]
    await eventually(lambda: all(caught_up(actor) for actor in halves))
    for task, stop in running:
        stop.set()
        assert await task == 0
    symbols = [set(actor.core.days) for actor in halves]
    assert symbols[0].isdisjoint(symbols[1])
    assert symbols[0] | symbols[1] == set(expected_day()["quotes"])
    assert len(await classified_events(nc)) == sum(actor.classified for actor in halves)
