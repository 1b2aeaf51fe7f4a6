"""Apply the numbered SQL files in `migrations/` in order, once each, under an advisory lock.

Safe to run twice and concurrently: a second runner waits for the lock, then finds every
version recorded in `schema_migrations` and applies nothing. After the schema, the current
month and `premake` months ahead get their partitions.

Everything runs in one transaction holding a transaction-scoped lock, so the same command
works through PgBouncer in transaction mode (a session lock could be taken on one server
session and released on another); pending migrations are applied all or none.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

from datastorage.store import partitions

MIGRATION_LOCK = 0x64617461_0001  # arbitrary constant shared by every runner
log = logging.getLogger(__name__)


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) sorted by version."""
    folder = resources.files("datastorage.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def migrate(database_url: str, premake: int, *, up_to: int | None = None) -> list[str]:
    """Apply pending migrations (those numbered at most `up_to`, when given: how an upgrade
    from an older schema is tested) and ensure partitions; returns the names applied."""
    applied = []
    with (
        psycopg.connect(database_url, autocommit=True, prepare_threshold=None) as conn,
        conn.transaction(),
    ):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, text in migration_files():
            if version in done or (up_to is not None and version > up_to):
                continue
            conn.execute(text)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (version, name),
            )
            log.info("applying migration %s", name)
            applied.append(name)
        for month in partitions.window(premake):
            partitions.ensure_month_partition(conn, month)
    return applied
