"""The connection pool: psycopg-pool's AsyncConnectionPool with metrics and UTC sessions.

`Database.connection()` is the only way the server borrows a connection. It measures the wait,
counts timeouts, and turns "no connection in time" and "server unreachable" into
`StoreUnavailable`, which the write path sends to the DLQ and the read path answers with 503.
While PostgreSQL is unreachable the circuit breaker (`store.breaker`) makes requests fail at
once instead of each waiting the pool timeout.
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
from datastorage.store.breaker import CircuitBreaker
from datastorage.store.connect import session_kwargs, set_session_async, transaction_pooled
from datastorage.store.errors import StoreUnavailable, is_server_gone, is_transient

log = logging.getLogger(__name__)
PROBE_INTERVAL = 1.0
# psycopg prepares a statement run this many times on a connection: never, in practice.
PREPARE_ONLY_WHEN_ASKED = 2**31 - 1
PROBE_TIMEOUT = 1.0


class Database:
    def __init__(
        self,
        settings: Settings,
        *,
        application_name: str = "datastorage",
        on_recovered: Callable[[], None] | None = None,
        read_replica_url: str | None = None,
    ) -> None:
        """`on_recovered` runs when the database is reachable again after an outage.
        `read_replica_url`: this pool is the read replica's, not the configured primary's; it
        publishes no pool metrics (they describe the primary's pool) and logs as the replica."""
        self.settings = settings
        self.is_primary = read_replica_url is None
        self.pool = AsyncConnectionPool(
            read_replica_url or settings.require_database_url(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            timeout=settings.db_pool_timeout,
            open=False,
            # Server-side prepared statements only where a statement asks (`prepare=True`: the
            # hot INSERTs, whose parse and plan would cost PostgreSQL more than their execution
            # on a small group): plans of the audit queries depend on the parameter values (a
            # generic plan is slower). Through PgBouncer's transaction mode `session_kwargs`
            # sets None, which turns every prepare off (psycopg then ignores `prepare=True`).
            kwargs={
                "prepare_threshold": PREPARE_ONLY_WHEN_ASKED,
                **session_kwargs(settings, application_name),
            },
            configure=self._configure,
            reconnect_timeout=0,  # a failed reconnection gives up at once; requests regrow
            name="datastorage" if read_replica_url is None else "datastorage-replica",
        )
        self._waiting = 0
        self._checking: asyncio.Task | None = None
        self.breaker = CircuitBreaker(
            self._probe,
            interval=PROBE_INTERVAL,
            on_open=self._check_idle_connections,
            on_recovered=on_recovered,
            subject="database" if read_replica_url is None else "read replica",
        )

    async def _configure(self, conn: AsyncConnection) -> None:
        # jsonb keeps numbers exact: a 1e300 sent in event_data comes back as a 301-digit
        # integer. orjson reads an integer beyond 64 bits as a float (what the client sent),
        # which the response codec can write; the stdlib would give an int no response carries.
        set_json_loads(orjson.loads, conn)
        await set_session_async(self.settings, conn)

    async def open(self) -> None:
        """Open without waiting: the server starts (degraded) even while PostgreSQL is down."""
        if (
            self.is_primary
            and transaction_pooled(self.settings)
            and self.settings.db_statement_timeout
        ):
            log.info(
                "through PgBouncer the statement timeout (%s s) is not set per session: set it "
                "on the database role or as PgBouncer's query_timeout",
                self.settings.db_statement_timeout,
            )
        await self.pool.open(wait=False)

    async def wait_until_open(self, timeout: float) -> None:
        """Wait until the pool holds its minimum connections (raises PoolTimeout)."""
        await self.pool.wait(timeout=timeout)

    async def close(self) -> None:
        self.breaker.stop()
        if self._checking is not None:
            self._checking.cancel()
        await self.pool.close(timeout=5)

    async def _probe(self) -> None:
        async with self.pool.connection(timeout=PROBE_TIMEOUT) as conn:
            await conn.execute("SELECT 1")

    def _check_idle_connections(self) -> None:
        # Idle connections to a server that went away are all dead: have the pool test and
        # replace them now, or every later checkout would find another dead one.
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self.pool.check())

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        self.breaker.check()
        started = time.perf_counter()
        self._waiting += 1
        if self.is_primary:
            POOL_WAITING.set(self._waiting)
        acquired = False
        try:
            async with self.pool.connection() as conn:
                acquired = True
                self._waiting -= 1
                if self.is_primary:
                    POOL_WAITING.set(self._waiting)
                    POOL_WAIT.observe(time.perf_counter() - started)
                yield conn
        except PoolTimeout as exc:
            if self.is_primary:
                POOL_TIMEOUTS.inc()
            if self.pool.get_stats().get("pool_size", 0) < max(1, self.settings.db_pool_min):
                self.breaker.trip("cannot connect")
            raise StoreUnavailable(
                f"no database connection within {self.settings.db_pool_timeout} s"
            ) from exc
        except psycopg.Error as exc:
            if not is_transient(exc):
                raise
            if is_server_gone(exc):
                self.breaker.trip(str(exc).strip().splitlines()[0] if str(exc) else "error")
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
        if not self.is_primary:
            return
        stats = self.pool.get_stats()
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        POOL_CONNECTIONS.labels("idle").set(idle)
        POOL_CONNECTIONS.labels("in_use").set(max(size - idle, 0))
        POOL_WAITING.set(self._waiting)
