"""The runtime: everything a process builds to serve, in one object with one lifecycle.

    async with Runtime(settings, consumer=...) as runtime:
        await runtime.audit.record(body)

Construction builds every part completely, in dependency order — the pool, the DLQ backend,
the durable writer, the drain worker, the services — and starts nothing. `open()` opens the
pool (without waiting for PostgreSQL: a process that starts during an outage serves degraded
and queues writes), creates this month's partitions when it can, starts the tamper-evident
log's workers (API server with a signing key: `ledger.workers`, one elected process across all
of them does the work; with several workers they run in a process of their own instead,
`run_log_process`), opens the DLQ and starts the drain worker; `close()` undoes that in
reverse order and always finishes, even after errors.
The API server (the app lifespan), the operator and the CLI commands all use this object.

Parts call back into the runtime, never into each other: the pool says "the database is
back" and the writer says "records were queued"; the runtime wakes the drain worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Coroutine
from typing import Any

from datastorage.config import Settings
from datastorage.dlq.drain import DrainWorker
from datastorage.dlq.factory import open_dlq
from datastorage.dlq.queue import DeadLetterQueue
from datastorage.ledger.note import Signer
from datastorage.ledger.workers import LogWorkers
from datastorage.objectstore import open_store
from datastorage.schemas import SchemaValidator
from datastorage.services.audit import AuditService
from datastorage.services.catalog import Catalog
from datastorage.services.durable import DurableWriter
from datastorage.services.export import Exporter
from datastorage.services.holds import LegalHolds
from datastorage.services.ledger import LogService, configured_signer
from datastorage.services.notifications import NotificationService
from datastorage.store import partitions
from datastorage.store.errors import is_transient
from datastorage.store.pool import Database
from datastorage.store.replica import ReadRouter

log = logging.getLogger(__name__)

# How long close() lets work spawned after a response (search audit events) and the drain
# worker finish before it cancels them.
BACKGROUND_GRACE = 5.0
DRAIN_STOP_TIMEOUT = 10.0
LOG_STOP_TIMEOUT = 10.0


def consumer_name(prefix: str = "") -> str:
    """A DLQ consumer name unique per process."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}"


def dlq_backend(settings: Settings, consumer: str) -> DeadLetterQueue:
    """The configured DLQ backend, built but not opened."""
    return open_dlq(
        settings.dlq_url,
        capacity=settings.dlq_capacity,
        consumer=consumer,
        claim_idle=settings.dlq_claim_idle,
        min_free_bytes=settings.dlq_min_free_bytes,
    )


