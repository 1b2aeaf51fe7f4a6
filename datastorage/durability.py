"""Wires the DLQ and its drain worker into a server process (SPEC §5).

Each server process opens the configured DLQ backend and runs one drain worker while it
serves; shutdown always stops the worker and closes the backend, even after a timeout.
"""

from __future__ import annotations

import asyncio
import logging

from datastorage.http.context import AppContext
from datastorage.store.errors import is_transient

log = logging.getLogger(__name__)


def open_backend(ctx_settings, consumer: str):
    from datastorage.dlq.queue import open_dlq

    return open_dlq(
        ctx_settings.dlq_url,
        capacity=ctx_settings.dlq_capacity,
        consumer=consumer,
        claim_idle=ctx_settings.dlq_claim_idle,
    )


async def start(ctx: AppContext, consumer: str) -> None:
    settings = ctx.settings
    if not settings.dlq_url:
        log.warning("no DLQ configured: writes answer 503 while the database is unavailable")
        return
    from datastorage.dlq.drain import DrainWorker

    dlq = open_backend(settings, consumer)
    try:
        await dlq.open()
    except Exception as exc:  # the server still serves; health reports the DLQ down
        log.error("DLQ %s could not be opened at start-up: %s", dlq.name, exc)
    drain = DrainWorker(
        dlq,
        ctx.writer.replay,
        is_transient,
        batch_size=settings.dlq_batch_size,
        max_attempts=settings.dlq_max_attempts,
    )
    ctx.dlq = dlq
    ctx.drain = drain
    ctx.db.on_recovered.append(drain.database_recovered)
    ctx.writer.dlq = dlq
    ctx.writer.drain = drain
    # Not in ctx.background: that set is work a shutdown waits for, the worker runs until
    # stop() below ends it.
    ctx.drain_task = asyncio.get_running_loop().create_task(drain.run())


async def stop(ctx: AppContext) -> None:
    if ctx.drain is not None:
        try:
            await asyncio.wait_for(ctx.drain.stop(), 10)
        except Exception as exc:
            log.error("drain worker did not stop cleanly: %s", exc)
    if ctx.dlq is not None:
        try:
            await ctx.dlq.close()
        except Exception as exc:
            log.error("DLQ close failed: %s", exc)
