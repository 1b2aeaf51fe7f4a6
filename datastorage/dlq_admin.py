"""`datastorage dlq status|drain`: the DLQ seen and drained from the command line."""

from __future__ import annotations

from collections.abc import Callable

from datastorage.config import ConfigError, Settings
from datastorage.runtime import Runtime, consumer_name, dlq_backend


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def dlq_command(settings: Settings, action: str, print_table: Callable) -> int:
    if not settings.dlq_url:
        raise ConfigError("DATASTORAGE_DLQ_URL: required for `datastorage dlq`")
    if action == "drain":
        replayed = await _drain(settings)
        print(f"replayed {replayed} record(s)")
    # Status needs the DLQ only (no database URL required).
    dlq = dlq_backend(settings, consumer_name("cli-"))
    await dlq.open()
    try:
        stats = await dlq.stats()
    finally:
        await dlq.close()
    print_table(
        ["stream", "depth", "bytes", "oldest", "dead-lettered"],
        [(s.stream, s.depth, s.bytes, _age(s.oldest_age_seconds), s.dead_lettered) for s in stats],
    )
    free = stats[0].free_bytes if stats else None
    print(f"free: {'no limit' if free is None else f'{free} bytes'} before appends are refused")
    return 0


async def _drain(settings: Settings) -> int:
    """One pass over the DLQ with a small pool of its own, here rather than in the background."""
    async with Runtime(
        settings.replace(db_pool_min=1, db_pool_max=2),
        application_name="datastorage-dlq-drain",
        consumer=consumer_name("cli-"),
        run_drain=False,
    ) as runtime:
        drain = runtime.drain
        assert drain is not None  # dlq_url is set
        await runtime.db.wait_until_open(settings.db_pool_timeout)
        return await drain.drain_once()
