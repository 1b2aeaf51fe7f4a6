"""The local spool DLQ backend (`file://PATH`): stdlib sqlite3 at `PATH/dlq.sqlite3`.

WAL mode with `synchronous=FULL`, so a committed append has been fsync'ed before `append`
returns (and before the write path answers 202). Several server processes may share the file:
every claim is one atomic `UPDATE … RETURNING` that stamps `claimed_by`/`claimed_at`, and an
entry whose holder died becomes claimable by another consumer `claim_idle` seconds after it was
claimed — the same rule as Redis' XAUTOCLAIM min-idle-time. A released entry is back-dated
(`claimed_at` = now − claim_idle + retry delay), so it becomes claimable when its delay passes.

A full disk must never wedge the replay: the queue fills exactly when an outage lasts long, and
a drain that cannot write cannot shrink it either. So the spool keeps the room it needs:

- **Small writes to drain.** The record bytes live in `payloads`, written once and never
  updated; claim state lives in the small `queue` rows. A claim or release rewrites only those
  rows (sqlite rewrites a whole row, overflow pages included, on any update: with the record
  inline, claiming 10 MB of records wrote 10 MB of WAL). Deleting needs no copy of the freed
  pages either: `secure_delete` is turned off (Debian builds it on), so an ack writes only the
  b-tree pages it changes.
- **A floor and a reserve.** `min_free_bytes` is the room the spool keeps on its filesystem.
  Half of it is held as a real file (`dlq.reserve`, allocated blocks) that only the drain gives
  up: when a claim, ack, release or dead-letter move fails with "disk full" (something else
  filled the disk, or the WAL outgrew the estimate), the reserve is deleted and the operation
  retried. The other half stays free: an append is refused (`DLQFull` → 503 + Retry-After)
  when it would leave less, and when the reserve is missing and cannot be made again. An append
  that still hits "disk full" is rolled back by sqlite and refused too, never acknowledged.
  The reserve is a file rather than arithmetic because only a file keeps other writers of the
  same filesystem (logs, other processes, sqlite's own WAL) from eating the drain's room.
- **Space given back.** New files use `auto_vacuum=INCREMENTAL`; whenever an ack or dead-letter
  move leaves the queue empty, the freed pages are returned to the filesystem
  (`incremental_vacuum`, or a one-off `VACUUM` for a file created without auto-vacuum), the WAL
  is truncated, and the reserve is made again. While entries remain, freed pages are reused by
  new appends and counted as room.

All sqlite calls run on one dedicated thread per backend object, which owns the connection, so
the event loop never blocks and calls never interleave on the connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
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
RESERVE_FILENAME = "dlq.reserve"
BUSY_TIMEOUT_MS = 10_000
WAL_FRAME_HEADER = 24  # bytes in front of every page a transaction writes to the WAL
# Checkpoint after this many WAL pages (sqlite's default is 1000) and cut the WAL back to about
# that size afterwards: the WAL counts against the room, so a small one leaves more for records.
WAL_AUTOCHECKPOINT_PAGES = 256
SHRINK_STEP_PAGES = 128  # pages freed per step at least when giving space back
RECORD_OVERHEAD = 64  # queue row, cell header and index entry per record, generously

log = logging.getLogger(__name__)

# AUTOINCREMENT: an id is never reused, so a late ack by a consumer whose claim expired can
# never delete a newer entry. `depth` is kept by triggers so the capacity check is O(1); the
# delete trigger also drops the payload, so ack and dead-letter moves delete both rows.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS queue (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT    NOT NULL,
        size          INTEGER NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        enqueued_at   REAL    NOT NULL,
        claimed_by    TEXT,
        claimed_at    REAL    NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS queue_by_kind ON queue (kind, id)",
    "CREATE TABLE IF NOT EXISTS payloads (id INTEGER PRIMARY KEY, record BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS depth (
        kind    TEXT PRIMARY KEY,
        records INTEGER NOT NULL,
        bytes   INTEGER NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS queue_count_insert AFTER INSERT ON queue BEGIN
        UPDATE depth SET records = records + 1, bytes = bytes + NEW.size WHERE kind = NEW.kind;
    END""",
    """CREATE TRIGGER IF NOT EXISTS queue_count_delete AFTER DELETE ON queue BEGIN
        UPDATE depth SET records = records - 1, bytes = bytes - OLD.size WHERE kind = OLD.kind;
        DELETE FROM payloads WHERE id = OLD.id;
    END""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        entry_id         TEXT    NOT NULL,
        kind             TEXT    NOT NULL,
        record           BLOB    NOT NULL,
        error            TEXT    NOT NULL,
        attempts         INTEGER NOT NULL,
        enqueued_at      REAL    NOT NULL,
        dead_lettered_at REAL    NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dead_letters_by_kind ON dead_letters (kind, id)",
    *(f"INSERT OR IGNORE INTO depth VALUES ('{kind}', 0, 0)" for kind in KINDS),
)

# A spool written by the first layout (records inline in `entries`) is moved over at open, in
# the same transaction that creates the new tables; its ids are kept.
_FROM_INLINE_RECORDS = (
    "DROP TRIGGER IF EXISTS entries_count_insert",
    "DROP TRIGGER IF EXISTS entries_count_delete",
    "DROP TABLE IF EXISTS depth",
    *_SCHEMA,
    "INSERT INTO payloads (id, record) SELECT id, record FROM entries",
    "INSERT INTO queue (id, kind, size, attempts, enqueued_at, claimed_by, claimed_at)"
    " SELECT id, kind, length(record), attempts, enqueued_at, claimed_by, claimed_at"
    " FROM entries ORDER BY id",
    "DROP TABLE entries",
)

_CLAIM = """
UPDATE queue SET claimed_by = :consumer, claimed_at = :now
WHERE id IN (
    SELECT id FROM queue
    WHERE kind = :kind AND (claimed_by = :consumer OR claimed_at <= :stale_before)
    ORDER BY id LIMIT :count
)
RETURNING id, (SELECT record FROM payloads WHERE payloads.id = queue.id), attempts, enqueued_at
"""

_RELEASE = """
UPDATE queue
SET claimed_by = NULL, claimed_at = :claimed_at, attempts = attempts + :failed
WHERE id = :id AND kind = :kind AND claimed_by = :consumer
"""

T = TypeVar("T")


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def _allocate(fd: int, size: int) -> None:
    """Give the file `size` bytes of real blocks (not a sparse hole)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    chunk = b"\0" * (1 << 20)
    written = 0
    while written < size:
        written += os.write(fd, chunk[: size - written])


