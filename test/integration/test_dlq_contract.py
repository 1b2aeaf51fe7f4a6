"""The DLQ contract, run against both backends (real Redis, real sqlite), and the drain worker.

Every contract test is parametrised over `redis` (this worker's session Redis, a private DB index
flushed before each test) and `file` (a spool in tmp_path). The drain worker is tested with a
fake `replay` callable: that is the injected database boundary, not one of the backends.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
import redis as redis_sync
from prometheus_client import REGISTRY
from support import REPO, RedisServer

from datastorage.dlq.drain import DrainWorker
from datastorage.dlq.factory import open_dlq, spool_path
from datastorage.dlq.queue import KINDS, DeadLetterQueue, DLQFull, DLQUnavailable

AUDIT, NOTIFY = KINDS
# DB indexes of the session Redis owned by this module; other tests use other indexes.
REDIS_DB = 13
OTHER_REDIS_DB = 14

pytestmark = pytest.mark.asyncio


# -- helpers ---------------------------------------------------------------------------------


async def until(
    check: Callable[[], Any], timeout: float = 10.0, errors: tuple[type[Exception], ...] = ()
) -> Any:
    """Poll a check (plain or async) until it returns without AssertionError (or one of
    `errors`) and its result is not False."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result is not False:
                return result
            raise AssertionError("condition still false")
        except (AssertionError, *errors):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.02)


def records(start: int, stop: int) -> list[dict]:
    return [
        {"event_id": f"e-{n:05d}", "n": n, "event_data": {"k": [n, "x"]}}
        for n in range(start, stop)
    ]


def metric(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"stream": kind}) or 0.0


async def depth(queue: DeadLetterQueue, kind: str = AUDIT) -> int:
    return {s.stream: s for s in await queue.stats()}[kind].depth


async def claim_all(queue: DeadLetterQueue, kind: str = AUDIT) -> list:
    return await queue.claim(kind, 100_000)


def flush_redis(port: int, *dbs: int) -> None:
    for db in dbs:
        with redis_sync.Redis(host="127.0.0.1", port=port, db=db) as client:
            client.flushdb()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "file"])
def dlq_url(request, tmp_path) -> str:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        flush_redis(server.port, REDIS_DB)
        return f"redis://127.0.0.1:{server.port}/{REDIS_DB}"
    return f"file://{tmp_path}/spool"


@pytest_asyncio.fixture
async def open_queue(dlq_url):
    """Factory of opened queues on the same backend (one per simulated process)."""
    opened: list[DeadLetterQueue] = []

    async def make(
        consumer: str = "proc-1", *, capacity: int = 10_000, claim_idle: float = 30.0
    ) -> DeadLetterQueue:
        queue = open_dlq(dlq_url, capacity=capacity, consumer=consumer, claim_idle=claim_idle)
        await queue.open()
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


# -- contract: round trip ---------------------------------------------------------------------


async def test_round_trip_preserves_records_and_order(open_queue):
    queue = await open_queue()
    enqueued_before = metric("datastorage_dlq_enqueued_total", AUDIT)
    first = await queue.append(AUDIT, records(0, 3))
    second = await queue.append(AUDIT, records(3, 5))
    assert len(set(first + second)) == 5
    assert metric("datastorage_dlq_enqueued_total", AUDIT) - enqueued_before == 5

    head = await queue.claim(AUDIT, 2)
    everything = await queue.claim(AUDIT, 10)  # its own unacked head again, then the rest

    assert [e.record for e in head] == records(0, 2)
    assert [e.record for e in everything] == records(0, 5)
    assert [e.id for e in everything] == first + second
    assert all(e.kind == AUDIT and e.attempts == 0 for e in everything)
    assert all(abs(time.time() - e.enqueued_at) < 60 for e in everything)
    await queue.ack(AUDIT, [e.id for e in everything])
    assert await claim_all(queue) == []
    assert await depth(queue) == 0


