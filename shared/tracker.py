"""The shell every tracker (classifier, foreign, index, derivatives) runs in: read MARKET subjects in stream order
from a checkpoint, feed a pure core, publish its events, write its current state to KV (coalesced), and checkpoint.

Restart safety: the checkpoint holds the core's state together with the stream sequence it reflects, saved only
after every event published up to that point is acknowledged. A restarted tracker (after a crash or `kill -9`)
restores it and resumes at the next sequence; re-processing the messages after the checkpoint re-publishes the same
events under the same natural keys (dropped by JetStream) and rewrites the same KV state, so no share is lost or
counted twice. Two instances of one tracker likewise produce the same events and state: running both is redundancy,
not double counting. To split the work, give each instance a `PARTITION` i/n: it keeps only its symbols.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from shared import bus
from shared.config import ConfigError, Settings
from shared.runtime import Actor, Context
from shared.subjects import MARKET, Bucket, StreamSpec, kv_subject

State = TypeVar("State", bound=msgspec.Struct)

LAG_MESSAGES = Gauge("stocktracker_tracker_lag_messages", "Messages in the stream not yet processed by this tracker")
LAG_SECONDS = Gauge("stocktracker_tracker_lag_seconds",
                    "Age of the last processed message: how far behind the stream's head the tracker runs")
CHECKPOINTS = Counter("stocktracker_tracker_checkpoints_total", "Checkpoints saved")
UNDECODABLE = Counter("stocktracker_tracker_undecodable_total", "Stream messages whose payload could not be decoded")


class Partition(msgspec.Struct, frozen=True):
    """An instance's share of the symbols: those whose CRC-32 modulo `count` is `index`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Partition:
        index, count = (int(part) for part in text.split("/"))
        if index >= count:
            raise ConfigError(f"invalid PARTITION={text!r}: i must be below n in i/n")
        return cls(index, count)

    def owns(self, symbol: str) -> bool:
        return self.count == 1 or zlib.crc32(symbol.encode()) % self.count == self.index

    @property
    def suffix(self) -> str:
        return "" if self.count == 1 else f"-{self.index}-of-{self.count}"


class Checkpoint(msgspec.Struct, Generic[State]):
    sequence: int  # the last stream sequence `state` reflects
    state: State


