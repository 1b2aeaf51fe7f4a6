"""`datastorage dlq status|drain`: the DLQ seen and drained from the command line."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from datastorage.config import ConfigError, Settings


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def dlq_command(settings: Settings, action: str, print_table: Callable) -> int:
    from datastorage.durability import open_backend

    if not settings.dlq_url:
        raise ConfigError("DATASTORAGE_DLQ_URL: required for `datastorage dlq`")
    dlq = open_backend(settings, f"cli-{socket.gethostname()}-{os.getpid()}")
    await dlq.open()
    try:
        if action == "drain":
            replayed = await _drain(settings, dlq)
            print(f"replayed {replayed} record(s)")
        stats = await dlq.stats()
    finally:
        await dlq.close()
    print_table(
        ["stream", "depth", "oldest", "dead-lettered"],
        [(s.stream, s.depth, _age(s.oldest_age_seconds), s.dead_lettered) for s in stats],
    )
    return 0


async def _drain(settings: Settings, dlq) -> int:
    from datastorage.audit import AuditWriter
    from datastorage.dlq.drain import DrainWorker
    from datastorage.store.errors import is_transient
    from datastorage.store.pool import Database

    db = Database(
        settings.replace(db_pool_min=1, db_pool_max=2), application_name="datastorage-dlq-drain"
    )
    await db.open()
    try:
        await db.pool.wait(timeout=settings.db_pool_timeout)
        worker = DrainWorker(
            dlq,
            AuditWriter(settings, db).replay,
            is_transient,
            batch_size=settings.dlq_batch_size,
            max_attempts=settings.dlq_max_attempts,
        )
        return await worker.drain_once()
    finally:
        await db.close()
