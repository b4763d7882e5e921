"""Saying a recurring thing once in a while: a flood of bad input must be counted in full but logged sparingly."""

from __future__ import annotations

import time


class Throttle:
    """`due(key)` is true at most once per `interval_s` for each key (e.g. once a minute per rejection reason)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[key] = now
        return True
