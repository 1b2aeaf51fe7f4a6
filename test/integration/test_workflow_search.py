"""Workflow search over HTTP (docs/api.md and "Search audit event") against
`datastorage serve` and real PostgreSQL. Each test searches its own signal type, so workflows of
other tests sharing the database never become candidates."""

from __future__ import annotations

import hashlib
import json

import pytest
import support
from workflow_helpers import WORKFLOWS, create, search, search_body, unique, workflow_body

# Each test runs twice: the server connects directly, then through PgBouncer.
pytestmark = pytest.mark.pgbouncer_too

ITEM_KEYS = {
    "workflow_id",
    "title",
    "description",
    "signal_type",
    "container_image",
    "container_digest",
    "confidence",
    "label_boost",
    "label_penalty",
    "final_score",
    "rank",
    "custom_labels",
    "detected_labels",
}


def ids(result: dict) -> list[str]:
    return [item["workflow_id"] for item in result["workflows"]]


def test_zero_matches_is_200_with_an_empty_list(api):
    result = search(api, search_body(unique("NoSuchSignal")))
    assert result["workflows"] == []
    assert result["total_results"] == 0


def test_plain_match_scores_exactly_half_and_items_are_flat(api):
    signal = unique("Plain")
    stored = create(api, workflow_body(unique("plain"), signal_type=signal))
    body = search_body(signal)
    result = search(api, body)
    assert result["total_results"] == 1
    assert result["filters"] == body["filters"]
    (item,) = result["workflows"]
    assert set(item) == ITEM_KEYS
    assert item == {
        "workflow_id": stored["workflow_id"],
        "title": stored["name"],
        "description": stored["description"],
        "signal_type": signal,
        "container_image": stored["container_image"],
        "container_digest": stored["container_digest"],
        "confidence": 0.5,
        "label_boost": 0.0,
        "label_penalty": 0.0,
        "final_score": 0.5,
        "rank": 1,
        "custom_labels": {},
        "detected_labels": {},
    }


def test_matching_gitops_managed_scores_exactly_six_tenths(api):
    signal = unique("GitOps")
    create(
        api,
        workflow_body(
            unique("gitops"), signal_type=signal, detected_labels={"gitOpsManaged": True}
        ),
    )
    (item,) = search(
        api, search_body(signal, filters={"detected_labels": {"gitOpsManaged": True}})
    )["workflows"]
    assert (item["final_score"], item["confidence"], item["label_boost"]) == (0.6, 0.6, 0.1)


def test_gitops_conflict_is_penalised_and_failed_detections_skip_it(api):
    signal = unique("GitOpsConflict")
    create(api, workflow_body(unique("not-gitops"), signal_type=signal))
    wanted = {"detected_labels": {"gitOpsManaged": True}}
    (item,) = search(api, search_body(signal, filters=wanted))["workflows"]
    assert (item["final_score"], item["label_penalty"]) == (0.4, 0.1)
    skipped = {"detected_labels": {"gitOpsManaged": True, "failed_detections": ["gitOpsManaged"]}}
    (item,) = search(api, search_body(signal, filters=skipped))["workflows"]
    assert item["final_score"] == 0.5


@pytest.mark.parametrize("component", ["deployment", "component-nobody-declared"])
def test_component_wildcard_matches_any_component(api, component):
    signal = unique("Wildcard")
    wildcard = create(
        api, workflow_body(unique("any-component"), signal_type=signal, component="*")
    )
    create(
        api, workflow_body(unique("statefulset-only"), signal_type=signal, component="statefulset")
    )
    result = search(api, search_body(signal, filters={"component": component}))
    assert ids(result) == [wildcard["workflow_id"]]
    (item,) = result["workflows"]
    assert (item["final_score"], item["label_penalty"]) == (0.48, 0.02)


def test_exact_labels_outrank_wildcards(api):
    signal = unique("Order")
    everywhere = create(
        api,
        workflow_body(
            unique("everywhere"), signal_type=signal, component="*", environment="*", priority="*"
        ),
    )
    exact = create(api, workflow_body(unique("exact"), signal_type=signal))
    result = search(api, search_body(signal))
    assert ids(result) == [exact["workflow_id"], everywhere["workflow_id"]]
    assert [i["final_score"] for i in result["workflows"]] == [0.5, 0.44]
    assert [i["rank"] for i in result["workflows"]] == [1, 2]


def test_mandatory_labels_must_match(api):
    signal = unique("Mandatory")
    create(api, workflow_body(unique("high"), signal_type=signal, severity="high"))
    create(api, workflow_body(unique("staging"), signal_type=signal, environment="staging"))
    create(api, workflow_body(unique("p0"), signal_type=signal, priority="P0"))
    assert search(api, search_body(signal))["workflows"] == []


def test_ties_are_broken_deterministically(api, db):
    signal = unique("Tie")
    stored = [create(api, workflow_body(unique("tie"), signal_type=signal)) for _ in range(6)]
    # Give half of them one shared created_at, so workflow_id has to decide among those.
    shared = [w["workflow_id"] for w in stored[:3]]
    db.execute(
        "UPDATE remediation_workflow_catalog SET created_at = now() + interval '1 hour' "
        "WHERE workflow_id = ANY(%s::uuid[])",
        (shared,),
    )
    # Same score and wildcards: newest created_at first, then workflow_id.
    expected = sorted(shared) + [w["workflow_id"] for w in reversed(stored[3:])]
    results = [ids(search(api, search_body(signal))) for _ in range(20)]
    assert all(result == expected for result in results), results[0]


