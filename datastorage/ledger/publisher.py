"""Publication of signed checkpoints outside the database (docs/tamper-evident-log.md).

Every checkpoint goes to the object store as `checkpoints/<size>`, and the latest one also as
`checkpoint`, byte for byte as signed. Which checkpoints have been published is recorded in the
database (`log_checkpoints.published_at`), so a restart, another replica or a target that was down
catches up in order. A failing target is counted (`on_failure`) and retried next round; it never
touches the write path. One publisher runs at a time (an advisory lock held while it uploads, so
`checkpoint` never goes back to an older tree).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from datastorage.ledger.background import repeat
from datastorage.ledger.sequencer import ConnectionSource
from datastorage.objectstore import ObjectStore
from datastorage.store import ledger as store

log = logging.getLogger(__name__)
LATEST = "checkpoint"
BATCH = 100


def history_name(size: int) -> str:
    return f"checkpoints/{size}"


class Publisher:
    def __init__(
        self,
        connect: ConnectionSource,
        target: ObjectStore,
        *,
        interval: float = 2.0,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self.connect = connect
        self.target = target
        self.interval = interval
        self.on_failure = on_failure

    async def publish_once(self) -> int:
        """Publish up to BATCH unpublished checkpoints; returns how many (-1: another publisher
        holds the lock). A target failure is logged and counted, and published next round."""
        async with self.connect() as conn, conn.transaction():
            if not await store.try_lock(conn, store.PUBLISHER_LOCK):
                return -1
            pending = await store.unpublished_checkpoints(conn, BATCH)
            if not pending:
                return 0
            try:
                for item in pending:
                    await asyncio.to_thread(
                        self.target.put, history_name(item.size), item.note.encode()
                    )
                latest = await store.latest_checkpoint(conn)
                if latest is not None and latest.size == pending[-1].size:
                    await asyncio.to_thread(self.target.put, LATEST, latest.note.encode())
            except Exception as exc:
                log.warning("log: publishing checkpoints to %s failed: %s", self.target.url, exc)
                if self.on_failure:
                    self.on_failure(exc)
                return 0
            await store.mark_published(conn, [item.size for item in pending])
            return len(pending)

    async def _step(self) -> bool:
        return await self.publish_once() >= BATCH

    async def run(self, stop: asyncio.Event) -> None:
        await repeat(stop, self.interval, self._step, "publisher")
