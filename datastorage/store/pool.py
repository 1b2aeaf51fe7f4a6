"""The connection pool: psycopg-pool's AsyncConnectionPool with metrics and UTC sessions.

`Database.connection()` is the only way the server borrows a connection. It measures the wait,
counts timeouts, and turns "no connection in time" and "server unreachable" into
`StoreUnavailable`, which the write path sends to the DLQ and the read path answers with 503.

While PostgreSQL is unreachable the pool would make every request wait the full pool timeout
(5 s) before giving up. A small circuit breaker avoids that: after a connection failure,
requests fail at once (and go to the DLQ) except one probe per second, which waits at most
`PROBE_TIMEOUT`; the first connection that works closes the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from datastorage.config import Settings
from datastorage.metrics import POOL_CONNECTIONS, POOL_TIMEOUTS, POOL_WAIT, POOL_WAITING
from datastorage.store.errors import StoreUnavailable, is_transient

log = logging.getLogger(__name__)
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 1.0


async def _configure(conn: AsyncConnection) -> None:
    # jsonb keeps numbers exact: a 1e300 sent in event_data comes back as a 301-digit integer.
    # orjson reads an integer beyond 64 bits as a float (what the client sent), which the
    # response codec can write; the stdlib would give an int that no response could carry.
    set_json_loads(orjson.loads, conn)


class Database:
    def __init__(
        self,
        settings: Settings,
        *,
        application_name: str = "datastorage",
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        options = (
            f"-c TimeZone=UTC -c statement_timeout={int(settings.db_statement_timeout * 1000)}"
        )
        self.pool = AsyncConnectionPool(
            settings.require_database_url(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            timeout=settings.db_pool_timeout,
            open=False,
            # Plans of the audit queries depend on the parameter values (see TOOLING §10):
            # prepare only where a statement opts in with prepare=True.
            kwargs={
                "autocommit": True,
                "prepare_threshold": None,
                "application_name": application_name,
                "options": options,
                "connect_timeout": max(1, int(settings.db_pool_timeout)),
            },
            configure=_configure,
            reconnect_timeout=0,  # keep trying for ever while the database is down
            name="datastorage",
        )
        self._waiting = 0
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._last_error = ""
        self._on_recovered = on_recovered  # run when the breaker closes again
        self._checking: asyncio.Task | None = None
        self._prober: asyncio.Task | None = None

    async def open(self) -> None:
        """Open without waiting: the server starts (degraded) even while PostgreSQL is down."""
        await self.pool.open(wait=False)

    async def wait_until_open(self, timeout: float) -> None:
        """Wait until the pool holds its minimum connections (raises PoolTimeout)."""
        await self.pool.wait(timeout=timeout)

    async def close(self) -> None:
        for task in (self._prober, self._checking):
            if task is not None:
                task.cancel()
        await self.pool.close(timeout=5)

    def _open_breaker(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._next_probe = self._down_since + PROBE_INTERVAL
            log.warning(
                "database unreachable (%s): failing fast, probing every %.0f s",
                reason,
                PROBE_INTERVAL,
            )
        self._last_error = reason
        # Idle connections to a server that went away are all dead: have the pool test and
        # replace them now, or every later checkout would find another dead one.
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self.pool.check())
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        """Find out that the database is back even when no request comes, so the DLQ drain
        resumes within a second of the recovery rather than after its backoff."""
        while self._down_since is not None:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with self.pool.connection(timeout=PROBE_TIMEOUT) as conn:
                    await conn.execute("SELECT 1")
            except Exception:  # noqa: BLE001 — still down; try again
                continue
            self._close_breaker()

    def _close_breaker(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            log.warning("database reachable again")
            if self._on_recovered is not None:
                self._on_recovered()

    def _acquire_timeout(self) -> float | None:
        """None while the breaker is closed; the probe timeout when this request may probe."""
        if self._down_since is None:
            return None
        now = time.monotonic()
        if now < self._next_probe:
            raise StoreUnavailable(f"database unavailable: {self._last_error}")
        self._next_probe = now + PROBE_INTERVAL
        return min(PROBE_TIMEOUT, self.settings.db_pool_timeout)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        timeout = self._acquire_timeout()
        started = time.perf_counter()
        self._waiting += 1
        POOL_WAITING.set(self._waiting)
        acquired = False
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                acquired = True
                self._close_breaker()
                self._waiting -= 1
                POOL_WAITING.set(self._waiting)
                POOL_WAIT.observe(time.perf_counter() - started)
                yield conn
        except PoolTimeout as exc:
            POOL_TIMEOUTS.inc()
            if self.pool.get_stats().get("pool_size", 0) < max(1, self.settings.db_pool_min):
                self._open_breaker("cannot connect")
            raise StoreUnavailable(
                f"no database connection within {timeout or self.settings.db_pool_timeout} s"
            ) from exc
        except psycopg.Error as exc:
            if not is_transient(exc):
                raise
            sqlstate = getattr(exc, "sqlstate", None)
            if sqlstate is None or sqlstate.startswith(("08", "57P")):  # the server is gone
                self._open_breaker(str(exc).strip().splitlines()[0] if str(exc) else "error")
            raise StoreUnavailable(f"database unavailable: {exc}".strip()) from exc
        finally:
            if not acquired:
                self._waiting -= 1
            # Fresh at every release, not only when this process answers a scrape: with
            # several workers the scrape merges every worker's last values.
            self.update_metrics()

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.execute("SELECT 1")

    def update_metrics(self) -> None:
        stats = self.pool.get_stats()
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        POOL_CONNECTIONS.labels("idle").set(idle)
        POOL_CONNECTIONS.labels("in_use").set(max(size - idle, 0))
        POOL_WAITING.set(self._waiting)
