"""Read routing (docs/scaling.md): queries and lists run on a streaming read replica while its
replay lag stays within `read_max_lag`, otherwise (and whenever the replica fails) on the
primary. Writes never come here: they use the primary's `Database` directly.

How the lag is measured. `now() - pg_last_xact_replay_timestamp()` on the replica grows while
the primary is idle although the replica is complete, so it is not used. Instead a monitor
samples the primary's WAL position (`pg_current_wal_lsn()`) and then the replica's replayed
position (`pg_last_wal_replay_lsn()`) every interval, and keeps the recent primary samples.
The replica reflects the primary as of the newest sample it has replayed past, so its lag is
the age of that sample: about zero when it has replayed everything the primary had written
(idle or not), growing when replay is paused or the stream is cut while the primary writes.
Between measurements the lag is assumed to grow in real time (a stalled replica is caught at
the next read, not only at the next sample). A replica that cannot be measured counts as
infinitely late.

A read on the replica that fails as unavailable (down, restarting, a query cancelled by a
recovery conflict) is answered from the primary instead; clients never see the replica's
errors. `read(..., miss=...)` also asks the primary when the replica's answer is a miss (a GET
by id of an event the replica has not replayed yet).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from psycopg import AsyncConnection

from datastorage.config import Settings
from datastorage.metrics import DB_READS, REPLICA_LAG
from datastorage.store.errors import StoreUnavailable
from datastorage.store.pool import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often the monitor measures: often enough that the bound is kept to a fraction of it.
MIN_INTERVAL = 0.2
MAX_INTERVAL = 1.0

_PRIMARY_POSITION = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
_REPLICA_POSITION = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'::pg_lsn"  # NULL: not a standby
)


async def primary_position(conn: AsyncConnection) -> int:
    """The primary's current WAL position, as a byte offset."""
    row = await (await conn.execute(_PRIMARY_POSITION)).fetchone()
    return int(row[0])


async def replica_position(conn: AsyncConnection) -> int | None:
    """The replayed WAL position of a standby, or None when the server is not in recovery."""
    in_recovery, replayed = await (await conn.execute(_REPLICA_POSITION)).fetchone()
    if not in_recovery or replayed is None:
        return None
    return int(replayed)


def lag_from_samples(samples: deque[tuple[float, int]], replayed: int, now: float) -> float:
    """Seconds the replica is behind: the age of the newest primary sample it has replayed
    past (`samples` are (monotonic time, primary position), oldest first); +inf if none."""
    for taken, position in reversed(samples):
        if position <= replayed:
            return max(now - taken, 0.0)
    return math.inf


class ReadRouter:
    """Where reads run. Without a replica every read runs on the primary."""

    def __init__(self, settings: Settings, primary: Database, replica: Database | None) -> None:
        self.settings = settings
        self.primary = primary
        self.replica = replica
        self.max_lag = settings.read_max_lag
        self.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, self.max_lag / 5))
        self._samples: deque[tuple[float, int]] = deque()
        self._lag = math.inf
        self._measured_at = time.monotonic()
        self._monitor: asyncio.Task | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self.replica is None:
            return
        await self.replica.open()
        self._monitor = asyncio.get_running_loop().create_task(
            self._monitor_loop(), name="replica lag monitor"
        )

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        if self.replica is not None:
            await self.replica.close()

    # -- routing --------------------------------------------------------------------------------

    def replica_fresh(self) -> bool:
        """True while the replica's lag, grown by the time since it was measured, is within
        the bound."""
        if self.replica is None:
            return False
        return self._lag + (time.monotonic() - self._measured_at) <= self.max_lag

    async def read(
        self,
        run: Callable[[AsyncConnection], Awaitable[T]],
        *,
        miss: Callable[[T], bool] | None = None,
    ) -> T:
        """`run(conn)` on the replica when it is fresh, else (or when it fails, or when `miss`
        says its answer is a miss) on the primary."""
        if self.replica is not None and self.replica_fresh():
            try:
                async with self.replica.connection() as conn:
                    result = await run(conn)
            except StoreUnavailable as exc:
                log.info("read replica unavailable, reading from the primary: %s", exc)
                self._set_lag(math.inf)
            else:
                if miss is None or not miss(result):
                    DB_READS.labels("replica").inc()
                    return result
        DB_READS.labels("primary").inc()
        async with self.primary.connection() as conn:
            return await run(conn)

    # -- lag ------------------------------------------------------------------------------------

    def _set_lag(self, lag: float) -> None:
        self._lag = lag
        self._measured_at = time.monotonic()
        REPLICA_LAG.set(lag)

    async def measure(self) -> float:
        """One measurement (see the module docstring); returns the lag and keeps it."""
        assert self.replica is not None
        try:
            async with self.primary.connection() as conn:
                self._samples.append((time.monotonic(), await primary_position(conn)))
        except StoreUnavailable:
            pass  # the samples taken before still say how far the replica is
        keep_after = time.monotonic() - max(self.max_lag * 2, 10.0)
        while len(self._samples) > 1 and self._samples[0][0] < keep_after:
            self._samples.popleft()
        try:
            async with self.replica.connection() as conn:
                replayed = await replica_position(conn)
        except StoreUnavailable:
            lag = math.inf
        else:
            # A server not in recovery (the URL names a primary) is never behind itself.
            lag = (
                0.0
                if replayed is None
                else lag_from_samples(self._samples, replayed, time.monotonic())
            )
        self._set_lag(lag)
        return lag

    async def _monitor_loop(self) -> None:
        while True:
            try:
                await self.measure()
            except Exception as exc:  # noqa: BLE001 — a failed measurement: no replica reads
                log.warning("could not measure the read replica's lag: %s", exc)
                self._set_lag(math.inf)
            await asyncio.sleep(self.interval)
