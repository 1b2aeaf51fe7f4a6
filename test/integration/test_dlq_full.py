"""A full DLQ must not wedge the replay (issue 16).

The file spool runs on a small tmpfs of its own (mounted by the test, so it needs root), Redis
under `maxmemory` + `noeviction`; large events fill them while PostgreSQL is stopped for real.
Every 202 must be stored once PostgreSQL is back, with nothing freed by hand, and the room must
come back for a second outage. The spool is also drained after something else took the last
byte of its disk, which only its reserve makes possible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis
from support import RedisServer, ServerProcess, all_stored_once, eventually, make_event

from datastorage.dlq.queue import KINDS, DLQFull
from datastorage.dlq.spool import FILENAME, RESERVE_FILENAME, SpoolDLQ

EVENTS = "/api/v1/audit/events"
AUDIT = KINDS[0]
BLOB = 40_000  # characters of event_data per event: the 40 KB events
MIB = 1024 * 1024
DISK = 12 * MIB  # the 12 MiB filesystem
MIN_FREE = 2 * MIB
SPOOL_FILES = (FILENAME, f"{FILENAME}-wal", f"{FILENAME}-shm")


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A filesystem of `size` bytes at `path`, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting the small tmpfs this test fills needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def spool_size(directory: Path) -> int:
    """Bytes of the spool's own files (the database, its WAL and shared-memory index)."""
    return sum(
        (directory / name).stat().st_size for name in SPOOL_FILES if (directory / name).exists()
    )


def big_event(correlation_id: str) -> dict:
    return make_event(
        correlation_id=correlation_id, event_data={"blob": secrets.token_hex(BLOB // 2)}
    )


@pytest.fixture(params=["file", "redis"])
def limited_dlq(request, tmp_path) -> Iterator[tuple[str, dict[str, str], Callable[[], int]]]:
    """(DLQ URL, extra server settings, bytes the queue takes right now)."""
    if request.param == "file":
        with tmpfs(tmp_path / "disk", DISK) as disk:
            spool = disk / "spool"
            env = {"DATASTORAGE_DLQ_MIN_FREE_BYTES": str(MIN_FREE)}
            yield f"file://{spool}", env, lambda: spool_size(spool)
        return
    server = RedisServer(extra=("--maxmemory", "8mb", "--maxmemory-policy", "noeviction"))
    try:
        with redis.Redis.from_url(server.url) as client:
            yield server.url, {}, lambda: int(client.info("memory")["used_memory"])
    finally:
        server.destroy()


def _fill_until_refused(api: httpx.Client, correlation_id: str) -> set[str]:
    """Post large events until the DLQ refuses several in a row; the ids answered 202.

    A 202 after a 503 is fine (a checkpoint may hand a page back); a 202 not kept is not."""
    accepted: set[str] = set()
    refused_in_a_row = 0
    for _ in range(2000):
        response = api.post(EVENTS, json=big_event(correlation_id))
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) > 0
            assert response.json()["type"].endswith("/service-unavailable")
            refused_in_a_row += 1
            if refused_in_a_row == 3:
                return accepted
            continue
        assert response.status_code == 202, response.text
        accepted.add(response.json()["event_id"])
        refused_in_a_row = 0
    raise AssertionError("the DLQ never refused an append")


def _drained(api: httpx.Client) -> None:
    status = api.get("/api/v1/admin/dlq").json()
    assert [s["depth"] for s in status["streams"]] == [0, 0]
    assert [s["bytes"] for s in status["streams"]] == [0, 0]


def _at_most(size: Callable[[], int], limit: int) -> None:
    assert size() <= limit


def _gauges_say_full(api: httpx.Client) -> None:
    metrics = api.get("/metrics").text
    assert _metric(metrics, 'datastorage_dlq_bytes{stream="audit_events"}') > 0
    assert _metric(metrics, "datastorage_dlq_free_bytes") < 3 * BLOB


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def test_full_dlq_refuses_drains_by_itself_and_absorbs_the_next_outage(
    database, limited_dlq, tmp_path
):
    pg, url = database
    dlq_url, extra, queue_size = limited_dlq
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_DLQ_URL": dlq_url,
            # Writes fail over to the DLQ after 0.2 s rather than 1 s: the test writes hundreds.
            "DATASTORAGE_DB_POOL_TIMEOUT": "0.2",
            **extra,
        },
        tmp_path,
    )
    sizes = {"empty": queue_size()}
    absorbed: list[int] = []
    replay_seconds: list[float] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            for outage in (1, 2):
                correlation = f"full-{outage}-{uuid.uuid4()}"
                pg.stop()
                accepted = _fill_until_refused(api, correlation)
                absorbed.append(len(accepted))
                assert len(accepted) >= 50, "far fewer events absorbed than the room allows"
                status = api.get("/api/v1/admin/dlq").json()
                stream = {s["stream"]: s for s in status["streams"]}[AUDIT]
                assert stream["depth"] == len(accepted)
                assert stream["bytes"] >= len(accepted) * BLOB
                assert status["free_bytes"] is not None and status["free_bytes"] < 3 * BLOB

                eventually(partial(_gauges_say_full, api), timeout=10, interval=0.2)
                sizes[f"full ({outage})"] = queue_size()

                pg.start()
                started = time.monotonic()
                eventually(partial(all_stored_once, url, correlation, accepted), timeout=30)
                replay_seconds.append(round(time.monotonic() - started, 1))
                fresh = api.post(EVENTS, json=big_event(correlation))
                assert fresh.status_code == 201, fresh.text

                eventually(partial(_drained, api), timeout=10, interval=0.2)
                # The space comes back: near the empty size (a file: its header pages and
                # the shared-memory index; Redis: allocator slack).
                margin = 256 * 1024 if dlq_url.startswith("file:") else 1 * MIB
                eventually(partial(_at_most, queue_size, sizes["empty"] + margin), timeout=10)
                sizes[f"drained ({outage})"] = queue_size()
            # The second outage found the room again.
            assert absorbed[1] >= 0.9 * absorbed[0], absorbed
    finally:
        server.stop()
        print(
            f"\n{dlq_url.split(':')[0]} DLQ bytes {sizes}, events absorbed {absorbed},"
            f" stored within {replay_seconds} s of PostgreSQL's return"
        )


