"""The local spool DLQ backend (`file://PATH`): stdlib sqlite3 at `PATH/dlq.sqlite3`.

WAL mode with `synchronous=FULL`, so a committed append has been fsync'ed before `append`
returns (and before the write path answers 202). Several server processes may share the file:
every claim is one atomic `UPDATE … RETURNING` that stamps `claimed_by`/`claimed_at`, and an
entry whose holder died becomes claimable by another consumer `claim_idle` seconds after it was
claimed — the same rule as Redis' XAUTOCLAIM min-idle-time. A released entry is back-dated
(`claimed_at` = now − claim_idle + retry delay), so it becomes claimable when its delay passes.

All sqlite calls run on one dedicated thread per backend object, which owns the connection, so
the event loop never blocks and calls never interleave on the connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import orjson

from datastorage.dlq.queue import (
    KINDS,
    DLQFull,
    DLQUnavailable,
    Entry,
    StreamStats,
    check_kind,
    decode_record,
    encode_record,
)
from datastorage.metrics import DLQ_ENQUEUED

FILENAME = "dlq.sqlite3"
BUSY_TIMEOUT_MS = 10_000

# AUTOINCREMENT: an id is never reused, so a late ack by a consumer whose claim expired can
# never delete a newer entry. `depth` is kept by triggers so the capacity check is O(1).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL,
    record        BLOB    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    enqueued_at   REAL    NOT NULL,
    claimed_by    TEXT,
    claimed_at    REAL    NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_by_kind ON entries (kind, id);
CREATE TABLE IF NOT EXISTS depth (
    kind    TEXT PRIMARY KEY,
    records INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_count_insert AFTER INSERT ON entries BEGIN
    UPDATE depth SET records = records + 1 WHERE kind = NEW.kind;
END;
CREATE TRIGGER IF NOT EXISTS entries_count_delete AFTER DELETE ON entries BEGIN
    UPDATE depth SET records = records - 1 WHERE kind = OLD.kind;
END;
CREATE TABLE IF NOT EXISTS dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id         TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    record           BLOB    NOT NULL,
    error            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    enqueued_at      REAL    NOT NULL,
    dead_lettered_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_kind ON dead_letters (kind, id);
"""

_CLAIM = """
UPDATE entries SET claimed_by = :consumer, claimed_at = :now
WHERE id IN (
    SELECT id FROM entries
    WHERE kind = :kind AND (claimed_by = :consumer OR claimed_at <= :stale_before)
    ORDER BY id LIMIT :count
)
RETURNING id, record, attempts, enqueued_at
"""

_RELEASE = """
UPDATE entries
SET claimed_by = NULL, claimed_at = :claimed_at, attempts = attempts + :failed
WHERE id = :id AND kind = :kind AND claimed_by = :consumer
"""

T = TypeVar("T")