class KvWriter:
    """Latest value per (bucket, key), written at most once per `interval_s`; `flush` writes whatever is pending.
    Writes go out through the service's publisher (a KV put is a JetStream publish to $KV.<bucket>.<key>), so they
    are pipelined with its events and survive a NATS restart the same way, not awaited one request at a time."""

    def __init__(self, publisher: bus.Publisher, interval_s: float) -> None:
        self._publisher = publisher
        self._interval_s = interval_s
        self._pending: dict[tuple[Bucket, str], Callable[[], bytes]] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def put(self, bucket: Bucket, key: str, value: Callable[[], bytes]) -> None:
        """Remember that `key` changed; `value` is called at write time, so a burst encodes only the last state."""
        self._pending[(bucket, key)] = value

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kv-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._send()

    async def _send(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            for (bucket, key), value in batch.items():
                await self._publisher.publish(kv_subject(bucket, key), value())
            self.writes += len(batch)

    async def flush(self) -> None:
        """Write what is pending and wait until the buckets have it."""
        await self._send()
        await self._publisher.settled()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


class Tracker(Actor, Generic[State]):
    """A tracker: subclasses give the subjects, the state type and the per-message handling."""

    stream: ClassVar[StreamSpec] = MARKET
    subjects: ClassVar[tuple[str, ...]]
    state_type: ClassVar[type]

    def __init__(self) -> None:
        self.sequence = 0
        self.last_stored_ns = 0
        self.processed = 0
        self.restored_from = 0
        self.partition = Partition(0, 1)
        self.ctx: Context | None = None
        self.kv: KvWriter | None = None
        self._reader: bus.StreamReader | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpoints: KeyValue | None = None
        self._checkpointed = 0

    partitionable: ClassVar[bool] = True  # False: the tracker needs every symbol (e.g. for a basket summary)

    @classmethod
    def check(cls, settings: Settings) -> None:
        partition = Partition.parse(settings.partition)
        if partition.count > 1 and not cls.partitionable:
            raise ConfigError(f"invalid PARTITION={settings.partition!r}: {cls.name} runs as one instance (0/1)")

    @property
    def checkpoint_key(self) -> str:
        return f"{self.name}{self.partition.suffix}"

    # --- what a tracker defines -------------------------------------------------------------------------------------

    @abstractmethod
    def restore(self, state: State | None) -> None:
        """Take the state from the checkpoint (None: a fresh start)."""

    @abstractmethod
    def snapshot(self) -> State:
        """The core's whole state, to checkpoint."""

    @abstractmethod
    async def handle(self, subject: str, payload: bytes) -> None:
        """One stream message: feed the core, publish its events, `self.kv.put` what changed."""

    # --- the shell --------------------------------------------------------------------------------------------------

    async def start(self, ctx: Context) -> None:
        self.ctx = ctx
        self.partition = Partition.parse(ctx.settings.partition)
        self.kv = KvWriter(ctx.publisher, self.kv_interval_s(ctx.settings))
        self._checkpoints = await ctx.js.key_value(str(Bucket.CHECKPOINTS))
        checkpoint = await self._load_checkpoint()
        self.restore(checkpoint.state if checkpoint else None)
        self.sequence = self.restored_from = checkpoint.sequence if checkpoint else 0
        self._checkpointed = self.sequence
        LAG_MESSAGES.set_function(lambda: self.pending)
        LAG_SECONDS.set_function(lambda: max(0.0, time.time() - self.last_stored_ns / 1e9) if self.pending else 0.0)
        self.kv.start()
        self._reader = await bus.consume_from(ctx.js, self.stream, self.subjects, ctx.instrumented(self._on_message),
                                              start_sequence=self.sequence + 1)
        self._checkpointer = asyncio.create_task(self._checkpoint_every(ctx.settings.checkpoint_interval_s))
        ctx.log.info("tracking", subjects=list(self.subjects), resumed_after=self.sequence,
                     partition=f"{self.partition.index}/{self.partition.count}")

    def kv_interval_s(self, settings: Settings) -> float:
        return 0.1

    async def _on_message(self, subject: str, payload: bytes, position: bus.Delivery) -> None:
        sequence = position.stream_sequence
        try:
            await self.handle(subject, payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            UNDECODABLE.inc()
            assert self.ctx is not None
            self.ctx.log.warning("undecodable message", subject=subject, sequence=sequence, error=str(err))
        self.sequence = sequence
        self.last_stored_ns = position.timestamp_ns
        self.processed += 1

    @property
    def pending(self) -> int:
        """Messages not yet processed: in the stream after the last one read, or read and waiting."""
        return self._reader.backlog if self._reader is not None else 0

    async def _load_checkpoint(self) -> Checkpoint[State] | None:
        assert self._checkpoints is not None
        try:
            entry = await self._checkpoints.get(self.checkpoint_key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return msgspec.json.decode(zlib.decompress(entry.value), type=Checkpoint[self.state_type])  # type: ignore[name-defined]

    async def save_checkpoint(self) -> None:
        """State and sequence taken together (no await in between), saved once the events up to there are acked."""
        assert self.ctx is not None
        assert self._checkpoints is not None
        if self.sequence == self._checkpointed:
            return
        sequence = self.sequence
        blob = zlib.compress(msgspec.json.encode(Checkpoint(sequence=sequence, state=self.snapshot())))
        await self.ctx.publisher.settled()
        await self._checkpoints.put(self.checkpoint_key, blob)
        self._checkpointed = sequence
        CHECKPOINTS.inc()

    async def _checkpoint_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.save_checkpoint()
            except (nats.errors.Error, TimeoutError) as err:
                assert self.ctx is not None
                self.ctx.log.warning("checkpoint not saved; retrying", error=str(err) or type(err).__name__)

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        if self.kv is not None:
            await self.kv.stop()
        await self.save_checkpoint()

    def status(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "processed": self.processed, "pending": self.pending,
                "restored_from": self.restored_from, "checkpointed": self._checkpointed,
                "kv_writes": self.kv.writes if self.kv else 0}