async def test_kinds_are_separate_streams(open_queue):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 2))
    await queue.append(NOTIFY, [{"notification_id": "n-1"}])
    assert [e.record for e in await claim_all(queue, NOTIFY)] == [{"notification_id": "n-1"}]
    assert [e.record for e in await claim_all(queue, AUDIT)] == records(0, 2)
    assert [s.stream for s in await queue.stats()] == list(KINDS)


async def test_claim_returns_own_unacked_entries_again(open_queue):
    queue = await open_queue()
    ids = await queue.append(AUDIT, records(0, 3))
    assert [e.id for e in await claim_all(queue)] == ids
    assert [e.id for e in await claim_all(queue)] == ids


async def test_unknown_kind_is_rejected(open_queue):
    queue = await open_queue()
    with pytest.raises(ValueError):
        await queue.append("workflows", records(0, 1))
    with pytest.raises(ValueError):
        await queue.claim("workflows", 1)


# -- contract: capacity -----------------------------------------------------------------------


async def test_append_is_all_or_nothing_at_capacity_and_never_evicts(open_queue):
    queue = await open_queue(capacity=100)
    await queue.append(AUDIT, records(0, 60))
    with pytest.raises(DLQFull):
        await queue.append(AUDIT, records(60, 110))
    assert await depth(queue) == 60

    await queue.append(NOTIFY, records(60, 100))  # capacity counts every kind
    for kind in KINDS:
        with pytest.raises(DLQFull):
            await queue.append(kind, records(100, 101))

    claimed = await queue.claim(AUDIT, 10)  # claimed but not acked still counts
    with pytest.raises(DLQFull):
        await queue.append(AUDIT, records(100, 101))
    await queue.ack(AUDIT, [e.id for e in claimed])
    await queue.append(AUDIT, records(100, 110))

    assert [e.record for e in await claim_all(queue)] == records(10, 60) + records(100, 110)
    assert [e.record for e in await claim_all(queue, NOTIFY)] == records(60, 100)


async def test_append_of_unserialisable_record_stores_nothing(open_queue):
    queue = await open_queue()
    with pytest.raises(TypeError):
        await queue.append(AUDIT, [*records(0, 2), {"bad": {1, 2}}])
    assert await depth(queue) == 0


# -- contract: concurrent consumers ------------------------------------------------------------


async def test_concurrent_claims_never_yield_the_same_entry_twice(open_queue):
    consumers = [await open_queue(f"proc-{n}") for n in range(3)]
    ids = await consumers[0].append(AUDIT, records(0, 600))
    seen: list[list[str]] = [[] for _ in consumers]
    # Every consumer holds an unacknowledged claim before anyone acks, so the claims
    # really overlap (without this, one fast consumer may drain everything alone).
    all_holding = asyncio.Barrier(len(consumers))

    async def drain(index: int) -> None:
        queue = consumers[index]
        first = await queue.claim(AUDIT, 7)
        seen[index].extend(e.id for e in first)
        await all_holding.wait()
        await queue.ack(AUDIT, [e.id for e in first])
        while batch := await queue.claim(AUDIT, 7):
            seen[index].extend(e.id for e in batch)
            await asyncio.sleep(0)  # let the others interleave between claim and ack
            await queue.ack(AUDIT, [e.id for e in batch])

    await asyncio.gather(*(drain(n) for n in range(len(consumers))))

    everything = [entry_id for ids_of_one in seen for entry_id in ids_of_one]
    assert sorted(everything) == sorted(ids)  # none twice, none missing
    assert all(seen), "every consumer should have got a share"


async def test_entries_held_by_a_live_consumer_are_not_handed_out(open_queue):
    first = await open_queue("proc-1")
    second = await open_queue("proc-2")
    ids = await first.append(AUDIT, records(0, 10))
    a = await first.claim(AUDIT, 4)
    b = await second.claim(AUDIT, 100)
    assert [e.id for e in a] == ids[:4]
    assert [e.id for e in b] == ids[4:]
    assert await second.claim(AUDIT, 100) == b  # its own, again; none of proc-1's