@pytest.mark.asyncio
async def test_spool_drains_after_something_else_took_the_last_byte(tmp_path, caplog):
    with tmpfs(tmp_path / "disk", 8 * MIB) as disk:
        spool = disk / "spool"
        queue = SpoolDLQ(
            str(spool), capacity=1_000_000, consumer="c", claim_idle=60, min_free_bytes=MIN_FREE
        )
        await queue.open()
        try:
            assert (spool / RESERVE_FILENAME).stat().st_size == MIN_FREE // 2
            appended: list[str] = []
            with pytest.raises(DLQFull):
                while True:
                    appended += await queue.append(
                        AUDIT, [{"n": len(appended), "blob": "x" * BLOB}]
                    )
            assert len(appended) >= 20
            # Another program takes every byte left, after the WAL was checkpointed away: any
            # write the drain makes now needs blocks the disk does not have.
            with contextlib.closing(sqlite3.connect(spool / FILENAME)) as other:
                other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with open(disk / "filler", "wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(b"\xff" * 65536)
                    filler.flush()
            assert os.statvfs(disk).f_bavail == 0
            with pytest.raises(DLQFull):
                await queue.append(AUDIT, [{"blob": "late"}])

            caplog.set_level(logging.WARNING, logger="datastorage.dlq.spool")
            drained: list[str] = []
            while entries := await queue.claim(AUDIT, 25):
                assert [e.record["n"] for e in entries] == list(
                    range(len(drained), len(drained) + len(entries))
                )
                await queue.ack(AUDIT, [e.id for e in entries])
                drained += [e.id for e in entries]
            assert drained == appended
            assert "released the" in caplog.text  # the reserve is what let it through

            [stats, _] = await queue.stats()
            assert (stats.depth, stats.bytes) == (0, 0)
            # The freed pages went back to the disk, and the reserve was made again from them.
            assert spool_size(spool) < 256 * 1024
            assert (spool / RESERVE_FILENAME).stat().st_size == MIN_FREE // 2
            assert len(await queue.append(AUDIT, [{"n": 0, "blob": "x" * BLOB}])) == 1
        finally:
            await queue.close()


_INLINE_RECORDS_SPOOL = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, record BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, enqueued_at REAL NOT NULL, claimed_by TEXT,
    claimed_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE depth (kind TEXT PRIMARY KEY, records INTEGER NOT NULL);
INSERT INTO depth VALUES ('audit_events', 2), ('notifications', 0);
INSERT INTO entries (id, kind, record, attempts, enqueued_at)
    VALUES (7, 'audit_events', '{"n":1}', 1, 1.0), (9, 'audit_events', '{"n":2}', 0, 2.0);
"""


@pytest.mark.asyncio
async def test_spool_of_the_inline_record_layout_is_moved_over_at_open(tmp_path):
    """A spool written before records moved out of the claim rows keeps its entries."""
    spool = tmp_path / "spool"
    spool.mkdir()
    with contextlib.closing(sqlite3.connect(spool / FILENAME)) as old:
        old.executescript(_INLINE_RECORDS_SPOOL)
    queue = SpoolDLQ(str(spool), capacity=100, consumer="c", claim_idle=60)
    await queue.open()
    try:
        [stats, _] = await queue.stats()
        assert (stats.depth, stats.bytes) == (2, 14)
        entries = await queue.claim(AUDIT, 10)
        assert [(e.id, e.record, e.attempts) for e in entries] == [
            ("7", {"n": 1}, 1),
            ("9", {"n": 2}, 0),
        ]
        [newer] = await queue.append(AUDIT, [{"n": 3}])
        assert int(newer) > 9  # ids are never reused
        await queue.ack(AUDIT, ["7", "9", newer])
        [stats, _] = await queue.stats()
        assert (stats.depth, stats.bytes) == (0, 0)
    finally:
        await queue.close()
