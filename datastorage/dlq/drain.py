"""The replay worker: moves DLQ entries into PostgreSQL while the server serves
(docs/operations.md).

`DrainWorker.run()` runs inside every API server process. Per kind it claims batches oldest
first, hands the records to the injected `replay` callable (one idempotent transaction keyed by
record id) and acks only after it returned. While the database is down (`is_transient`) it
gives the batch back without counting an attempt and backs off exponentially. A batch that fails
for a permanent reason is retried record by record so one poison record cannot block the rest;
a record that keeps failing is retried after a growing delay and dead-lettered, with its error,
after `max_attempts`. Delivery is at-least-once; the idempotent replay makes that exactly-once
in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from datastorage.dlq.queue import KINDS, DeadLetterQueue, DLQError, Entry, check_kind
from datastorage.metrics import (
    DLQ_BYTES,
    DLQ_DEAD_LETTERED,
    DLQ_DEPTH,
    DLQ_FREE_BYTES,
    DLQ_OLDEST_AGE,
    DLQ_REPLAYED,
)

Replay = Callable[[str, list[dict]], Awaitable[None]]

# Depth/age gauges are refreshed from stats() at most this often.
GAUGE_INTERVAL = 1.0


class Backoff:
    """Delays initial, 2·initial, 4·initial … capped at `maximum`; `reset()` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay = min(self._next, self.maximum)
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def retry_delay(attempts: int, initial: float, maximum: float) -> float:
    """Delay before retrying a record that has failed permanently `attempts` times (≥ 1)."""
    return min(initial * 2 ** max(0, attempts - 1), maximum)