def test_fewer_wildcards_win_a_score_tie(api):
    signal = unique("WildTie")
    exact = create(api, workflow_body(unique("exact"), signal_type=signal))
    # 0.50 - 0.02 (component '*') + 0.02 (helmManaged) = 0.50, and newer than `exact`.
    wildcard = create(
        api,
        workflow_body(
            unique("wild"),
            signal_type=signal,
            component="*",
            detected_labels={"helmManaged": True},
        ),
    )
    result = search(api, search_body(signal, filters={"detected_labels": {"helmManaged": True}}))
    assert ids(result) == [exact["workflow_id"], wildcard["workflow_id"]]
    assert [i["final_score"] for i in result["workflows"]] == [0.5, 0.5]


def test_only_the_latest_active_version_of_a_name_is_a_candidate(api):
    signal = unique("Latest")
    name = unique("versions")
    create(api, workflow_body(name, "1.0.0", signal_type=signal))
    latest = create(api, workflow_body(name, "2.0.0", signal_type=signal))
    assert ids(search(api, search_body(signal))) == [latest["workflow_id"]]

    api.patch(f"{WORKFLOWS}/{latest['workflow_id']}/disable", json={"reason": "test"})
    assert search(api, search_body(signal))["workflows"] == []
    with_disabled = search(api, search_body(signal, include_disabled=True))
    assert ids(with_disabled) == [latest["workflow_id"]]
    only_active = search(api, search_body(signal, filters={"status": ["active"]}))
    assert only_active["workflows"] == []
    by_status = search(api, search_body(signal, filters={"status": ["disabled"]}))
    assert ids(by_status) == [latest["workflow_id"]]


def test_min_score_and_top_k(api):
    signal = unique("Cut")
    for component in ("deployment", "deployment", "deployment", "*"):
        create(api, workflow_body(unique("cut"), signal_type=signal, component=component))
    result = search(api, search_body(signal, min_score=0.49, top_k=2))
    assert result["total_results"] == 3  # matches before the top_k cut; 0.48 is below min
    assert [i["final_score"] for i in result["workflows"]] == [0.5, 0.5]
    assert search(api, search_body(signal))["total_results"] == 4


def test_custom_label_values_with_quotes_and_backslashes(api):
    signal = unique("Quotes")
    awkward = "it's a \"quoted\" \\path\\ ' OR 1=1 --"
    create(
        api,
        workflow_body(
            unique("quoted"), signal_type=signal, custom_labels={"note": [awkward], "team": ["*"]}
        ),
    )
    result = search(
        api,
        search_body(
            signal,
            filters={"custom_labels": {"note": [awkward], "team": ["sre"], awkward: [awkward]}},
        ),
    )
    (item,) = result["workflows"]
    assert item["label_boost"] == 0.075  # exact value +0.05, wildcard +0.025
    assert item["final_score"] == 0.575
    assert item["custom_labels"]["note"] == [awkward]
    assert result["filters"]["custom_labels"]["note"] == [awkward]


@pytest.mark.parametrize(
    "body,field",
    [
        (
            {
                "filters": {
                    "signal_type": "x",
                    "component": "a",
                    "environment": "b",
                    "priority": "P1",
                }
            },
            "filters.severity",
        ),
        ({}, "filters"),
        (search_body("x", top_k=0), "top_k"),
        (search_body("x", top_k=101), "top_k"),
        (search_body("x", min_score=1.5), "min_score"),
        (search_body("x", filters={"status": ["gone"]}), "filters.status[0]"),
        (
            search_body("x", filters={"detected_labels": {"gitOpsTool": "jenkins"}}),
            "filters.detected_labels.gitOpsTool",
        ),
    ],
)
def test_invalid_search_requests_name_the_field(api, body, field):
    response = api.post(f"{WORKFLOWS}/search", json=body)
    assert response.status_code == 400
    assert field in response.json()["field_errors"]


def _search_events(api, correlation_id: str) -> list[dict]:
    page = api.get(
        "/api/v1/audit/events",
        params={
            "correlation_id": correlation_id,
            "event_type": "workflow.catalog.search_completed",
        },
    )
    assert page.status_code == 200
    events = page.json()["data"]
    assert events, "search audit event not visible yet"
    return events


def test_search_is_recorded_as_an_audit_event_within_a_second(api):
    signal = unique("Audited")
    stored = create(api, workflow_body(unique("audited"), signal_type=signal))
    remediation_id = unique("rr")
    body = search_body(signal, top_k=5, remediation_id=remediation_id)
    result = search(api, body)

    (event,) = support.eventually(lambda: _search_events(api, remediation_id), timeout=1.0)
    filters_hash = hashlib.sha256(
        json.dumps(body["filters"], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    assert event["event_category"] == "workflow"
    assert event["event_action"] == "search_completed"
    assert event["event_outcome"] == "success"
    assert (event["actor_type"], event["actor_id"]) == ("service", "datastorage")
    assert event["resource_type"] == "workflow_catalog"
    assert event["resource_id"] == filters_hash
    data = event["event_data"]
    assert data["query"] == {
        "filters": body["filters"],
        "top_k": 5,
        "min_score": 0,
        "include_disabled": False,
    }
    assert data["results"] == {
        "total_found": result["total_results"],
        "returned": 1,
        "workflows": [
            {
                "workflow_id": stored["workflow_id"],
                "title": stored["name"],
                "rank": 1,
                "final_score": 0.5,
            }
        ],
    }
    assert isinstance(data["duration_ms"], int) and data["duration_ms"] >= 0
    assert event["duration_ms"] == data["duration_ms"]


def test_search_without_remediation_id_correlates_by_filters_hash(api):
    body = search_body(unique("Anonymous"))
    search(api, body)
    digest = hashlib.sha256(
        json.dumps(body["filters"], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    (event,) = support.eventually(lambda: _search_events(api, f"search-{digest}"), timeout=1.0)
    assert event["event_data"]["results"] == {"total_found": 0, "returned": 0, "workflows": []}
