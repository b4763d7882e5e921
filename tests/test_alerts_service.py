"""The alerts service against a real nats-server: a simulated day through ingest, the classifier, the foreign and
derivatives trackers, then the alerts service. What it publishes on DERIVED is exactly what the pure core raises
from the same DERIVED events in stream order, each once; the latest of each rule and symbol is in KV `alerts`; a
user rule in KV `alert_rules` is in force from the first message."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers import eventually, kv_entries, run_in_process
from nats.aio.client import Client
from test_ingest import replay

from services.alerts.core import AlertParams, AlertsCore
from services.alerts.service import AlertsService
from services.classifier.service import ClassifierService
from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.ingest.simulator import MarketSimulator
from shared import config
from shared.messages.domain import Alert, AlertRule, BasisPoint, ClassifiedTrade, ForeignFlow, RuleKind
from shared.subjects import ALERTS, BASIS_POINT, DERIVED, FOREIGN_FLOW, TRADE_CLASSIFIED, Bucket

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 24)
REPO = Path(__file__).resolve().parent.parent


def caught_up(actor: AlertsService | ClassifierService | ForeignService | DerivativesService) -> bool:
    return bool(actor.processed) and actor.pending == 0


async def derived(nc: Client, subjects: list[str]) -> list[tuple[str, bytes]]:
    """Every DERIVED message on `subjects`, in stream order: (subject, payload)."""
    js = nc.jetstream()
    info = await js.stream_info(DERIVED.name)
    consumer = await js.subscribe(">", stream=DERIVED.name, ordered_consumer=True)
    found = []
    for _ in range(info.state.messages):
        message = await consumer.next_msg(timeout=5)
        if any(_matches(pattern, message.subject) for pattern in subjects):
            found.append((message.subject, message.data))
    await consumer.unsubscribe()
    return found


def _matches(pattern: str, subject: str) -> bool:
    wanted, got = pattern.split("."), subject.split(".")
    return len(wanted) == len(got) and all(w in ("*", g) for w, g in zip(wanted, got, strict=True))


RULE = AlertRule(id="fpt-volume", symbol="FPT", kind=RuleKind.VOLUME_BEYOND, value=1_000_000)


async def derived_day(nc: Client, run: config.Settings, path: Path) -> None:
    """A simulated day through ingest, the classifier, the foreign and derivatives trackers into DERIVED; the user
    rule in KV `alert_rules`."""
    with path.open("wb") as out:
        for frame in MarketSimulator(seed=3, trading_date=DAY, intensity=2.0).day():
            out.write(frame.payload + b"\n")
    rules = await nc.jetstream().key_value(str(Bucket.ALERT_RULES))
    await rules.put(RULE.id, msgspec.json.encode(RULE))
    await replay(run, path)
    trackers = [ClassifierService(), ForeignService(), DerivativesService()]
    running = [await run_in_process(actor, run) for actor in trackers]
    await eventually(lambda: all(caught_up(actor) for actor in trackers), timeout=180)
    for task, stop in running:
        stop.set()
        assert await task == 0


async def core_alerts(nc: Client, run: config.Settings) -> list[Alert]:
    """What the pure core raises from DERIVED's events, in stream order."""
    core = AlertsCore(AlertParams.of(run))
    core.set_rules([RULE])
    raised: list[Alert] = []
    for subject, payload in await derived(nc, [TRADE_CLASSIFIED.wildcard, FOREIGN_FLOW.wildcard,
                                               BASIS_POINT.wildcard]):
        if TRADE_CLASSIFIED.matches(subject):
            raised += core.on_trade(msgspec.json.decode(payload, type=ClassifiedTrade))
        elif FOREIGN_FLOW.matches(subject):
            raised += core.on_foreign(msgspec.json.decode(payload, type=ForeignFlow))
        else:
            raised += core.on_basis(msgspec.json.decode(payload, type=BasisPoint))
    return raised


async def published(nc: Client) -> list[Alert]:
    return [msgspec.json.decode(payload, type=Alert) for _, payload in await derived(nc, [ALERTS])]


async def test_a_simulated_day_raises_what_the_core_raises_each_once(nc: Client, settings: config.Settings,
                                                                     tmp_path: Path) -> None:
    run = msgspec.structs.replace(settings, metrics_port=0)
    await derived_day(nc, run, tmp_path / "day.jsonl")
    alerts = AlertsService()
    task, stop = await run_in_process(alerts, run)
    await eventually(lambda: caught_up(alerts), timeout=120)
    stop.set()
    assert await task == 0

    raised = await published(nc)
    assert raised == await core_alerts(nc, run)  # the same alerts, in the same order, each once
    kinds = Counter(str(alert.type) for alert in raised)
    assert len(kinds) >= 3, kinds  # a day of the simulator raises several kinds
    assert any(alert.rule == RULE.id for alert in raised)  # the user rule was in force from the first message
    latest = {key: msgspec.json.decode(value, type=Alert)
              for key, value in (await kv_entries(nc.jetstream(), str(Bucket.ALERTS))).items()}
    assert latest == {f"{alert.symbol}.{alert.rule}": alert for alert in raised}


async def status(nc: Client) -> dict[str, Any] | None:
    try:
        return json.loads((await nc.request("stocktracker.alerts.status", b"", timeout=2)).data)  # type: ignore[no-any-return]
    except Exception:  # not up (yet, or any more)
        return None


async def test_kill_9_mid_day_neither_loses_nor_repeats_an_alert(nc: Client, settings: config.Settings,
                                                                  nats_url: str, tmp_path: Path, reap: Any) -> None:
    run = msgspec.structs.replace(settings, metrics_port=0)
    await derived_day(nc, run, tmp_path / "day.jsonl")
    last = (await nc.jetstream().stream_info(DERIVED.name)).state.last_seq
    env = {**os.environ, "NATS_URL": nats_url, "METRICS_PORT": "0", "CHECKPOINT_INTERVAL_S": "0.1"}
    command = [sys.executable, "-m", "services.alerts"]

    async def checkpointed_beyond(sequence: int) -> bool:
        current = await status(nc)
        return current is not None and current["checkpointed"] > sequence

    async def done() -> bool:
        current = await status(nc)
        return current is not None and current["processed"] > 0 and current["pending"] == 0

    first = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(first)
    await eventually(lambda: checkpointed_beyond(last // 3), timeout=120)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    second = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL)
    reap(second)
    await eventually(done, timeout=180)
    resumed = await status(nc)
    assert resumed is not None
    assert 0 < resumed["restored_from"] < last  # from its checkpoint, not from scratch
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0

    assert await published(nc) == await core_alerts(nc, run)  # none lost, none twice, in order