def describe_error(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class DrainWorker:
    """Replays one DLQ into the database until `stop()`."""

    def __init__(
        self,
        dlq: DeadLetterQueue,
        replay: Replay,
        is_transient: Callable[[BaseException], bool],
        *,
        batch_size: int = 1000,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        idle_interval: float = 0.5,
        stop_grace: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.dlq = dlq
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.idle_interval = idle_interval
        self.stop_grace = stop_grace  # how long stop() lets an in-flight replay finish
        self.backoff = Backoff(backoff_initial, backoff_max)
        self.last_error: BaseException | None = None  # why the last drain pass paused
        self._replay = replay
        self._is_transient = is_transient
        self._log = logger or logging.getLogger(__name__)
        self._wake = asyncio.Event()
        self._resume = asyncio.Event()  # the database is back: end a backoff pause early
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._gauges_at = float("-inf")

    # -- public ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Drain until `stop()`; never raises (failures are logged and backed off)."""
        self._task = asyncio.current_task()
        try:
            while not self._stopping.is_set():
                await self._run_pass()
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise  # cancelled by someone else: let them see it
        finally:
            self._task = None

    def notify(self) -> None:
        """Something was appended: end the idle wait now rather than at the next poll."""
        self._wake.set()

    def database_recovered(self) -> None:
        """The database answers again: end a backoff pause now rather than after it."""
        self._resume.set()

    async def drain_once(self, kind: str | None = None) -> int:
        """Replay until the queue is empty or the database fails transiently.

        Returns the number of records replayed; `last_error` tells why it stopped early.
        DLQ failures (`DLQError`) propagate.
        """
        if kind is not None:
            check_kind(kind)
        return await self._drain(KINDS if kind is None else (kind,))

    async def stop(self) -> None:
        """Stop promptly; claimed but unreplayed entries are released without an attempt."""
        self._stopping.set()
        self._wake.set()
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        done, _ = await asyncio.wait({task}, timeout=self.stop_grace)
        if not done:
            task.cancel()
            await asyncio.wait({task})

    # -- the loop -------------------------------------------------------------------------

    async def _run_pass(self) -> None:
        self._wake.clear()  # a notify() from now on triggers another pass
        try:
            await self._drain(KINDS)
        except DLQError as exc:
            self.last_error = exc  # DLQ backend down: logged below like a database outage
        except Exception as exc:
            self.last_error = exc
            self._log.exception("DLQ drain pass failed unexpectedly")
        if self.last_error is None:
            self.backoff.reset()
            await self._pause(self.idle_interval, self._wake)
            return
        delay = self.backoff.next()
        self._log.warning("DLQ replay paused for %.1fs: %s", delay, describe_error(self.last_error))
        self._resume.clear()  # appends do not bring the database back; a recovery does
        await self._pause(delay, self._resume)

    async def _pause(self, seconds: float, until: asyncio.Event) -> None:
        """Wait `seconds` or until `until` is set, keeping the gauges fresh meanwhile."""
        deadline = time.monotonic() + seconds
        while not until.is_set() and not self._stopping.is_set():
            await self._refresh_gauges()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), min(remaining, GAUGE_INTERVAL))

    async def _refresh_gauges(self) -> None:
        if time.monotonic() - self._gauges_at < GAUGE_INTERVAL:
            return
        self._gauges_at = time.monotonic()
        try:
            stats = await self.dlq.stats()
        except DLQError as exc:
            self._log.debug("DLQ stats unavailable: %s", exc)
            return
        except Exception:
            self._log.exception("DLQ stats failed unexpectedly")  # gauges only: keep draining
            return
        for stream in stats:
            DLQ_DEPTH.labels(stream=stream.stream).set(stream.depth)
            DLQ_OLDEST_AGE.labels(stream=stream.stream).set(stream.oldest_age_seconds or 0.0)
            DLQ_BYTES.labels(stream=stream.stream).set(stream.bytes)
        if stats:
            free = stats[0].free_bytes
            DLQ_FREE_BYTES.set(float("nan") if free is None else free)

    # -- draining -------------------------------------------------------------------------

    async def _drain(self, kinds: tuple[str, ...]) -> int:
        """One batch per kind in turn (so no kind starves), until all are empty."""
        self.last_error = None
        replayed = 0
        active = list(kinds)
        while active and not self._stopping.is_set():
            for kind in list(active):
                if self._stopping.is_set():
                    break
                await self._refresh_gauges()  # stays fresh through a long catch-up too
                entries = await self.dlq.claim(kind, self.batch_size)
                if not entries:
                    active.remove(kind)
                    continue
                count, transient = await self._replay_entries(kind, entries)
                replayed += count
                if transient is not None:
                    self.last_error = transient
                    return replayed
        return replayed

    async def _replay_entries(
        self, kind: str, entries: list[Entry]
    ) -> tuple[int, BaseException | None]:
        """Replay a claimed batch; returns (replayed, transient error or None)."""
        held = {entry.id: entry for entry in entries}  # neither acked nor handed back yet
        try:
            return await self._replay_held(kind, entries, held)
        finally:
            # Transient failure, stop() or cancellation: give the rest back, no attempt counted.
            if held:
                await self._release_quietly(kind, list(held.values()))

    async def _replay_held(
        self, kind: str, entries: list[Entry], held: dict[str, Entry]
    ) -> tuple[int, BaseException | None]:
        try:
            await self._replay(kind, [entry.record for entry in entries])
        except Exception as exc:
            if self._transient(exc):
                return 0, exc
            if len(entries) == 1:
                await self._record_failure(kind, entries[0], exc, held)
                return 0, None
            return await self._replay_singly(kind, entries, held)
        await self._ack(kind, entries, held)
        return len(entries), None

    async def _replay_singly(
        self, kind: str, entries: list[Entry], held: dict[str, Entry]
    ) -> tuple[int, BaseException | None]:
        """After a permanent batch failure: find the poison records, replay the others."""
        replayed: list[Entry] = []
        transient: BaseException | None = None
        for entry in entries:
            if self._stopping.is_set():
                break
            try:
                await self._replay(kind, [entry.record])
            except Exception as exc:
                if self._transient(exc):
                    transient = exc
                    break
                await self._record_failure(kind, entry, exc, held)
            else:
                replayed.append(entry)
        await self._ack(kind, replayed, held)
        return len(replayed), transient

    async def _ack(self, kind: str, entries: list[Entry], held: dict[str, Entry]) -> None:
        if not entries:
            return
        await self.dlq.ack(kind, [entry.id for entry in entries])
        for entry in entries:
            held.pop(entry.id, None)
        DLQ_REPLAYED.labels(stream=kind).inc(len(entries))
        self.backoff.reset()

    async def _record_failure(
        self, kind: str, entry: Entry, exc: Exception, held: dict[str, Entry]
    ) -> None:
        """Count a permanent failure: retry later, or dead-letter after max_attempts."""
        attempts = entry.attempts + 1
        error = describe_error(exc)
        if attempts >= self.max_attempts:
            await self.dlq.dead_letter(kind, replace(entry, attempts=attempts), error)
            DLQ_DEAD_LETTERED.labels(stream=kind).inc()
            self._log.error(
                "DLQ %s entry %s dead-lettered after %d attempts: %s",
                kind,
                entry.id,
                attempts,
                error,
            )
        else:
            delay = retry_delay(attempts, self.backoff_initial, self.backoff_max)
            await self.dlq.release(kind, [entry], error, retry_after=delay)
            self._log.warning(
                "DLQ %s entry %s failed (attempt %d of %d), retry in %.1fs: %s",
                kind,
                entry.id,
                attempts,
                self.max_attempts,
                delay,
                error,
            )
        held.pop(entry.id, None)

    async def _release_quietly(self, kind: str, entries: list[Entry]) -> None:
        try:
            await self.dlq.release(kind, entries, None)
        except DLQError as exc:
            # They stay claimed by us and are reclaimed after claim_idle; nothing is lost.
            self._log.warning("DLQ %s: could not release %d entries: %s", kind, len(entries), exc)

    def _transient(self, exc: BaseException) -> bool:
        try:
            return bool(self._is_transient(exc))
        except Exception:
            # A broken classifier must not stall the queue; attempts and dead letters keep
            # the record safe and visible.
            self._log.exception("is_transient failed; treating the error as permanent")
            return False
