"""The recorder: DERIVED into PostgreSQL, exactly once.

Each table family reads its subjects from DERIVED in stream order, from the position recorded in PostgreSQL
(`recorder_positions`). Messages are written in batches of up to RECORDER_BATCH, or whatever arrived within
RECORDER_FLUSH_MS, in one transaction that also moves the family's position to the batch's last stream sequence:
the rows and the position commit together, so after a crash or `kill -9` the recorder resumes exactly after what
was committed, and a message read twice is skipped by the natural-key inserts anyway. A failed write is retried
with backoff, never dropped: meanwhile intake pauses (a bounded buffer; JetStream's flow control holds the rest in
the stream), so while PostgreSQL is down the stream is the buffer and the recorder catches up afterwards.

This is the durable consumer the position in PostgreSQL makes it: unlike a JetStream durable consumer with acks
(a pull and an ack per message: about 18,000 messages/s on 2 cores), it reads at the ordered consumer's speed and
its position cannot run ahead of, or behind, the data it covers. Recorders started side by side each record
everything (the inserts skip what another wrote; the position only moves forward): redundancy, not shared work.

What is recorded: classified trades (ticks, plus 1-minute candles with buy / sell / neutral volume), foreign flows
with their cumulative figures, index points and basis points. Not recorded: quotes (tens of times the trades, and
no history endpoint needs the book) and SSI's per-match bars (the candles from classified ticks say more).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from prometheus_client import Counter, Gauge, Histogram

from services.recorder import schema
from services.recorder.writer import BASIS_POINTS, FOREIGN_FLOWS, INDEX_POINTS, Table, write_rows, write_ticks
from shared import bus
from shared.config import ConfigError, Settings
from shared.market import exchange_now
from shared.messages.domain import BasisPoint, ClassifiedTrade, ForeignFlow, IndexPoint
from shared.runtime import Actor, Context
from shared.subjects import BASIS_POINT, DERIVED, FOREIGN_FLOW, INDEX_POINT, TRADE_CLASSIFIED

ROWS = Counter("stocktracker_recorder_rows_total", "Rows inserted (duplicates skipped), by table", ["table"])
SKIPPED = Counter("stocktracker_recorder_duplicates_total", "Messages already stored (read twice), by table",
                  ["table"])
BATCH_SIZE = Histogram("stocktracker_recorder_batch_size", "Messages per written batch", ["table"],
                       buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000))
FLUSH_SECONDS = Histogram("stocktracker_recorder_flush_seconds", "Time to write and commit one batch", ["table"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RETRIES = Counter("stocktracker_recorder_retries_total", "Batch writes retried after a failure", ["table"])
LAG_MESSAGES = Gauge("stocktracker_recorder_lag_messages", "Messages in DERIVED not yet recorded", ["table"])
LAG_SECONDS = Gauge("stocktracker_recorder_lag_seconds", "Age of the oldest message not yet recorded", ["table"])
UNDECODABLE = Counter("stocktracker_recorder_undecodable_total", "Messages whose payload could not be decoded",
                      ["table"])

BACKOFF_S = (0.5, 1, 2, 5, 10, 20, 30)


@dataclass
class Family:
    """One table family: the subject it records, how to decode and write a batch of it, and where it stands."""

    table: str
    subject: str
    kind: type
    write: Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[int]]
    decoder: Any = None
    buffer: asyncio.Queue[tuple[int, int, int, Any]] | None = None  # (sequence, stored_ns, pending, message)
    reader: bus.StreamReader | None = None
    position: int = 0  # the last stream sequence committed
    pending: int = 0
    oldest_ns: int = 0
    recorded: int = 0
    retries: int = 0
    writing: bool = False

    def __post_init__(self) -> None:
        self.decoder = msgspec.json.Decoder(self.kind)


async def _ticks(conn: asyncpg.Connection, trades: Sequence[ClassifiedTrade]) -> int:
    return (await write_ticks(conn, trades))[0]


def _rows(table: Table) -> Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[int]]:
    async def write(conn: asyncpg.Connection, messages: Sequence[Any]) -> int:
        return await write_rows(conn, table, messages)

    return write


@dataclass
class Partitions:
    known: set[date] = field(default_factory=set)


class Recorder(Actor):
    name = "recorder"
    description = "Persists every tick, flow, index point and basis point to PostgreSQL"

    def __init__(self) -> None:
        self.families = [
            Family("ticks", TRADE_CLASSIFIED.wildcard, ClassifiedTrade, _ticks),
            Family("foreign_flows", FOREIGN_FLOW.wildcard, ForeignFlow, _rows(FOREIGN_FLOWS)),
            Family("index_points", INDEX_POINT.wildcard, IndexPoint, _rows(INDEX_POINTS)),
            Family("basis_points", BASIS_POINT.wildcard, BasisPoint, _rows(BASIS_POINTS)),
        ]
        self.pool: asyncpg.Pool | None = None
        self.stream_created: datetime | None = None
        self.partitions = Partitions()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._ctx: Context | None = None

    @staticmethod
    def check(settings: Settings) -> None:
        if not settings.database_url:
            raise ConfigError("invalid DATABASE_URL='': the recorder needs a PostgreSQL DSN")

    async def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self.pool = await self._connect(ctx)
        async with self.pool.acquire() as conn:
            applied = await schema.migrate(conn)
            today = exchange_now().date()
            await self._ensure_days(conn, {today + timedelta(days=offset) for offset in range(-1, 8)})
            self.stream_created = (await ctx.js.stream_info(DERIVED.name)).created
            positions = {row["family"]: row["sequence"] for row in await conn.fetch(
                "SELECT family, sequence FROM recorder_positions WHERE stream_created = $1", self.stream_created)}
        ctx.log.info("schema ready", applied=applied, positions=positions)
        for family in self.families:
            family.position = positions.get(family.table, 0)
            family.buffer = asyncio.Queue(2 * ctx.settings.recorder_batch)
            family.reader = await bus.consume_from(ctx.js, DERIVED, [family.subject], self._intake(family),
                                                         start_sequence=family.position + 1)
            self._tasks.append(asyncio.create_task(self._record(family), name=f"record-{family.table}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="recorder-housekeeping"))

    async def _connect(self, ctx: Context) -> asyncpg.Pool:
        deadline = time.monotonic() + ctx.settings.nats_connect_timeout_s
        while True:
            try:
                return await asyncpg.create_pool(ctx.settings.database_url, min_size=1,
                                                 max_size=len(self.families) + 1,
                                                 server_settings={"timezone": "Asia/Ho_Chi_Minh"})
            except (OSError, asyncpg.PostgresError) as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot reach PostgreSQL at DATABASE_URL: {err}") from None
                await asyncio.sleep(0.5)

    async def _ensure_days(self, conn: asyncpg.Connection, days: set[date]) -> None:
        missing = days - self.partitions.known
        if missing:
            await schema.ensure_partitions(conn, missing)
            self.partitions.known |= missing

    def _intake(self, family: Family) -> bus.StreamHandler:
        assert family.buffer is not None
        buffer = family.buffer

        async def take(subject: str, payload: bytes, position: bus.Delivery) -> None:
            sequence, stored_ns, pending = position
            if sequence <= family.position:
                return  # committed already: another recorder moved the position on
            try:
                message = family.decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                UNDECODABLE.labels(family.table).inc()
                message = None
            await buffer.put((sequence, stored_ns, pending, message))  # waits while the writer is behind

        return take

    async def _record(self, family: Family) -> None:
        """Batch the buffer: up to RECORDER_BATCH messages, or what arrived within RECORDER_FLUSH_MS."""
        assert self._ctx is not None
        assert family.buffer is not None
        settings = self._ctx.settings
        flush_s = settings.recorder_flush_ms / 1000
        while True:
            first = await family.buffer.get()
            batch = [first]
            deadline = time.monotonic() + flush_s
            while len(batch) < settings.recorder_batch:
                try:
                    batch.append(family.buffer.get_nowait())
                except asyncio.QueueEmpty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(family.buffer.get(), left))
                    except TimeoutError:
                        break
            family.writing = True
            try:
                await self._write_until_done(family, batch)
            finally:
                family.writing = False
            if self._stopping.is_set() and family.buffer.empty():
                return

    async def _write_until_done(self, family: Family, batch: list[tuple[int, int, int, Any]]) -> None:
        """Write the batch and move the position, in one transaction, retrying with backoff until it commits."""
        assert self._ctx is not None
        assert self.pool is not None
        messages = [message for _, _, _, message in batch if message is not None]
        last_sequence, last_stored_ns, last_pending, _ = batch[-1]
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                async with self.pool.acquire() as conn:
                    await self._ensure_days(conn, {message.trading_date for message in messages})
                    async with conn.transaction():
                        inserted = await family.write(conn, messages) if messages else 0
                        await conn.execute(
                            "INSERT INTO recorder_positions (family, sequence, stream_created) VALUES ($1, $2, $3) "
                            "ON CONFLICT (family) DO UPDATE SET sequence = CASE "
                            "WHEN recorder_positions.stream_created = excluded.stream_created "
                            "THEN greatest(recorder_positions.sequence, excluded.sequence) ELSE excluded.sequence END, "
                            "stream_created = excluded.stream_created, updated_at = now()",
                            family.table, last_sequence, self.stream_created)
                break
            except Exception as err:  # whatever the database threw: the batch is kept and written again
                attempt += 1
                family.retries += 1
                RETRIES.labels(family.table).inc()
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1]
                self._ctx.log.warning("write failed; retrying", table=family.table, error=str(err) or
                                      type(err).__name__, attempt=attempt, retry_in_s=delay)
                await asyncio.sleep(delay)
        FLUSH_SECONDS.labels(family.table).observe(time.perf_counter() - started)
        BATCH_SIZE.labels(family.table).observe(len(batch))
        ROWS.labels(family.table).inc(inserted)
        SKIPPED.labels(family.table).inc(len(messages) - inserted)
        family.recorded += inserted
        family.position = max(family.position, last_sequence)
        family.pending = last_pending + (family.buffer.qsize() if family.buffer else 0)
        family.oldest_ns = last_stored_ns

    async def _housekeeping(self) -> None:
        """Partitions for the days ahead, retention, and the lag gauges."""
        assert self._ctx is not None
        assert self.pool is not None
        settings = self._ctx.settings
        for family in self.families:
            LAG_MESSAGES.labels(family.table).set_function(lambda f=family: f.pending)
            LAG_SECONDS.labels(family.table).set_function(
                lambda f=family: max(0.0, time.time() - f.oldest_ns / 1e9) if f.pending else 0.0)
        while not self._stopping.is_set():
            try:
                async with self.pool.acquire() as conn:
                    today = exchange_now().date()
                    await self._ensure_days(conn, {today + timedelta(days=offset) for offset in range(0, 8)})
                    if settings.recorder_retention_days:
                        dropped = await schema.drop_partitions_before(
                            conn, today - timedelta(days=settings.recorder_retention_days))
                        if dropped:
                            self._ctx.log.info("retention", dropped=dropped)
            except Exception as err:  # retried next time; nothing depends on it meanwhile
                self._ctx.log.warning("housekeeping failed", error=str(err) or type(err).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 3600)

    async def stop(self) -> None:
        """Stop intake, write what was taken in (committing its position), then close."""
        self._stopping.set()
        for family in self.families:
            if family.reader is not None:
                await family.reader.stop()
        writers = self._tasks[: len(self.families)]
        for family, writer in zip(self.families, writers, strict=True):
            if not family.writing and family.buffer is not None and family.buffer.empty():
                writer.cancel()  # idle: nothing in hand
        _, unfinished = await asyncio.wait(self._tasks, timeout=15)
        for task in unfinished:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.pool is not None:
            await self.pool.close()

    def ready(self) -> bool:
        return self.pool is not None

    def status(self) -> dict[str, Any]:
        return {family.table: {"recorded": family.recorded, "position": family.position, "pending": family.pending,
                               "retries": family.retries} for family in self.families}
