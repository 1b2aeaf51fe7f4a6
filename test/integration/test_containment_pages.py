"""Containment pages: the GIN-first plan (few matches) and the planner's plan (many) give
the same pages, in both orders and across cursor pages."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from support import make_event

from datastorage.domain.events import TimeBounds, normalize_event
from datastorage.store import audit_queries, audit_replay

BOUNDS = TimeBounds(dt.timedelta(days=7), dt.timedelta(minutes=5))


async def _pages(conn, probe: dict, descending: bool) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await audit_queries.query_events(
            conn,
            audit_queries.EventQuery(
                filters={},
                since=None,
                until=None,
                event_data=probe,
                descending=descending,
                limit=4,
                offset=None,
                cursor=cursor,
                count_limit=10_000,
            ),
        )
        pages.append([e["event_id"] for e in page.events])
        cursor = page.next_cursor
        if cursor is None:
            return pages


@pytest.mark.asyncio
async def test_gin_first_and_planner_pages_agree(database_url, monkeypatch):
    tag = f"pages-{uuid.uuid4()}"
    now = dt.datetime.now(dt.UTC)
    events = [
        normalize_event(
            make_event(
                event_timestamp=(now - dt.timedelta(seconds=i % 7)).isoformat(),
                event_data={"tag": tag, "odd": i % 2 == 1},
            ),
            BOUNDS,
            now,
        )
        for i in range(21)
    ]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await audit_replay.replay_events(conn, events, lock_timeout=2, leaf_hashes=False)
        probe = {"tag": tag, "odd": True}
        for descending in (True, False):
            gin_first = await _pages(conn, probe, descending)
            monkeypatch.setattr(audit_queries, "GIN_FIRST_MAX_MATCHES", 0)
            planner = await _pages(conn, probe, descending)
            monkeypatch.undo()
            assert gin_first == planner
            flat = [event_id for page in gin_first for event_id in page]
            assert sorted(flat) == sorted(e["event_id"] for e in events[1::2])
            assert len(gin_first) == 3  # 10 matches in pages of 4
