"""Batch writes: each batch is COPYed into a session-local staging table, then inserted with ON CONFLICT DO NOTHING,
so a redelivered message (after a crash, before its ack) writes nothing twice. Classified trades also roll up into
1-minute candles in the same statement, from the rows actually inserted: a redelivery cannot count a share twice
in a candle either."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from shared.messages.domain import BasisPoint, ClassifiedTrade, ForeignFlow, IndexPoint, TradeType


@dataclass(frozen=True)
class Table:
    """A table and the message type whose fields, in order, fill its columns (`timestamp` goes to `ts`)."""

    name: str
    message: type

    @property
    def stage(self) -> str:
        return f"stage_{self.name}"

    @property
    def columns(self) -> list[str]:
        return ["ts" if f.name == "timestamp" else f.name for f in msgspec.structs.fields(self.message)]


TICKS = Table("ticks", ClassifiedTrade)
FOREIGN_FLOWS = Table("foreign_flows", ForeignFlow)
INDEX_POINTS = Table("index_points", IndexPoint)
BASIS_POINTS = Table("basis_points", BasisPoint)

# A message's fields in declaration order are its row: msgspec builds the tuple in C (the trade type and rule are
# str enums, which asyncpg writes as text).
as_row = msgspec.structs.astuple


_BUY, _SELL, _NEUTRAL = TradeType.MUA_CHU_DONG.value, TradeType.BAN_CHU_DONG.value, TradeType.NEUTRAL.value

_INSERT_TICKS_AND_CANDLES = f"""
WITH new AS (
    INSERT INTO ticks SELECT * FROM stage_ticks ON CONFLICT DO NOTHING RETURNING *
), candles AS (
    INSERT INTO candles_1m AS c (symbol, trading_date, minute, open, high, low, close, volume, value, buy_volume,
                                 sell_volume, neutral_volume, unseen_volume, trades, first_total, last_total)
    SELECT symbol, trading_date, date_trunc('minute', ts),
           (array_agg(price ORDER BY total_volume))[1], max(price), min(price),
           (array_agg(price ORDER BY total_volume DESC))[1],
           sum(volume), sum(value),
           coalesce(sum(volume) FILTER (WHERE trade_type = '{_BUY}'), 0),
           coalesce(sum(volume) FILTER (WHERE trade_type = '{_SELL}'), 0),
           coalesce(sum(volume) FILTER (WHERE trade_type = '{_NEUTRAL}'), 0),
           sum(unseen_volume), count(*), min(total_volume), max(total_volume)
    FROM new GROUP BY symbol, trading_date, date_trunc('minute', ts)
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
    RETURNING 1
)
SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM candles)
"""


async def _stage(conn: asyncpg.Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table.stage} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await conn.copy_records_to_table(table.stage, records=rows, columns=table.columns)


async def write_ticks(conn: asyncpg.Connection, trades: Sequence[ClassifiedTrade]) -> tuple[int, int]:
    """Insert the trades not stored yet and fold them into their candles; (ticks inserted, candles touched)."""
    await _stage(conn, TICKS, [as_row(trade) for trade in trades])
    row = await conn.fetchrow(_INSERT_TICKS_AND_CANDLES)
    return int(row[0]), int(row[1])


async def write_rows(conn: asyncpg.Connection, table: Table, messages: Sequence[Any]) -> int:
    """Insert the messages not stored yet; returns how many were."""
    await _stage(conn, table, [as_row(message) for message in messages])
    status = await conn.execute(f"INSERT INTO {table.name} SELECT * FROM {table.stage} ON CONFLICT DO NOTHING")
    return int(status.rsplit(" ", 1)[1])