class Runtime:
    """One process's database pool, DLQ, drain worker and services.

    `use_dlq`: open the configured DLQ (the operator runs without one: its writes answer
    "unavailable" rather than queue). `run_drain`: replay the DLQ in the background while
    open (the API server); without it the drain worker only runs when asked (`dlq drain`).
    `ensure_partitions`: create the current months at `open()` (the API server).
    `run_log`: with a signing key configured, take part in the tamper-evident log's election
    and, when elected, sequence, sign and publish (`ledger.workers`; the API server).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        application_name: str = "datastorage",
        consumer: str | None = None,
        use_dlq: bool = True,
        run_drain: bool = True,
        ensure_partitions: bool = False,
        run_log: bool = False,
    ) -> None:
        self.settings = settings
        self.run_drain = run_drain
        self.ensure_partitions = ensure_partitions
        self.db = Database(
            settings, application_name=application_name, on_recovered=self._database_recovered
        )
        # Queries and lists may read a streaming replica (docs/scaling.md); writes never do.
        replica_url = settings.read_database_url()
        self.replica_db: Database | None = None
        if replica_url:
            self.replica_db = Database(
                settings, application_name=application_name, read_replica_url=replica_url
            )
        self.reads = ReadRouter(settings, self.db, self.replica_db)
        self.dlq: DeadLetterQueue | None = None
        if use_dlq and settings.dlq_url:
            self.dlq = dlq_backend(settings, consumer or consumer_name())
        self.writer = DurableWriter(settings, self.db, self.dlq, on_queued=self._records_queued)
        self.drain: DrainWorker | None = None
        if self.dlq is not None:
            self.drain = DrainWorker(
                self.dlq,
                self.writer.replay,
                is_transient,
                batch_size=settings.dlq_batch_size,
                max_attempts=settings.dlq_max_attempts,
            )
        self.validator = SchemaValidator(settings)
        self.audit = AuditService(settings, self.db, self.writer, self.reads)
        self.notifications = NotificationService(settings, self.db, self.writer, self.reads)
        self.catalog = Catalog(
            self.db, self.audit, validator=self.validator, spawn=self.spawn, reads=self.reads
        )
        self.holds = LegalHolds(self.db, self.audit)
        # The log's signing key is read once, now, so a key that cannot be read stops the start
        # (fail closed) instead of running with the log silently off. Exports sign their
        # manifests with it; the log itself runs in the API server only.
        signer = configured_signer(settings)
        self.export = Exporter(settings, self.db, signer)
        self.log_signer = signer if run_log else None
        self.log_workers: LogWorkers | None = None
        self.log: LogService | None = None  # the log's reads, for the API
        if self.log_signer is not None:
            self.log = LogService.for_signer(settings, self.db, self.log_signer)
            if not settings.log_in_own_process:
                self.log_workers = _log_workers(settings, self.log_signer)
        self._background: set[asyncio.Task] = set()
        self._drain_task: asyncio.Task | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.db.open()
        await self.reads.open()
        if self.ensure_partitions:
            await self._ensure_partitions()
        if self.log_workers is not None:
            self.log_workers.start()
        if self.dlq is None:
            if self.run_drain:
                log.warning("no DLQ configured: writes answer 503 while the database is down")
            return
        try:
            await self.dlq.open()
        except Exception as exc:  # the process still serves; health reports the DLQ down
            log.error("DLQ %s could not be opened at start-up: %s", self.dlq.name, exc)
        if self.run_drain and self.drain is not None:
            self._drain_task = asyncio.get_running_loop().create_task(
                self.drain.run(), name="dlq drain"
            )

    async def close(self) -> None:
        # Work spawned after a response finishes before the DLQ it may need closes.
        if self._background:
            await asyncio.wait(set(self._background), timeout=BACKGROUND_GRACE)
        if self._drain_task is not None and self.drain is not None:
            try:
                await asyncio.wait_for(self.drain.stop(), DRAIN_STOP_TIMEOUT)
            except Exception as exc:
                log.error("drain worker did not stop cleanly: %s", exc)
        if self.dlq is not None:
            try:
                await self.dlq.close()
            except Exception as exc:
                log.error("DLQ close failed: %s", exc)
        for task in list(self._background):
            task.cancel()
        await self.reads.close()
        if self.log_workers is not None:
            await self.log_workers.stop(LOG_STOP_TIMEOUT)
        await self.db.close()

    async def __aenter__(self) -> Runtime:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- shared services ------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run work after a response; `close()` waits for it (bounded)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- callbacks of the parts -----------------------------------------------------------------

    def _database_recovered(self) -> None:
        if self.drain is not None:
            self.drain.database_recovered()

    def _records_queued(self) -> None:
        if self.drain is not None:
            self.drain.notify()

    async def _ensure_partitions(self) -> None:
        """Best effort: a database outage at start-up must not stop the process."""
        try:
            await partitions.ensure_window(self.settings)
        except Exception as exc:  # noqa: BLE001 — logged; maintenance retries later
            log.warning("could not ensure partitions at start-up: %s", exc)


def _log_workers(settings: Settings, signer: Signer) -> LogWorkers:
    target = None
    if settings.log_publish_url:
        target = open_store(settings.log_publish_url, s3_endpoint_url=settings.s3_endpoint_url)
    return LogWorkers(settings, signer, target)


async def run_log_process(settings: Settings, stop: asyncio.Event) -> None:
    """The log's own process (`Settings.log_in_own_process`, started by `serve` next to its
    workers): the election and, when elected, the sequencer, signer and publisher, until `stop`
    is set. The API workers then serve the log's endpoints but run none of its work, so no
    round holds a worker's interpreter lock while it answers requests."""
    signer = configured_signer(settings)
    if signer is None:
        raise RuntimeError("the log's process needs a signing key")
    workers = _log_workers(settings, signer)
    workers.start()
    try:
        await stop.wait()
    finally:
        await workers.stop(settings.shutdown_timeout)
