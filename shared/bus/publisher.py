"""Publishing to JetStream in order, losing nothing across NATS restarts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import structlog
from prometheus_client import Counter

from shared import metrics
from shared.bus.protocol import _chain, _Client
from shared.bus.reader import MAX_REMEMBERED_SUBJECTS
from shared.retry import LEADER_ELECTION
from shared.subjects import stream_of
from shared.throttle import Throttle

log = structlog.get_logger("bus")
_NO_RESPONDERS = b"NATS/1.0 503"
# A copy sent again while a clustered stream still proposes the first one: neither stored nor refused yet.
_IN_PROCESS = "duplicate message id is in process"
PUBLISH_REORDERED = Counter(
    "stocktracker_publish_reordered_total",
    "Messages a stream stored after a newer one (a leader moved while both were in flight: order not kept)")
PUBLISH_HELD_BACK = Counter(
    "stocktracker_publish_held_back_total",
    "Times publishing was held back until refused or unacknowledged messages were stored (a stream's leader moving)")
PUBLISH_SUPERSEDED = Counter(
    "stocktracker_publish_superseded_total",
    "KV values not sent again after a refusal because a newer value of the same key was stored meanwhile")
_STORED: dict[str, Any] = {}  # an acknowledgement without an error or a duplicate flag
LATENCY_SAMPLE_EVERY = 16  # publish latency is observed for one message in this many: the histogram is not free


@dataclass(slots=True)
class _Unacked:
    subject: str
    payload: bytes
    msg_id: str | None
    sent_at: float
    refused: bool = False  # JetStream answered 503: no leader took it (not stored)
    copy_in_process: bool = False  # answered "in process": a copy of it was being stored when it arrived


class Publisher:
    """JetStream publishing that keeps order and loses nothing across NATS restarts.

    Each message goes out on core NATS with a reply inbox; JetStream's acknowledgement removes it from the unacked
    list. While the connection is down nothing new is sent (so the client's reconnect buffer cannot overtake older
    messages); after a reconnect every unacked message is sent again, in order, with its original Nats-Msg-Id, so
    those that did arrive are dropped by JetStream as duplicates. At most `max_pending` messages are unacked: beyond
    that `publish` waits, pushing back on the source.

    A stream whose leader moves (a node lost, a rolling restart) answers 503 for a while, or not at all. A message
    refused so, sent again later, would be stored after newer ones that found the new leader first: a consumer would
    meet an older trade after a newer one. So the first 503 (or an overdue acknowledgement) holds back everything new:
    the messages in flight are let answer, then the unacknowledged ones go out again one at a time, oldest first, each
    only once the one before it is stored (waiting `LEADER_ELECTION` between refusals), and only then does publishing
    go on. A message already in flight may still be stored by a new leader ahead of an older one that was refused or
    never answered (lost with the old leader, sent again once overdue): the older one, stored after it, is counted
    (`stocktracker_publish_reordered_total`) and logged; the order cannot be mended once stored, but it is never
    silent. A KV put is the exception: only the order of one key's values matters there, and an older value of a key
    whose newer value is already stored is not sent again (`stocktracker_publish_superseded_total`): stored after it,
    it would leave the bucket showing the older value for good. JetStream's own 503 answer (a stream leader that
    cannot store for now) is a refusal too, not a loss.

    On a cluster, a message sent while a copy of it (the same Nats-Msg-Id) is still being stored is answered "in
    process": it is sent again alone, a moment later, and is then the duplicate it is; nothing is held back for it.
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
        self._clear = asyncio.Event()  # set: new messages may go out; clear while held back after a refusal
        self._clear.set()
        self._recovery: asyncio.Task[None] | None = None
        self._answers: dict[int, asyncio.Future[bool]] = {}  # resends awaiting their answer: stored or refused
        # The newest message stored where order matters: per stream, and per key of a bucket (its subject).
        self._newest_stored: dict[str, int] = {}
        self._order_of: dict[str, str] = {}  # subject -> its key in _newest_stored
        self._reorders_logged = Throttle()
        self._holdbacks_logged = Throttle()
        self._copies: set[asyncio.Task[None]] = set()  # copies answered "in process", to be sent again
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
        for retry in list(self._copies):
            retry.cancel()
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
        if not self._clear.is_set():
            await self._clear.wait()
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
        ident = int(subject[len(self._inbox_prefix) :])
        if headers is not None and headers.startswith(_NO_RESPONDERS):
            self._refused(ident, "no responders (503): the stream has no leader here")
            return
        if b'"error"' in payload or b'"duplicate"' in payload:
            try:
                ack = msgspec.json.decode(payload)
            except msgspec.DecodeError:
                ack = {}
            if not isinstance(ack, dict):
                ack = {}
        else:  # {"stream":..,"seq":..}: stored, the one answer nearly every message gets, read without decoding
            ack = _STORED
        error = ack.get("error")
        if error and _IN_PROCESS in str(error.get("description")):
            self._copy_in_process(ident)
            return
        if error and error.get("code") == 503:  # the leader cannot store for now (no quorum, no resources)
            self._refused(ident, f"jetstream unavailable (503): {error.get('description')}")
            return
        stored = not error and not ack.get("duplicate")
        answer = self._answers.pop(ident, None)
        if answer is not None and not answer.done():
            answer.set_result(True)
        entry = self._unacked.pop(ident, None)
        if entry is None:
            return  # the acknowledgement of a copy sent again: already counted
        if stored:
            self._note_stored(ident, entry)
        if error:
            code = str(error.get("err_code") or error.get("code"))
            metrics.PUBLISH_ERRORS.labels(code).inc()
            log.error("jetstream refused a message", subject=entry.subject, error=error.get("description"))
        elif ack.get("duplicate"):
            metrics.PUBLISH_DUPLICATES.inc()
        if ident % LATENCY_SAMPLE_EVERY == 0:
            metrics.PUBLISH_SECONDS.observe(time.monotonic() - entry.sent_at)
        self._released()

    def _copy_in_process(self, ident: int) -> None:
        """A copy of this message (the same Nats-Msg-Id: a frame the feed sent twice) was still being stored when it
        arrived. It takes the copy's place in the stream, so nothing is held back: it alone is sent again, a little
        later, until it is answered as a duplicate (or, had the copy been lost with its leader, stored)."""
        entry = self._unacked.get(ident)
        if entry is None:
            return
        entry.copy_in_process = True
        answer = self._answers.pop(ident, None)
        if answer is not None and not answer.done():
            answer.set_result(False)  # a recovery resending it tries again itself
            return
        retry = asyncio.get_running_loop().create_task(self._send_copy_again(ident), name="publisher-copy")
        self._copies.add(retry)
        retry.add_done_callback(self._copies.discard)

    async def _send_copy_again(self, ident: int) -> None:
        await asyncio.sleep(LEADER_ELECTION.wait(1))
        entry = self._unacked.get(ident)
        if entry is None or not self._nc.is_connected:
            return  # answered meanwhile, or the reconnect sends it again with everything unacknowledged
        entry.sent_at = time.monotonic()
        metrics.PUBLISH_RESENDS.inc()
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError, OSError):
            await self._nc.publish_with_id(entry.subject, entry.payload, f"{self._inbox_prefix}{ident}", entry.msg_id)

    def _note_stored(self, ident: int, entry: _Unacked) -> None:
        """Keep the newest message stored per stream (and per bucket key); one older than that, stored now, is out of
        order (acknowledgements of one stream otherwise arrive in the order its messages were sent)."""
        key = self._order_of.get(entry.subject)
        if key is None:
            if len(self._order_of) >= MAX_REMEMBERED_SUBJECTS:
                self._order_of.clear()
            key = entry.subject if entry.subject.startswith("$KV.") else stream_of(entry.subject)
            self._order_of[entry.subject] = key
        if ident > self._newest_stored.get(key, -1):
            self._newest_stored[key] = ident
            return
        stream = stream_of(entry.subject)
        PUBLISH_REORDERED.inc()
        if self._reorders_logged.due(stream):
            why = ("its copy was lost with a moving leader" if entry.copy_in_process
                   else "a leader moved while both were in flight")
            log.warning("a message was stored after a newer one", stream=stream, subject=entry.subject, why=why)

    def _refused(self, ident: int, why: str) -> None:
        """No leader took the message: it stays unacked, and everything new is held back until it is stored."""
        entry = self._unacked.get(ident)
        if entry is None:
            return
        entry.refused = True
        if self._holdbacks_logged.due(why):
            log.warning("holding back new messages: a message was not stored", subject=entry.subject, why=why,
                        unacknowledged=len(self._unacked))
        answer = self._answers.pop(ident, None)
        if answer is not None and not answer.done():
            answer.set_result(False)
        self._hold_back()

    def _hold_back(self) -> None:
        if self._recovery is None or self._recovery.done():
            PUBLISH_HELD_BACK.inc()
            self._clear.clear()
            self._recovery = asyncio.get_running_loop().create_task(self._recover(), name="publisher-recovery")

    async def _recover(self) -> None:
        """Let what is in flight answer, then send the unacknowledged messages again one by one, oldest first, each
        once the one before is stored; then let new messages go."""
        try:
            async with self._resending:
                deadline = time.monotonic() + self._ack_timeout
                # Answers arrive from the protocol parser, unsignalled (a signal per answer would tax the hot path).
                while any(not entry.refused for entry in self._unacked.values()) and (  # noqa: ASYNC110
                        time.monotonic() < deadline):
                    await asyncio.sleep(0.01)
                for ident in list(self._unacked):
                    if not await self._resend_until_stored(ident):
                        break  # the connection is gone: the reconnect sends everything again, in order
        finally:
            self._clear.set()

    def _superseded(self, ident: int, entry: _Unacked) -> bool:
        """Whether the message is a KV value older than one of the same key already stored; if so it is dropped (sent
        again, it would be stored after the newer value and become the key's value)."""
        if not entry.subject.startswith("$KV.") or self._newest_stored.get(entry.subject, -1) < ident:
            return False
        del self._unacked[ident]
        answer = self._answers.pop(ident, None)
        if answer is not None and not answer.done():
            answer.set_result(True)
        PUBLISH_SUPERSEDED.inc()
        self._released()
        return True

    async def _resend_until_stored(self, ident: int) -> bool:
        """Send one message again until it is stored; False when the connection went away meanwhile."""
        failures = 0
        while ident in self._unacked:
            if not self._nc.is_connected:
                return False
            entry = self._unacked[ident]
            if self._superseded(ident, entry):
                return True
            entry.refused = False
            entry.sent_at = time.monotonic()
            answer = self._answers[ident] = asyncio.get_running_loop().create_future()
            metrics.PUBLISH_RESENDS.inc()
            with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError,
                                     OSError):
                await self._nc.publish_with_id(entry.subject, entry.payload, f"{self._inbox_prefix}{ident}",
                                               entry.msg_id)
            try:
                stored = await asyncio.wait_for(answer, self._ack_timeout)
            except TimeoutError:
                stored = False
            if not stored and ident in self._unacked:
                failures += 1
                await asyncio.sleep(LEADER_ELECTION.wait(failures))
        return True

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
                if self._holdbacks_logged.due("overdue"):  # no answer at all (a leader gone mid-request)
                    log.warning("holding back new messages: a message was not acknowledged in time",
                                subject=oldest.subject, ack_timeout_s=self._ack_timeout,
                                unacknowledged=len(self._unacked))
                self._hold_back()

    async def _resend_all(self) -> None:
        async with self._resending:
            for ident, entry in list(self._unacked.items()):
                if ident not in self._unacked or self._superseded(ident, entry):
                    continue
                entry.sent_at = time.monotonic()
                metrics.PUBLISH_RESENDS.inc()
                try:
                    await self._nc.publish_with_id(entry.subject, entry.payload, f"{self._inbox_prefix}{ident}",
                                                   entry.msg_id)
                except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError, OSError):
                    return
