"""Connections to PostgreSQL from settings: the session options every connection carries,
and one-off connections for work outside the pool (start-up partitions, the `partitions`
command, partition maintenance).

Every connection is autocommit, runs in UTC, carries an application name and a statement
timeout, and gives up connecting after the pool timeout (at least 1 s). Callers outside
`datastorage.store` get connections from here and never import psycopg.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection, Connection

from datastorage.config import Settings

__all__ = ["AsyncConnection", "Connection", "connect_async", "connect_sync", "session_kwargs"]


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
    return {
        "autocommit": True,
        "application_name": application_name,
        "options": f"-c TimeZone=UTC -c statement_timeout={int(statement_timeout * 1000)}",
        "connect_timeout": max(1, int(connect_timeout)),
    }


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
    return await AsyncConnection.connect(settings.require_database_url(), **kwargs)


def connect_sync(
    settings: Settings, application_name: str, *, statement_timeout: float | None = None
) -> Connection:
    """One blocking connection (command-line tools; use it as a context manager)."""
    kwargs = session_kwargs(settings, application_name, statement_timeout=statement_timeout)
    return psycopg.connect(settings.require_database_url(), **kwargs)


# The connection type, for annotations outside store/ (which never import psycopg).
DatabaseConnection = AsyncConnection