async def test_dead_consumers_entries_are_reclaimed_after_claim_idle(open_queue):
    dead = await open_queue("proc-dead", claim_idle=0.5)
    alive = await open_queue("proc-alive", claim_idle=0.5)
    ids = await dead.append(AUDIT, records(0, 5))
    assert [e.id for e in await dead.claim(AUDIT, 5)] == ids
    started = time.monotonic()
    assert await alive.claim(AUDIT, 5) == []

    async def reclaimed():
        claimed = await alive.claim(AUDIT, 5)
        assert [e.id for e in claimed] == ids
        return claimed

    claimed = await until(reclaimed)
    assert time.monotonic() - started >= 0.4
    assert [e.record for e in claimed] == records(0, 5)


# -- contract: release, dead letters, stats ------------------------------------------------------


async def test_release_with_error_counts_an_attempt_and_without_does_not(open_queue):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 2))
    entries = await claim_all(queue)
    await queue.release(AUDIT, entries[:1], "IntegrityError: boom")
    await queue.release(AUDIT, entries[1:], None)
    again = await claim_all(queue)
    assert [(e.id, e.attempts) for e in again] == [(entries[0].id, 1), (entries[1].id, 0)]
    await queue.release(AUDIT, again, "boom again")
    assert [e.attempts for e in await claim_all(queue)] == [2, 1]


async def test_late_release_by_a_former_holder_leaves_the_new_holder_alone(open_queue):
    slow = await open_queue("proc-slow", claim_idle=0.2)
    fast = await open_queue("proc-fast", claim_idle=0.2)
    await slow.append(AUDIT, records(0, 1))
    stale = await slow.claim(AUDIT, 1)

    async def taken_over():
        assert [e.id for e in await fast.claim(AUDIT, 1)] == [stale[0].id]

    await until(taken_over)

    await slow.release(AUDIT, stale, "too late")  # no longer its entry: no attempt, no move
    assert await slow.claim(AUDIT, 1) == []
    assert [e.attempts for e in await fast.claim(AUDIT, 1)] == [0]


async def test_released_entry_is_claimable_by_another_consumer(open_queue):
    first = await open_queue("proc-1")
    second = await open_queue("proc-2")
    await first.append(AUDIT, records(0, 3))
    await first.release(AUDIT, await claim_all(first), None)
    assert [e.record for e in await claim_all(second)] == records(0, 3)


async def test_release_with_retry_delay_hides_the_entry_until_it_passes(open_queue):
    queue = await open_queue(claim_idle=30.0)
    await queue.append(AUDIT, records(0, 1))
    await queue.release(AUDIT, await claim_all(queue), "boom", retry_after=0.4)
    started = time.monotonic()
    assert await claim_all(queue) == []

    async def back():
        assert [e.attempts for e in await claim_all(queue)] == [1]

    await until(back)
    assert time.monotonic() - started >= 0.3


async def test_dead_letter_moves_the_entry_with_its_error(open_queue):
    queue = await open_queue()
    enqueued = await queue.append(AUDIT, records(0, 3))
    entries = await claim_all(queue)
    poison = replace(entries[1], attempts=5)
    await queue.dead_letter(AUDIT, poison, "CheckViolation: severity too long")

    stats = {s.stream: s for s in await queue.stats()}
    assert (stats[AUDIT].depth, stats[AUDIT].dead_lettered) == (2, 1)
    assert stats[NOTIFY].dead_lettered == 0
    [letter] = await queue.dead_letters(AUDIT)
    assert letter["record"] == records(1, 2)[0]
    assert letter["error"] == "CheckViolation: severity too long"
    assert letter["attempts"] == 5
    assert letter["id"] == enqueued[1]
    assert letter["dead_lettered_at"] >= letter["enqueued_at"]

    remaining = await claim_all(queue)
    assert [e.id for e in remaining] == [enqueued[0], enqueued[2]]
    await queue.ack(AUDIT, [e.id for e in remaining])
    stats = {s.stream: s for s in await queue.stats()}
    assert (stats[AUDIT].depth, stats[AUDIT].dead_lettered) == (0, 1)


