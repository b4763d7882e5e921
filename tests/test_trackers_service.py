"""The foreign, index and derivatives services against a real nats-server: the recorded day replayed ends in exactly
the expected KV state and events; each killed with SIGKILL mid-stream and restarted ends in the state an undisturbed
run reaches, every event in DERIVED exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers import REPLAY_DAY, caught_up, eventually, expected_day, kv_entries, run_in_process, track_recorded
from nats.aio.client import Client
from test_ingest import replay

from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.index.service import IndexService
from services.ingest.service import Ingest
from services.ingest.simulator import MarketSimulator
from shared import config
from shared.messages.domain import (
    BasisPoint,
    ClassifiedTrade,
    DerivativesData,
    ForeignFlow,
    ForeignInvestorData,
    ForeignSummary,
    IndexData,
    IndexPoint,
)
from shared.subjects import DERIVED, FOREIGN_SUMMARY_KEY, Bucket, foreign_stock_key

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def foreign_kind(key: str) -> type:
    return ForeignSummary if key == FOREIGN_SUMMARY_KEY else ForeignInvestorData


async def kv_values(nc: Client, bucket: Bucket, kind: type | Callable[[str], type]) -> dict[str, Any]:
    entries = await kv_entries(nc.jetstream(), str(bucket))
    return {key: msgspec.json.decode(value, type=kind if isinstance(kind, type) else kind(key))
            for key, value in entries.items()}


async def events(nc: Client, subject: str, kind: type) -> list[Any]:
    js = nc.jetstream()
    info = await js.stream_info(DERIVED.name, subjects_filter=subject)
    count = sum((info.state.subjects or {}).values())
    if not count:
        return []
    sub = await js.subscribe(subject, stream=DERIVED.name, ordered_consumer=True)
    found = [msgspec.json.decode((await sub.next_msg(timeout=5)).data, type=kind) for _ in range(count)]
    await sub.unsubscribe()
    return found


async def test_recorded_day_ends_in_the_expected_state(nc: Client, settings: config.Settings) -> None:
    expected = expected_day()
    run = msgspec.structs.replace(settings, metrics_port=0, vn30_symbols=expected["vn30_basket"])
    await replay(run, REPLAY_DAY)
    actors = [ForeignService(), IndexService(), DerivativesService()]
    running = [await run_in_process(actor, run) for actor in actors]
    await eventually(lambda: all(caught_up(actor) for actor in actors))
    for task, stop in running:
        stop.set()
        assert await task == 0

    foreign = await kv_values(nc, Bucket.FOREIGN, foreign_kind)
    for symbol, figures in expected["foreign"]["stocks"].items():
        data = foreign[foreign_stock_key(symbol)]
        for field, value in figures.items():
            assert getattr(data, field) == (value if field == "symbol" else pytest.approx(value, abs=0.5))
    summary = foreign[FOREIGN_SUMMARY_KEY]
    assert isinstance(summary, ForeignSummary)
    assert [d.symbol for d in summary.top_buy] == expected["foreign"]["summary"]["top_buy"]
    assert [d.symbol for d in summary.top_sell] == expected["foreign"]["summary"]["top_sell"]
    assert summary.total_net_value == pytest.approx(expected["foreign"]["summary"]["total_net_value"], abs=0.5)
    assert foreign_stock_key("HAG") in foreign  # not in the basket: tracked, but outside the summary

    indices = await kv_values(nc, Bucket.INDICES, IndexData)
    assert set(indices) == set(expected["indices"])
    for index_id, figures in expected["indices"].items():
        for field, value in figures.items():
            got = getattr(indices[index_id], field)
            assert got == (value if field == "index_id" else pytest.approx(value, abs=1e-6))
        assert 0 < len(indices[index_id].intraday) <= 375

    contracts = await kv_values(nc, Bucket.DERIVATIVES, DerivativesData)
    front = contracts[expected["derivatives"]["symbol"]]
    for field, value in expected["derivatives"].items():
        assert getattr(front, field) == (value if isinstance(value, str | bool) else pytest.approx(value, abs=1e-6))
    assert front.is_active
    assert not contracts["VN30F2703"].is_active

    points = await events(nc, "basis.point.VN30F2612", BasisPoint)
    assert [round(p.basis, 2) for p in points] == [round(b, 2) for b in expected["basis_points"]]
    futures = await events(nc, "trade.classified.*", ClassifiedTrade)
    assert {f"{t.symbol}:{t.total_volume}": t.trade_type.value for t in futures} == {
        key: value for key, value in expected["classes"].items() if key.startswith("VN30F")}
    assert len(await events(nc, "index.point.*", IndexPoint)) == expected["counts"]["accepted:MI"]
    flows = await events(nc, "foreign.flow.*", ForeignFlow)
    assert len(flows) == expected["counts"]["accepted:R"] - 11  # one baseline per symbol (10 basket + HAG)


# --- kill -9 mid-stream -----------------------------------------------------------------------------------------


async def status(nc: Client, name: str) -> dict | None:
    try:
        return json.loads((await nc.request(f"stocktracker.{name}.status", b"", timeout=1)).data)
    except Exception:
        return None


def foreign_matches(cores: tuple, kv: dict) -> int:
    foreign = cores[0]
    for symbol, state in foreign.symbols.items():
        assert kv[foreign_stock_key(symbol)] == state.data, symbol
    return len(foreign.symbols)


def index_matches(cores: tuple, kv: dict) -> int:
    for index_id, day in cores[1].indices.items():
        assert kv[index_id] == day.data, index_id
    return len(cores[1].indices)


def derivatives_matches(cores: tuple, kv: dict) -> int:
    derivatives = cores[2]
    for symbol in derivatives.state.contracts:
        assert kv[symbol] == derivatives.data(symbol), symbol
    return len(derivatives.state.contracts)


CASES = [
    ("foreign", Bucket.FOREIGN, foreign_kind, foreign_matches, "foreign.flow.*", ForeignFlow),
    ("index", Bucket.INDICES, IndexData, index_matches, "index.point.*", IndexPoint),
    ("derivatives", Bucket.DERIVATIVES, DerivativesData, derivatives_matches, "basis.point.*", BasisPoint),
]


@pytest.mark.parametrize(("name", "bucket", "kind", "matches", "subject", "event"), CASES, ids=[c[0] for c in CASES])
async def test_kill_9_mid_stream_and_restart(nc: Client, settings: config.Settings, nats_url: str, tmp_path: Path,
                                             name: str, bucket: Bucket, kind: Any,
                                             matches: Callable[[tuple, dict], int], subject: str,
                                             event: type, reap: Any) -> None:
    path = tmp_path / "day.jsonl"
    with path.open("wb") as out:
        for frame in MarketSimulator(seed=5, trading_date=date(2026, 11, 24)).day():
            out.write(frame.payload + b"\n")
    # The day flows in over about six seconds while the tracker runs, so the kill lands mid-stream.
    ingest = Ingest()
    ingesting, ingest_stop = await run_in_process(ingest, msgspec.structs.replace(
        settings, metrics_port=0, ingest_source="replay", replay_file=str(path), replay_speed=4000.0))

    env = {**os.environ, "NATS_URL": nats_url, "METRICS_PORT": "0", "CHECKPOINT_INTERVAL_S": "0.1"}
    command = [sys.executable, "-m", f"services.{name}"]

    async def checkpointed_some() -> bool:
        current = await status(nc, name)
        return current is not None and current["checkpointed"] > 0

    first = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(first)
    await eventually(checkpointed_some, timeout=60, interval=0.01)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert not (ingest.status()["source"] or {}).get("finished")  # really mid-stream

    second = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(second)
    await eventually(lambda: (ingest.status()["source"] or {}).get("finished"), timeout=60)
    ingest_stop.set()
    assert await ingesting == 0

    async def done() -> bool:
        current = await status(nc, name)
        return current is not None and current["pending"] == 0 and current["processed"] > 0

    await eventually(done, timeout=120)
    resumed = await status(nc, name)
    assert resumed is not None
    assert resumed["restored_from"] > 0  # resumed from its checkpoint
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0

    *cores, _ = track_recorded(path)
    assert matches(cores, await kv_values(nc, bucket, kind)) > 0
    published = await events(nc, subject, event)
    keys = [msgspec.json.encode(e) for e in published]
    assert len(keys) == len(set(keys))  # nothing twice
    assert published  # and the day's events are there
