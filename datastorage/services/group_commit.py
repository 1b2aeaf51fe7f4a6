"""Group commit: concurrent single-event writes share one statement and one commit.

Each request still gets its answer only after its own row is durably committed (or its own
error). While a flush runs, new requests queue up; the next flush takes them all, so under load
a commit carries many events and PostgreSQL spends a fraction of the per-event CPU, while an
idle server flushes a lone request at once (no added wait). At most `max_flushers` flushes run
at a time, each on its own pooled connection.

Failure handling, per group:
- the database is unavailable (transient) -> every request of the group gets that error and
  goes to the DLQ on its own;
- a month has no partition -> the months are created; a month that cannot be created fails
  only its own events (they go to the DLQ), the rest are retried;
- any other error of the statement -> the group is split into single-event flushes, so one
  bad row fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from datastorage.store import audit_writes
from datastorage.store.errors import is_missing_partition, is_transient
from datastorage.store.pool import Database

log = logging.getLogger(__name__)

Item = tuple[dict[str, Any], bool, asyncio.Future]


class GroupCommitter:
    def __init__(
        self,
        db: Database,
        *,
        lock_timeout: float,
        on_partition_created: Callable[[list[str]], None],
        leaf_hashes: bool,
        max_group: int = 500,
        max_flushers: int = 8,
    ) -> None:
        self.db = db
        self.lock_timeout = lock_timeout
        self.on_partition_created = on_partition_created
        self.leaf_hashes = leaf_hashes
        self.max_group = max_group
        self.max_flushers = max_flushers
        self._queue: list[Item] = []
        self._flushers = 0

    async def submit(self, event: dict[str, Any], client_id: bool) -> audit_writes.WriteResult:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((event, client_id, future))
        if self._flushers < self.max_flushers:
            self._flushers += 1
            asyncio.get_running_loop().create_task(self._flush_loop())
        return await future

    async def _flush_loop(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
                await self._flush(group)
        finally:
            self._flushers -= 1

    async def _flush(self, group: list[Item]) -> None:
        try:
            results = await self._store(group)
        except Exception as exc:
            if is_transient(exc) or len(group) == 1:
                _settle(group, [exc] * len(group))
                return
            log.warning("group of %d failed (%s); storing its events one by one", len(group), exc)
            for item in group:
                await self._flush([item])
            return
        _settle(group, results)

    async def _store(self, group: list[Item]) -> list[Any]:
        items = [(event, client_id) for event, client_id, _ in group]
        async with self.db.connection() as conn:
            try:
                return await audit_writes.insert_group(conn, items, leaf_hashes=self.leaf_hashes)
            except Exception as exc:
                if not is_missing_partition(exc):
                    raise
            created, failed = await audit_writes.ensure_partitions(
                conn, [event for event, _ in items], self.lock_timeout
            )
            if created:
                self.on_partition_created(created)
            results: list[Any] = [None] * len(items)
            retry = []
            for index, (event, _) in enumerate(items):
                failure = failed.get(audit_writes.month_of_event(event))
                if failure is not None:
                    results[index] = failure
                else:
                    retry.append(index)
            if retry:
                stored = await audit_writes.insert_group(
                    conn, [items[i] for i in retry], leaf_hashes=self.leaf_hashes
                )
                for index, result in zip(retry, stored, strict=True):
                    results[index] = result
            return results


def _settle(group: list[Item], results: list[Any]) -> None:
    for (_, _, future), result in zip(group, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
