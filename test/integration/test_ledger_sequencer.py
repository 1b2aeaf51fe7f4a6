"""The sequencer against a real PostgreSQL: every committed event becomes exactly one leaf, in
commit order, with proofs that verify; concurrent writers, late commits, and a sequencer killed
with SIGKILL mid-transaction lose nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from ledger_helpers import (
    check_tree,
    connection_source,
    new_events,
    reset_log,
    store_events,
)
from support import REPO, eventually

from datastorage.ledger import merkle, proofs
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.ledger.sequencer import Sequencer, sequence_once
from datastorage.store import audit_queries, audit_writes
from datastorage.store import ledger as store

pytestmark = pytest.mark.asyncio


@pytest.fixture()
def log_db(database_url, db):
    reset_log(db)
    return database_url


def _leaf_count(db, event_ids) -> dict[str, int]:
    rows = db.execute(
        "SELECT event_id::text, count(*) FROM log_leaves WHERE event_id = ANY(%s::uuid[]) "
        "GROUP BY 1",
        (list(event_ids),),
    ).fetchall()
    return dict(rows)


async def test_stored_events_become_leaves_with_verifying_proofs(log_db, db):
    connect = connection_source(log_db)
    events = new_events(25, correlation_id=f"seq-{uuid.uuid4()}")
    async with connect() as conn:
        await store_events(conn, events[:10])
        await store_events(conn, events[10:])
        await conn.execute(
            "UPDATE log_pending SET queued_at = now() - interval '30 seconds' "
            "WHERE seq = (SELECT min(seq) FROM log_pending)"
        )
        status = await store.log_status(conn)
        assert (status.tree_size, status.checkpoint_age) == (0, None)
        assert 30 <= status.sequencing_lag < 300
        # A round takes whole pending rows (one per statement), at least one: 10 events here.
        first = await sequence_once(conn, batch_size=7)
        assert (first.appended, first.size) == (10, 10)
        while (await sequence_once(conn, batch_size=7)).appended:
            pass
        size, root = await check_tree(log_db)
        assert size == 25
        for event in events:
            proof = await proofs.inclusion(conn, event["event_id"], size)
            stored = await audit_queries.get_event(conn, event["event_id"])
            assert proof.leaf_hash == event_leaf_hash(stored)
            merkle.verify_inclusion(proof.leaf_index, size, proof.leaf_hash, proof.path, root)
        for first_size in (1, 7, 13, 24, 25):
            old_root = await proofs.root(conn, first_size)
            proof = await proofs.consistency(conn, first_size, size)
            merkle.verify_consistency(first_size, size, old_root, root, proof)
        with pytest.raises(proofs.NotSequenced):
            await proofs.inclusion(conn, events[-1]["event_id"], 10)
    assert db.execute("SELECT count(*) FROM log_pending").fetchone()[0] == 0
    # Each leaf's event_date (unpacked from the queue's 4-byte day numbers) is its row's.
    dated = db.execute(
        "SELECT count(*) FROM log_leaves JOIN audit_events USING (event_id, event_date) "
        "WHERE event_id = ANY(%s::uuid[])",
        ([e["event_id"] for e in events],),
    ).fetchone()[0]
    assert dated == 25


async def test_pending_rows_of_the_older_kind_are_still_sequenced(log_db, db):
    """Rows holding one event each (queued before migration 013, or by a process not upgraded
    yet), with and without a hash, then a row of the current kind: every event becomes a leaf,
    in queue order, with the hash of its stored row."""
    connect = connection_source(log_db)
    events = new_events(4, correlation_id=f"seq-old-{uuid.uuid4()}")
    async with connect() as conn:
        await audit_writes.insert_batch(
            conn, events, client_ids=(), lock_timeout=2, leaf_hashes=True
        )
        await conn.execute("DELETE FROM log_pending")
        expected = {}
        for event in events:
            stored = await audit_queries.get_event(conn, event["event_id"])
            expected[event["event_id"]] = event_leaf_hash(stored)
        first, second = events[0], events[1]
        await conn.execute(
            "INSERT INTO log_pending (event_id, event_date, leaf_hash) "
            "VALUES (%s, %s, %s), (%s, %s, NULL)",
            (first["event_id"], first["event_date"], expected[first["event_id"]],
             second["event_id"], second["event_date"]),
        )  # fmt: skip
        await store.register(conn, store.Queued.of(events[2:], leaf_hashes=True))
        assert [q.event_id for q in await store.pending_events(conn)] == list(expected)
        result = await sequence_once(conn, batch_size=100)
    assert (result.appended, result.dropped) == (4, 0)
    leaves = db.execute(
        "SELECT event_id::text, leaf_hash, event_date FROM log_leaves ORDER BY leaf_index"
    ).fetchall()
    assert [(i, bytes(h)) for i, h, _ in leaves] == list(expected.items())
    assert [str(d) for _, _, d in leaves] == [e["event_date"] for e in events]
    await check_tree(log_db)


async def test_registered_twice_or_row_gone_is_dropped_without_a_leaf(log_db, db):
    connect = connection_source(log_db)
    events = new_events(3, correlation_id=f"seq-dup-{uuid.uuid4()}")
    async with connect() as conn:
        await store_events(conn, events)
        # A second registration of one event, and one (without a hash) of an event never stored.
        await store.register(conn, store.Queued.of(events[:1], leaf_hashes=False))
        no_such_row = {"event_id": str(uuid.uuid4()), "event_date": events[0]["event_date"]}
        await store.register(conn, store.Queued.of([no_such_row], leaf_hashes=False))
        result = await sequence_once(conn, batch_size=100)
        assert (result.appended, result.dropped) == (3, 2)
        await store.register(conn, store.Queued.of(events[1:2], leaf_hashes=True))  # again
        result = await sequence_once(conn, batch_size=100)
        assert (result.appended, result.dropped) == (0, 1)
    assert set(_leaf_count(db, [e["event_id"] for e in events]).values()) == {1}
    await check_tree(log_db)


async def test_an_event_queued_with_its_hash_is_a_leaf_even_if_its_row_is_gone(log_db, db):
    """It was stored: the leaf commits to it, and `verify` reports the deletion as `missing`."""
    connect = connection_source(log_db)
    events = new_events(2)
    async with connect() as conn:
        await store_events(conn, events)
        await conn.execute("DELETE FROM audit_events WHERE event_id = %s", (events[0]["event_id"],))
        result = await sequence_once(conn, batch_size=100)
    assert (result.appended, result.dropped) == (2, 0)
    assert set(_leaf_count(db, [e["event_id"] for e in events]).values()) == {1}


async def test_an_event_inserted_without_registration_never_becomes_a_leaf(log_db, db):
    connect = connection_source(log_db)
    registered, bare = new_events(2), new_events(1)
    async with connect() as conn:
        await store_events(conn, registered)
        await audit_writes.insert_batch(conn, bare, client_ids=(), lock_timeout=2, leaf_hashes=True)
        # The last pending row: the one the statement storing `bare` queued.
        await conn.execute("DELETE FROM log_pending WHERE seq = (SELECT max(seq) FROM log_pending)")
        await sequence_once(conn, batch_size=100)
    assert _leaf_count(db, [bare[0]["event_id"]]) == {}


async def test_one_sequencer_at_a_time(log_db):
    connect = connection_source(log_db)
    async with connect() as holder, connect() as other:
        await store_events(holder, new_events(2))
        async with holder.transaction():
            assert await store.try_lock(holder, store.SEQUENCER_LOCK)
            assert (await sequence_once(other, batch_size=10)).size == -1
        assert (await sequence_once(other, batch_size=10)).appended == 2


async def test_concurrent_writers_late_commits_and_a_running_sequencer_give_each_event_one_leaf(
    log_db, db
):
    connect = connection_source(log_db)
    stop = asyncio.Event()
    sequencer = Sequencer(connect, batch_size=50, interval=0.01)
    written: list[str] = []

    async def writer(rounds: int) -> None:
        async with connect() as conn:
            for _ in range(rounds):
                events = new_events(5)
                await store_events(conn, events)
                written.extend(e["event_id"] for e in events)

    async def late_writer() -> None:
        # A transaction that stays open while many later ones commit: its events are queued
        # with an early seq, become visible last, and must still become leaves.
        async with connect() as conn, conn.transaction():
            events = new_events(3)
            await audit_writes.insert_batch(
                conn, events, client_ids=(), lock_timeout=2, leaf_hashes=True
            )
            await asyncio.sleep(1.0)
            written.extend(e["event_id"] for e in events)

    runner = asyncio.create_task(sequencer.run(stop))
    await asyncio.gather(late_writer(), *(writer(20) for _ in range(6)))

    def all_sequenced() -> None:
        counts = _leaf_count(db, written)
        assert len(counts) == len(written) and set(counts.values()) == {1}

    await asyncio.to_thread(eventually, all_sequenced, 30)
    stop.set()
    await runner
    size, _ = await check_tree(log_db)
    assert size == len(written) == 6 * 20 * 5 + 3


_KILLED_ROUND = """
import asyncio, sys, psycopg
from datastorage.ledger import sequencer
from datastorage.store import ledger as store

async def hang(*args):
    print("appended", flush=True)
    await asyncio.sleep(3600)

async def main():
    store.append_nodes = hang  # stop between the leaves' insert and the commit
    conn = await psycopg.AsyncConnection.connect(sys.argv[1], autocommit=True)
    await sequencer.sequence_once(conn, 1000)

asyncio.run(main())
"""


async def test_a_sequencer_killed_mid_transaction_loses_and_duplicates_nothing(log_db, db):
    connect = connection_source(log_db)
    events = new_events(40)
    async with connect() as conn:
        await store_events(conn, events[:20])
        await sequence_once(conn, batch_size=1000)
        await store_events(conn, events[20:])
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_ROUND, log_db],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == "appended"
        in_flight = db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).fetchone()[0]
        assert in_flight >= 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def lock_released() -> None:
        held = db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).fetchone()[0]
        assert held == 0

    eventually(lock_released, 10)
    assert db.execute("SELECT count(*) FROM log_leaves").fetchone()[0] == 20
    started = time.monotonic()
    async with connect() as conn:
        while (await sequence_once(conn, batch_size=1000)).appended:
            assert time.monotonic() - started < 30
    counts = _leaf_count(db, [e["event_id"] for e in events])
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert (await check_tree(log_db))[0] == 40
