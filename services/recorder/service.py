"""The recorder: DERIVED into PostgreSQL, exactly once.

Each table family reads its subjects from DERIVED in stream order, from the position recorded in PostgreSQL
(`recorder_positions`). Messages are written in batches of up to RECORDER_BATCH, or whatever arrived within
RECORDER_FLUSH_MS, in one transaction that also moves the family's position to the batch's last stream sequence:
the rows and the position commit together, so after a crash or `kill -9` the recorder resumes exactly after what
was committed, and a message read twice is skipped by the natural-key inserts anyway.

One bad message never stops a family:

- A message that cannot be its type (undecodable, a number beyond its bound), whose subject is not an instrument's
  or not its payload's, or whose trading date is outside the market's era, is dead-lettered (DEADLETTER,
  `dlq.recorder`) as it is received. The batch holding its place commits only once the dead letter is
  acknowledged, so the position never passes a message that is neither stored nor set aside.
- A row the database refuses (a NUL byte in a text, a time it cannot store) is found by halving the batch, each
  part in its own savepoint, and kept in `recorder_rejects` with the error; the rest of the batch commits with the
  position (writer.write_refusing).
- Only while the database is unreachable or unavailable (shared.database) is a batch retried, with backoff and
  never dropped: meanwhile intake pauses (a bounded buffer; JetStream's flow control holds the rest in
  the stream), so the stream is the buffer and the recorder catches up afterwards. The lag gauges count what is
  received but not committed, so a family held up shows.

This is the durable consumer the position in PostgreSQL makes it: unlike a JetStream durable consumer with acks
(a pull and an ack per message: about 18,000 messages/s on 2 cores), it reads at the ordered consumer's speed and
its position cannot run ahead of, or behind, the data it covers. Recorders started side by side each record
everything (the inserts skip what another wrote; the position only moves forward): redundancy, not shared work.

Each batch also notes its (instrument, trading date) pairs in `instrument_days`, so the history API finds an
instrument's latest day without opening every daily partition; a day already noted costs nothing.

What is recorded: classified trades (ticks, plus 1-minute candles with buy / sell / neutral volume), foreign flows
with their cumulative figures, index points, basis points and alerts. Not recorded: quotes (tens of times the
trades, and no history endpoint needs the book) and SSI's per-match bars (the candles from classified ticks say
more).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from operator import attrgetter
from typing import Any

import asyncpg
import msgspec
from prometheus_client import Counter, Gauge, Histogram

from services.recorder import schema
from services.recorder.writer import (
    ALERTS_TABLE,
    BASIS_POINTS,
    FOREIGN_FLOWS,
    INDEX_POINTS,
    Table,
    Write,
    insert_days,
    insert_rejects,
    write_refusing,
    write_rows,
    write_ticks,
)
from shared import bus
from shared.config import ConfigError, Settings
from shared.database import database_unavailable
from shared.deadletter import Refused, inbound, subject_instrument
from shared.market import exchange_now
from shared.messages.domain import Alert, BasisPoint, ClassifiedTrade, ForeignFlow, IndexPoint
from shared.retry import DATABASE_AWAY, retrying
from shared.runtime import Actor, Context
from shared.subjects import ALERTS, BASIS_POINT, DERIVED, FOREIGN_FLOW, INDEX_POINT, TRADE_CLASSIFIED
from shared.throttle import Throttle

ROWS = Counter("stocktracker_recorder_rows_total", "Rows inserted (duplicates skipped), by table", ["table"])
SKIPPED = Counter("stocktracker_recorder_duplicates_total", "Messages already stored (read twice), by table",
                  ["table"])
BATCH_SIZE = Histogram("stocktracker_recorder_batch_size", "Messages per written batch", ["table"],
                       buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000))
FLUSH_SECONDS = Histogram("stocktracker_recorder_flush_seconds", "Time to write and commit one batch", ["table"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RETRIES = Counter("stocktracker_recorder_retries_total", "Batch writes retried after a failure", ["table"])
REJECTED = Counter("stocktracker_recorder_rejected_total",
                   "Messages the database refused, kept in recorder_rejects instead, by table", ["table"])
LAG_MESSAGES = Gauge("stocktracker_recorder_lag_messages",
                     "Messages not yet committed: still in DERIVED, received and buffered, or in the batch being "
                     "written", ["table"])
LAG_SECONDS = Gauge("stocktracker_recorder_lag_seconds",
                    "While messages are pending, the age of the last one committed: it grows while nothing commits",
                    ["table"])

MAX_REMEMBERED_DAYS = 100_000  # (instrument, trading date) pairs known to be in instrument_days
_MOVE_POSITION = (
    "INSERT INTO recorder_positions (family, sequence, stream_created) VALUES ($1, $2, $3) "
    "ON CONFLICT (family) DO UPDATE SET sequence = CASE "
    "WHEN recorder_positions.stream_created = excluded.stream_created "
    "THEN greatest(recorder_positions.sequence, excluded.sequence) ELSE excluded.sequence END, "
    "stream_created = excluded.stream_created, updated_at = now()"
)

Received = tuple[int, int, str, Any]  # (stream sequence, stored_ns, subject, message; None: dead-lettered)


@dataclass
class Family:
    """One table family: the subjects it records, how to decode, check and write a batch of it, and where it
    stands."""

    table: str
    subject: str
    kind: type
    write: Write
    instrument_field: str  # the payload's instrument: symbol, index id or futures contract
    decoder: Any = None
    instrument: Callable[[Any], str] = field(init=False)
    instrument_day: Callable[[Any], tuple[str, date]] = field(init=False)  # (instrument, trading date), in C
    buffer: asyncio.Queue[Received] | None = None
    reader: bus.StreamReader | None = None
    batch: list[Received] = field(default_factory=list)  # the batch being gathered or written
    position: int = 0  # the last stream sequence committed
    committed_ns: int = 0  # when the stream stored the last message committed (see lag_seconds)
    recorded: int = 0
    retries: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    halted: bool = False  # a dead letter could not be published: nothing after it may be taken
    tokens: dict[str, str] = field(default_factory=dict)  # subject -> its last token if an instrument code, else ""
    known_days: set[tuple[str, date]] = field(default_factory=set)  # noted in instrument_days already

    def __post_init__(self) -> None:
        self.decoder = msgspec.json.Decoder(self.kind)
        self.instrument = attrgetter(self.instrument_field)
        self.instrument_day = attrgetter(self.instrument_field, "trading_date")

    @property
    def pending(self) -> int:
        """Messages not yet committed: in the stream after the last one received, received and buffered, or in the
        batch being written."""
        return ((self.reader.backlog if self.reader is not None else 0)
                + (self.buffer.qsize() if self.buffer is not None else 0) + len(self.batch))

    def lag_seconds(self) -> float:
        """While anything is pending, how long ago the stream stored the last message committed: it grows for as
        long as nothing commits. Before the first commit of a run, the first message received stands in for it (the
        last one committed was stored no later)."""
        return max(0.0, time.time() - self.committed_ns / 1e9) if self.pending and self.committed_ns else 0.0

    def checked(self, subject: str, payload: bytes) -> Any:
        """The payload as the family's message type, once its instrument is its subject's and its trading date in
        the market's era (a date beyond it is a corrupt message: no partition is made for it). Raises what
        `deadletter.inbound` raises."""
        token = self.tokens.get(subject)
        if token is None:
            if len(self.tokens) >= bus.MAX_REMEMBERED_SUBJECTS:
                self.tokens.clear()
            token = self.tokens[subject] = subject_instrument(subject)
        return inbound(subject, token, payload, self.decoder.decode, self.instrument)

    def days_of(self, messages: Sequence[Any]) -> set[tuple[str, date]]:
        return set(map(self.instrument_day, messages))


async def _ticks(conn: asyncpg.Connection, trades: Sequence[ClassifiedTrade]) -> int:
    return (await write_ticks(conn, trades))[0]


def _rows(table: Table) -> Write:
    async def write(conn: asyncpg.Connection, messages: Sequence[Any]) -> int:
        return await write_rows(conn, table, messages)

    return write


@dataclass
class Partitions:
    known: set[date] = field(default_factory=set)


class Recorder(Actor):
    name = "recorder"
    description = "Persists every tick, flow, index point, basis point and alert to PostgreSQL"
    metrics_port = 9106

    def __init__(self) -> None:
        self.families = [
            Family("ticks", TRADE_CLASSIFIED.wildcard, ClassifiedTrade, _ticks, "symbol"),
            Family("foreign_flows", FOREIGN_FLOW.wildcard, ForeignFlow, _rows(FOREIGN_FLOWS), "symbol"),
            Family("index_points", INDEX_POINT.wildcard, IndexPoint, _rows(INDEX_POINTS), "index_id"),
            Family("basis_points", BASIS_POINT.wildcard, BasisPoint, _rows(BASIS_POINTS), "futures_symbol"),
            Family("alerts", ALERTS, Alert, _rows(ALERTS_TABLE), "symbol"),
        ]
        self.pool: asyncpg.Pool | None = None
        self.stream_created: datetime | None = None
        self.partitions = Partitions()
        self._rejects_logged = Throttle()
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
            self.stream_created = (await bus.electing(lambda: ctx.js.stream_info(DERIVED.name))).created
            positions = {row["family"]: row["sequence"] for row in await conn.fetch(
                "SELECT family, sequence FROM recorder_positions WHERE stream_created = $1", self.stream_created)}
        ctx.log.info("schema ready", applied=applied, positions=positions)
        for family in self.families:
            family.position = positions.get(family.table, 0)
            family.buffer = asyncio.Queue(2 * ctx.settings.recorder_batch)
            family.reader = await bus.consume_from(ctx.js, DERIVED, [family.subject], self._intake(family),
                                                   start_sequence=family.position + 1)
            LAG_MESSAGES.labels(family.table).set_function(lambda f=family: f.pending)
            LAG_SECONDS.labels(family.table).set_function(family.lag_seconds)
            self._tasks.append(asyncio.create_task(self._record(family), name=f"record-{family.table}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="recorder-housekeeping"))

    async def _connect(self, ctx: Context) -> asyncpg.Pool:
        try:
            return await retrying(
                lambda: asyncpg.create_pool(ctx.settings.database_url, min_size=1, max_size=len(self.families) + 1,
                                            server_settings={"timezone": "Asia/Ho_Chi_Minh"}),
                DATABASE_AWAY, retry_on=(OSError, asyncpg.PostgresError),
                deadline_s=ctx.settings.nats_connect_timeout_s)
        except (OSError, asyncpg.PostgresError) as err:
            raise RuntimeError(f"cannot reach PostgreSQL at DATABASE_URL: {err}") from None

    async def _ensure_days(self, conn: asyncpg.Connection, days: set[date]) -> None:
        missing = days - self.partitions.known
        if missing:
            await schema.ensure_partitions(conn, missing)
            self.partitions.known |= missing

    def _intake(self, family: Family) -> bus.StreamHandler:
        assert family.buffer is not None
        buffer = family.buffer

        async def take(subject: str, payload: bytes, position: bus.Delivery) -> None:
            sequence, stored_ns, _ = position
            if sequence <= family.position or family.halted:
                return  # committed already (another recorder moved the position on), or stopping on a failure
            try:
                message = family.checked(subject, payload)
            except (msgspec.DecodeError, msgspec.ValidationError, Refused) as err:
                await self._dead_letter(family, subject, sequence, payload, err)
                message = None  # holds the message's place: its batch's position passes it
            await buffer.put((sequence, stored_ns, subject, message))  # waits while the writer is behind

        return take

    async def _dead_letter(self, family: Family, subject: str, sequence: int, payload: bytes,
                           error: Exception) -> None:
        """Set the message aside on DEADLETTER. One that cannot even be published stops the service (a non-zero
        exit; restarted, it reads on from the committed position) rather than let the position pass it."""
        assert self._ctx is not None
        try:
            await self._ctx.dead_letters.put(stream=DERIVED.name, subject=subject, sequence=sequence,
                                             payload=payload, error=error)
        except Exception as err:
            family.halted = True
            self._ctx.fail(f"dead letter for {subject} #{sequence} not published: {err!r}")
            raise
        family.dead_lettered += 1

    async def _record(self, family: Family) -> None:
        """Batch the buffer: up to RECORDER_BATCH messages, or what arrived within RECORDER_FLUSH_MS."""
        assert self._ctx is not None
        assert family.buffer is not None
        settings = self._ctx.settings
        flush_s = settings.recorder_flush_ms / 1000
        while True:
            first = await family.buffer.get()
            batch = family.batch = [first]  # counted as pending from here on, not only once it is written
            if not family.committed_ns:
                family.committed_ns = first[1]
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
            try:
                await self._write_until_done(family, batch)
            finally:
                family.batch = []
            if self._stopping.is_set() and family.buffer.empty():
                return

    async def _write_until_done(self, family: Family, batch: list[Received]) -> None:
        """Write the batch and move the position past it, in one transaction. Rows the database refuses go to
        `recorder_rejects` in the same transaction and the rest commits; while the database is unavailable (or
        anything else fails outside the rows) the whole batch is retried with backoff, never dropped."""
        assert self._ctx is not None
        assert self.pool is not None
        entries = [entry for entry in batch if entry[3] is not None]
        messages = [message for _, _, _, message in entries]
        if len(entries) < len(batch):
            await self._ctx.publisher.settled()  # the position passes a dead letter only once DEADLETTER has it
        last_sequence, last_stored_ns, _, _ = batch[-1]
        days = family.days_of(messages)
        started = 0.0

        async def write() -> tuple[int, list[tuple[int, Exception]], set[tuple[str, date]]]:
            nonlocal started
            started = time.perf_counter()
            assert self.pool is not None
            async with self.pool.acquire() as conn:
                await self._ensure_days(conn, {day for _, day in days})
                async with conn.transaction():
                    inserted, refused = await write_refusing(conn, family.write, messages)
                    written_days = days
                    if refused:
                        await insert_rejects(conn, family.table, self.stream_created, [
                            (entries[index][2], entries[index][0], messages[index], error)
                            for index, error in refused])
                        refused_at = {index for index, _ in refused}
                        written_days = family.days_of(
                            [message for index, message in enumerate(messages) if index not in refused_at])
                    new_days = written_days - family.known_days
                    if new_days:
                        await insert_days(conn, family.table, new_days)
                    await conn.execute(_MOVE_POSITION, family.table, last_sequence, self.stream_created)
            return inserted, refused, new_days

        def failed(err: BaseException, failures: int, wait: float) -> None:  # the batch is kept and written again
            assert self._ctx is not None
            family.retries += 1
            RETRIES.labels(family.table).inc()
            log = self._ctx.log.warning if database_unavailable(err) else self._ctx.log.error
            log("write failed; retrying", table=family.table, error=str(err) or type(err).__name__,
                attempt=failures, retry_in_s=wait)

        inserted, refused, new_days = await retrying(write, DATABASE_AWAY, on_failure=failed)
        FLUSH_SECONDS.labels(family.table).observe(time.perf_counter() - started)
        BATCH_SIZE.labels(family.table).observe(len(batch))
        ROWS.labels(family.table).inc(inserted)
        SKIPPED.labels(family.table).inc(len(messages) - len(refused) - inserted)
        if len(family.known_days) + len(new_days) > MAX_REMEMBERED_DAYS:
            family.known_days.clear()
        family.known_days |= new_days
        family.recorded += inserted
        family.position = max(family.position, last_sequence)
        family.committed_ns = last_stored_ns
        if refused:
            self._refused(family, entries, refused)

    def _refused(self, family: Family, entries: list[Received], refused: list[tuple[int, Exception]]) -> None:
        assert self._ctx is not None
        family.rejected += len(refused)
        REJECTED.labels(family.table).inc(len(refused))
        if self._rejects_logged.due(family.table):
            index, error = refused[0]
            self._ctx.log.warning("rows refused by the database; kept in recorder_rejects", table=family.table,
                                  refused=len(refused), subject=entries[index][2], sequence=entries[index][0],
                                  error=str(error) or type(error).__name__, rejected=family.rejected)

    async def _housekeeping(self) -> None:
        """Partitions for the days ahead, and retention."""
        assert self._ctx is not None
        assert self.pool is not None
        settings = self._ctx.settings
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
            if not family.batch and family.buffer is not None and family.buffer.empty():
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
                               "retries": family.retries, "rejected": family.rejected,
                               "dead_letters": family.dead_lettered} for family in self.families}
