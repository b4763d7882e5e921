"""Batch writes that insert nothing twice. A batch is COPYed straight into its table inside a savepoint: the common
case, a batch of messages never stored before, costs one COPY. If any row is stored already (a message read twice:
a second recorder, or a republish outside JetStream's duplicate window), the savepoint is rolled back and the batch
goes through a session-local staging table and INSERT ... ON CONFLICT DO NOTHING instead.

Classified trades also fold into 1-minute candles in the same transaction, from the trades actually inserted: a
message read twice cannot count a share twice in a candle either. Each candle's open and close belong to the trades
with the lowest and highest TotalVol, so batches may arrive in any order.

A row the database refuses (a NUL byte in a text, a time beyond what it stores) must not hold back the rows around
it: `write_refusing` writes a batch in a savepoint and, when it fails for its rows, halves it, each half in its own
savepoint, until every refused message stands alone; the rest is written. Only a failure no row can cause (the
database unreachable, shutting down, out of resources: `shared.database.database_unavailable`) fails the whole
batch, to be retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import msgspec

from shared.candles import MinuteCandle, minute_candles
from shared.database import database_unavailable
from shared.messages.domain import Alert, BasisPoint, ClassifiedTrade, ForeignFlow, IndexPoint

# A message's fields in declaration order are its row: msgspec builds the tuple in C (the trade type and rule are
# str enums, which asyncpg writes as text).
as_row = msgspec.structs.astuple
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Table:
    """A table and the message type whose fields, in order, fill its columns (`timestamp` goes to `ts`); `row` makes
    a message the row's values."""

    name: str
    message: type
    row: Callable[[Any], tuple[Any, ...]] = as_row

    @property
    def stage(self) -> str:
        return f"stage_{self.name}"

    @property
    def columns(self) -> list[str]:
        return ["ts" if f.name == "timestamp" else f.name for f in msgspec.structs.fields(self.message)]


TICKS = Table("ticks", ClassifiedTrade)
CANDLES = Table("candles_1m", MinuteCandle)
FOREIGN_FLOWS = Table("foreign_flows", ForeignFlow)
INDEX_POINTS = Table("index_points", IndexPoint)
BASIS_POINTS = Table("basis_points", BasisPoint)


def _alert_row(alert: Alert) -> tuple[Any, ...]:
    """An alert's row: its `values` as JSON text, which asyncpg writes to a jsonb column."""
    row = list(as_row(alert))
    row[_ALERT_VALUES] = _encode(alert.values).decode()
    return tuple(row)


_ALERT_VALUES = [f.name for f in msgspec.structs.fields(Alert)].index("values")
ALERTS_TABLE = Table("alerts", Alert, _alert_row)

_MERGE_CANDLES = """
INSERT INTO candles_1m AS c SELECT * FROM stage_candles_1m
ON CONFLICT (symbol, trading_date, minute) DO UPDATE SET
    open = CASE WHEN excluded.first_total < c.first_total THEN excluded.open ELSE c.open END,
    close = CASE WHEN excluded.last_total > c.last_total THEN excluded.close ELSE c.close END,
    first_total = least(c.first_total, excluded.first_total),
    last_total = greatest(c.last_total, excluded.last_total),
    high = greatest(c.high, excluded.high), low = least(c.low, excluded.low),
    volume = c.volume + excluded.volume, value = c.value + excluded.value,
    buy_volume = c.buy_volume + excluded.buy_volume, sell_volume = c.sell_volume + excluded.sell_volume,
    neutral_volume = c.neutral_volume + excluded.neutral_volume,
    unseen_volume = c.unseen_volume + excluded.unseen_volume, trades = c.trades + excluded.trades
"""


