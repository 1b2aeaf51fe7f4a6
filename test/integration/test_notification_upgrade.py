"""Upgrading to int64 notification ids (migration 007, docs/compatibility.md) loses nothing.

A database at the previous schema holds notification records keyed by uuid, and the DLQ holds
records the previous version queued (their uuid in `id`): one already stored (a replay after a
crash before the acknowledgement) and one not. After `migrate`, the old rows keep everything
and are numbered in creation order; the previous version's own insert still works (a rolling
upgrade, a rollback); the queued records are replayed by the new server's drain worker (each
stored once); new records continue the sequence (increasing, not gapless: an insert that finds
its record already stored still uses a number). Both DLQ backends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx
import psycopg
import pytest
import redis
from psycopg.rows import dict_row
from support import PostgresServer, ServerProcess, eventually, make_notification

from datastorage.dlq.factory import open_dlq
from datastorage.store.migrate import migrate
from datastorage.store.notifications import FIELDS

NOTIFICATIONS = "/api/v1/audit/notifications"
PREVIOUS_SCHEMA = 6


@pytest.fixture(params=["file", "redis"])
def queue_url(request, tmp_path, redis_server) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'spool'}"
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture()
def old_database():
    pg = PostgresServer()
    url = pg.create_database("upgrade")
    migrate(url, premake=1, up_to=PREVIOUS_SCHEMA)
    yield url
    pg.destroy()


def previous_record(**fields: Any) -> dict[str, Any]:
    """A notification as the previous version stored and queued it: its uuid in `id`."""
    body = make_notification(**fields)
    return {**{k: body.get(k) for k in FIELDS}, "id": str(uuid.uuid4())}


def store_previous(url: str, records: list[dict[str, Any]], ages: list[int]) -> None:
    """Insert as the previous version did: the uuid and the fields, no number."""
    columns = ("id", *FIELDS, "created_at")
    insert = (
        f"INSERT INTO notification_audit ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        for record, age in zip(records, ages, strict=True):
            values = [record[c] for c in ("id", *FIELDS)]
            values[1 + FIELDS.index("escalation_level")] = record["escalation_level"] or 0
            conn.execute(insert, [*values, now - dt.timedelta(minutes=age)])


async def queue_previous(url: str, records: list[dict[str, Any]]) -> None:
    queue = open_dlq(url, capacity=1000, consumer="previous-version", claim_idle=30)
    await queue.open()
    try:
        await queue.append("notifications", records)
    finally:
        await queue.close()


def rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT seq, id::text AS uuid, notification_id, escalation_level "
            "FROM notification_audit ORDER BY seq"
        ).fetchall()


def test_upgrade_keeps_rows_and_replays_records_the_previous_version_queued(
    old_database, queue_url, tmp_path
):
    url = old_database
    stored = [previous_record(escalation_level=level) for level in (1, 2, 3)]
    # Inserted newest first: the new ids must follow creation time, not insertion order.
    store_previous(url, stored, ages=[10, 20, 30])
    not_stored = previous_record(delivery_status="250 OK")
    asyncio.run(queue_previous(queue_url, [stored[1], not_stored]))

    assert migrate(url, premake=1)[0] == "007_notification_int_ids.sql"  # and any later ones
    oldest_first = stored[::-1]
    assert rows(url) == [
        {
            "seq": position,
            "uuid": record["id"],
            "notification_id": record["notification_id"],
            "escalation_level": record["escalation_level"],
        }
        for position, record in enumerate(oldest_first, start=1)
    ]
    by_previous_version = previous_record()
    store_previous(url, [by_previous_version], ages=[0])
    assert rows(url)[-1]["uuid"] == by_previous_version["id"]
    assert rows(url)[-1]["seq"] == 4

    server = ServerProcess(
        {"DATASTORAGE_DATABASE_URL": url, "DATASTORAGE_DLQ_URL": queue_url}, tmp_path
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:

            def drained() -> dict[str, Any]:
                streams = api.get("/api/v1/admin/dlq").json()["streams"]
                (stats,) = [s for s in streams if s["stream"] == "notifications"]
                assert stats["depth"] == 0, stats
                return stats

            assert eventually(drained, timeout=30, interval=0.2)["dead_lettered"] == 0
            after = rows(url)
            expected = [*oldest_first, by_previous_version, not_stored]
            assert [r["uuid"] for r in after] == [r["id"] for r in expected]
            replayed_seq = after[-1]["seq"]
            assert replayed_seq > 4  # a sequence: increasing, with gaps (a skipped replay uses one)
            listed = api.get(
                NOTIFICATIONS, params={"notification_id": not_stored["notification_id"]}
            )
            (record,) = listed.json()["data"]
            assert record["id"] == replayed_seq and record["delivery_status"] == "250 OK"
            created = api.post(NOTIFICATIONS, json=make_notification())
            assert created.status_code == 201, created.text
            assert created.json()["id"] > replayed_seq
    finally:
        server.stop()
