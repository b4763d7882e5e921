"""The alerts service against a real nats-server: a simulated day through ingest, the classifier, the foreign and
derivatives trackers, then the alerts service. What it publishes on DERIVED is exactly what the pure core raises
from the same DERIVED events in stream order, each once; the latest of each rule and symbol is in KV `alerts`; a
user rule in KV `alert_rules` is in force from the first message."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from helpers import caught_up, dead_letters, eventually, kv_entries, run_in_process
from nats.aio.client import Client
from test_ingest import replay

from launcher.local import free_port
from services.alerts.core import AlertParams, AlertsCore
from services.alerts.service import AlertsService
from services.alerts.webhook import check_webhook_url, receiver_host
from services.classifier.service import ClassifierService
from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.ingest.simulator import MarketSimulator
from shared import config
from shared.market import EXCHANGE_TZ
from shared.messages.domain import (
    Alert,
    AlertRule,
    AlertType,
    BasisPoint,
    ClassifiedTrade,
    ForeignFlow,
    RuleKind,
    Severity,
)
from shared.subjects import (
    ALERT_PREFIX,
    ALERTS,
    BASIS_POINT,
    DERIVED,
    FOREIGN_FLOW,
    TRADE_CLASSIFIED,
    Bucket,
    derived_subject,
)

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 24)
REPO = Path(__file__).resolve().parent.parent


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


# --- webhook -----------------------------------------------------------------------------------------------------

SECRET = "hook-secret-123"


class Receiver:
    """A webhook receiver on loopback: records each POST (Idempotency-Key, body) whose signature is right, and
    answers `refuse` (a status) for the alerts whose key is in `refused`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hooks/alerts?token=t0ps3cret"
        self.got: list[tuple[str, bytes]] = []
        self.bad_signatures = 0
        self.refused: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if request.headers.get("X-StockTracker-Signature") != signature or request.query.get("token") != "t0ps3cret":
            self.bad_signatures += 1
            return web.Response(status=401)
        key = request.headers["Idempotency-Key"]
        if key in self.refused:
            return web.Response(status=400)
        self.got.append((key, body))
        return web.Response(status=204)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/alerts", self._take)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def with_webhook(settings: config.Settings, receiver: Receiver) -> config.Settings:
    return msgspec.structs.replace(settings, metrics_port=0, alert_webhook_url=receiver.url,
                                   alert_webhook_secret=SECRET, alert_webhook_timeout_s=2.0)


async def test_a_webhook_receiver_gets_each_alert_once_also_while_it_was_down(nc: Client, settings: config.Settings,
                                                                             tmp_path: Path) -> None:
    """The receiver is down while the day is raised: the rules are not held back (every alert is raised and
    published), the POSTs are retried, and once it is up it gets every alert, in stream order, each once, signed;
    a restart of the service sends none again."""
    receiver = Receiver(free_port())
    run = with_webhook(settings, receiver)
    await derived_day(nc, run, tmp_path / "day.jsonl")
    alerts = AlertsService()
    task, stop = await run_in_process(alerts, run)
    await eventually(lambda: caught_up(alerts), timeout=120)
    raised = await published(nc)
    assert raised == await core_alerts(nc, run)  # all raised while the receiver was down
    assert alerts.webhook is not None
    await eventually(lambda: alerts.webhook.retries >= 2, timeout=30)
    assert receiver.got == []
    await receiver.up()
    try:
        await eventually(lambda: alerts.webhook.delivered == len(raised) and alerts.webhook.pending == 0, timeout=60)
        stop.set()
        assert await task == 0
        assert [key for key, _ in receiver.got] == [alert.natural_key() for alert in raised]  # in order, each once
        assert [msgspec.json.decode(body, type=Alert) for _, body in receiver.got] == raised
        assert receiver.bad_signatures == 0

        again = AlertsService()
        task, stop = await run_in_process(again, run)
        await eventually(lambda: again.webhook is not None and again.webhook.status()["position"] > 0)
        await asyncio.sleep(2)
        stop.set()
        assert await task == 0
        assert len(receiver.got) == len(raised)  # none sent twice after the restart
    finally:
        await receiver.down()


async def test_an_alert_the_receiver_refuses_is_dead_lettered_and_the_next_delivered(
        nc: Client, settings: config.Settings) -> None:
    receiver = Receiver(free_port())
    await receiver.up()
    alerts = AlertsService()
    task, stop = await run_in_process(alerts, with_webhook(settings, receiver))
    try:
        await eventually(lambda: alerts.webhook is not None and alerts.webhook._reader is not None)
        moment = datetime(2026, 11, 24, 10, 0, tzinfo=EXCHANGE_TZ)
        crafted = [Alert(type=AlertType.VOLUME_SPIKE, severity=Severity.WARNING, symbol=symbol, trading_date=DAY,
                         timestamp=moment + timedelta(minutes=n), rule="volume_spike", values={"volume": 1.0},
                         message_vi="vi", message_en="en") for n, symbol in enumerate(("ACB", "FPT", "VNM"))]
        receiver.refused.add(crafted[1].natural_key())
        js = nc.jetstream()
        for alert in crafted:
            await js.publish(derived_subject(alert), msgspec.json.encode(alert))
        await js.publish(f"{ALERT_PREFIX}volume_spike.HPG", b"{not an alert")
        await eventually(lambda: alerts.webhook.refused == 2 and len(receiver.got) == 2, timeout=30)
        assert [key for key, _ in receiver.got] == [crafted[0].natural_key(), crafted[2].natural_key()]
        letters = (await dead_letters(nc, "alerts")).values()
        assert sorted(letter.reason for letter in letters) == ["undecodable", "webhook_refused"]
        assert all("t0ps3cret" not in letter.error for letter in letters)  # no token in a dead letter
    finally:
        stop.set()
        assert await task == 0
        await receiver.down()


def test_a_webhook_url_must_be_https_or_loopback() -> None:
    for url in ("https://hooks.example.com/x", "http://127.0.0.1:9000/x", "http://[::1]:9000/", "http://localhost/"):
        check_webhook_url(url)
    for url in ("http://hooks.example.com/x?token=abc", "ftp://127.0.0.1/", "https:///nohost"):
        with pytest.raises(config.ConfigError) as refused:
            check_webhook_url(url)
        assert "token=abc" not in str(refused.value)
    assert receiver_host("https://user:pw@hooks.example.com:8443/a/b?token=abc") == "hooks.example.com:8443"
