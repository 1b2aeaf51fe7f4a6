"""Queries: every filter, containment via GIN, keyset and offset paging, column round trip."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import psycopg
import pytest
from support import make_event, now_rfc3339, run_migrations

from datastorage.services.export import export_query
from datastorage.store.audit_queries import filter_clause

# Each test runs twice: the server connects directly, then through PgBouncer.
pytestmark = pytest.mark.pgbouncer_too

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"


def _store(api, events):
    response = api.post(BATCH, json=events)
    assert response.status_code == 201, response.text
    return response.json()["event_ids"]


@pytest.fixture()
def tagged(api):
    """Eight events that differ in every filterable field, under one random tag."""
    tag = uuid.uuid4().hex[:12]
    parent = make_event(event_id=str(uuid.uuid4()), correlation_id=f"a-{tag}")
    events = [parent]
    for i in range(7):
        events.append(
            make_event(
                correlation_id=f"{'a' if i < 4 else 'b'}-{tag}",
                event_type=["notification.sent", "notification.failed"][i % 2],
                event_category="notification",
                event_action=["sent", "failed"][i % 2],
                event_outcome=["success", "failure", "pending"][i % 3],
                severity=["info", "warning"][i % 2],
                actor_type=f"actor-{i % 2}-{tag}",
                actor_id=f"actor-id-{i}-{tag}",
                resource_type=f"rt-{i % 3}-{tag}",
                resource_id=f"rid-{i}-{tag}",
                namespace=f"ns-{i % 2}-{tag}",
                cluster_name=f"cluster-{i % 2}-{tag}",
                parent_event_id=parent["event_id"] if i == 6 else None,
                event_timestamp=now_rfc3339(-3600 * (7 - i)),
                event_data={"tag": tag, "index": i, "nested": {"even": i % 2 == 0}},
            )
        )
    ids = _store(api, events)
    return tag, events, ids


def _ids(api, **params):
    response = api.get(EVENTS, params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return [e["event_id"] for e in response.json()["data"]]


@pytest.mark.parametrize(
    ("param", "value_of", "expected"),
    [
        ("correlation_id", lambda t: f"b-{t}", {5, 6, 7}),
        ("actor_type", lambda t: f"actor-1-{t}", {2, 4, 6}),
        ("actor_id", lambda t: f"actor-id-3-{t}", {4}),
        ("resource_type", lambda t: f"rt-2-{t}", {3, 6}),
        ("resource_id", lambda t: f"rid-0-{t}", {1}),
        ("namespace", lambda t: f"ns-0-{t}", {1, 3, 5, 7}),
        ("cluster_name", lambda t: f"cluster-1-{t}", {2, 4, 6}),
    ],
)
def test_each_equality_filter(api, tagged, param, value_of, expected):
    tag, events, ids = tagged
    assert set(_ids(api, **{param: value_of(tag)})) == {ids[i] for i in expected}


def test_filters_are_anded(api, tagged):
    tag, events, ids = tagged
    found = _ids(
        api,
        namespace=f"ns-0-{tag}",
        event_type="notification.sent",
        event_outcome="pending",
        event_category="notification",
        event_action="sent",
        severity="info",
    )
    assert found == [ids[3]]


def test_parent_event_filter(api, tagged):
    tag, events, ids = tagged
    assert _ids(api, parent_event_id=events[0]["event_id"]) == [ids[7]]


def test_time_range_filters_accept_every_form(api, tagged):
    tag, events, ids = tagged
    # Item i of the fixture lies 7 - i hours back; ids[0] is the parent (now).
    last_150_minutes = {ids[6], ids[7]}
    for since in ["150m", "9000s", "3h"]:
        found = set(_ids(api, namespace=f"ns-0-{tag}", since=since)) | set(
            _ids(api, namespace=f"ns-1-{tag}", since=since)
        )
        assert found == last_150_minutes, since
    found = set(_ids(api, resource_type=f"rt-1-{tag}", since=now_rfc3339(-3 * 3600 - 60)))
    assert found == {ids[5]}
    today = dt.datetime.now(dt.UTC).date().isoformat()
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    assert set(_ids(api, correlation_id=f"b-{tag}", since="7d", until=tomorrow)) == {
        ids[5],
        ids[6],
        ids[7],
    }
    assert len(_ids(api, correlation_id=f"b-{tag}", since=today)) <= 3
    assert _ids(api, correlation_id=f"b-{tag}", until="2000-01-01") == []


@pytest.mark.parametrize("bad", ["yesterday", "7w", "2024-13-01", "2024-01-01T00:00:00"])
def test_bad_time_bound_is_400(api, bad):
    response = api.get(EVENTS, params={"since": bad})
    assert response.status_code == 400
    assert "since" in response.json()["field_errors"]


def test_event_data_containment(api, tagged, db):
    tag, events, ids = tagged
    found = _ids(api, event_data=json.dumps({"tag": tag, "nested": {"even": True}}))
    assert set(found) == {ids[1], ids[3], ids[5], ids[7]}
    assert api.get(EVENTS, params={"event_data": "[1]"}).status_code == 400
    assert api.get(EVENTS, params={"event_data": "{nope"}).status_code == 400


def test_containment_is_served_by_the_gin_index(db, tagged):
    tag = tagged[0]
    db.execute("ANALYZE audit_events")
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in db.execute(
                "EXPLAIN SELECT * FROM audit_events WHERE event_data @> %s::jsonb",
                (json.dumps({"tag": tag}),),
            ).fetchall()
        )
    assert "audit_events_data_gin" in plan or "event_data_idx" in plan, plan
    assert "Bitmap Index Scan" in plan, plan


def test_order_asc_is_the_chronological_timeline(api, tagged):
    tag, events, ids = tagged
    timeline = api.get(EVENTS, params={"correlation_id": f"a-{tag}", "order": "asc"}).json()
    stamps = [e["event_timestamp"] for e in timeline["data"]]
    assert stamps == sorted(stamps)
    newest_first = api.get(EVENTS, params={"correlation_id": f"a-{tag}"}).json()
    assert [e["event_id"] for e in newest_first["data"]] == [
        e["event_id"] for e in reversed(timeline["data"])
    ]


def test_every_stored_column_round_trips(api, db):
    parent = make_event(event_id=str(uuid.uuid4()), event_timestamp=now_rfc3339(-86400))
    _store(api, [parent])
    full = make_event(
        event_id=str(uuid.uuid4()),
        version="2.1",
        correlation_id=parent["correlation_id"],
        actor_type="user",
        actor_id="alice",
        resource_type="Pod",
        resource_id="web-1",
        parent_event_id=parent["event_id"],
        namespace="prod",
        cluster_name="eu-1",
        severity="critical",
        duration_ms=1234,
        error_code="E42",
        error_message="it broke",
        trace_id="t" * 32,
        span_id="s" * 16,
        event_data={"k": [1, 2.5, None, True, "é"]},
    )
    assert api.post(EVENTS, json=full).status_code == 201
    got = api.get(f"{EVENTS}/{full['event_id']}").json()
    for key, value in full.items():
        if key == "event_timestamp":
            sent = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            assert dt.datetime.fromisoformat(got[key].replace("Z", "+00:00")) == sent
        else:
            assert got[key] == value, key
    row = db.execute(
        "SELECT event_date, parent_event_date, created_at FROM audit_events WHERE event_id = %s",
        (full["event_id"],),
    ).fetchone()
    assert got["event_date"] == row[0].isoformat()
    assert got["parent_event_date"] == row[1].isoformat()
    assert got["retention_days"] == 2555 and got["is_sensitive"] is False
    assert dt.datetime.fromisoformat(got["created_at"].replace("Z", "+00:00")) == row[2]
    listed = api.get(
        EVENTS, params={"correlation_id": full["correlation_id"], "order": "asc"}
    ).json()["data"][1]
    assert listed == got


def test_get_unknown_is_404_and_malformed_is_400(api):
    assert api.get(f"{EVENTS}/{uuid.uuid4()}").status_code == 404
    response = api.get(f"{EVENTS}/not-a-uuid")
    assert response.status_code == 400
    assert "event_id" in response.json()["field_errors"]


def test_cursor_paging_through_2500_events_has_no_gap_and_no_duplicate(api):
    correlation = f"paging-{uuid.uuid4()}"
    base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)
    stored: list[str] = []
    for chunk in range(3):
        events = []
        for i in range(chunk * 1000, min((chunk + 1) * 1000, 2500)):
            # Pairs share a timestamp to prove the event_id tie-break.
            stamp = base + dt.timedelta(seconds=i // 2)
            events.append(
                make_event(
                    correlation_id=correlation,
                    event_timestamp=stamp.isoformat().replace("+00:00", "Z"),
                )
            )
        stored += _store(api, events)
    for order in ("asc", "desc"):
        seen: list[str] = []
        params = {"correlation_id": correlation, "limit": 1000, "order": order}
        pages = 0
        while True:
            page = api.get(EVENTS, params=params).json()
            pages += 1
            seen += [e["event_id"] for e in page["data"]]
            assert page["pagination"]["total"] == 2500
            if not page["pagination"]["has_more"]:
                assert page["pagination"]["next_cursor"] is None
                break
            params["cursor"] = page["pagination"]["next_cursor"]
        assert pages == 3
        assert len(seen) == len(set(seen)) == 2500
        assert set(seen) == set(stored)


def test_offset_paging(api):
    correlation = f"offset-{uuid.uuid4()}"
    _store(
        api,
        [
            make_event(correlation_id=correlation, event_timestamp=now_rfc3339(-i))
            for i in range(25)
        ],
    )
    pages = [
        api.get(
            EVENTS, params={"correlation_id": correlation, "limit": 10, "offset": offset}
        ).json()
        for offset in (0, 10, 20)
    ]
    ids = [e["event_id"] for p in pages for e in p["data"]]
    assert len(ids) == len(set(ids)) == 25
    assert [p["pagination"]["has_more"] for p in pages] == [True, True, False]
    assert all(p["pagination"]["total"] == 25 for p in pages)
    assert pages[1]["pagination"]["offset"] == 10


def test_total_is_capped_at_count_limit(api, database_url):
    # count_limit default is 10,000: verified here with the value the server reports.
    correlation = f"cap-{uuid.uuid4()}"
    _store(api, [make_event(correlation_id=correlation) for _ in range(3)])
    page = api.get(EVENTS, params={"correlation_id": correlation, "limit": 1}).json()
    assert page["pagination"] == {
        "limit": 1,
        "offset": 0,
        "total": 3,
        "total_capped": False,
        "has_more": True,
        "next_cursor": page["pagination"]["next_cursor"],
    }


@pytest.mark.parametrize("cursor", ["garbage", "eyJ0IjogMX0"])
def test_malformed_cursor_is_400(api, cursor):
    response = api.get(EVENTS, params={"cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()["field_errors"]


def test_cursor_from_the_other_order_is_rejected(api):
    correlation = f"dir-{uuid.uuid4()}"
    _store(api, [make_event(correlation_id=correlation) for _ in range(3)])
    page = api.get(EVENTS, params={"correlation_id": correlation, "limit": 1}).json()
    response = api.get(
        EVENTS,
        params={
            "correlation_id": correlation,
            "limit": 1,
            "order": "asc",
            "cursor": page["pagination"]["next_cursor"],
        },
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("limit", "0"),
        ("limit", "1001"),
        ("offset", "-1"),
        ("order", "sideways"),
        ("event_category", "nope"),
        ("limit", "ten"),
    ],
)
def test_bad_paging_parameters_are_400(api, param, value):
    response = api.get(EVENTS, params={param: value})
    assert response.status_code == 400
    assert param in response.json()["field_errors"]


def test_unknown_query_parameters_are_ignored(api):
    assert api.get(EVENTS, params={"whatever": "1", "limit": 1}).status_code == 200


async def _fill_month(url: str, today: dt.date) -> None:
    from datastorage.store.partitions import ensure_month, month_of

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await ensure_month(conn, month_of(today), 5.0)


def test_a_rare_writer_is_listed_through_the_recorded_by_index(pg_server):
    """Among 20,000 events of one writer, the three of another are found through the
    recorded_by index (migration 012), not by walking the time index: the plan of the list's
    own page and count statements, on their own database, with the planner's statistics."""
    url = pg_server.create_database(f"recorded_{uuid.uuid4().hex[:10]}")
    run_migrations(url)
    today = dt.datetime.now(dt.UTC).date()
    asyncio.run(_fill_month(url, today))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_events (event_id, event_version, event_timestamp, event_date,"
            " event_type, event_category, event_action, event_outcome, actor_type, actor_id,"
            " resource_type, resource_id, correlation_id, event_data, recorded_by)"
            " SELECT gen_random_uuid(), '1', now() - i * interval '1 ms', %s, 't', 'gateway',"
            " 'a', 'success', 'service', 'x', 'r', 'r', 'c' || i, '{}',"
            " CASE WHEN i %% 7000 = 1 THEN 'rare' ELSE 'bulk' END"
            " FROM generate_series(1, 20000) i",
            (today,),
        )
        conn.execute("ANALYZE audit_events")
        query = export_query({"recorded_by": "rare"}, event_data=None, since=None, until=None)
        where, params = filter_clause(query)
        page = psycopg.sql.SQL(
            "EXPLAIN SELECT * FROM audit_events WHERE {} "
            "ORDER BY event_timestamp DESC, event_id DESC LIMIT 51"
        ).format(where)
        count = psycopg.sql.SQL(
            "EXPLAIN SELECT count(*) FROM (SELECT 1 FROM audit_events WHERE {} LIMIT 10001) c"
        ).format(where)
        for statement in (page, count):
            plan = "\n".join(r[0] for r in conn.execute(statement, params).fetchall())
            assert "audit_events_recorded_by_time_idx" in plan or "recorded_by_event" in plan, plan
        rare = conn.execute(
            "SELECT count(*) FROM audit_events WHERE recorded_by = 'rare'"
        ).fetchone()[0]
        assert rare == 3
