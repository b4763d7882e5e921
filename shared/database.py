"""PostgreSQL, as every service that uses it sees it: when waiting helps and when it does not."""

from __future__ import annotations

import asyncpg

# SQLSTATE classes no row can cause: the server going away or out of resources, a conflict with another
# transaction, or a schema, right or setting it lacks. Our statements are fixed and every value is a parameter or a
# COPYed field, so these say the database cannot take the batch now, whatever its rows.
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({
    "08",  # connection exception
    "0A",  # feature not supported
    "25",  # invalid transaction state: a read-only server (a standby after a failover, 25006)
    "28",  # invalid authorization: the role or its password changed
    "3B",  # savepoint exception
    "3D",  # invalid catalog name: the database is gone
    "40",  # transaction rollback: serialization failure, deadlock with another recorder
    "42",  # syntax error or access rule violation: a table, column or privilege missing (a migration not applied)
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "55",  # object not in prerequisite state: a lock not available, an object in use
    "57",  # operator intervention: admin shutdown, crash shutdown, cannot connect now, statement canceled
    "58",  # system error: I/O
    "F0",  # configuration file error
    "XX",  # internal error: corrupted data or index
})


def database_unavailable(err: BaseException) -> bool:
    """Whether `err` says the database cannot take any write now, so waiting helps (unreachable, shutting down, out
    of resources, ...), rather than that it refuses the rows written, which no wait changes (a class 22 data
    exception, a constraint, a value the driver cannot encode). The one place this line is drawn: the recorder
    retries the first kind and sets the refused rows aside for the second; the history API answers 503 for the
    first."""
    if isinstance(err, asyncpg.PostgresError):
        return (err.sqlstate or "")[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    if isinstance(err, asyncpg.InterfaceError):
        return not isinstance(err, ValueError)  # the connection is closed; but the driver's DataError is a value's
    return isinstance(err, OSError | asyncpg.exceptions.InternalClientError)  # TimeoutError is an OSError
