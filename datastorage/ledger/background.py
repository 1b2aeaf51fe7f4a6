"""The loop the log's background workers (sequencer, signer, publisher) share: run a step, then
wait `interval` seconds or until stopped; a failing step is logged and tried again later, since
a database or object-store outage must not end the worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

log = logging.getLogger(__name__)


class StopWorker(Exception):
    """Raised by a step that must not run again (the error is already logged)."""


async def repeat(
    stop: asyncio.Event, interval: float, step: Callable[[], Awaitable[bool]], name: str
) -> None:
    """Run `step` until `stop` is set; a step returning True runs again at once (more work)."""
    while not stop.is_set():
        again = False
        try:
            again = await step()
        except StopWorker:
            return
        except Exception:  # noqa: BLE001 — logged; the next round retries
            log.warning("log %s: round failed; retrying", name, exc_info=True)
        if not again:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