async def test_stats_report_depth_and_oldest_age(open_queue):
    queue = await open_queue()
    for stream in await queue.stats():
        assert (stream.depth, stream.oldest_age_seconds, stream.dead_lettered) == (0, None, 0)
    [old] = await queue.append(AUDIT, records(0, 1))

    async def aged():
        [stats, _] = await queue.stats()
        assert stats.depth == 1 and stats.oldest_age_seconds >= 0.3

    await until(aged)
    await queue.append(AUDIT, records(1, 3))
    await queue.ack(AUDIT, [old])
    [stats, notifications] = await queue.stats()
    assert stats.depth == 2
    assert 0 <= stats.oldest_age_seconds < 0.3  # the oldest is now the fresh one
    assert notifications.depth == 0


async def test_stats_report_bytes_queued_and_room_left(open_queue, dlq_url):
    queue = await open_queue()
    [empty, _] = await queue.stats()
    assert empty.bytes == 0
    ids = await queue.append(AUDIT, [{"blob": "x" * 20_000}, {"blob": "y" * 20_000}])
    [full, notifications] = await queue.stats()
    assert full.bytes >= 40_000 and notifications.bytes == 0
    if dlq_url.startswith("file:"):
        # The room is on the spool's filesystem, which other programs share: only its presence
        # is checked here (test_dlq_full measures it on a filesystem of its own).
        assert isinstance(full.free_bytes, int) and full.free_bytes > 0
    else:
        assert full.free_bytes is None  # this test Redis runs without maxmemory
    await queue.ack(AUDIT, ids)
    [drained, _] = await queue.stats()
    assert drained.bytes == 0


# -- contract: processes and faults -----------------------------------------------------------