async def _stage(conn: asyncpg.Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """`rows`, alone, in the table's staging table. Emptied first, in the same round trip: a batch split by
    `write_refusing` stages several parts in one transaction, and each must merge only its own rows."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table.stage} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
        f"DELETE FROM {table.stage}"
    )
    await conn.copy_records_to_table(table.stage, records=rows, columns=table.columns)


async def insert_new(conn: asyncpg.Connection, table: Table, rows: Sequence[tuple[Any, ...]],
                     returning: str = "1") -> list[asyncpg.Record] | None:
    """Insert the rows not stored yet (by the table's natural key). None when every row was inserted; otherwise
    the inserted rows' `returning` columns. Must run inside a transaction."""
    try:
        async with conn.transaction():  # a savepoint: a row stored already undoes this COPY only
            await conn.copy_records_to_table(table.name, records=rows, columns=table.columns)
        return None
    except asyncpg.UniqueViolationError:
        pass
    await _stage(conn, table, rows)
    return await conn.fetch(
        f"INSERT INTO {table.name} SELECT * FROM {table.stage} ON CONFLICT DO NOTHING RETURNING {returning}")


async def write_ticks(conn: asyncpg.Connection, trades: Sequence[ClassifiedTrade]) -> tuple[int, int]:
    """Insert the trades not stored yet and fold them into their candles; (ticks inserted, candles touched).
    Must run inside a transaction."""
    inserted = await insert_new(conn, TICKS, [as_row(trade) for trade in trades],
                                returning="symbol, trading_date, total_volume")
    new = list(trades) if inserted is None else _only_inserted(trades, {tuple(row) for row in inserted})
    candles = minute_candles(new)
    if candles:
        await _stage(conn, CANDLES, [as_row(candle) for candle in candles])
        await conn.execute(_MERGE_CANDLES)
    return len(new), len(candles)


def _only_inserted(trades: Sequence[ClassifiedTrade], keys: set[tuple[Any, ...]]) -> list[ClassifiedTrade]:
    new = []
    for trade in trades:
        key = (trade.symbol, trade.trading_date, trade.total_volume)
        if key in keys:
            keys.discard(key)  # a trade twice in one batch is inserted once
            new.append(trade)
    return new


async def write_rows(conn: asyncpg.Connection, table: Table, messages: Sequence[Any]) -> int:
    """Insert the messages not stored yet; returns how many were. Must run inside a transaction."""
    inserted = await insert_new(conn, table, [table.row(message) for message in messages])
    return len(messages) if inserted is None else len(inserted)


Write = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[int]]  # a batch's write: rows inserted


async def write_refusing(conn: asyncpg.Connection, write: Write,
                         messages: Sequence[Any]) -> tuple[int, list[tuple[int, Exception]]]:
    """`write` the messages, setting aside those the database refuses: (rows inserted, [(index of a refused
    message, why)]). Each attempt runs in its own savepoint, so a failed one leaves nothing behind (its candles
    neither); a part that fails is halved until each refused message is alone, so one bad row in a batch of n costs
    about 2·log2(n) more attempts. A failure `database_unavailable` names stops the search and is raised: no row is
    to blame. Must run inside a transaction."""
    return await _attempt(conn, write, messages, 0, len(messages)) if messages else (0, [])


async def _attempt(conn: asyncpg.Connection, write: Write, messages: Sequence[Any], low: int,
                   high: int) -> tuple[int, list[tuple[int, Exception]]]:
    """messages[low:high] through `write`, halved on a refusal. A function of its own, not a closure calling itself:
    such a closure is a reference cycle, and it kept every batch it wrote (thousands of rows) alive until the
    garbage collector next ran a collection of the older generations."""
    try:
        async with conn.transaction():
            return await write(conn, messages[low:high]), []
    except Exception as err:
        if database_unavailable(err):
            raise
        if high - low == 1:
            return 0, [(low, err)]
    middle = (low + high) // 2
    first_inserted, first_refused = await _attempt(conn, write, messages, low, middle)
    second_inserted, second_refused = await _attempt(conn, write, messages, middle, high)
    return first_inserted + second_inserted, first_refused + second_refused


_INSERT_REJECTS = """
INSERT INTO recorder_rejects (family, subject, stream_created, stream_sequence, error, message)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
"""
_ERROR_KEPT_CHARS = 4096


async def insert_rejects(conn: asyncpg.Connection, family: str, stream_created: datetime,
                         refused: Sequence[tuple[str, int, Any, Exception]]) -> None:
    """Keep each refused message (subject, stream sequence, message, why) in `recorder_rejects`, once however often
    it is read. The message goes in as JSON, whose text never holds a NUL byte (JSON escapes it); the error text is
    ours and the driver's, which may quote the value, so its NULs are escaped here: a reject that could not be
    stored would block the family again."""
    await conn.executemany(_INSERT_REJECTS, [
        (family, subject, stream_created, sequence, f"{type(err).__name__}: {err}"[:_ERROR_KEPT_CHARS]
         .replace("\x00", "\\x00"), _encode(message).decode())
        for subject, sequence, message, err in refused])


async def insert_days(conn: asyncpg.Connection, family: str, days: Iterable[tuple[str, date]]) -> None:
    """Note that each (instrument, trading date) has rows in `family`, for the history API's latest-day lookups
    (`instrument_days`). Sorted, so two recorders inserting the same days take their locks in one order."""
    ordered = sorted(days)
    await conn.execute(
        "INSERT INTO instrument_days (family, instrument, trading_date) "
        "SELECT $1, * FROM unnest($2::text[], $3::date[]) ON CONFLICT DO NOTHING",
        family, [instrument for instrument, _ in ordered], [day for _, day in ordered])
