"""The latest alerts, from the DERIVED stream (`alert.*.*`), newest last, with the ones new since last taken. Pure:
fed alerts, asked for lists. An alert read again (the stream re-read after a reconnect) is kept once."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime

from shared.messages.domain import Alert

KEPT = 5_000  # alerts held: a busy day's worth of the latest


class AlertLog:
    def __init__(self, kept: int = KEPT) -> None:
        self._alerts: deque[Alert] = deque(maxlen=kept)
        self._keys: set[str] = set()
        self.new: list[Alert] = []  # since `take`
        self.repeats = 0

    def add(self, alert: Alert) -> None:
        key = alert.natural_key()
        if key in self._keys:
            self.repeats += 1
            return
        if len(self._alerts) == self._alerts.maxlen:
            self._keys.discard(self._alerts[0].natural_key())
        self._alerts.append(alert)
        self._keys.add(key)
        self.new.append(alert)

    def take(self) -> list[Alert]:
        """The alerts added since the last call, oldest first."""
        new, self.new = self.new, []
        return new

    def select(self, limit: int, kind: str | None = None, severity: str | None = None, symbol: str | None = None,
               since: datetime | None = None) -> list[Alert]:
        """The latest `limit` alerts that match every filter given, newest first."""
        chosen: list[Alert] = []
        for alert in reversed(self._alerts):
            if len(chosen) >= limit:
                break
            if matches(alert, kind, severity, symbol, since):
                chosen.append(alert)
        return chosen


def matches(alert: Alert, kind: str | None = None, severity: str | None = None, symbol: str | None = None,
            since: datetime | None = None) -> bool:
    return ((kind is None or alert.type == kind) and (severity is None or alert.severity == severity)
            and (symbol is None or alert.symbol == symbol) and (since is None or alert.timestamp >= since))


def of_symbol(alerts: Iterable[Alert], symbol: str | None) -> list[Alert]:
    return [alert for alert in alerts if symbol is None or alert.symbol == symbol]