_CHILD = """
import asyncio, sys
from datastorage.dlq.factory import open_dlq

async def main():
    # Long claim_idle here: it is the claimer's claim_idle that decides when held entries move.
    queue = open_dlq(sys.argv[1], capacity=1000, consumer="child", claim_idle=60)
    await queue.open()
    await queue.append("audit_events", [{"n": n} for n in range(50)])
    claimed = await queue.claim("audit_events", 10)
    print(" ".join(e.id for e in claimed), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_appended_and_claimed_entries_survive_a_killed_process(dlq_url, open_queue):
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, dlq_url], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    held_by_child = line.split()
    assert len(held_by_child) == 10

    survivor = await open_queue("proc-after", claim_idle=0.5)
    free = await survivor.claim(AUDIT, 100)
    assert [e.record for e in free] == [{"n": n} for n in range(10, 50)]

    async def reclaimed():
        claimed = await survivor.claim(AUDIT, 100)
        assert {e.id for e in claimed} >= set(held_by_child)
        return claimed

    claimed = await until(reclaimed)
    assert [e.record for e in claimed] == [{"n": n} for n in range(50)]


async def test_redis_db_index_is_honoured(redis_server):
    flush_redis(redis_server.port, REDIS_DB, OTHER_REDIS_DB)
    url = f"redis://127.0.0.1:{redis_server.port}/{OTHER_REDIS_DB}"
    queue = open_dlq(url, capacity=10, consumer="proc-1", claim_idle=30)
    await queue.open()
    try:
        await queue.append(AUDIT, records(0, 1))
    finally:
        await queue.close()
    for db, expected in ((OTHER_REDIS_DB, 1), (REDIS_DB, 0)):
        with redis_sync.Redis(host="127.0.0.1", port=redis_server.port, db=db) as client:
            assert client.exists("datastorage:dlq:audit_events") == expected
            if expected:
                assert client.xlen("datastorage:dlq:audit_events") == 1


async def test_redis_consumer_is_forgotten_at_close_when_it_holds_nothing(redis_server):
    flush_redis(redis_server.port, REDIS_DB)
    url = f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}"
    queue = open_dlq(url, capacity=10, consumer="proc-short-lived", claim_idle=30)
    await queue.open()
    await queue.append(AUDIT, records(0, 1))
    await queue.ack(AUDIT, [e.id for e in await queue.claim(AUDIT, 1)])
    await queue.close()
    with redis_sync.Redis(host="127.0.0.1", port=redis_server.port, db=REDIS_DB) as client:
        names = [
            c["name"] for c in client.xinfo_consumers("datastorage:dlq:audit_events", "datastorage")
        ]
    assert b"proc-short-lived" not in names and "proc-short-lived" not in names


async def test_redis_claim_recovers_after_redis_lost_its_data(redis_server):
    flush_redis(redis_server.port, REDIS_DB)
    url = f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}"
    queue = open_dlq(url, capacity=10, consumer="proc-1", claim_idle=30)
    await queue.open()
    try:
        await queue.append(AUDIT, records(0, 1))
        flush_redis(redis_server.port, REDIS_DB)  # as after a restart without persistence
        await queue.append(AUDIT, records(1, 2))
        assert [e.record for e in await queue.claim(AUDIT, 10)] == records(1, 2)
    finally:
        await queue.close()


async def test_redis_down_raises_unavailable_and_recovers():
    server = RedisServer(appendonly=True)  # its own server: this test kills it
    queue = open_dlq(server.url, capacity=100, consumer="proc-1", claim_idle=30)
    try:
        await queue.open()
        ids = await queue.append(AUDIT, records(0, 3))
        server.kill()
        for operation in (
            queue.ping(),
            queue.append(AUDIT, records(3, 4)),
            queue.claim(AUDIT, 1),
            queue.stats(),
        ):
            started = time.monotonic()
            with pytest.raises(DLQUnavailable):
                await operation
            assert time.monotonic() - started < 5
        server.start()
        await until(queue.ping, errors=(DLQUnavailable,))
        # appendfsync always: what was acknowledged before the kill is still there.
        assert [e.id for e in await queue.claim(AUDIT, 10)] == ids
    finally:
        await queue.close()
        server.destroy()


async def test_unopened_queue_is_unavailable(dlq_url):
    queue = open_dlq(dlq_url, capacity=10, consumer="proc-1", claim_idle=30)
    with pytest.raises(DLQUnavailable):
        await queue.ping()


async def test_open_dlq_picks_the_backend_by_scheme(tmp_path):
    assert open_dlq("redis://h:1/2", capacity=1, consumer="c", claim_idle=1).name == "redis"
    assert open_dlq("rediss://h:1/2", capacity=1, consumer="c", claim_idle=1).name == "redis"
    assert open_dlq(f"file://{tmp_path}", capacity=1, consumer="c", claim_idle=1).name == "file"
    with pytest.raises(ValueError):
        open_dlq("kafka://h:1", capacity=1, consumer="c", claim_idle=1)


async def test_spool_path_accepts_absolute_and_relative_urls():
    assert spool_path("file:///var/lib/dlq") == "/var/lib/dlq"
    assert spool_path("file://localhost/var/lib/dlq") == "/var/lib/dlq"
    assert spool_path("file://.datastorage/dlq") == ".datastorage/dlq"
    assert spool_path("file:///with%20space") == "/with space"


# -- drain worker ---------------------------------------------------------------------------


class TransientError(Exception):
    """Stands for 'database unavailable'."""


class PermanentError(Exception):
    """Stands for a constraint violation."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


class FakeReplay:
    """Records calls; fails transiently `transient_failures` times, permanently on poison."""

    def __init__(self, transient_failures: int = 0, gate: asyncio.Event | None = None) -> None:
        self.calls: list[tuple[float, str, list[dict]]] = []
        self.transient_failures = transient_failures
        self.gate = gate
        self.stored: dict[str, dict] = {}

    async def __call__(self, kind: str, batch: list[dict]) -> None:
        self.calls.append((time.monotonic(), kind, batch))
        if self.gate is not None:
            await self.gate.wait()
        if self.transient_failures:
            self.transient_failures -= 1
            raise TransientError("connection refused")
        if any(record.get("poison") for record in batch):
            raise PermanentError("value too long for type character varying(20)")
        for record in batch:
            self.stored[record["event_id"]] = record


