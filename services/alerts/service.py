"""The alerts service: DERIVED's classified trades, foreign flows and basis points through the alert rules
(services/alerts/core.py, on the feed's own clock); each alert to DERIVED `alert.<type>.<SYMBOL>`, the latest of each
rule and symbol to KV `alerts`. The users' rules come from KV `alert_rules`, loaded before the first message is read.
Restart-safe like the trackers: the rules' windows are checkpointed with the stream position, and an alert raised
again after a restart is published under the same message id (JetStream drops it). With ALERT_WEBHOOK_URL set, the
first partition (0/n) also POSTs every alert to it, from a reader of its own (services/alerts/webhook.py)."""

from __future__ import annotations

from typing import Any

import msgspec
from prometheus_client import Counter

from services.alerts.core import AlertParams, AlertsCore, AlertsState
from services.alerts.webhook import WebhookDelivery, check_webhook_url
from shared.bus import BucketWatch
from shared.config import Settings
from shared.messages.domain import Alert, AlertRule, BasisPoint, ClassifiedTrade, ForeignFlow
from shared.runtime import Context
from shared.subjects import BASIS_POINT, DERIVED, FOREIGN_FLOW, TRADE_CLASSIFIED, Bucket, derived_subject
from shared.tracker import Partition, Tracker

ALERTS_RAISED = Counter("stocktracker_alerts_total", "Alerts raised, by type and severity", ["type", "severity"])


class AlertsService(Tracker[AlertsState]):
    name = "alerts"
    description = "Market signals: volume spikes, limits, foreign acceleration, basis, futures flow, user rules"
    metrics_port = 9109
    stream = DERIVED
    inputs = ((TRADE_CLASSIFIED.wildcard, ClassifiedTrade), (FOREIGN_FLOW.wildcard, ForeignFlow),
              (BASIS_POINT.wildcard, BasisPoint))
    state_type = AlertsState
    state_version = 2  # 2: each input's state apart (AlertsState): an older checkpoint is rebuilt from the stream

    def __init__(self) -> None:
        super().__init__()
        self.core: AlertsCore | None = None
        self.params: AlertParams | None = None
        self.rules: dict[str, AlertRule] = {}
        self._rules_watch: BucketWatch | None = None
        self.webhook: WebhookDelivery | None = None
        self._encode = msgspec.json.Encoder().encode
        self._decode_rule = msgspec.json.Decoder(AlertRule).decode

    @classmethod
    def check(cls, settings: Settings) -> None:
        super().check(settings)
        check_webhook_url(settings.alert_webhook_url)

    async def start(self, ctx: Context) -> None:
        self.params = AlertParams.of(ctx.settings)
        self._rules_watch = BucketWatch(ctx.js, Bucket.ALERT_RULES, self._rule_changed)
        self._rules_watch.start()
        await self._rules_watch.loaded.wait()  # the rules in force before the first message is read
        if ctx.settings.alert_webhook_url and Partition.parse(ctx.settings.partition).index == 0:
            self.webhook = WebhookDelivery(ctx)
            await self.webhook.prepare()  # where it goes on from, before anything is raised
        await super().start(ctx)
        if self.webhook is not None:
            await self.webhook.start()

    def _rule_changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.rules.pop(key, None)
        else:  # one that does not decode is refused, counted and logged by the watch, which goes on
            self.rules[key] = self._decode_rule(value)
        if self.core is not None:
            self.core.set_rules(self.rules.values())

    def restore(self, state: AlertsState | None) -> None:
        assert self.params is not None
        self.core = AlertsCore(self.params, state)
        self.core.set_rules(self.rules.values())

    def snapshot(self) -> AlertsState:
        assert self.core is not None
        return self.core.state

    async def handle(self, subject: str, message: ClassifiedTrade | ForeignFlow | BasisPoint) -> None:
        assert self.core is not None
        if isinstance(message, ClassifiedTrade):
            alerts = self.core.on_trade(message)
        elif isinstance(message, ForeignFlow):
            alerts = self.core.on_foreign(message)
        else:
            alerts = self.core.on_basis(message)
        for alert in alerts:
            await self._publish(alert)

    async def _publish(self, alert: Alert) -> None:
        assert self.ctx is not None
        assert self.kv is not None
        encoded = self._encode(alert)
        await self.ctx.publisher.publish(derived_subject(alert), encoded, f"alert:{alert.natural_key()}")
        self.kv.put(Bucket.ALERTS, f"{alert.symbol}.{alert.rule}", lambda: encoded)
        ALERTS_RAISED.labels(str(alert.type), str(alert.severity)).inc()

    async def stop(self) -> None:
        if self.webhook is not None:
            await self.webhook.stop()
        if self._rules_watch is not None:
            await self._rules_watch.stop()
        await super().stop()

    def status(self) -> dict[str, Any]:
        symbols = set(self.core.state.trades) | set(self.core.state.foreign) | set(self.core.state.basis) \
            if self.core else set()
        webhook = self.webhook.status() if self.webhook else None
        return {**super().status(), "symbols": len(symbols), "rules": len(self.rules), "webhook": webhook}
