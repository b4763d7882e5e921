"""The shell every tracker (classifier, foreign, index, derivatives) runs in: read MARKET subjects in stream order
from a checkpoint, feed a pure core, publish its events, write its current state to KV (coalesced), and checkpoint.

The shell is the trackers' boundary: it decodes each message into its domain type (whose bounds refuse what no market
sends), checks that the payload's instrument is its subject's and that its trading date is plausible, and only then
hands it to the tracker. A message that fails any of this, or whose handling raises, is dead-lettered (DEADLETTER,
with its subject, sequence and error) and the tracker goes on with the next one. The cores validate before they
change anything, so a failing message leaves no trace but its dead letter.

Restart safety: the checkpoint holds the core's state together with the stream sequence it reflects, saved only
after every event published up to that point (dead letters included) is acknowledged. A restarted tracker (after a
crash or `kill -9`) restores it and resumes at the next sequence; re-processing the messages after the checkpoint
re-publishes the same events under the same natural keys (dropped by JetStream) and rewrites the same KV state, so no
share is lost or counted twice. Two instances of one tracker likewise produce the same events and state: running
both is redundancy, not double counting. To split the work, give each instance a `PARTITION` i/n: it keeps only its
symbols.
A checkpoint that cannot be read (corrupt, or written by an older version of the state) never stops a start: the
tracker says so and rebuilds its state from the stream's first message, which gives the state an undisturbed run has.
A checkpoint is saved only if it reads back: a state that would not (a non-finite number) is never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from abc import abstractmethod
from collections.abc import Callable
from datetime import date
from operator import attrgetter
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from shared import bus
from shared.config import ConfigError, Settings
from shared.deadletter import inbound, subject_instrument
from shared.messages.domain import BasisPoint, IndexUpdate, Message
from shared.runtime import Actor, Context
from shared.subjects import MARKET, Bucket, StreamSpec, kv_subject
from shared.throttle import Throttle

State = TypeVar("State", bound=msgspec.Struct)

LAG_MESSAGES = Gauge("stocktracker_tracker_lag_messages", "Messages in the stream not yet processed by this tracker")
LAG_SECONDS = Gauge("stocktracker_tracker_lag_seconds",
                    "Age of the last processed message: how far behind the stream's head the tracker runs")
CHECKPOINTS = Counter("stocktracker_tracker_checkpoints_total", "Checkpoints saved")
CHECKPOINTS_UNREADABLE = Counter("stocktracker_tracker_checkpoints_unreadable_total",
                                 "Checkpoints that could not be read at start: the state was rebuilt from the stream")
CHECKPOINTS_REFUSED = Counter("stocktracker_tracker_checkpoints_refused_total",
                              "States not checkpointed because they would not read back")
KV_FAILURES = Counter("stocktracker_tracker_kv_failures_total", "KV values that could not be computed (not written)")


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
        """What a partition's checkpoint key adds to its tracker's: a token of its own (`classifier.0-of-2`), so
        one NATS permission names every partition of a tracker (`$KV.checkpoints.classifier.>`)."""
        return "" if self.count == 1 else f".{self.index}-of-{self.count}"


class Checkpoint(msgspec.Struct, Generic[State]):
    sequence: int  # the last stream sequence `state` reflects
    state: State
    version: int = 0  # the tracker's `state_version` when written: another version is rebuilt, never misread
    feed_date: date | None = None  # the latest trading date handled: later ones must be plausible from it


class KvWriter:
    """Latest value per (bucket, key), written at most once per `interval_s`; `flush` writes whatever is pending.
    Writes go out through the service's publisher (a KV put is a JetStream publish to $KV.<bucket>.<key>), so they
    are pipelined with its events and survive a NATS restart the same way, not awaited one request at a time."""

    def __init__(self, publisher: bus.Publisher, interval_s: float, log: Any) -> None:
        self._publisher = publisher
        self._interval_s = interval_s
        self._log = log
        self._failures = Throttle()
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
                try:
                    encoded = value()
                except Exception as err:  # a bug: the key keeps its last value, the writer goes on
                    KV_FAILURES.inc()
                    if self._failures.due(str(bucket)):
                        self._log.error("kv value not computed", bucket=str(bucket), key=key, error=repr(err))
                    continue
                await self._publisher.publish(kv_subject(bucket, key), encoded)
                self.writes += 1

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


class _Route(NamedTuple):
    """What the shell knows of one subject, worked out the first time it is seen."""

    owned: bool  # the subject's instrument is this instance's partition's
    token: str  # the instrument the subject names ("" when its last token is not an instrument code)
    decode: Callable[[bytes], Any]
    instrument: Callable[[Any], str]  # the payload's instrument


MAX_REMEMBERED_SUBJECTS = 100_000
_INSTRUMENT_FIELDS = {IndexUpdate: "index_id", BasisPoint: "futures_symbol"}  # the others': `symbol`


class Tracker(Actor, Generic[State]):
    """A tracker: subclasses give their inputs (subject filters and their message types), the state type and the
    handling of one decoded, checked message."""

    stream: ClassVar[StreamSpec] = MARKET
    inputs: ClassVar[tuple[tuple[str, type[Message]], ...]]  # (subject filter, the message type on it)
    subjects: ClassVar[tuple[str, ...]]  # the inputs' subject filters
    state_type: ClassVar[type]
    state_version: ClassVar[int] = 1  # raise it when the state's shape changes: older checkpoints are rebuilt
    sparse: ClassVar[bool] = False  # the inputs are a small share of the stream: the server filters them exactly

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "inputs" in cls.__dict__:
            cls.subjects = tuple(pattern for pattern, _ in cls.inputs)

    def __init__(self) -> None:
        self.sequence = 0
        self.last_stored_ns = 0
        self.processed = 0
        self.restored_from = 0
        self.rebuilt = False  # the checkpoint could not be read: the state was rebuilt from the stream
        self.feed_date: date | None = None
        self.partition = Partition(0, 1)
        self.ctx: Context | None = None
        self.kv: KvWriter | None = None
        self._routes: dict[str, _Route] = {}
        self._halted = False
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
    async def handle(self, subject: str, message: Any) -> None:
        """One decoded, checked message: feed the core, publish its events, `self.kv.put` what changed. Raising
        dead-letters the message; the core must not have changed by then."""

    # --- the shell --------------------------------------------------------------------------------------------------

    async def start(self, ctx: Context) -> None:
        self.ctx = ctx
        self.partition = Partition.parse(ctx.settings.partition)
        self.kv = KvWriter(ctx.publisher, self.kv_interval_s(ctx.settings), ctx.log)
        self._checkpoints = await bus.electing(lambda: ctx.js.key_value(str(Bucket.CHECKPOINTS)))
        checkpoint = await self._load_checkpoint()
        self.restore(checkpoint.state if checkpoint else None)
        self.sequence = self.restored_from = checkpoint.sequence if checkpoint else 0
        self.feed_date = checkpoint.feed_date if checkpoint else None
        self._checkpointed = self.sequence
        LAG_MESSAGES.set_function(lambda: self.pending)
        LAG_SECONDS.set_function(lambda: max(0.0, time.time() - self.last_stored_ns / 1e9) if self.pending else 0.0)
        self.kv.start()
        self._reader = await bus.consume_from(ctx.js, self.stream, self.subjects, ctx.instrumented(self._on_message),
                                              start_sequence=self.sequence + 1, sparse=self.sparse)
        self._checkpointer = asyncio.create_task(self._checkpoint_every(ctx.settings.checkpoint_interval_s))
        ctx.log.info("tracking", subjects=list(self.subjects), resumed_after=self.sequence, rebuilding=self.rebuilt,
                     partition=f"{self.partition.index}/{self.partition.count}")

    def kv_interval_s(self, settings: Settings) -> float:
        return 0.1

    async def _on_message(self, subject: str, payload: bytes, position: bus.Delivery) -> None:
        if self._halted:
            return  # the service is stopping on a failure: nothing after it may be taken (or checkpointed)
        route = self._routes.get(subject) or self._route(subject)
        if route.owned:
            try:
                message = inbound(subject, route.token, payload, route.decode, route.instrument, self.feed_date)
                await self.handle(subject, message)
                if self.feed_date is None or message.trading_date > self.feed_date:
                    self.feed_date = message.trading_date
            except Exception as err:
                assert self.ctx is not None
                try:
                    await self.ctx.dead_letters.put(stream=self.stream.name, subject=subject,
                                                    sequence=position.stream_sequence, payload=payload, error=err)
                except BaseException:
                    self._halted = True
                    raise
        self.sequence = position.stream_sequence
        self.last_stored_ns = position.timestamp_ns
        self.processed += 1

    def _route(self, subject: str) -> _Route:
        if len(self._routes) >= MAX_REMEMBERED_SUBJECTS:
            self._routes.clear()
        kind = next(kind for pattern, kind in self.inputs if bus.subject_matcher([pattern])(subject.encode()))
        route = self._routes[subject] = _Route(
            owned=self.partition.owns(subject.rpartition(".")[2]), token=subject_instrument(subject),
            decode=msgspec.json.Decoder(kind).decode,
            instrument=attrgetter(_INSTRUMENT_FIELDS.get(kind, "symbol")))
        return route

    @property
    def pending(self) -> int:
        """Messages not yet processed: in the stream after the last one read, or read and waiting."""
        return self._reader.backlog if self._reader is not None else 0

    async def _load_checkpoint(self) -> Checkpoint[State] | None:
        assert self._checkpoints is not None
        assert self.ctx is not None
        checkpoints = self._checkpoints
        try:
            entry = await bus.electing(lambda: checkpoints.get(self.checkpoint_key))
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            checkpoint = msgspec.json.decode(zlib.decompress(entry.value or b""),
                                             type=Checkpoint[self.state_type])  # type: ignore[name-defined]
            if checkpoint.version != self.state_version:
                raise ValueError(f"state version {checkpoint.version}, this tracker's is {self.state_version}")
        except (zlib.error, msgspec.DecodeError, msgspec.ValidationError, ValueError) as err:
            CHECKPOINTS_UNREADABLE.inc()
            self.rebuilt = True
            self.ctx.log.error("checkpoint unreadable: rebuilding the state from the stream",
                               key=self.checkpoint_key, error=str(err) or type(err).__name__)
            return None
        return checkpoint

    async def save_checkpoint(self) -> None:
        """State and sequence taken together (no await in between), saved once the events up to there are acked."""
        assert self.ctx is not None
        assert self._checkpoints is not None
        if self.sequence == self._checkpointed:
            return
        sequence = self.sequence
        encoded = msgspec.json.encode(Checkpoint(sequence=sequence, state=self.snapshot(), version=self.state_version,
                                                 feed_date=self.feed_date))
        try:
            msgspec.json.decode(encoded, type=Checkpoint[self.state_type])  # type: ignore[name-defined]
        except msgspec.ValidationError as err:  # a bug let a non-finite number in (written as null): keep the last
            CHECKPOINTS_REFUSED.inc()
            self.ctx.log.error("state not checkpointed: it would not read back", error=str(err))
            return
        blob = zlib.compress(encoded)
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
                "restored_from": self.restored_from, "rebuilt": self.rebuilt, "checkpointed": self._checkpointed,
                "kv_writes": self.kv.writes if self.kv else 0,
                "dead_letters": self.ctx.dead_letters.count if self.ctx else 0}