def make_worker(queue: DeadLetterQueue, replay: FakeReplay, **options: Any) -> DrainWorker:
    settings = {"backoff_initial": 0.01, "backoff_max": 0.05, "idle_interval": 0.05, **options}
    return DrainWorker(queue, replay, is_transient, **settings)


@pytest_asyncio.fixture
async def started():
    """start(worker) runs it in the background; every worker is stopped at teardown."""
    running: list[tuple[DrainWorker, asyncio.Task]] = []

    def start(worker: DrainWorker) -> asyncio.Task:
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        return task

    yield start
    for worker, task in running:
        await worker.stop()
        await asyncio.wait_for(task, 10)


async def test_drain_once_replays_in_order_in_batches_and_acks(open_queue):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 25))
    await queue.append(NOTIFY, records(100, 103))
    replayed_before = metric("datastorage_dlq_replayed_total", AUDIT)
    replay = FakeReplay()

    assert await make_worker(queue, replay, batch_size=10).drain_once() == 28

    audit_batches = [batch for _, kind, batch in replay.calls if kind == AUDIT]
    assert [len(batch) for batch in audit_batches] == [10, 10, 5]
    assert [r for batch in audit_batches for r in batch] == records(0, 25)
    assert [b for _, kind, b in replay.calls if kind == NOTIFY] == [records(100, 103)]
    assert metric("datastorage_dlq_replayed_total", AUDIT) - replayed_before == 25
    assert [s.depth for s in await queue.stats()] == [0, 0]


async def test_drain_once_of_one_kind_leaves_the_other(open_queue):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 2))
    await queue.append(NOTIFY, records(2, 3))
    assert await make_worker(queue, FakeReplay()).drain_once(NOTIFY) == 1
    assert [s.depth for s in await queue.stats()] == [2, 0]


async def test_entries_are_acked_only_after_replay_returns(open_queue, started):
    queue = await open_queue()
    other = await open_queue("proc-2")
    await queue.append(AUDIT, records(0, 5))
    gate = asyncio.Event()
    replay = FakeReplay(gate=gate)
    started(make_worker(queue, replay))

    await until(lambda: bool(replay.calls))
    assert await depth(queue) == 5  # in flight: not acked yet
    assert await other.claim(AUDIT, 10) == []  # and held, not handed to another process
    gate.set()

    async def drained():
        assert await depth(queue) == 0

    await until(drained)
    assert sorted(replay.stored) == [r["event_id"] for r in records(0, 5)]


async def test_transient_failure_backs_off_without_counting_attempts(open_queue, started):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 4))
    replay = FakeReplay(transient_failures=4)
    # One counted attempt would dead-letter: max_attempts=1 proves none are counted.
    worker = make_worker(queue, replay, max_attempts=1, backoff_initial=0.05, backoff_max=0.15)
    started(worker)

    async def drained():
        assert await depth(queue) == 0

    await until(drained)
    assert sorted(replay.stored) == [r["event_id"] for r in records(0, 4)]
    assert [s.dead_lettered for s in await queue.stats()] == [0, 0]
    gaps = [b[0] - a[0] for a, b in zip(replay.calls, replay.calls[1:], strict=False)]
    # Each retry waited at least its backoff: 0.05, 0.1, 0.15 (capped), 0.15.
    for gap, minimum in zip(gaps, (0.05, 0.1, 0.15, 0.15), strict=True):
        assert gap >= minimum * 0.9
    assert worker.backoff.next() == 0.05  # reset by the success


