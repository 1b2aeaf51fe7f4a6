"""The pool's circuit breaker against a real PostgreSQL stopped with `pg_ctl -m immediate`
while the pool holds idle connections: requests fail fast, none waits for the pool timeout
while the breaker is open, and the breaker closes (once) when the database is back."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from support import PostgresServer

from datastorage.config import load_settings
from datastorage.store.errors import StoreUnavailable
from datastorage.store.pool import PROBE_INTERVAL, Database


def _pool_timeouts() -> float:
    return REGISTRY.get_sample_value("datastorage_db_pool_timeouts_total") or 0.0


async def _request(db: Database) -> bool:
    """One request the way the server makes it: True when it reached the database."""
    try:
        async with db.connection() as conn:
            await conn.execute("SELECT 1")
    except StoreUnavailable:
        return False
    return True


async def _until(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("pool_min", [1, 5])
def test_no_request_waits_for_the_pool_while_the_breaker_is_open(pool_min):
    pg = PostgresServer()
    url = pg.create_database("breaker")
    settings = load_settings(
        {
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_DB_POOL_MIN": str(pool_min),
            "DATASTORAGE_DB_POOL_TIMEOUT": "2",
        }
    )
    recovered: list[bool] = []

    async def main() -> None:
        db = Database(settings, on_recovered=lambda: recovered.append(True))
        await db.open()
        try:
            await _until(lambda: db.pool.get_stats().get("pool_available", 0) >= pool_min, 20)
            assert await _request(db)
            pg.stop()  # immediate: the idle connections in the pool are now dead
            assert not await _request(db)  # a dead connection: this one opens the breaker
            assert db.breaker.is_open
            timeouts_before = _pool_timeouts()
            # Keep requesting for several probe intervals: a request-side probe that waits
            # the probe timeout would make the next request due for a probe, and so on.
            requests = 0
            end = time.monotonic() + 4 * PROBE_INTERVAL
            while time.monotonic() < end:
                assert not await _request(db)
                requests += 1
                await asyncio.sleep(0.01)
            assert requests >= 20, requests
            assert _pool_timeouts() == timeouts_before
            assert not recovered
            pg.start()
            await _until(lambda: not db.breaker.is_open, 30)
            assert await _request(db)
            assert recovered == [True]
        finally:
            await db.close()

    try:
        asyncio.run(main())
    finally:
        pg.destroy()
