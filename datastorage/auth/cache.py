"""Per-process caches of review results: TTL + LRU + single-flight (docs/auth.md).

One `ReviewCache` holds one kind of review (token or access). A lookup that misses starts the
review in its own task; identical lookups arriving while it runs wait for that same task
instead of calling the API server again (single-flight), and a caller that gives up (client
disconnect) does not cancel the others. The loader returns the value with its TTL, so the
caller decides per result how long it lives (allow 5 min, deny 30 s, a token no longer than its
`exp`). A loader that raises caches nothing: the next lookup calls the API server again.

Expiry uses a monotonic clock that tests may replace. Hit/miss counting: a miss is a lookup that
made an API call; a lookup that joined another one's call counts as a hit.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from datastorage.metrics import AUTH_CACHE

MAX_ENTRIES = 10_000

Value = TypeVar("Value")
Loader = Callable[[], Awaitable[tuple[Value, float]]]


class ReviewCache(Generic[Value]):
    def __init__(
        self,
        kind: str,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[Value, float]] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Task[Value]] = {}
        self._hit = AUTH_CACHE.labels(kind, "hit")
        self._miss = AUTH_CACHE.labels(kind, "miss")

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> Value | None:
        """The live cached value, or None; refreshes its LRU position, counts nothing."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if self.clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def get(self, key: Hashable, load: Loader[Value]) -> Value:
        value = self.peek(key)
        if value is not None:
            self._hit.inc()
            return value
        task = self._inflight.get(key)
        if task is None:
            self._miss.inc()
            task = asyncio.ensure_future(self._load(key, load))
            # Retrieve the exception even when every waiter gave up, so none is left unobserved.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._inflight[key] = task
        else:
            self._hit.inc()
        return await asyncio.shield(task)

    async def _load(self, key: Hashable, load: Loader[Value]) -> Value:
        try:
            value, ttl = await load()
            if ttl > 0:
                self._store(key, value, ttl)
            return value
        finally:
            self._inflight.pop(key, None)

    def _store(self, key: Hashable, value: Value, ttl: float) -> None:
        self._entries[key] = (value, self.clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
