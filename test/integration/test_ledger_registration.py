"""Every store path that inserts audit events queues exactly the rows it stored for the log, in
the same transaction: one event, a group commit, batches (checked and streamed), and the DLQ
replay (its COPY and its merge). Resends skipped by idempotency are not queued again, and a
rolled-back write queues nothing."""

from __future__ import annotations

import copy
import uuid

import psycopg
import pytest
from ledger_helpers import new_events

from datastorage.store import audit_replay, audit_writes

pytestmark = pytest.mark.asyncio


def _queued(db, events) -> dict[str, int]:
    """event_id -> how many times it is queued in log_pending."""
    rows = db.execute(
        "SELECT event_id::text, count(*) FROM log_pending WHERE event_id = ANY(%s::uuid[]) "
        "GROUP BY 1",
        ([e["event_id"] for e in events],),
    ).fetchall()
    return dict(rows)


def _stored(db, events) -> set[str]:
    rows = db.execute(
        "SELECT event_id::text FROM audit_events WHERE event_id = ANY(%s::uuid[])",
        ([e["event_id"] for e in events],),
    ).fetchall()
    return {row[0] for row in rows}


def _once_each(db, events) -> None:
    assert _stored(db, events) == {e["event_id"] for e in events}
    assert _queued(db, events) == {e["event_id"]: 1 for e in events}


async def _conn(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def test_one_event_and_its_resend(database_url, db):
    (event,) = new_events(1)
    async with await _conn(database_url) as conn:
        first = await audit_writes.insert_event(conn, event, client_id=True, lock_timeout=2)
        again = await audit_writes.insert_event(
            conn, copy.deepcopy(event), client_id=True, lock_timeout=2
        )
    assert (first.created, again.created) == (True, False)
    _once_each(db, [event])


async def test_a_group_with_a_duplicate_and_an_already_stored_event(database_url, db):
    stored, fresh = new_events(1), new_events(3)
    async with await _conn(database_url) as conn:
        await audit_writes.insert_group(conn, [(stored[0], True)])
        items = [(e, False) for e in fresh]
        items += [(copy.deepcopy(fresh[0]), True), (copy.deepcopy(stored[0]), True)]
        results = await audit_writes.insert_group(conn, items)
    assert [r.created for r in results] == [True, True, True, False, False]
    _once_each(db, stored + fresh)


async def test_a_checked_batch_skips_resent_events(database_url, db):
    first, more = new_events(2), new_events(2)
    async with await _conn(database_url) as conn:
        await audit_writes.insert_batch(conn, first, client_ids=(), lock_timeout=2)
        resend = [copy.deepcopy(e) for e in first] + more
        inserted, conflicts = await audit_writes.insert_batch(
            conn, resend, client_ids={e["event_id"] for e in resend}, lock_timeout=2
        )
    assert (inserted, conflicts) == (2, [])
    _once_each(db, first + more)


async def test_a_streamed_batch_and_a_rolled_back_one(database_url, db):
    events, failed = new_events(50), new_events(5)

    def refuse() -> None:
        raise ValueError("the last item was invalid")

    async with await _conn(database_url) as conn:
        await audit_writes.copy_events(
            conn, (e for e in events), complete=lambda: None, lock_timeout=2
        )
        with pytest.raises(ValueError):
            await audit_writes.copy_events(conn, failed, complete=refuse, lock_timeout=2)
    _once_each(db, events)
    assert _stored(db, failed) == set() and _queued(db, failed) == {}


async def test_a_replay_queues_only_what_it_inserts(database_url, db):
    correlation = f"replay-log-{uuid.uuid4()}"
    first = new_events(3, correlation_id=correlation)
    async with await _conn(database_url) as conn:
        await audit_replay.replay_events(conn, first, lock_timeout=2)  # the COPY path
        _once_each(db, first)
        again = [copy.deepcopy(e) for e in first] + new_events(2, correlation_id=correlation)
        await audit_replay.replay_events(conn, again, lock_timeout=2)  # the merge path
        await audit_replay.replay_events(conn, again, lock_timeout=2)  # all already stored
    _once_each(db, again)