class SpoolDLQ:
    """`DeadLetterQueue` on a sqlite file; one instance per process."""

    name = "file"

    def __init__(self, directory: str, *, capacity: int, consumer: str, claim_idle: float) -> None:
        self.path = Path(directory) / FILENAME
        self.capacity = capacity
        self.consumer = consumer
        self.claim_idle = claim_idle
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlq-spool")
        await self._call(self._connect)

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._call(self._disconnect)
        finally:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def ping(self) -> None:
        await self._call(lambda: self._db().execute("SELECT 1").fetchone())

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        self._conn = conn
        seed = "".join(f"INSERT OR IGNORE INTO depth VALUES ('{kind}', 0);\n" for kind in KINDS)
        try:
            # One transaction, so processes opening the same new spool at once do not race.
            conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}{seed}COMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing --------------------------------------------------------------------------

    async def append(self, kind: str, records: list[dict]) -> list[str]:
        check_kind(kind)
        if not records:
            return []
        encoded = [encode_record(record) for record in records]
        ids = await self._call(self._append_sync, kind, encoded)
        DLQ_ENQUEUED.labels(stream=kind).inc(len(records))
        return ids

    def _append_sync(self, kind: str, encoded: list[bytes]) -> list[str]:
        now = time.time()
        with self._transaction(durable=True) as db:
            (depth,) = db.execute("SELECT COALESCE(SUM(records), 0) FROM depth").fetchone()
            if depth + len(encoded) > self.capacity:
                raise DLQFull(f"DLQ holds {depth} of {self.capacity} records")
            ids = []
            for record in encoded:
                cursor = db.execute(
                    "INSERT INTO entries (kind, record, enqueued_at) VALUES (?, ?, ?)",
                    (kind, record, now),
                )
                ids.append(str(cursor.lastrowid))
        return ids

    # -- draining -------------------------------------------------------------------------

    async def claim(self, kind: str, count: int) -> list[Entry]:
        check_kind(kind)
        if count <= 0:
            return []
        rows = await self._call(self._claim_sync, kind, count)
        return [
            Entry(
                id=str(entry_id),
                kind=kind,
                record=decode_record(record),
                attempts=attempts,
                enqueued_at=enqueued_at,
            )
            for entry_id, record, attempts, enqueued_at in sorted(rows)
        ]

    def _claim_sync(self, kind: str, count: int) -> list[tuple]:
        now = time.time()
        params = {
            "consumer": self.consumer,
            "now": now,
            "stale_before": now - self.claim_idle,
            "kind": kind,
            "count": count,
        }
        with self._transaction() as db:
            return db.execute(_CLAIM, params).fetchall()

    async def ack(self, kind: str, entry_ids: list[str]) -> None:
        check_kind(kind)
        if entry_ids:
            await self._call(self._ack_sync, kind, entry_ids)

    def _ack_sync(self, kind: str, entry_ids: list[str]) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM entries WHERE kind = ? AND id IN (SELECT value FROM json_each(?))",
                (kind, orjson.dumps([int(entry_id) for entry_id in entry_ids]).decode()),
            )

    async def release(
        self, kind: str, entries: list[Entry], error: str | None, *, retry_after: float = 0.0
    ) -> None:
        check_kind(kind)
        if not entries:
            return
        delay = min(max(0.0, retry_after), self.claim_idle)
        failed = 0 if error is None else 1
        await self._call(self._release_sync, kind, [e.id for e in entries], delay, failed)

    def _release_sync(self, kind: str, entry_ids: list[str], delay: float, failed: int) -> None:
        claimed_at = time.time() - self.claim_idle + delay
        rows = [
            {
                "claimed_at": claimed_at,
                "failed": failed,
                "id": int(i),
                "kind": kind,
                "consumer": self.consumer,
            }
            for i in entry_ids
        ]
        with self._transaction() as db:
            db.executemany(_RELEASE, rows)

    async def dead_letter(self, kind: str, entry: Entry, error: str) -> None:
        check_kind(kind)
        await self._call(self._dead_letter_sync, kind, entry, error)

    def _dead_letter_sync(self, kind: str, entry: Entry, error: str) -> None:
        with self._transaction() as db:
            deleted = db.execute(
                "DELETE FROM entries WHERE id = ? AND kind = ?", (int(entry.id), kind)
            ).rowcount
            if deleted == 0:
                return  # acked elsewhere meanwhile: nothing to move
            db.execute(
                "INSERT INTO dead_letters (entry_id, kind, record, error, attempts, enqueued_at,"
                " dead_lettered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.id,
                    kind,
                    encode_record(entry.record),
                    error,
                    entry.attempts,
                    entry.enqueued_at,
                    time.time(),
                ),
            )

    # -- inspection -----------------------------------------------------------------------

    async def stats(self) -> list[StreamStats]:
        return await self._call(self._stats_sync)

    def _stats_sync(self) -> list[StreamStats]:
        now = time.time()
        db = self._db()
        # One read transaction, so depth, age and dead count describe the same moment.
        db.execute("BEGIN")
        try:
            depths = dict(db.execute("SELECT kind, records FROM depth").fetchall())
            dead = dict(
                db.execute("SELECT kind, COUNT(*) FROM dead_letters GROUP BY kind").fetchall()
            )
            stats = []
            for kind in KINDS:
                oldest = db.execute(
                    "SELECT enqueued_at FROM entries WHERE kind = ? ORDER BY id LIMIT 1", (kind,)
                ).fetchone()
                age = max(0.0, now - oldest[0]) if oldest else None
                stats.append(StreamStats(kind, depths.get(kind, 0), age, dead.get(kind, 0)))
        finally:
            db.execute("COMMIT")
        return stats

    async def dead_letters(self, kind: str, limit: int = 100) -> list[dict]:
        check_kind(kind)
        rows = await self._call(
            lambda: (
                self._db()
                .execute(
                    "SELECT entry_id, record, error, attempts, enqueued_at, dead_lettered_at"
                    " FROM dead_letters WHERE kind = ? ORDER BY id LIMIT ?",
                    (kind, limit),
                )
                .fetchall()
            )
        )
        return [
            {
                "id": entry_id,
                "record": decode_record(record),
                "error": error,
                "attempts": attempts,
                "enqueued_at": enqueued_at,
                "dead_lettered_at": dead_lettered_at,
            }
            for entry_id, record, error, attempts, enqueued_at, dead_lettered_at in rows
        ]

    # -- helpers --------------------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        """Run `function` on the spool thread; sqlite and file-system errors → DLQUnavailable."""
        if self._executor is None:
            raise DLQUnavailable("file DLQ is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except (sqlite3.Error, OSError) as exc:
            raise DLQUnavailable(f"file DLQ {self.path}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DLQUnavailable("file DLQ is not open")
        return self._conn

    @contextmanager
    def _transaction(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock up front, so two processes never
        deadlock upgrading read locks, and busy_timeout queues them instead.

        Only an append must be on disk before it returns (`durable`: synchronous=FULL, the WAL
        is fsync'ed at commit). Claims, acks, releases and dead-letter moves use NORMAL: if a
        crash loses one, the entry is simply replayed again (replay is idempotent), and the
        next durable commit's fsync covers them anyway."""
        db = self._db()
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
