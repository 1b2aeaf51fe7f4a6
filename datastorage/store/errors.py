"""Classify database failures: transient ones send a write to the DLQ, the rest are 4xx/5xx.

Transient means "the same statement would succeed later without any change to the request":
the server is unreachable or shutting down, the pool had no connection in time, or concurrency
control aborted the transaction (serialization failure, deadlock, lock timeout).
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout, TooManyRequests

_TRANSIENT_SQLSTATE_CLASSES = ("08", "57P")  # connection exceptions; operator intervention
_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
    "57014",  # query_canceled (statement_timeout under load)
    "25006",  # read_only_sql_transaction (failover to a standby)
}


# Every error psycopg raises; callers outside the store catch this name.
DatabaseError = psycopg.Error


class StoreError(Exception):
    """Base of the store's domain errors."""


class Conflict(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The database cannot be used right now (the transient class, already classified)."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StoreUnavailable | PoolTimeout | TooManyRequests):
        return True
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        sqlstate = getattr(exc, "sqlstate", None)
        return sqlstate is None or _is_transient_sqlstate(sqlstate)
    if isinstance(exc, psycopg.Error):
        sqlstate = getattr(exc, "sqlstate", None)
        return sqlstate is not None and _is_transient_sqlstate(sqlstate)
    return isinstance(exc, ConnectionError | TimeoutError)


def _is_transient_sqlstate(sqlstate: str) -> bool:
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES)


def is_server_gone(exc: BaseException) -> bool:
    """The server closed or refused the connection (no SQLSTATE, or a connection class)."""
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


def is_connection_lost(exc: BaseException) -> bool:
    """The connection itself failed (no SQLSTATE): no later statement on it can work."""
    return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None


def is_missing_partition(exc: BaseException) -> bool:
    """PostgreSQL found no partition for the row (SQLSTATE 23514 with this wording)."""
    return isinstance(exc, pg_errors.CheckViolation) and "no partition of relation" in str(exc)
