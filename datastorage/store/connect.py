"""Connections to PostgreSQL from settings: the session options every connection carries,
and one-off connections for work outside the pool (start-up partitions, the `partitions`
command, partition maintenance).

Every connection is autocommit, runs in UTC, carries an application name and a statement
timeout, gives up connecting after the pool timeout (at least 1 s), and over TCP finds a silent
database host within `db_tcp_timeout` (`_keepalive`). Callers outside
`datastorage.store` get connections from here and never import psycopg.

Through PgBouncer in transaction mode (`database_pooler = pgbouncer`) consecutive statements
of one client may run on different server sessions, so nothing may rely on session state:
- no `options` startup parameter (PgBouncer refuses it): the time zone is set with `SET`
  after connecting, which PgBouncer tracks (TimeZone is one of the parameters it re-applies
  to whichever server session serves the client); the statement timeout is not sent — it
  belongs on the database role or in PgBouncer's `query_timeout` (see docs/scaling.md);
- no server-side prepared statements (PgBouncer 1.18 does not carry them between sessions);
- work that needs a session (session advisory locks, `DETACH ... CONCURRENTLY` with a session
  lock timeout: partition maintenance) refuses to run: `require_session`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection, Connection

from datastorage.config import ConfigError, Settings

__all__ = [
    "AsyncConnection",
    "Connection",
    "SessionRequired",
    "connect_async",
    "connect_sync",
    "require_session",
    "session_kwargs",
    "set_session_async",
]

SET_UTC = "SET TimeZone TO 'UTC'"


class SessionRequired(ConfigError):
    """Work that needs a database session was asked to run through a transaction pooler (a
    configuration error: the CLI exits 2 with its message)."""


def transaction_pooled(settings: Settings) -> bool:
    """True when the database URL names a transaction-mode pooler (no session state)."""
    return settings.database_pooler == "pgbouncer"


def require_session(settings: Settings, what: str) -> None:
    """Refuse `what` through a transaction pooler: it would leave session state behind."""
    if transaction_pooled(settings):
        raise SessionRequired(
            f"{what} needs a database session: through PgBouncer in transaction mode it "
            "cannot run; give this process a direct PostgreSQL URL (or a session-mode pool) "
            "and leave DATASTORAGE_DATABASE_POOLER unset"
        )


def session_kwargs(
    settings: Settings,
    application_name: str,
    *,
    statement_timeout: float | None = None,
    connect_timeout: float | None = None,
) -> dict[str, Any]:
    """psycopg connect arguments. `statement_timeout` defaults to the configured one (0: none);
    `connect_timeout` to the pool timeout."""
    if statement_timeout is None:
        statement_timeout = settings.db_statement_timeout
    if connect_timeout is None:
        connect_timeout = settings.db_pool_timeout
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "application_name": application_name,
        "connect_timeout": max(1, int(connect_timeout)),
    }
    keepalive = _keepalive(settings.db_tcp_timeout)
    kwargs.update(keepalive.client)
    if transaction_pooled(settings):
        # No startup options and no prepared statements; UTC comes from `set_session_*`.
        kwargs["prepare_threshold"] = None
    else:
        timeout_ms = int(statement_timeout * 1000)
        kwargs["options"] = f"-c TimeZone=UTC -c statement_timeout={timeout_ms}{keepalive.server}"
    return kwargs


@dataclass(frozen=True)
class _Keepalive:
    client: dict[str, int]  # libpq connection parameters
    server: str  # startup options for the session's backend


def _keepalive(timeout: float) -> _Keepalive:
    """A silent database host (a cut network, a host gone without closing its sockets) is found
    within `timeout` seconds instead of the OS's ~15 minutes: keepalive probes start after a
    third of it on an idle connection, and unacknowledged data (a statement sent into the void)
    gives up at `timeout` (TCP_USER_TIMEOUT). So a request waiting on such a connection fails
    and goes to the DLQ, and the pool drops the connection. The backend probes its end the same
    way, so a session whose client vanished ends and releases its locks (the log's leader lock
    among them). Unix-socket connections have no TCP and ignore all of it."""
    if timeout <= 0:
        return _Keepalive({}, "")
    idle, interval, count = max(1, round(timeout / 3)), max(1, round(timeout / 9)), 3
    return _Keepalive(
        {
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": interval,
            "keepalives_count": count,
            "tcp_user_timeout": int(timeout * 1000),
        },
        f" -c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval}"
        f" -c tcp_keepalives_count={count}",
    )


async def set_session_async(settings: Settings, conn: AsyncConnection) -> None:
    """What a new connection runs before use: UTC through a pooler (else it came as an option)."""
    if transaction_pooled(settings):
        await conn.execute(SET_UTC)


async def connect_async(
    settings: Settings,
    application_name: str,
    *,
    statement_timeout: float | None = None,
    connect_timeout: float | None = None,
) -> AsyncConnection:
    """One async connection (use it as `async with await connect_async(...) as conn`).
    Raises DatabaseError when it cannot connect."""
    kwargs = session_kwargs(
        settings,
        application_name,
        statement_timeout=statement_timeout,
        connect_timeout=connect_timeout,
    )
    conn = await AsyncConnection.connect(settings.require_database_url(), **kwargs)
    await set_session_async(settings, conn)
    return conn


def connect_sync(
    settings: Settings, application_name: str, *, statement_timeout: float | None = None
) -> Connection:
    """One blocking connection (command-line tools; use it as a context manager)."""
    kwargs = session_kwargs(settings, application_name, statement_timeout=statement_timeout)
    conn = psycopg.connect(settings.require_database_url(), **kwargs)
    if transaction_pooled(settings):
        conn.execute(SET_UTC)
    return conn


# The connection type, for annotations outside store/ (which never import psycopg).
DatabaseConnection = AsyncConnection
