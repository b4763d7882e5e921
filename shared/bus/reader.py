"""Reading a stream in order from a position: the ordered push consumer every tracker and the recorder read with."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus.protocol import _chain, _Client
from shared.retry import NATS_AWAY, retrying
from shared.subjects import StreamSpec

log = structlog.get_logger("bus")


class Delivery(NamedTuple):
    stream_sequence: int
    timestamp_ns: int  # when the stream stored the message
    pending: int  # messages after this one still to deliver to the consumer


StreamHandler = Callable[[str, bytes, Delivery], Awaitable[None]]  # subject, payload, position


def delivery(reply: bytes) -> tuple[int, Delivery]:
    """A JetStream message's consumer delivery sequence and position, from its reply subject (nats-py's
    `msg.metadata` builds several objects and a datetime per message, a cost a reader of tens of thousands of
    messages a second does not need): $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    (9 tokens), or with the domain and account hash after ACK and a random token at the end (12)."""
    tokens = reply.split(b".")
    offset = 0 if len(tokens) == 9 else 2
    return int(tokens[6 + offset]), Delivery(int(tokens[5 + offset]), int(tokens[7 + offset]),
                                             int(tokens[8 + offset]))


def covering_filter(subjects: Iterable[str]) -> str:
    """The narrowest single subject filter matching everything `subjects` match: md.trade.* and md.quote.* give
    md.*.*; md.futures.trade.* and md.index.VN30 give md.>."""
    covering: list[str] = []
    for column in itertools.zip_longest(*(subject.split(".") for subject in subjects)):
        tokens = set(column)
        if None in tokens:  # some subjects end here, others go on: only > spans both
            covering[-1:] = [">"]
            break
        if ">" in tokens:
            covering.append(">")
            break
        covering.append(tokens.pop() if len(tokens) == 1 else "*")
    return ".".join(covering)


def subject_matcher(subjects: Iterable[str]) -> Callable[[bytes], bool]:
    """Whether a concrete subject (as the protocol carries it, bytes) matches any of `subjects` (NATS wildcards
    * and >): one compiled expression, as it runs for every message a reader receives."""
    token = {"*": rb"[^.]+", ">": rb".+"}
    alternatives = (rb"\.".join(token.get(part) or re.escape(part.encode()) for part in subject.split("."))
                    for subject in subjects)
    return re.compile(rb"|".join(alternatives)).fullmatch  # type: ignore[return-value]


MAX_REMEMBERED_SUBJECTS = 100_000
HANDLED_PER_TURN = 200  # messages a reader handles before letting the rest of the service run
_STATUS_100 = b"NATS/1.0 100"  # JetStream's control messages: idle heartbeats and flow-control requests
_LAST_CONSUMER = b"Nats-Last-Consumer:"
_STALLED = b"Nats-Consumer-Stalled:"


class StreamReader:
    """A stream's messages on `subjects`, in stream order from a sequence on, handed to a handler one at a time:
    an ordered push consumer (ephemeral, in memory, no acks, flow control, idle heartbeats), as nats-py's, but
    built for a tracker's rate. Two measured reasons it is not nats-py's (bench/classifier.py, README):

    - nats-server delivers a consumer with several filter subjects several times slower than one with a single
      filter (md.trade.* with md.quote.*: ~70k msg/s on this machine; md.*.*, a third more messages: ~240k msg/s).
      The reader asks for the narrowest single filter covering its subjects and drops the rest by subject, before
      anything is decoded. A reader of a small share of what the covering filter matches (`sparse`: the futures and
      VN30 among every stock's messages, which only md.> covers) asks for its exact subjects instead: the server
      then skips the rest itself (measured on a simulated day's 691,000 MARKET messages, of which 109,000 are
      futures and VN30: 1.6 s of server CPU against 2.5 s for md.>, and a sixth of the messages to the reader).
    - nats-py builds a Msg, parses its headers and queues it for every message; the reader takes the raw subject,
      reply and payload from the protocol parser and hands over the subject, payload and position only.

    A gap in the consumer's delivery sequence, two missed heartbeats or a reconnect re-create the consumer at the
    sequence after the last message received, so nothing is skipped or delivered twice.
    """

    def __init__(self, js: JetStreamContext, stream: StreamSpec, subjects: Iterable[str], handler: StreamHandler,
                 *, start_sequence: int = 1, heartbeat_s: float = 2.0, sparse: bool = False) -> None:
        self._js = js
        self._nc: _Client = js._nc
        self._stream = stream.name
        wanted = list(subjects)
        self._filter = covering_filter(wanted)
        self._filters = wanted if sparse and len(wanted) > 1 else None  # the server filters exactly
        self._wanted = None if wanted == [self._filter] or self._filters else subject_matcher(wanted)
        self._names: dict[bytes, str] = {}
        self._handler = handler
        self._heartbeat_s = heartbeat_s
        self.last_sequence = max(1, start_sequence) - 1  # the last stream sequence received
        self._server_pending = 0
        self._expected = 1  # the consumer's next delivery sequence
        self._queue: collections.deque[tuple[str, bytes, Delivery] | str] = collections.deque()  # str: a reply
        self._queued = 0
        self._wake = asyncio.Event()
        self._handling = False
        self._active = True
        self._sub: Any = None
        self._consumer: str | None = None
        self._recreating: asyncio.Task[None] | None = None
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self.recreated = 0

    @property
    def backlog(self) -> int:
        """Messages on the covering filter not yet handled: still in the stream, received and queued, or in hand."""
        return self._server_pending + self._queued + self._handling

    async def start(self) -> None:
        await retrying(self._create_anew, NATS_AWAY, retry_on=(nats.errors.Error, TimeoutError, OSError),
                       deadline_s=30.0)
        self._nc._reconnected_cb = _chain(self._nc._reconnected_cb, self._on_reconnected)
        self._tasks = [asyncio.create_task(self._work(), name=f"read-{self._filter}"),
                       asyncio.create_task(self._watch(), name=f"watch-{self._filter}")]

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop reading; the message in hand is finished (for up to `timeout`), those queued are left unhandled."""
        if self._stopped:
            return
        self._stopped = True
        if self._sub is not None:
            self._nc.unroute_raw(self._sub)
        self._wake.set()
        worker, *others = self._tasks
        for task in [*others, *([self._recreating] if self._recreating else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(worker, timeout)
        self._tasks = []
        await self._drop_consumer()

    # --- the read loop's side: called by the protocol parser for every message to our inbox ------------------------

    def _receive(self, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None) -> None:
        self._active = True
        if headers is not None and not payload and headers.startswith(_STATUS_100):
            self._control(reply, headers)
            return
        try:
            delivered, position = delivery(reply)
        except (IndexError, ValueError):
            log.error("not a JetStream delivery: ignored", subject=subject, reply=reply)
            return
        if delivered != self._expected:
            self._recreate("delivery gap")
            return
        self._expected += 1
        self.last_sequence = position.stream_sequence
        self._server_pending = position.pending
        name = self._names.get(subject)
        if name is None:
            name = self._name(subject)
        if name:
            self._queue.append((name, payload, position))
            self._queued += 1
            self._wake.set()

    def _name(self, subject: bytes) -> str:
        """The subject as text when wanted, "" when not: worked out once per subject (there are only so many)."""
        if len(self._names) >= MAX_REMEMBERED_SUBJECTS:
            self._names.clear()
        name = subject.decode() if self._wanted is None or self._wanted(subject) else ""
        self._names[subject] = name
        return name

    def _control(self, reply: bytes, headers: bytes) -> None:
        if b"FlowControl" in headers:
            # Answered once everything delivered before it has been handled: that is the back-pressure.
            self._queue.append(reply.decode())
            self._wake.set()
            return
        for line in headers.split(b"\r\n"):
            if line.startswith(_LAST_CONSUMER) and int(line[len(_LAST_CONSUMER):]) != self._expected - 1:
                self._recreate("heartbeat reports a delivery gap")
            elif line.startswith(_STALLED):
                self._queue.append(line[len(_STALLED):].strip().decode())
                self._wake.set()

    # --- the handler's side ----------------------------------------------------------------------------------------

    async def _work(self) -> None:
        queue = self._queue
        while not self._stopped:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            for _ in range(min(len(queue), HANDLED_PER_TURN)):
                if self._stopped:
                    return
                item = queue.popleft()
                if isinstance(item, str):
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await self._nc.publish(item, b"")
                    continue
                self._queued -= 1
                self._handling = True
                try:
                    await self._handler(*item)
                except Exception:
                    log.exception("stream handler failed", subject=item[0], sequence=item[2].stream_sequence)
                finally:
                    self._handling = False
            await asyncio.sleep(0)  # a handler that never waits would otherwise starve acks, timers and checkpoints

    # --- the consumer's life ---------------------------------------------------------------------------------------

    async def _create(self) -> None:
        inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(inbox)
        self._nc.route_raw(self._sub, self._receive)
        self._expected = 1
        info = await self._js.add_consumer(self._stream, config=ConsumerConfig(
            deliver_subject=inbox,
            filter_subject=None if self._filters else self._filter,
            filter_subjects=self._filters,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.last_sequence + 1,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=self._heartbeat_s,
            mem_storage=True,
            num_replicas=1,
        ))
        self._consumer = info.name

    async def _create_anew(self) -> None:
        await self._drop_consumer()
        await self._create()

    async def _drop_consumer(self) -> None:
        if self._sub is not None:
            self._nc.unroute_raw(self._sub)
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._consumer is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(self._stream, self._consumer)
        self._consumer = None

    def _recreate(self, reason: str) -> None:
        if self._stopped or (self._recreating is not None and not self._recreating.done()):
            return  # the consumer being created already starts after the last message received
        if self._sub is not None:
            self._nc.unroute_raw(self._sub)  # nothing more from the old consumer
        self._recreating = asyncio.create_task(self._recreate_until_done(reason), name=f"recreate-{self._filter}")

    async def _recreate_until_done(self, reason: str) -> None:
        log.info("re-creating stream consumer", stream=self._stream, filter=self._filter, reason=reason,
                 from_sequence=self.last_sequence + 1)

        await retrying(self._create_anew, NATS_AWAY, retry_on=(nats.errors.Error, TimeoutError, OSError),
                       on_failure=lambda err, _, wait: log.warning("stream consumer not re-created; retrying",
                                                                   error=str(err) or type(err).__name__,
                                                                   retry_in_s=wait))
        self.recreated += 1
        self._active = True

    async def _on_reconnected(self) -> None:
        self._recreate("reconnected")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(2 * self._heartbeat_s)
            if not self._active:
                self._recreate("no heartbeat")
            self._active = False


async def consume_from(
    js: JetStreamContext,
    stream: StreamSpec,
    subjects: Iterable[str],
    handler: StreamHandler,
    *,
    start_sequence: int = 1,
    start_time: datetime | None = None,
    sparse: bool = False,
) -> StreamReader:
    """Deliver `stream`'s messages on `subjects`, in stream order, from `start_sequence` (or from the first message
    stored at or after `start_time`) on, to `handler`, one at a time, until the reader is stopped. `sparse`: the
    subjects are a small share of what their covering filter matches (see `StreamReader`)."""
    filters = list(subjects)
    if start_time is not None:
        start_sequence = await first_sequence_since(js, stream, filters, start_time)
    reader = StreamReader(js, stream, filters, handler, start_sequence=start_sequence, sparse=sparse)
    await reader.start()
    return reader


async def first_sequence_since(js: JetStreamContext, stream: StreamSpec, subjects: list[str],
                               start_time: datetime) -> int:
    """The sequence of the first message on `subjects` stored at or after `start_time` (the stream's next sequence
    when there is none). An ordered consumer must start from a sequence: nats-py re-creates one after a NATS restart
    by start sequence, keeping a start time the server then refuses."""
    config = ConsumerConfig(
        filter_subjects=subjects if len(subjects) > 1 else None,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=start_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        inactive_threshold=10.0,
    )
    probe = await js.subscribe(subjects[0], stream=stream.name, ordered_consumer=True, config=config)
    try:
        return delivery((await probe.next_msg(timeout=1.0)).reply.encode())[1].stream_sequence
    except nats.errors.TimeoutError:
        return (await js.stream_info(stream.name)).state.last_seq + 1
    finally:
        await probe.unsubscribe()