async def test_poison_record_is_dead_lettered_after_max_attempts_while_others_replay(
    open_queue, started
):
    queue = await open_queue()
    batch = records(0, 10)
    batch[3]["poison"] = True
    await queue.append(AUDIT, batch)
    dead_before = metric("datastorage_dlq_dead_lettered_total", AUDIT)
    replay = FakeReplay()
    started(make_worker(queue, replay, max_attempts=5))

    async def settled():
        [stats, _] = await queue.stats()
        assert (stats.depth, stats.dead_lettered) == (0, 1)

    await until(settled)
    good = [r["event_id"] for i, r in enumerate(batch) if i != 3]
    assert sorted(replay.stored) == good
    poison_alone = [b for _, _, b in replay.calls if b == [batch[3]]]
    assert len(poison_alone) == 5
    [letter] = await queue.dead_letters(AUDIT)
    assert letter["record"] == batch[3]
    assert letter["attempts"] == 5
    assert letter["error"].startswith("PermanentError: value too long")
    assert metric("datastorage_dlq_dead_lettered_total", AUDIT) - dead_before == 1


async def test_stop_during_backoff_returns_promptly_and_releases(open_queue):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 3))
    replay = FakeReplay(transient_failures=1_000)
    worker = make_worker(queue, replay, backoff_initial=30.0, backoff_max=30.0)
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.last_error is not None)  # now backing off

    started_at = time.monotonic()
    await worker.stop()
    assert time.monotonic() - started_at < 2
    assert task.done() and task.exception() is None
    assert len(replay.calls) == 1

    other = await open_queue("proc-2")
    assert [(e.record, e.attempts) for e in await other.claim(AUDIT, 10)] == [
        (r, 0) for r in records(0, 3)
    ]


async def test_stop_releases_the_entries_of_a_hung_replay(open_queue):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 3))
    replay = FakeReplay(gate=asyncio.Event())  # never opens
    worker = make_worker(queue, replay, stop_grace=0.1)
    task = asyncio.create_task(worker.run())
    await until(lambda: bool(replay.calls))

    started_at = time.monotonic()
    await worker.stop()
    assert time.monotonic() - started_at < 2
    assert task.done() and not task.cancelled() and task.exception() is None

    other = await open_queue("proc-2")
    assert [e.attempts for e in await other.claim(AUDIT, 10)] == [0, 0, 0]


async def test_notify_wakes_an_idle_worker(open_queue, started):
    queue = await open_queue()
    replay = FakeReplay()
    worker = make_worker(queue, replay, idle_interval=60.0)
    await queue.append(AUDIT, records(0, 1))
    started(worker)
    await until(lambda: "e-00000" in replay.stored)  # then the queue is empty: it idles 60 s

    await queue.append(AUDIT, records(1, 2))
    worker.notify()
    await until(lambda: "e-00001" in replay.stored, timeout=5)


async def test_gauges_follow_the_queue(open_queue, started):
    queue = await open_queue()
    await queue.append(AUDIT, records(0, 7))
    gate = asyncio.Event()
    started(make_worker(queue, FakeReplay(gate=gate)))

    async def gauge_is(value: float):
        assert REGISTRY.get_sample_value("datastorage_dlq_depth", {"stream": AUDIT}) == value

    await until(lambda: gauge_is(7))
    gate.set()
    await until(lambda: gauge_is(0))
    assert REGISTRY.get_sample_value("datastorage_dlq_oldest_age_seconds", {"stream": AUDIT}) == 0


async def test_worker_keeps_running_through_a_dlq_outage():
    server = RedisServer()  # its own server: this test kills it
    queue = open_dlq(server.url, capacity=100, consumer="proc-1", claim_idle=30)
    replay = FakeReplay()
    worker = make_worker(queue, replay)
    try:
        await queue.open()
        task = asyncio.create_task(worker.run())
        server.kill()
        await until(lambda: isinstance(worker.last_error, DLQUnavailable))
        assert not task.done()
        server.start()
        await until(queue.ping, errors=(DLQUnavailable,))
        await queue.append(AUDIT, records(0, 2))
        worker.notify()
        await until(lambda: len(replay.stored) == 2)
        await worker.stop()
        assert task.done() and task.exception() is None
    finally:
        await worker.stop()
        await queue.close()
        server.destroy()
