"""The circuit breaker in front of the connection pool: fail fast while PostgreSQL is down.

While the database is unreachable the pool would make every request wait the full pool timeout
before giving up. Once a connection failure opens the breaker, requests fail at once with
`StoreUnavailable` (the write path queues them in the DLQ) and one background task probes the
database every `interval` seconds; the first probe that works closes the breaker and runs the
`on_recovered` callback (the DLQ drain resumes at once rather than after its backoff).

Requests never probe themselves. A request-side probe that waits as long as the probe interval
makes the next request due for a probe as soon as it ends, so a steady stream of requests
turned into a stream of probes, each waiting the probe timeout (the slow-outage bug).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from datastorage.store.errors import StoreUnavailable

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        *,
        interval: float,
        on_open: Callable[[], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        subject: str = "database",
    ) -> None:
        """`probe` raises while the database is unusable; `on_open` runs each time a failure
        is reported (the pool re-checks its idle connections). `subject` names the server in
        the log (the database, or the read replica)."""
        self._subject = subject
        self._probe = probe
        self._interval = interval
        self._on_open = on_open
        self._on_recovered = on_recovered
        self._reason: str | None = None
        self._prober: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._reason is not None

    def check(self) -> None:
        """Raise StoreUnavailable at once while the breaker is open."""
        if self._reason is not None:
            raise StoreUnavailable(f"database unavailable: {self._reason}")

    def trip(self, reason: str) -> None:
        """A request found the database unreachable: open (or keep open) the breaker."""
        if self._reason is None:
            log.warning(
                "%s unreachable (%s): failing fast, probing every %.0f s",
                self._subject,
                reason,
                self._interval,
            )
        self._reason = reason
        if self._on_open is not None:
            self._on_open()
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        while self._reason is not None:
            await asyncio.sleep(self._interval)
            try:
                await self._probe()
            except Exception:  # noqa: BLE001 — still down; try again
                continue
            self._close()

    def _close(self) -> None:
        if self._reason is not None:
            self._reason = None
            log.warning("%s reachable again", self._subject)
            if self._on_recovered is not None:
                self._on_recovered()

    def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
