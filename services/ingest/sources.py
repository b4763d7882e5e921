"""Where frames come from: a recorded file, the built-in simulator (the live SSI source is in `ssi_live`), and the
pace and recording that apply to any of them.

A frame is what SSI's client hands over: the Broadcast payload, as bytes/str (a file line, the simulator) or as the
dict `ssi-fc-data` already parsed. Every source yields frames; the pump decodes, paces and publishes them, so the
simulator and a replayed day take exactly the live path.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import msgspec

from shared.market import exchange_now
from shared.messages.domain import IndexBasket, SecurityInfo

if TYPE_CHECKING:
    from services.ingest.simulator import MarketSimulator, Universe

Frame = bytes | str | Mapping[str, Any]


class Reference(msgspec.Struct):
    """Reference data a source knows at start: the VN30 basket, other indices' baskets (HNX30), security details."""

    basket: IndexBasket
    securities: list[SecurityInfo] = msgspec.field(default_factory=list)
    baskets: list[IndexBasket] = msgspec.field(default_factory=list)  # besides VN30's


class Source(Protocol):
    name: str

    async def reference(self) -> Reference: ...

    def frames(self) -> AsyncIterator[Frame]: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Pacer:
    """Holds frames back until their exchange time comes round at `speed` × real time (0: never waits).

    Time is anchored at the first frame of each trading date, so a replay or simulation spanning several days does
    not sit out the nights. `follow_wall_clock` instead releases each frame at its own exchange time (the simulator at
    speed 1: what is already past goes at once, the rest as the clock reaches it). `rate` (frames/s) releases frames
    evenly spaced whatever their exchange times: SSI stamps a frame to the second, so a replay by exchange time sends
    each second's frames at once, where a live feed spreads them over the second."""

    def __init__(self, speed: float, *, follow_wall_clock: bool = False, rate: float = 0.0) -> None:
        self.speed = speed
        self.follow_wall_clock = follow_wall_clock
        self.rate = rate
        self._anchor: tuple[date, datetime, float] | None = None
        self._released = 0  # frames let go at `rate` since `_started`
        self._started = 0.0

    def delay(self, exchange_time: datetime, now: float) -> float:
        """Seconds to wait before releasing a frame stamped `exchange_time`, `now` being time.monotonic()."""
        if self.rate:
            if not self._released:
                self._started = now
            self._released += 1
            return max(0.0, self._started + (self._released - 1) / self.rate - now)
        if self.follow_wall_clock:
            return max(0.0, (exchange_time - exchange_now()).total_seconds())
        if self.speed == 0:
            return 0.0
        day = exchange_time.date()
        if self._anchor is None or self._anchor[0] != day:
            self._anchor = (day, exchange_time, now)
            return 0.0
        _, anchor_time, anchor_clock = self._anchor
        due = anchor_clock + (exchange_time - anchor_time).total_seconds() / self.speed
        return max(0.0, due - now)

    async def wait(self, exchange_time: datetime) -> None:
        delay = self.delay(exchange_time, time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)


# --- replay -------------------------------------------------------------------------------------------------------


def _open_lines(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


class ReplaySource:
    """A recorded feed: JSON Lines (optionally gzip), one Broadcast payload per line, in the order received."""

    name = "replay"

    def __init__(self, path: Path, basket: IndexBasket) -> None:
        self.path = path
        self._basket = basket
        self.lines_read = 0
        self.finished = False

    async def reference(self) -> Reference:
        return Reference(basket=self._basket)

    async def frames(self) -> AsyncIterator[Frame]:
        with _open_lines(self.path) as lines:
            for line in lines:
                self.lines_read += 1
                yield line
        self.finished = True

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"file": str(self.path), "lines_read": self.lines_read, "finished": self.finished}


# --- simulator ----------------------------------------------------------------------------------------------------


def next_trading_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


class SimSource:
    """The built-in market, one simulated trading day after another (weekends skipped)."""

    name = "sim"

    def __init__(self, *, seed: int, first_day: date, intensity: float, basket: IndexBasket,
                 universe: Universe = "default", combined: bool = False) -> None:
        self.seed = seed
        self.first_day = first_day
        self.intensity = intensity
        self.universe = universe
        self.combined = combined  # trades and books as X frames (SIM_CHANNEL=x)
        self._basket = basket
        self.day = first_day
        self.frames_made = 0

    async def reference(self) -> Reference:
        """The basket, and the current day's securities: every simulated stock with its share count (each day's
        are its own), the contracts. Ingest asks again at each new trading date."""
        simulator = self._simulator(self.day)
        return Reference(basket=msgspec.structs.replace(self._basket, trading_date=self.day),
                         securities=simulator.securities, baskets=simulator.baskets)

    def _simulator(self, day: date) -> MarketSimulator:
        from services.ingest.simulator import MarketSimulator

        return MarketSimulator(seed=self.seed + day.toordinal(), trading_date=day, intensity=self.intensity,
                               universe=self.universe, combined=self.combined)

    def _days(self) -> Iterator[bytes]:
        day = self.first_day
        while True:
            self.day = day
            for frame in self._simulator(day).day():
                yield frame.payload
            day = next_trading_day(day)

    async def frames(self) -> AsyncIterator[Frame]:
        for payload in self._days():
            self.frames_made += 1
            yield payload

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"trading_date": self.day.isoformat(), "frames_made": self.frames_made}


# --- recording ----------------------------------------------------------------------------------------------------


class FrameRecorder:
    """Writes frames as they arrive, one per line, in the format ReplaySource reads back."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] = gzip.open(path, "ab") if path.suffix == ".gz" else path.open("ab")  # noqa: SIM115

    def write(self, frame: Frame) -> None:
        if isinstance(frame, Mapping):
            line = msgspec.json.encode(frame)
        else:
            line = frame.encode() if isinstance(frame, str) else frame
        self._file.write(line.rstrip(b"\r\n") + b"\n")

    def close(self) -> None:
        self._file.close()
