"""The catalog's pure rules: the create record, PATCH planning, change diffs, search events."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import pytest

from datastorage.domain.scoring import Score
from datastorage.services import catalog
from datastorage.store import workflows as store

CONTENT = "kind: Pipeline\n"


def spec(**fields):
    return {
        "workflow_name": "restart-pod",
        "version": "1.0.0",
        "name": "Restart pod",
        "content": CONTENT,
        "labels": {
            "signal_type": "OOMKilled",
            "severity": "critical",
            "component": "pod",
            "environment": "*",
            "priority": "P1",
        },
        **fields,
    }


def stored_row(**fields):
    row = {column: None for column in store.API_COLUMNS}
    row.update(
        workflow_id=uuid.UUID("00000000-0000-0000-0000-000000000001"),
        workflow_name="restart-pod",
        version="1.0.0",
        name="Restart pod",
        status="active",
        labels=spec()["labels"],
        custom_labels={},
        detected_labels={},
        parameters={},
        is_latest_version=True,
        total_executions=0,
        successful_executions=0,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        updated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    row.update(fields)
    return row


# ---- create -------------------------------------------------------------------------------------


def test_create_record_computes_the_content_hash_and_defaults():
    record = catalog.new_version_record(spec(), created_by="ci")
    assert record["content_hash"] == hashlib.sha256(CONTENT.encode()).hexdigest()
    assert record["status"] == "active"
    assert (record["custom_labels"], record["detected_labels"], record["parameters"]) == (
        {},
        {},
        {},
    )
    assert (record["created_by"], record["updated_by"]) == ("ci", "ci")
    assert set(record) == set(store.INSERT_COLUMNS)


def test_create_record_accepts_an_uppercase_matching_hash():
    digest = hashlib.sha256(CONTENT.encode()).hexdigest()
    record = catalog.new_version_record(spec(content_hash=digest.upper()), None)
    assert record["content_hash"] == digest


def test_create_record_rejects_a_wrong_hash():
    with pytest.raises(catalog.ContentHashMismatch) as caught:
        catalog.new_version_record(spec(content_hash="f" * 64), None)
    assert caught.value.computed == hashlib.sha256(CONTENT.encode()).hexdigest()


def test_created_by_argument_wins_over_the_body():
    assert catalog.new_version_record(spec(created_by="body"), "operator")["created_by"] == (
        "operator"
    )
    assert catalog.new_version_record(spec(created_by="body"), None)["created_by"] == "body"


def test_creating_disabled_stamps_the_disable_fields():
    record = catalog.new_version_record(
        spec(status="disabled", status_reason="not yet approved"), created_by="ci"
    )
    assert record["disabled_at"] is store.NOW
    assert (record["disabled_by"], record["disabled_reason"]) == ("ci", "not yet approved")


def test_disable_fields_are_dropped_for_other_statuses():
    record = catalog.new_version_record(spec(disabled_by="x", disabled_reason="y"), None)
    assert (record["disabled_at"], record["disabled_by"], record["disabled_reason"]) == (
        None,
        None,
        None,
    )


# ---- PATCH planning -------------------------------------------------------------------------------


def test_same_status_is_a_no_op():
    assert catalog.plan_update(stored_row(), {"status": "active", "updated_by": "bob"}) == {}


def test_unchanged_values_are_not_changes():
    row = stored_row(deprecation_notice="use v2")
    assert catalog.plan_update(row, {"deprecation_notice": "use v2"}) == {}


def test_disabling_stamps_who_when_and_why():
    changes = catalog.plan_update(
        stored_row(), {"status": "disabled", "status_reason": "flaky", "updated_by": "bob"}
    )
    assert changes == {
        "status": "disabled",
        "status_reason": "flaky",
        "disabled_at": store.NOW,
        "disabled_by": "bob",
        "disabled_reason": "flaky",
        "updated_by": "bob",
    }


def test_explicit_disable_fields_win():
    changes = catalog.plan_update(
        stored_row(),
        {
            "status": "disabled",
            "disabled_by": "alice",
            "disabled_reason": "cve",
            "updated_by": "bob",
        },
    )
    assert (changes["disabled_by"], changes["disabled_reason"]) == ("alice", "cve")


def test_reenabling_clears_the_disable_fields():
    row = stored_row(
        status="disabled",
        disabled_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        disabled_by="bob",
        disabled_reason="flaky",
    )
    changes = catalog.plan_update(row, {"status": "active", "disabled_reason": "ignored"})
    assert changes == {
        "status": "active",
        "disabled_at": None,
        "disabled_by": None,
        "disabled_reason": None,
    }


def test_deprecating_a_disabled_workflow_keeps_the_disable_fields():
    row = stored_row(status="disabled", disabled_by="bob")
    assert catalog.plan_update(row, {"status": "deprecated"}) == {"status": "deprecated"}


@pytest.mark.parametrize(
    "source,target",
    [
        ("archived", "active"),
        ("deprecated", "active"),
        ("active", "archived"),
        ("deprecated", "disabled"),
    ],
)
def test_forbidden_transitions_raise(source, target):
    with pytest.raises(catalog.InvalidTransitionError) as caught:
        catalog.plan_update(stored_row(status=source), {"status": target})
    assert (caught.value.current, caught.value.target) == (source, target)


def test_changed_fields_lists_old_and_new_api_values():
    before = stored_row()
    after = stored_row(
        status="disabled",
        disabled_at=dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
        updated_at=dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
    )
    assert catalog.changed_fields(before, after) == {
        "status": {"old": "active", "new": "disabled"},
        "disabled_at": {"old": None, "new": "2026-02-01T00:00:00Z"},
    }


# ---- search ---------------------------------------------------------------------------------------


def test_searched_statuses():
    assert catalog.searched_statuses({}, False) == ["active"]
    assert catalog.searched_statuses({}, True) == ["active", "disabled"]
    assert catalog.searched_statuses({"status": ["deprecated"]}, True) == ["deprecated", "disabled"]
    assert catalog.searched_statuses({"status": ["disabled"]}, True) == ["disabled"]


def test_filters_hash_is_over_canonical_json():
    filters = {"severity": "critical", "signal_type": "OOMKilled", "custom_labels": {"b": ["é"]}}
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    assert catalog.filters_hash(filters) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert catalog.filters_hash(dict(reversed(filters.items()))) == catalog.filters_hash(filters)


def test_search_item_is_flat():
    score = Score(
        confidence=0.48, label_boost=0.0, label_penalty=0.02, final_score=0.48, wildcards=1
    )
    item = catalog.search_item(3, stored_row(description="d", container_image="img"), score)
    assert item["rank"] == 3 and item["title"] == "Restart pod"
    assert item["signal_type"] == "OOMKilled"
    assert "version" not in item and "workflow" not in item


def test_search_event_body_follows_the_spec():
    request = {"filters": {"signal_type": "OOMKilled"}, "top_k": 3}
    response = {
        "total_results": 7,
        "workflows": [
            {"workflow_id": "id-1", "title": "t", "rank": 1, "final_score": 0.5, "confidence": 0.5}
        ],
    }
    body = catalog.search_event_body(request, response, 12, None)
    digest = catalog.filters_hash(request["filters"])
    assert body["correlation_id"] == f"search-{digest}"
    assert body["resource_id"] == digest
    assert (body["event_type"], body["event_category"], body["event_action"]) == (
        "workflow.catalog.search_completed",
        "workflow",
        "search_completed",
    )
    assert body["event_data"] == {
        "query": {
            "filters": request["filters"],
            "top_k": 3,
            "min_score": 0.0,
            "include_disabled": False,
        },
        "results": {
            "total_found": 7,
            "returned": 1,
            "workflows": [{"workflow_id": "id-1", "title": "t", "rank": 1, "final_score": 0.5}],
        },
        "duration_ms": 12,
    }
    assert catalog.search_event_body(request, response, 12, "rr-1")["correlation_id"] == "rr-1"


def test_change_event_body_correlates_by_workflow_name():
    body = catalog.change_event_body("updated", stored_row(), {"changes": {}})
    assert body["correlation_id"] == "restart-pod"
    assert body["resource_type"] == "workflow"
    assert body["resource_id"] == "00000000-0000-0000-0000-000000000001"
    assert body["event_data"]["version"] == "1.0.0"
    assert body["event_type"] == "datastorage.workflow.updated"