class SpoolDLQ:
    """`DeadLetterQueue` on a sqlite file; one instance per process."""

    name = "file"

    def __init__(
        self,
        directory: str,
        *,
        capacity: int,
        consumer: str,
        claim_idle: float,
        min_free_bytes: int = 0,
    ) -> None:
        self.path = Path(directory) / FILENAME
        self.reserve_path = Path(directory) / RESERVE_FILENAME
        self.capacity = capacity
        self.consumer = consumer
        self.claim_idle = claim_idle
        self.reserve_bytes = min_free_bytes // 2
        self.free_floor = min_free_bytes - self.reserve_bytes
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._page_size = 4096

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
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect on a new file only
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        (self._page_size,) = conn.execute("PRAGMA page_size").fetchone()
        # A WAL that one big transaction grew is cut back at the next checkpoint.
        limit = WAL_AUTOCHECKPOINT_PAGES * (self._page_size + WAL_FRAME_HEADER)
        conn.execute(f"PRAGMA journal_size_limit = {limit}")
        conn.execute("PRAGMA temp_store = MEMORY")  # a VACUUM's copy stays off the full disk
        self._conn = conn
        # One transaction, so processes opening the same new spool at once do not race.
        with self._transaction() as db:
            inline = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
            ).fetchone()
            for statement in _FROM_INLINE_RECORDS if inline else _SCHEMA:
                db.execute(statement)
        self._ensure_reserve()

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
        if not self._ensure_reserve():
            raise DLQFull(f"no room for the {self.reserve_bytes}-byte drain reserve on the disk")
        needed = 2 * self._footprint(encoded)  # in the WAL, then in the database file
        room = self._room()
        if needed > room:
            raise DLQFull(
                f"the append needs about {needed} bytes of disk, {room} are left above the floor"
            )
        now = time.time()
        try:
            with self._transaction(durable=True) as db:
                (depth,) = db.execute("SELECT COALESCE(SUM(records), 0) FROM depth").fetchone()
                if depth + len(encoded) > self.capacity:
                    raise DLQFull(f"DLQ holds {depth} of {self.capacity} records")
                ids = []
                for record in encoded:
                    cursor = db.execute(
                        "INSERT INTO queue (kind, size, enqueued_at) VALUES (?, ?, ?)",
                        (kind, len(record), now),
                    )
                    db.execute(
                        "INSERT INTO payloads (id, record) VALUES (?, ?)",
                        (cursor.lastrowid, record),
                    )
                    ids.append(str(cursor.lastrowid))
        except sqlite3.Error as exc:
            if _disk_full(exc):  # rolled back: nothing of it was stored
                raise DLQFull(f"the spool's disk is full: {exc}") from exc
            raise
        return ids

    def _footprint(self, encoded: list[bytes]) -> int:
        """Bytes of pages the records take once written (each page once)."""
        usable = self._page_size - 8
        payload = sum(len(record) + RECORD_OVERHEAD for record in encoded)
        pages = -(-payload // usable) + 2  # and the leaf/index pages the inserts touch
        return pages * (self._page_size + WAL_FRAME_HEADER)

    def _room(self) -> int:
        """Bytes the spool may still fill: free disk plus reusable pages, minus the floor and
        minus the WAL, whose frames a checkpoint may copy into the database file at once."""
        disk = os.statvfs(self.path.parent)
        (free_pages,) = self._db().execute("PRAGMA freelist_count").fetchone()
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except FileNotFoundError:
            wal = 0
        free = disk.f_bavail * disk.f_frsize + free_pages * self._page_size
        return free - wal - self.free_floor

    # -- the reserve ----------------------------------------------------------------------

    def _ensure_reserve(self) -> bool:
        """Make the reserve file if it is missing; False when the disk has no room for it."""
        if self.reserve_bytes == 0:
            return True
        try:
            if self.reserve_path.stat().st_size >= self.reserve_bytes:
                return True
        except FileNotFoundError:
            pass
        partial = self.reserve_path.with_name(f"{RESERVE_FILENAME}.{os.getpid()}.tmp")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _allocate(fd, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, self.reserve_path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if _disk_full(exc):
                return False
            raise
        return True

    def _draining(self, operation: Callable[..., T], *args: object) -> T:
        """Run a drain-side write; on "disk full" give up the reserve and try once more."""
        try:
            return operation(*args)
        except sqlite3.Error as exc:
            if not _disk_full(exc):
                raise
            try:
                self.reserve_path.unlink()
            except FileNotFoundError:
                raise exc from None  # no reserve left to give: the error stands
            log.warning(
                "file DLQ %s: disk full, released the %d-byte reserve so the drain goes on",
                self.path,
                self.reserve_bytes,
            )
            return operation(*args)

    # -- draining -------------------------------------------------------------------------

    async def claim(self, kind: str, count: int) -> list[Entry]:
        check_kind(kind)
        if count <= 0:
            return []
        rows = await self._call(self._draining, self._claim_sync, kind, count)
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
            await self._call(self._draining, self._ack_sync, kind, entry_ids)
            await self._call(self._shrink_if_empty)

    def _ack_sync(self, kind: str, entry_ids: list[str]) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM queue WHERE kind = ? AND id IN (SELECT value FROM json_each(?))",
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
        await self._call(
            self._draining, self._release_sync, kind, [e.id for e in entries], delay, failed
        )

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
        await self._call(self._draining, self._dead_letter_sync, kind, entry, error)
        await self._call(self._shrink_if_empty)

    def _dead_letter_sync(self, kind: str, entry: Entry, error: str) -> None:
        with self._transaction() as db:
            deleted = db.execute(
                "DELETE FROM queue WHERE id = ? AND kind = ?", (int(entry.id), kind)
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

    def _shrink_if_empty(self) -> None:
        """Once the queue is empty, hand its freed pages and WAL back to the filesystem and
        make the reserve again. Best effort: the ack it follows has committed already."""
        db = self._db()
        try:
            (depth,) = db.execute("SELECT COALESCE(SUM(records), 0) FROM depth").fetchone()
            if depth:
                return
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                # A file made before auto-vacuum: convert it while it holds next to nothing.
                self._draining(db.executescript, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            while db.execute("PRAGMA freelist_count").fetchone()[0]:
                # Steps sized to the free disk: a step writes WAL frames before its checkpoint
                # cuts the file, so on a nearly full disk the space comes back bit by bit.
                disk = os.statvfs(self.path.parent)
                step = max(SHRINK_STEP_PAGES, disk.f_bavail * disk.f_frsize // self._page_size)
                # executescript steps the pragma to its end (execute() stops after one page).
                self._draining(db.executescript, f"PRAGMA incremental_vacuum({step});")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._ensure_reserve()
        except (sqlite3.Error, OSError) as exc:
            log.warning("file DLQ %s: could not give space back yet: %s", self.path, exc)

    # -- inspection -----------------------------------------------------------------------

    async def stats(self) -> list[StreamStats]:
        return await self._call(self._stats_sync)

    def _stats_sync(self) -> list[StreamStats]:
        now = time.time()
        db = self._db()
        free = max(0, self._room())
        # One read transaction, so depth, age and dead count describe the same moment.
        db.execute("BEGIN")
        try:
            depths = {
                kind: (records, size)
                for kind, records, size in db.execute("SELECT kind, records, bytes FROM depth")
            }
            dead = dict(
                db.execute("SELECT kind, COUNT(*) FROM dead_letters GROUP BY kind").fetchall()
            )
            stats = []
            for kind in KINDS:
                oldest = db.execute(
                    "SELECT enqueued_at FROM queue WHERE kind = ? ORDER BY id LIMIT 1", (kind,)
                ).fetchone()
                age = max(0.0, now - oldest[0]) if oldest else None
                records, size = depths.get(kind, (0, 0))
                stats.append(StreamStats(kind, records, age, dead.get(kind, 0), size, free))
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
        next durable commit's fsync covers them anyway. A failed COMMIT (disk full) is rolled
        back too, so the connection is never left inside a transaction."""
        db = self._db()
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
