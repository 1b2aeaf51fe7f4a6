"""Every store path that inserts audit events queues exactly the rows it stored for the log, in
the same transaction: one event, a group commit, batches (checked and streamed), and the DLQ
replay (its COPY and its merge). Resends skipped by idempotency are not queued again, and a
rolled-back write queues nothing. With the log on (`leaf_hashes`) each event is queued with the
leaf hash of the event GET returns for its stored row; with the log off, without one."""

from __future__ import annotations

import copy
import uuid
from collections import Counter

import psycopg
import pytest
from ledger_helpers import new_events, queued_events

from datastorage.ledger.leaf import event_leaf_hash
from datastorage.store import audit_replay, audit_writes
from datastorage.store.audit_rows import row_to_event

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=[True, False], ids=["log-on", "log-off"])
def leaf_hashes(request) -> bool:
    return request.param


def _queued(db, events) -> dict[str, int]:
    """event_id -> how many times it is queued in log_pending."""
    wanted = {e["event_id"] for e in events}
    return dict(Counter(q.event_id for q in queued_events(db) if q.event_id in wanted))


def _stored(db, events) -> set[str]:
    rows = db.execute(
        "SELECT event_id::text FROM audit_events WHERE event_id = ANY(%s::uuid[])",
        ([e["event_id"] for e in events],),
    ).fetchall()
    return {row[0] for row in rows}


def _queued_hashes(db, events) -> dict[str, bytes | None]:
    wanted = {e["event_id"] for e in events}
    return {q.event_id: q.leaf_hash for q in queued_events(db) if q.event_id in wanted}


def _row_hashes(db, events) -> dict[str, bytes]:
    """The leaf hash of each stored row, computed from the event GET returns for it."""
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            "SELECT * FROM audit_events WHERE event_id = ANY(%s::uuid[])",
            ([e["event_id"] for e in events],),
        )
        return {str(r["event_id"]): event_leaf_hash(row_to_event(r)) for r in cur.fetchall()}


def _once_each(db, events, leaf_hashes: bool) -> None:
    assert _stored(db, events) == {e["event_id"] for e in events}
    assert _queued(db, events) == {e["event_id"]: 1 for e in events}
    expected = _row_hashes(db, events) if leaf_hashes else dict.fromkeys(_row_hashes(db, events))
    assert _queued_hashes(db, events) == expected


async def _conn(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def test_one_event_and_its_resend(database_url, db, leaf_hashes):
    (event,) = new_events(1)
    async with await _conn(database_url) as conn:
        first = await audit_writes.insert_event(
            conn, event, client_id=True, lock_timeout=2, leaf_hashes=leaf_hashes
        )
        again = await audit_writes.insert_event(
            conn, copy.deepcopy(event), client_id=True, lock_timeout=2, leaf_hashes=leaf_hashes
        )
    assert (first.created, again.created) == (True, False)
    _once_each(db, [event], leaf_hashes)


async def test_a_group_with_a_duplicate_and_an_already_stored_event(database_url, db, leaf_hashes):
    stored, fresh = new_events(1), new_events(3)
    async with await _conn(database_url) as conn:
        await audit_writes.insert_group(conn, [(stored[0], True)], leaf_hashes=leaf_hashes)
        items = [(e, False) for e in fresh]
        items += [(copy.deepcopy(fresh[0]), True), (copy.deepcopy(stored[0]), True)]
        results = await audit_writes.insert_group(conn, items, leaf_hashes=leaf_hashes)
    assert [r.created for r in results] == [True, True, True, False, False]
    _once_each(db, stored + fresh, leaf_hashes)


async def test_a_checked_batch_skips_resent_events(database_url, db, leaf_hashes):
    first, more = new_events(2), new_events(2)
    async with await _conn(database_url) as conn:
        await audit_writes.insert_batch(
            conn, first, client_ids=(), lock_timeout=2, leaf_hashes=leaf_hashes
        )
        resend = [copy.deepcopy(e) for e in first] + more
        inserted, conflicts = await audit_writes.insert_batch(
            conn,
            resend,
            client_ids={e["event_id"] for e in resend},
            lock_timeout=2,
            leaf_hashes=leaf_hashes,
        )
    assert (inserted, conflicts) == (2, [])
    _once_each(db, first + more, leaf_hashes)


async def test_a_streamed_batch_and_a_rolled_back_one(database_url, db, leaf_hashes):
    events, failed = new_events(50), new_events(5)

    def refuse() -> None:
        raise ValueError("the last item was invalid")

    async with await _conn(database_url) as conn:
        await audit_writes.copy_events(
            conn,
            (e for e in events),
            complete=lambda: None,
            lock_timeout=2,
            leaf_hashes=leaf_hashes,
        )
        with pytest.raises(ValueError):
            await audit_writes.copy_events(
                conn, failed, complete=refuse, lock_timeout=2, leaf_hashes=leaf_hashes
            )
    _once_each(db, events, leaf_hashes)
    assert _stored(db, failed) == set() and _queued(db, failed) == {}


async def test_a_replay_queues_only_what_it_inserts(database_url, db, leaf_hashes):
    correlation = f"replay-log-{uuid.uuid4()}"
    first = new_events(3, correlation_id=correlation)
    async with await _conn(database_url) as conn:
        await audit_replay.replay_events(
            conn, first, lock_timeout=2, leaf_hashes=leaf_hashes
        )  # the COPY path
        _once_each(db, first, leaf_hashes)
        again = [copy.deepcopy(e) for e in first] + new_events(2, correlation_id=correlation)
        await audit_replay.replay_events(
            conn, again, lock_timeout=2, leaf_hashes=leaf_hashes
        )  # the merge path
        await audit_replay.replay_events(
            conn, again, lock_timeout=2, leaf_hashes=leaf_hashes
        )  # all already stored
    _once_each(db, again, leaf_hashes)


async def test_an_event_holding_a_float_is_queued_for_the_sequencer_to_hash(database_url, db):
    """PostgreSQL writes a float back its own way (numeric), so the writer does not guess."""
    exact, floating = new_events(2)
    floating["event_data"] = {"ratio": 0.5}
    async with await _conn(database_url) as conn:
        await audit_writes.insert_batch(
            conn, [exact, floating], client_ids=(), lock_timeout=2, leaf_hashes=True
        )
    assert _queued_hashes(db, [exact, floating]) == {
        exact["event_id"]: _row_hashes(db, [exact])[exact["event_id"]],
        floating["event_id"]: None,
    }
