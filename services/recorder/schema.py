"""The history schema: versioned SQL migrations applied at start under an advisory lock (so several recorders can
start together), daily partitions created ahead of need, and retention by dropping whole partitions."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import asyncpg

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PARTITIONED = ("ticks", "candles_1m", "foreign_flows", "index_points", "basis_points", "alerts")
SCHEMA_LOCK = 0x5354_4B54  # "STKT": one recorder at a time changes the schema
_PARTITION = re.compile(r"^(?P<table>\w+)_p(?P<day>\d{8})$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in order: NNNN_name.sql."""
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        found.append((version, path.stem, path.read_text()))
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; returns their names."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
    return applied_now


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


async def ensure_partitions(conn: asyncpg.Connection, days: set[date]) -> None:
    """Every table's partition for each of `days` (a no-op for those that exist)."""
    await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
    try:
        for day in sorted(days):
            for table in PARTITIONED:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)


async def drop_partitions_before(conn: asyncpg.Connection, oldest_kept: date) -> list[str]:
    """Retention: drop every partition of a trading date before `oldest_kept`, and forget those days in
    `instrument_days` (the history API's latest day of an instrument must be one that still has rows)."""
    rows = await conn.fetch(
        "SELECT child.relname AS name FROM pg_inherits "
        "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
        "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent WHERE parent.relname = ANY($1)",
        list(PARTITIONED),
    )
    dropped = []
    for row in rows:
        match = _PARTITION.match(row["name"])
        if match and date(int(match["day"][:4]), int(match["day"][4:6]), int(match["day"][6:])) < oldest_kept:
            await conn.execute(f"DROP TABLE IF EXISTS {row['name']}")
            dropped.append(row["name"])
    await conn.execute("DELETE FROM instrument_days WHERE trading_date < $1", oldest_kept)
    return sorted(dropped)
