"""The log's background work in a server process: one elected process runs the sequencer, the
checkpoint signer and the publisher; every process samples the log's gauges.

Election. Every API server process (each Hypercorn worker of every replica) that has a signing
key starts `LogWorkers`. Each holds one dedicated connection and tries, every
`ELECTION_INTERVAL` seconds, to take a session advisory lock (`store.ledger.LEADER_LOCK`). The
holder runs the three workers; the others stand by. PostgreSQL releases the lock when the
holder's session ends — a clean stop, a crash, kill -9 of the process, or a lost connection — and
a standby takes it at its next try. The holder checks its lock connection at every interval and
stops its workers when that connection fails (PostgreSQL restarted: the lock is gone). Each
worker round still takes its own transaction lock (`sequencer`, `signer`, `publisher`), so even
two processes that both believe they lead for a moment never sequence or sign at the same time.

CPU. Sequencing hashes the canonical bytes of every event and reads every row back: about a
millisecond of CPU per ten leaves. It must not stall request handling, so everything here runs
on its own event loop in its own thread, with its own connections (none from the request
pool). The request loop only waits for the GIL between bytecodes, never for a round.

Gauges. Every process (leader or standby) samples `store.ledger.log_status` on its lock
connection at every interval, so the gauges stay fresh wherever the leader is, and
`livemostrecent` picks the latest sample of a living process in multiprocess mode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from datastorage.config import Settings
from datastorage.ledger.note import Signer
from datastorage.ledger.publisher import Publisher
from datastorage.ledger.sequencer import ConnectionSource, Sequencer
from datastorage.ledger.signer import CheckpointSigner
from datastorage.metrics import (
    LOG_CHECKPOINT_AGE,
    LOG_CONSISTENCY_FAILURES,
    LOG_PUBLISH_FAILURES,
    LOG_SEQUENCING_LAG,
    LOG_TREE_SIZE,
)
from datastorage.objectstore import ObjectStore
from datastorage.store import ledger as store
from datastorage.store.connect import AsyncConnection, connect_async

log = logging.getLogger(__name__)

ELECTION_INTERVAL = 1.0  # seconds between lock attempts, liveness checks and gauge samples
RETRY_INTERVAL = 2.0  # after the lock connection failed
APPLICATION_NAME = "datastorage-log"


class WorkerConnection:
    """The connection source of one worker: one connection, kept between rounds and opened
    again after any failure (a round that failed leaves it in an unknown state)."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = f"{APPLICATION_NAME}-{name}"
        self._conn: AsyncConnection | None = None

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncConnection]:
        if self._conn is None or self._conn.closed:
            self._conn = await connect_async(self.settings, self.name)
        conn = self._conn
        try:
            yield conn
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                await conn.close()


class LogWorkers:
    """Election, the three workers and the gauges, on a thread of their own; `start()` and
    `stop()` are called from the server's event loop."""

    def __init__(
        self, settings: Settings, signer: Signer, publish_target: ObjectStore | None
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.origin = settings.log_origin or signer.name
        self.publish_target = publish_target
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    # -- called from the server's loop ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="log workers", daemon=True)
        self._thread.start()
        self._ready.wait()

    async def stop(self, timeout: float) -> None:
        """Stop the workers (a round in progress finishes) and release the lock."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            with suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            log.error("log workers did not stop within %.0f s", timeout)

    # -- the thread -------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        while not self._stop.is_set():
            try:
                # The pid in the name tells an operator (and the tests) which process leads.
                async with await connect_async(
                    self.settings, f"{APPLICATION_NAME}-election-{os.getpid()}"
                ) as conn:
                    await self._elect_and_lead(conn)
            except Exception as exc:  # noqa: BLE001 — the database is away: try again later
                log.warning("log: election connection failed: %s", exc)
            await self._wait(RETRY_INTERVAL)

    async def _wait(self, seconds: float) -> None:
        assert self._stop is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _elect_and_lead(self, conn: AsyncConnection) -> None:
        """Stand by until this process holds the lock, then lead until stopped or the lock
        connection fails (its exception ends the term)."""
        assert self._stop is not None
        term: asyncio.Event | None = None
        tasks: list[asyncio.Task] = []
        connections: list[WorkerConnection] = []
        try:
            while not self._stop.is_set():
                await self._sample(conn)
                if term is None and await store.try_session_lock(conn, store.LEADER_LOCK):
                    term = asyncio.Event()
                    connections = [
                        WorkerConnection(self.settings, name)
                        for name in ("sequencer", "signer", "publisher")
                    ]
                    tasks = self._start_workers(term, *connections)
                    log.info("log: this process now sequences, signs and publishes")
                await self._wait(ELECTION_INTERVAL)
        finally:
            if term is not None:
                term.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                for connection in connections:
                    await connection.close()
                log.info("log: this process stopped leading the log's workers")

    def _start_workers(
        self,
        term: asyncio.Event,
        sequencer: ConnectionSource,
        signer: ConnectionSource,
        publisher: ConnectionSource,
    ) -> list[asyncio.Task]:
        settings = self.settings
        workers = [
            Sequencer(
                sequencer,
                batch_size=settings.log_sequence_batch,
                interval=settings.log_sequence_interval,
            ).run(term),
            CheckpointSigner(
                signer,
                self.signer,
                origin=self.origin,
                interval=settings.log_checkpoint_interval,
                on_consistency_failure=LOG_CONSISTENCY_FAILURES.inc,
            ).run(term),
        ]
        if self.publish_target is not None:
            workers.append(
                Publisher(
                    publisher,
                    self.publish_target,
                    on_failure=lambda _exc: LOG_PUBLISH_FAILURES.inc(),
                ).run(term)
            )
        loop = asyncio.get_running_loop()
        return [loop.create_task(worker, name="log worker") for worker in workers]

    async def _sample(self, conn: AsyncConnection) -> None:
        status = await store.log_status(conn)
        LOG_TREE_SIZE.set(status.tree_size)
        LOG_SEQUENCING_LAG.set(status.sequencing_lag)
        LOG_CHECKPOINT_AGE.set(math.nan if status.checkpoint_age is None else status.checkpoint_age)
