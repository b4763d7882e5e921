"""NATS with production settings: connecting, the JetStream topology, ordered reliable publishing, consuming a
stream from a position, and watching a KV bucket.

nats-py's defaults suit a script, not a service: it gives up reconnecting after about two minutes and notices a dead
link only after minutes. Here a service reconnects forever, pings every 10 s, and every connection event is logged
and counted (../shared/notes/FIELD-NOTES.md §3.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from shared import metrics
from shared.config import Settings
from shared.subjects import BUCKET_DESCRIPTIONS, STREAMS, Bucket, StreamSpec

# 2.10 brought consumers with several filter subjects: a tracker reads md.trade.* and md.quote.* as one ordered
# sequence, which is how the classifier sees each trade against the book that preceded it.
MIN_NATS_VERSION = (2, 10, 0)

MSG_ID = "Nats-Msg-Id"
LATENCY_SAMPLE_EVERY = 16  # publish latency is observed for one message in this many: the histogram is not free

log = structlog.get_logger("bus")


class BusError(RuntimeError):
    """NATS cannot be used as the system needs it; the message is one line saying why."""


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
        raise BusError(f"nats-server {version} is too old: stock-tracker needs nats-server >= {need} with JetStream")


class _Client(Client):
    """nats-py's client with a leaner header parser. Every message our streams store carries its Nats-Msg-Id, so
    every message a tracker or the recorder reads has headers to parse; nats-py's parser checks each header name
    character by character, a sixth of a consumer's time. Same result: `Name: value` lines, names without
    whitespace, values stripped."""

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


async def connect(settings: Settings, name: str) -> Client:
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
            raise BusError(f"nats-server at {nc.connected_url.geturl()} runs without JetStream: start it with -js")
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
    headers: dict[str, str] | None
    sent_at: float


class Publisher:
    """JetStream publishing that keeps order and loses nothing across NATS restarts.

    Each message goes out on core NATS with a reply inbox; JetStream's acknowledgement removes it from the unacked
    list. While the connection is down nothing new is sent (so the client's reconnect buffer cannot overtake older
    messages); after a reconnect, or when the oldest acknowledgement is overdue, every unacked message is sent again,
    in order, with its original Nats-Msg-Id, so those that did arrive are dropped by JetStream as duplicates.
    At most `max_pending` messages are unacked: beyond that `publish` waits, pushing back on the source.
    """

    def __init__(self, nc: Client, *, max_pending: int = 4096, ack_timeout: float = 5.0) -> None:
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
        self._sub = await self._nc.subscribe(self._inbox_prefix + "*", cb=self._on_ack)
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
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        return done

    @property
    def pending(self) -> int:
        return len(self._unacked)

    async def publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> None:
        await self._room.acquire()
        while not (self._connected.is_set() and self._nc.is_connected):
            self._connected.clear()
            await self._connected.wait()
        headers = {MSG_ID: msg_id} if msg_id else None
        ident = next(self._ids)
        self._unacked[ident] = _Unacked(subject, payload, headers, time.monotonic())
        self._drained.clear()
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError, OSError):
            # On failure the message stays unacked and goes out again after the reconnect.
            await self._nc.publish(subject, payload, reply=f"{self._inbox_prefix}{ident}", headers=headers)
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

    async def _on_ack(self, msg: Msg) -> None:
        ident = int(msg.subject[len(self._inbox_prefix) :])
        if msg.headers and msg.headers.get("Status") == "503":
            return  # no JetStream responder right now: the watchdog sends it again
        try:
            ack = msgspec.json.decode(msg.data)
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
                    await self._nc.publish(
                        entry.subject, entry.payload, reply=f"{self._inbox_prefix}{ident}", headers=entry.headers
                    )
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

Handler = Callable[[Msg], Awaitable[None]]


class Delivery(NamedTuple):
    stream_sequence: int
    timestamp_ns: int  # when the stream stored the message
    pending: int  # messages after this one still to deliver to the consumer


def delivery(msg: Msg) -> Delivery:
    """A JetStream message's position, from its reply subject: nats-py's `msg.metadata` builds several objects and
    a datetime per message, a cost a tracker reading tens of thousands of messages a second does not need.
    $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (9 tokens), or with the domain and account
    hash after ACK and a random token at the end (12)."""
    tokens = msg.reply.split(".")
    offset = 0 if len(tokens) == 9 else 2
    return Delivery(int(tokens[5 + offset]), int(tokens[7 + offset]), int(tokens[8 + offset]))


def stream_sequence(msg: Msg) -> int:
    return delivery(msg).stream_sequence


async def consume_from(
    js: JetStreamContext,
    stream: StreamSpec,
    subjects: Iterable[str],
    handler: Handler,
    *,
    start_sequence: int = 1,
    start_time: datetime | None = None,
) -> Any:
    """Deliver `stream`'s messages on `subjects`, in stream order, from `start_sequence` (or from the first message
    stored at or after `start_time`) on, to `handler`, one at a time. An ordered consumer: it survives NATS restarts
    by re-creating itself at the next sequence it expects."""
    filters = list(subjects)
    if start_time is not None:
        start_sequence = await first_sequence_since(js, stream, filters, start_time)
    config = ConsumerConfig(
        filter_subjects=filters if len(filters) > 1 else None,
        filter_subject=filters[0] if len(filters) == 1 else None,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, start_sequence),
    )
    return await js.subscribe(
        filters[0],
        stream=stream.name,
        cb=handler,
        ordered_consumer=True,
        config=config,
        idle_heartbeat=2.0,
    )


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
        return delivery(await probe.next_msg(timeout=1.0)).stream_sequence
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
                    await _maybe_await(self.on_change(entry.key, None if deleted else entry.value))
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("kv watch lost; re-creating", bucket=str(self.bucket), error=str(err))
            await asyncio.sleep(1.0)


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result
