"""DLQ replay SQL against a real PostgreSQL: idempotent, parent dates looked up."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from support import make_event

from datastorage.domain.events import TimeBounds, normalize_event
from datastorage.store import audit_replay

BOUNDS = TimeBounds(dt.timedelta(days=7), dt.timedelta(minutes=5))


def _records(count: int, **overrides) -> list[dict]:
    now = dt.datetime.now(dt.UTC)
    return [normalize_event(make_event(**overrides), BOUNDS, now) for _ in range(count)]


async def _replay(database_url: str, records: list[dict]) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await audit_replay.replay_events(conn, records, lock_timeout=2, leaf_hashes=True)


def _stored(db, correlation_id: str) -> dict[str, int]:
    return dict(
        db.execute(
            "SELECT event_id::text, count(*) FROM audit_events WHERE correlation_id = %s GROUP BY 1",
            (correlation_id,),
        ).fetchall()
    )


@pytest.mark.asyncio
async def test_replaying_stored_records_again_inserts_only_the_new_ones(database_url, db):
    correlation = f"replay-{uuid.uuid4()}"
    first = _records(3, correlation_id=correlation)
    await _replay(database_url, first)
    again = first + _records(2, correlation_id=correlation)
    await _replay(database_url, again)
    stored = _stored(db, correlation)
    assert set(stored) == {r["event_id"] for r in again}
    assert set(stored.values()) == {1}


@pytest.mark.asyncio
async def test_replay_looks_up_parent_dates_and_keeps_orphans(database_url, db):
    correlation = f"replay-parent-{uuid.uuid4()}"
    parent = _records(1, correlation_id=correlation)
    await _replay(database_url, parent)
    child = _records(1, correlation_id=correlation, parent_event_id=parent[0]["event_id"])
    orphan = _records(1, correlation_id=correlation, parent_event_id=str(uuid.uuid4()))
    await _replay(database_url, child + orphan)
    dates = dict(
        db.execute(
            "SELECT event_id::text, parent_event_date FROM audit_events WHERE event_id = ANY(%s)",
            ([child[0]["event_id"], orphan[0]["event_id"]],),
        ).fetchall()
    )
    assert dates[child[0]["event_id"]] == dt.date.fromisoformat(parent[0]["event_date"])
    assert dates[orphan[0]["event_id"]] is None
