"""The ingest service: a source's frames through the normalizer into JetStream, reference data into KV."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import Counter, Gauge

from services.ingest.normalize import Normalized, Normalizer, Refused, oversized
from services.ingest.sources import FrameRecorder, Pacer, ReplaySource, SimSource, Source
from shared import metrics
from shared.config import ConfigError, Settings
from shared.market import exchange_now
from shared.messages.ssi import MAX_FRAME_BYTES, Reason, rejection
from shared.reference import configured_basket
from shared.runtime import Actor, Context
from shared.subjects import VN30_BASKET_KEY, Bucket, basket_key, kv_subject, security_key
from shared.throttle import Throttle

FRAMES = Counter("stocktracker_ingest_frames_total", "Frames read, by canonical DataType (rejected: `rejected`)",
                 ["data_type"])
TRADES = Counter("stocktracker_ingest_trades_total",
                 "Trades read, by verdict against the symbol's latest TotalVol: new, duplicate, out_of_order",
                 ["verdict"])
BOOKS_UNCHANGED = Counter("stocktracker_ingest_books_unchanged_total",
                          "Quotes not published: the symbol's last book again (an X frame repeating it with a match)")
LAST_FRAME_AGE = Gauge("stocktracker_ingest_last_frame_age_seconds",
                       "Seconds since the last frame was read, by DataType", ["data_type"])


@functools.cache
def _child(metric: Counter, label: str) -> Any:
    """A labelled metric, looked up once: prometheus_client's labels() costs more than a whole frame's decoding."""
    return metric.labels(label)


def check(settings: Settings) -> None:
    """Settings that only make sense together, checked before the service starts."""
    if settings.ingest_source == "replay" and not settings.replay_file:
        raise ConfigError("invalid REPLAY_FILE='': INGEST_SOURCE=replay needs the recorded file to replay")
    if settings.ingest_source == "replay" and not Path(settings.replay_file).is_file():
        raise ConfigError(f"invalid REPLAY_FILE={settings.replay_file!r}: no such file")
    if settings.ingest_source == "ssi" and not (settings.ssi_consumer_id and settings.ssi_consumer_secret):
        raise ConfigError("invalid SSI_CONSUMER_ID/SSI_CONSUMER_SECRET: INGEST_SOURCE=ssi needs both")


def make_source(settings: Settings) -> Source:
    today = exchange_now().date()
    if settings.ingest_source == "replay":
        return ReplaySource(Path(settings.replay_file), configured_basket(settings.vn30_symbols, today))
    if settings.ingest_source == "ssi":
        from services.ingest.ssi_live import SsiSource

        return SsiSource(settings)
    first_day = date.fromisoformat(settings.sim_date) if settings.sim_date else today
    return SimSource(seed=settings.sim_seed, first_day=first_day, intensity=settings.sim_intensity,
                     basket=configured_basket(settings.vn30_symbols, first_day), universe=settings.sim_universe,
                     combined=settings.sim_channel == "x")


def make_pacer(settings: Settings) -> Pacer:
    if settings.ingest_source == "replay":
        return Pacer(settings.replay_speed, rate=settings.replay_rate)
    if settings.ingest_source == "sim":
        return Pacer(settings.sim_speed, follow_wall_clock=settings.sim_speed == 1)
    return Pacer(0)  # live frames go out as they come


class Ingest(Actor):
    name = "ingest"
    description = "Reads the SSI feed (live, simulated or replayed), publishes normalized market data"
    metrics_port = 9101

    def __init__(self, source: Source | None = None) -> None:
        """`source` overrides the one INGEST_SOURCE names (tests drive the live adapter with their own clock)."""
        self.normalizer = Normalizer()  # the feed's own trading date until start() knows the source is live
        self.frames_read = 0
        self.frames_published = 0
        self.frames_rejected = 0
        self.messages_published = 0
        self.books_unchanged = 0
        self.rejections: dict[str, int] = {}
        self._rejection_log = Throttle()
        self._payload_limit = 0  # the bus's max_payload when a message could exceed it, else 0: no check needed
        self._last_frame_at: dict[str, float] = {}
        self._source = source
        self._recorder: FrameRecorder | None = None
        self._pump: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._reference_date: date | None = None  # the trading date the stored reference data was fetched on
        self._ctx: Context | None = None

    check = staticmethod(check)

    async def start(self, ctx: Context) -> None:
        self._ctx = ctx
        # A message is never much larger than the frame it comes from (MAX_FRAME_BYTES at most): only a server that
        # takes less than a few times that (its default is 1 MiB) needs every frame's messages measured.
        if ctx.publisher.max_payload < 4 * MAX_FRAME_BYTES:
            self._payload_limit = ctx.publisher.max_payload
        self._source = self._source or make_source(ctx.settings)
        if self._source.name == "ssi":
            self.normalizer.today = lambda: exchange_now().date()  # the live feed's date is the exchange's own
        reference = await self._source.reference()
        await self._store_reference(ctx, reference)
        self.normalizer.futures |= set(ctx.settings.futures_codes)
        if ctx.settings.record_file:
            self._recorder = FrameRecorder(Path(ctx.settings.record_file))
        self._pump = asyncio.create_task(self._run(self._source, make_pacer(ctx.settings)), name="ingest-pump")
        ctx.log.info("reading", source=self._source.name, basket=reference.basket.source,
                     recording=ctx.settings.record_file or None)

    async def _store_reference(self, ctx: Context, reference: Any) -> None:
        """Through the publisher (a KV put is a publish to $KV.<bucket>.<key>), which rides out a bucket whose
        leader is still being elected, as on a cluster just formed."""
        await ctx.publisher.publish(kv_subject(Bucket.REFERENCE, VN30_BASKET_KEY),
                                    msgspec.json.encode(reference.basket))
        for basket in reference.baskets:
            await ctx.publisher.publish(kv_subject(Bucket.REFERENCE, basket_key(basket.index_id)),
                                        msgspec.json.encode(basket))
        for security in reference.securities:
            await ctx.publisher.publish(kv_subject(Bucket.REFERENCE, security_key(security.symbol)),
                                        msgspec.json.encode(security))
        self.normalizer.futures |= {security.symbol for security in reference.securities if security.sec_type == "FU"}

    async def _refresh_reference(self, source: Source) -> None:
        """A new trading date: the source's reference data again (a basket rebalanced, a listing, the simulator's
        next day), beside the feed, which does not wait for it."""
        assert self._ctx is not None
        try:
            await self._store_reference(self._ctx, await source.reference())
        except Exception as err:  # the day's data still flows; yesterday's reference stays
            self._ctx.log.warning("reference data not refreshed", error=str(err) or type(err).__name__)

    async def _run(self, source: Source, pacer: Pacer) -> None:
        assert self._ctx is not None
        try:
            async for frame in source.frames():
                if self._recorder is not None:
                    self._recorder.write(frame)
                await self.ingest(frame, pacer)
                if self._reference_date is None:  # what start() stored is the first date's
                    self._reference_date = self.normalizer.feed_date
                elif self.normalizer.feed_date != self._reference_date and self._refresh is None:
                    self._reference_date = self.normalizer.feed_date
                    self._refresh = asyncio.create_task(self._refresh_reference(source), name="ingest-reference")
                    self._refresh.add_done_callback(self._refreshed)
            self._ctx.log.info("source finished", **source.status())
        except Exception as err:
            self._ctx.log.exception("source failed")
            self._ctx.fail(f"source {source.name} failed: {err}")

    async def ingest(self, frame: Any, pacer: Pacer) -> None:
        """One frame: normalize, then publish its messages (after the pacer releases it) or its rejection."""
        assert self._ctx is not None
        self.frames_read += 1
        result = self.normalizer.normalize(frame)
        if self._payload_limit and isinstance(result, Normalized):
            too_large = oversized(result.messages, self._payload_limit)
            if too_large is not None:  # refused whole, before any of its messages goes out
                result = self.normalizer.refuse(rejection(frame, Reason.TOO_LARGE, too_large))
        if isinstance(result, Refused):
            self._count_rejection(result)
            await self._ctx.publisher.publish(result.message.subject, result.message.payload, result.message.msg_id)
            return
        self._count_accepted(result)
        await pacer.wait(result.exchange_time)
        for message in result.messages:
            await self._ctx.publisher.publish(message.subject, message.payload, message.msg_id)
        self.frames_published += 1
        self.messages_published += len(result.messages)

    def _count_accepted(self, result: Normalized) -> None:
        _child(FRAMES, result.data_type).inc()
        if result.trade_verdict is not None:
            _child(TRADES, result.trade_verdict).inc()
        if result.book_unchanged:
            self.books_unchanged += 1
            BOOKS_UNCHANGED.inc()
        if result.data_type not in self._last_frame_at:
            LAST_FRAME_AGE.labels(result.data_type).set_function(
                lambda data_type=result.data_type: time.monotonic() - self._last_frame_at[data_type]
            )
        self._last_frame_at[result.data_type] = time.monotonic()

    def _count_rejection(self, refused: Refused) -> None:
        assert self._ctx is not None
        self.frames_rejected += 1
        FRAMES.labels("rejected").inc()
        metrics.MESSAGES_REJECTED.labels(refused.reason).inc()
        self.rejections[refused.reason] = self.rejections.get(refused.reason, 0) + 1
        if self._rejection_log.due(refused.reason):
            self._ctx.log.warning("frame rejected", reason=refused.reason, detail=refused.detail,
                                  count=self.rejections[refused.reason])

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refresh = None

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._source is not None:
            await self._source.close()
        if self._recorder is not None:
            self._recorder.close()

    def status(self) -> dict[str, Any]:
        return {
            "source": self._source.status() if self._source else None,
            "frames_read": self.frames_read,
            "frames_published": self.frames_published,
            "frames_rejected": self.frames_rejected,
            "messages_published": self.messages_published,
            "books_unchanged": self.books_unchanged,
            "rejections": self.rejections,
        }
