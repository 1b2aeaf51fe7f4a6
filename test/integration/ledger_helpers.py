"""Shared pieces of the tamper-evident log tests: events stored by the write path's store
functions (which queue them for the log in the same transaction), and a full check of the
stored tree."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from support import make_event

from datastorage.domain.events import TimeBounds, normalize_event
from datastorage.ledger import merkle, note, tree
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.store import audit_writes
from datastorage.store import ledger as store

BOUNDS = TimeBounds(dt.timedelta(days=7), dt.timedelta(minutes=5))
LOG_TABLES = "log_pending, log_leaves, log_nodes, log_pairs, log_checkpoints, log_signer_state"


def connection_source(url: str):
    @asynccontextmanager
    async def connect() -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            yield conn
        finally:
            await conn.close()

    return connect


def new_events(count: int, **overrides) -> list[dict]:
    now = dt.datetime.now(dt.UTC)
    return [normalize_event(make_event(**overrides), BOUNDS, now) for _ in range(count)]


async def store_events(conn: psycopg.AsyncConnection, events: list[dict]) -> None:
    """Insert a batch (queued for sequencing in the same transaction)."""
    await audit_writes.insert_batch(conn, events, client_ids=(), lock_timeout=2, leaf_hashes=True)


def queued_events(db: psycopg.Connection) -> list[store.PendingEvent]:
    """Every event in log_pending, in queue order (a row holds one statement's events)."""
    rows = db.execute(store.PENDING_EVENTS, binary=True).fetchall()
    return [store.PendingEvent.of(p) for p in store.unpack_pending(b"".join(r[0] for r in rows))]


def reset_log(db: psycopg.Connection) -> None:
    db.execute(f"TRUNCATE {LOG_TABLES}")
    db.execute("UPDATE log_tree SET tree_size = 0, root_hash = sha256(''::bytea)")


async def check_tree(url: str) -> tuple[int, bytes]:
    """Assert the stored tree is whole: leaf indexes 0..n-1, every leaf hash recomputed from its
    row, the stored subtrees (exactly those of the stored levels) and the stored root equal to a
    rebuild from the leaves."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT leaf_index, event_id::text, event_date, leaf_hash FROM log_leaves "
            "ORDER BY leaf_index"
        )
        leaves = await cur.fetchall()
        assert [row[0] for row in leaves] == list(range(len(leaves)))
        events = await store.events_by_key(conn, [(row[1], row[2]) for row in leaves])
        for _, event_id, event_date, leaf_hash in leaves:
            assert event_leaf_hash(events[(event_id, event_date)]) == bytes(leaf_hash), event_id
        hashes = [bytes(row[3]) for row in leaves]
        rows, pairs = tree.kept(merkle.append_leaves(0, [], hashes).nodes)
        cur = await conn.execute("SELECT level, node_index, hash FROM log_nodes")
        stored_nodes = {(level, index): bytes(h) for level, index, h in await cur.fetchall()}
        assert stored_nodes == {(level, index): h for level, index, h in rows}
        cur = await conn.execute("SELECT tile_index, hashes FROM log_pairs")
        assert {tile: bytes(h) for tile, h in await cur.fetchall()} == dict(pairs)
        state = await store.tree_state(conn)
        assert state.size == len(leaves)
        assert state.root == merkle.root_from_leaves(hashes)
        return state.size, state.root


def fresh_log_database(pg_server) -> str:
    """A migrated database of the test's own (its log starts empty and nothing else writes)."""
    from support import run_migrations

    url = pg_server.create_database(f"log_{uuid.uuid4().hex[:12]}")
    run_migrations(url)
    return url


async def grow_and_sign(url: str, signer: note.Signer, events: list[dict]) -> None:
    """Store events (queued for the log), sequence everything pending and sign a checkpoint of
    the whole tree. A server's own background sequencer and signer may do part of it at the same
    time (they take the same locks): this waits until the checkpoint covers the whole tree."""
    from datastorage.ledger.sequencer import sequence_once
    from datastorage.ledger.signer import CheckpointSigner, Outcome

    connect = connection_source(url)
    checkpoints = CheckpointSigner(connect, signer)
    deadline = asyncio.get_running_loop().time() + 30
    async with connect() as conn:
        if events:
            await store_events(conn, events)
        while True:
            await sequence_once(conn, batch_size=1000)
            cur = await conn.execute("SELECT count(*) FROM log_pending")
            pending = (await cur.fetchone())[0]
            size = (await store.tree_state(conn)).size
            latest = await store.latest_checkpoint(conn)
            if not pending and latest is not None and latest.size == size:
                return
            if not pending:
                assert await checkpoints.sign_once() in (
                    Outcome.SIGNED,
                    Outcome.UNCHANGED,
                    Outcome.BUSY,
                )
            assert asyncio.get_running_loop().time() < deadline, "the log did not catch up"
            await asyncio.sleep(0.05 if pending else 0)
