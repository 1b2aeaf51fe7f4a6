"""The audit write path against a real PostgreSQL, through the real server (Hypercorn)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from support import make_event, now_rfc3339

# Each test runs twice: the server connects directly, then through PgBouncer.
pytestmark = pytest.mark.pgbouncer_too

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"


def _count(db, correlation_id: str) -> int:
    return db.execute(
        "SELECT count(*) FROM audit_events WHERE correlation_id = %s", (correlation_id,)
    ).fetchone()[0]


def test_single_write_is_stored_with_defaults(api, db):
    body = make_event(
        event_category="analysis",
        event_type="analysis.investigation.started",
        event_action="started",
    )
    response = api.post(EVENTS, json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert uuid.UUID(created["event_id"])
    row = db.execute(
        "SELECT actor_type, actor_id, resource_type, resource_id, severity, retention_days, "
        "is_sensitive, event_date, event_version FROM audit_events WHERE event_id = %s",
        (created["event_id"],),
    ).fetchone()
    assert row[:5] == ("service", "analysis-service", "analysis", body["correlation_id"], "info")
    assert row[5:7] == (2555, False)
    sent = dt.datetime.fromisoformat(body["event_timestamp"].replace("Z", "+00:00"))
    assert row[7] == sent.astimezone(dt.UTC).date()  # the partition key is the UTC day
    assert row[8] == "1.0"


def test_resend_with_same_content_is_idempotent(api, db):
    body = make_event(event_id=str(uuid.uuid4()))
    first = api.post(EVENTS, json=body)
    second = api.post(EVENTS, json=body)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["event_id"] == first.json()["event_id"]
    assert second.json()["event_timestamp"] == first.json()["event_timestamp"]
    assert _count(db, body["correlation_id"]) == 1


def test_resend_with_different_content_conflicts(api, db):
    body = make_event(event_id=str(uuid.uuid4()))
    assert api.post(EVENTS, json=body).status_code == 201
    changed = {**body, "event_outcome": "failure"}
    response = api.post(EVENTS, json=changed)
    assert response.status_code == 409
    assert response.json()["type"].endswith("/conflict")
    assert _count(db, body["correlation_id"]) == 1


def test_resend_with_different_day_conflicts(api, db):
    body = make_event(event_id=str(uuid.uuid4()), event_timestamp=now_rfc3339(-3 * 86400))
    assert api.post(EVENTS, json=body).status_code == 201
    response = api.post(EVENTS, json={**body, "event_timestamp": now_rfc3339()})
    assert response.status_code == 409
    assert _count(db, body["correlation_id"]) == 1


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("version", 10),
        ("event_type", 100),
        ("event_action", 50),
        ("correlation_id", 255),
        ("actor_type", 50),
        ("actor_id", 255),
        ("resource_type", 100),
        ("resource_id", 255),
        ("namespace", 253),
        ("cluster_name", 255),
        ("severity", 20),
        ("error_code", 50),
        ("trace_id", 255),
        ("span_id", 255),
    ],
)
def test_every_length_limit_is_a_validation_error(api, db, field, limit):
    body = make_event(**{field: "x" * (limit + 1)})
    response = api.post(EVENTS, json=body)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "https://kubernaut.ai/problems/validation-error"
    assert field in problem["field_errors"]
    assert response.headers["content-type"] == "application/problem+json"
    at_limit = make_event(**{field: "x" * limit})
    if field == "event_type":
        at_limit["event_type"] = "custom." + "x" * (limit - 7)
    assert api.post(EVENTS, json=at_limit).status_code == 201


def test_every_failing_field_is_listed(api):
    body = make_event(
        event_category="nope",
        event_outcome="maybe",
        correlation_id=None,
        event_data=[1, 2],
        duration_ms=-1,
    )
    response = api.post(EVENTS, json=body)
    assert response.status_code == 400
    assert set(response.json()["field_errors"]) == {
        "event_category",
        "event_outcome",
        "correlation_id",
        "event_data",
        "duration_ms",
    }


def test_enum_values_are_case_sensitive(api):
    response = api.post(EVENTS, json=make_event(event_outcome="Success"))
    assert response.status_code == 400
    assert "event_outcome" in response.json()["field_errors"]


@pytest.mark.parametrize(
    ("offset_seconds", "accepted"),
    [(-7 * 86400 + 120, True), (-7 * 86400 - 120, False), (240, True), (420, False)],
)
def test_timestamp_bounds(api, offset_seconds, accepted):
    response = api.post(EVENTS, json=make_event(event_timestamp=now_rfc3339(offset_seconds)))
    if accepted:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code == 400
        assert "event_timestamp" in response.json()["field_errors"]


def test_timestamp_without_zone_is_rejected(api):
    naive = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat()
    response = api.post(EVENTS, json=make_event(event_timestamp=naive))
    assert response.status_code == 400
    assert "event_timestamp" in response.json()["field_errors"]


def test_event_types_catalog_lists_the_platform_types(api):
    types = {t["event_type"]: t for t in api.get("/api/v1/audit/event-types").json()["event_types"]}
    assert len(types) >= 27
    assert types["gateway.signal.received"]["event_category"] == "gateway"
    assert types["effectivenessmonitor.evaluation.completed"]["event_category"] == "analysis"
    assert types["workflow.catalog.search_completed"]["event_action"] == "search_completed"
    assert types["remediationorchestrator.phase.transitioned"]["event_category"] == "orchestration"


def test_every_catalogued_type_is_accepted_with_its_category(api, db):
    types = api.get("/api/v1/audit/event-types").json()["event_types"]
    correlation = f"catalog-{uuid.uuid4()}"
    for entry in types:
        body = make_event(
            event_type=entry["event_type"],
            event_category=entry["event_category"],
            event_action=entry["event_action"],
            correlation_id=correlation,
        )
        assert api.post(EVENTS, json=body).status_code == 201, entry
    assert _count(db, correlation) == len(types)


def test_known_type_with_wrong_category_is_rejected(api):
    body = make_event(event_type="notification.sent", event_category="gateway")
    response = api.post(EVENTS, json=body)
    assert response.status_code == 400
    assert "event_category" in response.json()["field_errors"]


def test_unknown_type_is_accepted_and_counted(api):
    body = make_event(event_type="newservice.thing.happened", event_category="execution")
    assert api.post(EVENTS, json=body).status_code == 201
    metrics = api.get("/metrics").text
    assert 'datastorage_unknown_event_types_total{event_category="execution"}' in metrics


def test_parent_event_must_exist_and_its_date_is_stored(api, db):
    parent = make_event(event_timestamp=now_rfc3339(-2 * 86400))
    parent_id = api.post(EVENTS, json=parent).json()["event_id"]
    child = make_event(parent_event_id=parent_id, correlation_id=parent["correlation_id"])
    response = api.post(EVENTS, json=child)
    assert response.status_code == 201
    stored = db.execute(
        "SELECT parent_event_date FROM audit_events WHERE event_id = %s",
        (response.json()["event_id"],),
    ).fetchone()[0]
    assert stored == (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).date()
    orphan = make_event(parent_event_id=str(uuid.uuid4()))
    response = api.post(EVENTS, json=orphan)
    assert response.status_code == 400
    assert "parent_event_id" in response.json()["field_errors"]
    assert _count(db, orphan["correlation_id"]) == 0


def test_body_over_the_limit_is_413(api, db):
    body = make_event(event_data={"blob": "x" * (1 << 20)})
    response = api.post(EVENTS, json=body)
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")
    assert _count(db, body["correlation_id"]) == 0


def test_event_data_over_64_kib_is_a_validation_error(api, db):
    body = make_event(event_data={"blob": "x" * (64 * 1024)})
    response = api.post(EVENTS, json=body)
    assert response.status_code == 400
    assert "event_data" in response.json()["field_errors"]
    assert _count(db, body["correlation_id"]) == 0


def test_nesting_deeper_than_32_is_a_validation_error(api):
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    response = api.post(EVENTS, json=make_event(event_data=deep))
    assert response.status_code == 400
    assert any(k.startswith("event_data") for k in response.json()["field_errors"])


def test_wrong_media_type_is_415(api):
    response = api.post(
        EVENTS, content=json.dumps(make_event()), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["type"].endswith("/unsupported-media-type")


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"a": 1, "a": 2}', b'{"x": NaN}', b'{"x": 1e999}', b"\xff\xfe"],
    ids=["garbage", "duplicate-key", "nan", "infinite", "not-utf8"],
)
def test_undecodable_json_is_invalid_json(api, raw):
    response = api.post(EVENTS, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["type"].endswith("/invalid-json")


@pytest.mark.parametrize(
    "data", [{"text": "nul\u0000here"}, {"key\u0000": 1}], ids=["nul-value", "nul-key"]
)
def test_strings_postgres_cannot_store_are_rejected(api, db, data):
    body = make_event(event_data=data)
    response = api.post(EVENTS, json=body)
    assert response.status_code == 400
    assert _count(db, body["correlation_id"]) == 0


def test_lone_surrogate_is_rejected(api, db):
    body = make_event()
    raw = json.dumps(body).replace('"HighMemory"', '"\\ud800"').encode()
    response = api.post(EVENTS, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert _count(db, body["correlation_id"]) == 0


def test_unknown_body_fields_are_ignored(api):
    assert api.post(EVENTS, json=make_event(something_new="x")).status_code == 201


# ---- batch --------------------------------------------------------------------------------


def test_batch_is_stored_atomically_and_keeps_order_and_versions(api, db):
    correlation = f"batch-{uuid.uuid4()}"
    events = [make_event(correlation_id=correlation, version=f"v{i}") for i in range(50)]
    response = api.post(BATCH, json=events)
    assert response.status_code == 201, response.text
    ids = response.json()["event_ids"]
    assert len(ids) == 50
    rows = dict(
        db.execute(
            "SELECT event_id::text, event_version FROM audit_events WHERE correlation_id = %s",
            (correlation,),
        ).fetchall()
    )
    assert [rows[i] for i in ids] == [f"v{i}" for i in range(50)]


def test_batch_with_one_invalid_item_stores_nothing(api, db):
    correlation = f"batch-{uuid.uuid4()}"
    events = [make_event(correlation_id=correlation) for _ in range(5)]
    events[3]["correlation_id"] = ""
    events[4]["event_outcome"] = "nope"
    response = api.post(BATCH, json=events)
    assert response.status_code == 400
    errors = response.json()["field_errors"]
    assert set(errors) == {"[3].correlation_id", "[4].event_outcome"}
    assert _count(db, correlation) == 0


def test_batch_rule_errors_name_the_item(api, db):
    correlation = f"batch-{uuid.uuid4()}"
    events = [make_event(correlation_id=correlation) for _ in range(3)]
    events[1]["event_timestamp"] = now_rfc3339(3600)
    response = api.post(BATCH, json=events)
    assert response.status_code == 400
    assert set(response.json()["field_errors"]) == {"[1].event_timestamp"}
    assert _count(db, correlation) == 0


def test_batch_with_the_same_event_id_twice_is_rejected(api, db):
    event_id = str(uuid.uuid4())
    correlation = f"batch-{uuid.uuid4()}"
    events = [make_event(event_id=event_id, correlation_id=correlation) for _ in range(2)]
    response = api.post(BATCH, json=events)
    assert response.status_code == 400
    assert "[1].event_id" in response.json()["field_errors"]
    assert _count(db, correlation) == 0


def test_batch_over_1000_items_is_rejected(api):
    response = api.post(BATCH, json=[make_event() for _ in range(1001)])
    assert response.status_code == 400
    assert response.json()["type"].endswith("/validation-error")


def test_empty_batch_is_rejected(api):
    assert api.post(BATCH, json=[]).status_code == 400


def test_batch_resend_is_idempotent_and_conflicts_are_named(api, db):
    correlation = f"batch-{uuid.uuid4()}"
    events = [make_event(event_id=str(uuid.uuid4()), correlation_id=correlation) for _ in range(3)]
    assert api.post(BATCH, json=events).status_code == 201
    again = api.post(BATCH, json=events)
    assert again.status_code == 200
    assert again.json()["event_ids"] == [e["event_id"] for e in events]
    changed = [dict(e) for e in events] + [make_event(correlation_id=correlation)]
    changed[2]["event_outcome"] = "failure"
    conflict = api.post(BATCH, json=changed)
    assert conflict.status_code == 409
    assert set(conflict.json()["field_errors"]) == {"[2].event_id"}
    assert _count(db, correlation) == 3


def test_batch_item_may_name_an_earlier_item_as_parent(api, db):
    parent = make_event(event_id=str(uuid.uuid4()))
    child = make_event(parent_event_id=parent["event_id"], correlation_id=parent["correlation_id"])
    response = api.post(BATCH, json=[parent, child])
    assert response.status_code == 201, response.text
    assert _count(db, parent["correlation_id"]) == 2


# ---- partitions on demand -------------------------------------------------------------------


def test_write_into_a_dropped_month_recreates_its_partition(api, db):
    # A month inside the accepted timestamp window whose partition we drop: seven days ago
    # may fall into last month; otherwise use the current month.
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(days=6, hours=23)
    name = f"audit_events_{moment.year:04d}_{moment.month:02d}"
    db.execute(f"DROP TABLE IF EXISTS {name}")
    assert db.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None
    body = make_event(event_timestamp=moment.isoformat().replace("+00:00", "Z"))
    response = api.post(EVENTS, json=body)
    assert response.status_code == 201, response.text
    assert db.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None
    assert _count(db, body["correlation_id"]) == 1
    metrics = api.get("/metrics").text
    assert 'datastorage_partition_created_total{trigger="write_path"}' in metrics


def test_leap_second_timestamp_is_a_field_error_not_a_crash(api):
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    response = api.post(EVENTS, json=make_event(event_timestamp=f"{yesterday}T23:59:60Z"))
    assert response.status_code == 400
    assert "event_timestamp" in response.json()["field_errors"]
    notification = {
        "remediation_id": "r",
        "notification_id": f"n-{uuid.uuid4()}",
        "recipient": "x",
        "channel": "email",
        "message_summary": "m",
        "status": "sent",
        "sent_at": f"{yesterday}T23:59:60Z",
    }
    response = api.post("/api/v1/audit/notifications", json=notification)
    assert response.status_code == 400
    assert "sent_at" in response.json()["field_errors"]


def test_batch_into_a_dropped_month_recreates_its_partition(api, db):
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(days=6, hours=23)
    name = f"audit_events_{moment.year:04d}_{moment.month:02d}"
    db.execute(f"DROP TABLE IF EXISTS {name}")
    correlation = f"batch-month-{uuid.uuid4()}"
    stamp = moment.isoformat().replace("+00:00", "Z")
    events = [make_event(correlation_id=correlation, event_timestamp=stamp) for _ in range(3)]
    response = api.post(BATCH, json=events)
    assert response.status_code == 201, response.text
    assert db.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None
    assert _count(db, correlation) == 3


def test_event_date_is_the_utc_day_whatever_the_offset(api, db):
    # Late evening at UTC-11 is already the next day (or later the same day) in UTC.
    local = dt.datetime.now(dt.timezone(dt.timedelta(hours=-11))) - dt.timedelta(minutes=1)
    body = make_event(event_timestamp=local.isoformat())
    response = api.post(EVENTS, json=body)
    assert response.status_code == 201, response.text
    stored = db.execute(
        "SELECT event_date FROM audit_events WHERE event_id = %s", (response.json()["event_id"],)
    ).fetchone()[0]
    assert stored == local.astimezone(dt.UTC).date()
    assert response.json()["event_timestamp"].endswith("Z")


def test_batch_invalid_at_its_end_stores_none_of_the_rows_already_copied(api, db):
    """The common batch is copied while later items are still being checked: an error in
    the last items still stores nothing."""
    correlation = f"batch-tail-{uuid.uuid4()}"
    events = [make_event(correlation_id=correlation) for _ in range(800)]
    events[0]["event_timestamp"] = now_rfc3339(3600)
    events[799]["event_timestamp"] = now_rfc3339(3600)
    response = api.post(BATCH, json=events)
    assert response.status_code == 400
    assert set(response.json()["field_errors"]) == {"[0].event_timestamp", "[799].event_timestamp"}
    events[0]["event_timestamp"] = events[799]["event_timestamp"] = now_rfc3339()
    events[400]["event_timestamp"] = now_rfc3339(3600)
    assert api.post(BATCH, json=events).status_code == 400
    assert _count(db, correlation) == 0
    events[400]["event_timestamp"] = now_rfc3339()
    assert api.post(BATCH, json=events).status_code == 201
    assert _count(db, correlation) == 800
