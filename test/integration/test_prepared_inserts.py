"""The group-commit INSERT is a server-side prepared statement on a direct connection, and
nothing is prepared through PgBouncer's transaction mode (whose server sessions change between
transactions, so a statement prepared on one is missing on the next)."""

from __future__ import annotations

import asyncio
import datetime as dt

from support import make_event

from datastorage.config import load_settings
from datastorage.domain.events import TimeBounds, normalize_event
from datastorage.store import audit_writes
from datastorage.store.pool import Database

PREPARED_GROUP_INSERTS = (
    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s AND NOT from_sql"
)


def _events(count: int) -> list[tuple[dict, bool]]:
    bounds = TimeBounds(dt.timedelta(days=1), dt.timedelta(minutes=5))
    now = dt.datetime.now(dt.UTC)
    return [(normalize_event(make_event(), bounds, now), False) for _ in range(count)]


async def _write_twice(settings) -> tuple[int | None, int, int]:
    """(the connection's prepare threshold, group inserts prepared in its session, rows
    stored): two groups on the pool's one connection."""
    db = Database(settings)
    await db.open()
    try:
        async with db.connection() as conn:
            groups = [_events(3), _events(2)]
            await audit_writes.ensure_partitions(conn, [e for e, _ in groups[0]], 5)
            stored = 0
            for group in groups:
                results = await audit_writes.insert_group(conn, group, leaf_hashes=True)
                stored += sum(1 for r in results if isinstance(r, audit_writes.WriteResult))
            cur = await conn.execute(PREPARED_GROUP_INSERTS, ("%jsonb_populate_recordset%",))
            (prepared,) = await cur.fetchone()
            return conn.prepare_threshold, prepared, stored
    finally:
        await db.close()


def _settings(url: str, **extra: str):
    return load_settings(
        {
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_DB_POOL_MIN": "1",
            "DATASTORAGE_DB_POOL_MAX": "1",
            **extra,
        }
    )


def test_group_insert_is_prepared_on_a_direct_connection(database_url):
    threshold, prepared, stored = asyncio.run(_write_twice(_settings(database_url)))
    assert stored == 5
    assert prepared == 1  # prepared once, executed by both groups
    assert threshold is not None


def test_nothing_is_prepared_through_pgbouncer(database_url, pgbouncer):
    url = pgbouncer.url_for(database_url.rsplit("/", 1)[1])
    settings = _settings(url, DATASTORAGE_DATABASE_POOLER="pgbouncer")
    threshold, prepared, stored = asyncio.run(_write_twice(settings))
    assert stored == 5
    assert threshold is None  # psycopg then prepares nothing, even when a statement asks
    assert prepared == 0
