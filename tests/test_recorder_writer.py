"""The recorder's batch writes: the candle fold by hand, and on a real PostgreSQL, batches written twice, overlapping
or holding a row twice, store each row once and fold each share into its candle once; a batch holding rows the
database refuses stores the rest, with candles exact however it was split; which failures are the database's
(retried) and which the rows' (set aside)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, timedelta, timezone

import asyncpg
import msgspec
import pytest
from asyncpg.exceptions._base import DataError as DriverDataError

from services.recorder import schema
from services.recorder.writer import (
    INDEX_POINTS,
    write_refusing,
    write_rows,
    write_ticks,
)
from shared.candles import minute_candles
from shared.database import database_unavailable
from shared.market import EXCHANGE_TZ
from shared.messages.domain import ClassificationRule, ClassifiedTrade, IndexPoint, TradeType

DAY = date(2026, 11, 24)
NINE_FIFTEEN = datetime(2026, 11, 24, 9, 15, tzinfo=EXCHANGE_TZ)
BUY, SELL, NEUTRAL = TradeType.MUA_CHU_DONG, TradeType.BAN_CHU_DONG, TradeType.NEUTRAL


def trade(symbol: str, seconds: float, price: float, volume: int, total: int, trade_type: TradeType,
          unseen: int = 0) -> ClassifiedTrade:
    return ClassifiedTrade(symbol=symbol, trading_date=DAY, timestamp=NINE_FIFTEEN + timedelta(seconds=seconds),
                           price=price, volume=volume, value=price * volume, trade_type=trade_type,
                           rule=ClassificationRule.TICK, total_volume=total, session="LO", unseen_volume=unseen)


# ACB: three trades in 09:15 delivered out of TotalVol order, one in 09:16; FPT: one trade in 09:15.
TRADES = [
    trade("ACB", 10, 25_100, 300, 800, SELL),
    trade("ACB", 5, 25_000, 500, 500, BUY),
    trade("ACB", 40, 25_200, 100, 1_000, NEUTRAL, unseen=100),
    trade("FPT", 20, 98_000, 200, 200, BUY),
    trade("ACB", 61, 24_900, 1_000, 2_000, SELL),
]


def test_minute_candles_by_hand() -> None:
    candles = {(c.symbol, c.minute.strftime("%H:%M")): c for c in minute_candles(TRADES)}
    assert set(candles) == {("ACB", "09:15"), ("ACB", "09:16"), ("FPT", "09:15")}
    acb = candles[("ACB", "09:15")]
    # open and close follow TotalVol, not arrival: 500 opens at 25,000, 1,000 closes at 25,200
    assert (acb.open, acb.high, acb.low, acb.close) == (25_000, 25_200, 25_000, 25_200)
    assert (acb.first_total, acb.last_total, acb.trades) == (500, 1_000, 3)
    assert (acb.volume, acb.buy_volume, acb.sell_volume, acb.neutral_volume, acb.unseen_volume) == (
        900, 500, 300, 100, 100)
    assert acb.value == 25_000 * 500 + 25_100 * 300 + 25_200 * 100
    assert acb.minute == datetime(2026, 11, 24, 9, 15, tzinfo=EXCHANGE_TZ)
    later = candles[("ACB", "09:16")]
    assert (later.open, later.close, later.volume, later.sell_volume) == (24_900, 24_900, 1_000, 1_000)
    assert candles[("FPT", "09:15")].buy_volume == 200
    assert minute_candles([]) == []


@pytest.fixture
async def conn(scratch_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(scratch_database_url, server_settings={"timezone": "Asia/Ho_Chi_Minh"})
    await schema.migrate(connection)
    await schema.ensure_partitions(connection, {DAY})
    yield connection
    await connection.close()


async def candles_of(conn: asyncpg.Connection) -> dict[tuple[str, str], tuple[object, ...]]:
    rows = await conn.fetch("SELECT symbol, to_char(minute, 'HH24:MI') AS m, open, high, low, close, volume, "
                            "buy_volume, sell_volume, neutral_volume, unseen_volume, trades FROM candles_1m")
    return {(r["symbol"], r["m"]): tuple(r)[2:] for r in rows}


async def write(conn: asyncpg.Connection, trades: list[ClassifiedTrade]) -> tuple[int, int]:
    async with conn.transaction():
        return await write_ticks(conn, trades)


async def test_batches_split_any_way_store_the_same_ticks_and_candles(conn: asyncpg.Connection) -> None:
    assert await write(conn, TRADES) == (5, 3)
    whole = await candles_of(conn)
    assert whole[("ACB", "09:15")] == (25_000, 25_200, 25_000, 25_200, 900, 500, 300, 100, 100, 3)

    await conn.execute("TRUNCATE ticks, candles_1m")
    assert await write(conn, TRADES[2:4]) == (2, 2)  # the later trades of a minute first
    assert await write(conn, TRADES[:2]) == (2, 1)
    assert await write(conn, TRADES[4:]) == (1, 1)
    assert await candles_of(conn) == whole


async def test_a_batch_read_twice_or_overlapping_counts_each_share_once(conn: asyncpg.Connection) -> None:
    await write(conn, TRADES)
    whole = await candles_of(conn)
    assert await write(conn, TRADES) == (0, 0)  # every row stored already: nothing inserted, no candle touched
    assert await write(conn, [*TRADES[3:], trade("ACB", 70, 25_000, 100, 2_100, BUY)]) == (1, 1)
    assert await write(conn, [trade("FPT", 30, 98_100, 50, 250, SELL)] * 2) == (1, 1)  # twice in one batch
    assert await conn.fetchval("SELECT count(*) FROM ticks") == 7
    now = await candles_of(conn)
    assert now[("ACB", "09:15")] == whole[("ACB", "09:15")]
    assert now[("ACB", "09:16")] == (24_900, 25_000, 24_900, 25_000, 1_100, 100, 1_000, 0, 0, 2)
    assert now[("FPT", "09:15")] == (98_000, 98_100, 98_000, 98_100, 250, 200, 50, 0, 0, 2)


async def test_rows_without_candles_are_inserted_once(conn: asyncpg.Connection) -> None:
    points = [IndexPoint(index_id="VN30", trading_date=DAY, timestamp=NINE_FIFTEEN + timedelta(seconds=n),
                         value=1_300.0 + n) for n in range(3)]
    async with conn.transaction():
        assert await write_rows(conn, INDEX_POINTS, points) == 3
    async with conn.transaction():
        assert await write_rows(conn, INDEX_POINTS, [*points, msgspec.structs.replace(points[0], value=1_400.0)]) == 1
    assert await conn.fetchval("SELECT count(*) FROM index_points") == 4


async def ticks_inserted(conn: asyncpg.Connection, trades: Sequence[ClassifiedTrade]) -> int:
    return (await write_ticks(conn, trades))[0]


async def test_refused_rows_are_isolated_and_the_rest_folds_into_exact_candles(conn: asyncpg.Connection) -> None:
    await write(conn, TRADES)
    whole = await candles_of(conn)
    await conn.execute("TRUNCATE ticks, candles_1m")
    await write(conn, TRADES[:2])  # stored already: every part holding them goes through the staging tables
    nul = msgspec.structs.replace(trade("ACB", 50, 25_000, 100, 950, BUY), session="LO\u0000")
    far = msgspec.structs.replace(trade("FPT", 50, 98_000, 10, 210, BUY),
                                  timestamp=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))))
    async with conn.transaction():
        inserted, refused = await write_refusing(conn, ticks_inserted, [*TRADES[:3], nul, *TRADES[3:], far])
    assert inserted == 3
    assert [(index, type(error).__name__) for index, error in refused] == [
        (3, "CharacterNotInRepertoireError"),  # PostgreSQL: invalid byte sequence for encoding "UTF8": 0x00
        (6, "OverflowError"),  # the driver: year 1 at UTC+14 is before its epoch's range
    ]
    assert await conn.fetchval("SELECT count(*) FROM ticks") == 5
    assert await candles_of(conn) == whole  # each part folded only what it inserted


class Batch(list[ClassifiedTrade]):
    """A batch a weak reference can watch (a plain list takes none)."""


async def test_a_written_batch_is_freed_at_once(conn: asyncpg.Connection) -> None:
    """Nothing of the write keeps the batch: freed by refcount as its caller lets go, not at the garbage collector's
    next full collection (a closure calling itself did, so every batch of rows stayed in memory till then)."""
    batch = Batch(TRADES)
    watched = weakref.ref(batch)
    gc.disable()
    try:
        async with conn.transaction():
            assert await write_refusing(conn, ticks_inserted, batch) == (len(TRADES), [])
        del batch
        assert watched() is None
    finally:
        gc.enable()


async def test_a_database_outage_is_not_blamed_on_a_row(conn: asyncpg.Connection) -> None:
    async def shut_down(conn: asyncpg.Connection, trades: Sequence[ClassifiedTrade]) -> int:
        raise asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")

    with pytest.raises(asyncpg.exceptions.AdminShutdownError):
        async with conn.transaction():
            await write_refusing(conn, shut_down, TRADES)


@pytest.mark.parametrize(("error", "unavailable"), [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (TimeoutError(), True),
    (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
    (asyncpg.exceptions.InterfaceError("connection is closed"), True),
    (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), True),
    (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), True),
    (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), True),
    (asyncpg.exceptions.DiskFullError("could not extend file"), True),
    (asyncpg.exceptions.SerializationError("could not serialize access"), True),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True),
    (asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute COPY in a read-only transaction"), True),
    (asyncpg.exceptions.UndefinedTableError('relation "instrument_days" does not exist'), True),
    (asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'), False),
    (asyncpg.exceptions.NumericValueOutOfRangeError("value out of range"), False),
    (asyncpg.exceptions.CheckViolationError('no partition of relation "ticks" found for row'), False),
    (asyncpg.exceptions.NotNullViolationError("null value in column"), False),
    (DriverDataError("invalid input for query argument $1"), False),
    (OverflowError("date value out of range"), False),
])
def test_which_failures_are_the_databases(error: Exception, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable
