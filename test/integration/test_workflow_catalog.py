"""The workflow catalog over HTTP (docs/api.md) against `datastorage serve` and real PostgreSQL:
versions and the latest flag, reads, the lifecycle, the self-audit events, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid

import httpx
import psycopg
import pytest
from workflow_helpers import WORKFLOWS, create, sha256, unique, workflow_body

from datastorage.domain.lifecycle import STATUSES

# Each test runs twice: the server connects directly, then through PgBouncer.
pytestmark = pytest.mark.pgbouncer_too

PROBLEMS = "https://kubernaut.ai/problems/"
LEGAL = {
    ("active", "disabled"),
    ("disabled", "active"),
    ("active", "deprecated"),
    ("disabled", "deprecated"),
    ("deprecated", "archived"),
}


def latest_rows(db: psycopg.Connection, workflow_name: str) -> list[str]:
    rows = db.execute(
        "SELECT version FROM remediation_workflow_catalog "
        "WHERE workflow_name = %s AND is_latest_version",
        (workflow_name,),
    ).fetchall()
    return [version for (version,) in rows]


def self_audit_events(db: psycopg.Connection, workflow_name: str) -> list[dict]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    cur.execute(
        "SELECT event_type, event_category, event_action, actor_type, actor_id, resource_type, "
        "resource_id, correlation_id, event_data FROM audit_events "
        "WHERE correlation_id = %s AND event_type LIKE 'datastorage.workflow.%%' "
        "ORDER BY event_timestamp, created_at",
        (workflow_name,),
    )
    return cur.fetchall()


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# ---- create ----------------------------------------------------------------------------------


def test_create_returns_the_stored_row_with_computed_hash_and_real_timestamps(api):
    name = unique("create")
    before = dt.datetime.now(dt.UTC)
    body = workflow_body(
        name,
        custom_labels={"team": ["sre"]},
        detected_labels={"gitOpsManaged": True},
        parameters={"replicas": 2},
    )
    stored = create(api, body)
    uuid.UUID(stored["workflow_id"])
    assert stored["content_hash"] == sha256(body["content"])
    assert stored["status"] == "active"
    assert stored["is_latest_version"] is True
    assert stored["labels"] == body["labels"]
    assert stored["custom_labels"] == {"team": ["sre"]}
    assert stored["detected_labels"] == {"gitOpsManaged": True}
    assert stored["parameters"] == {"replicas": 2}
    assert stored["total_executions"] == 0 and stored["success_rate"] is None
    created = dt.datetime.fromisoformat(stored["created_at"])
    assert (
        before - dt.timedelta(seconds=5)
        < created
        < dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    )
    assert api.get(f"{WORKFLOWS}/{stored['workflow_id']}").json() == stored


def test_create_accepts_a_matching_content_hash(api):
    body = workflow_body(unique("hash-ok"))
    body["content_hash"] = sha256(body["content"]).upper()
    assert create(api, body)["content_hash"] == sha256(body["content"])


def test_create_rejects_a_content_hash_that_does_not_match(api):
    body = workflow_body(unique("hash-bad"), content_hash="0" * 64)
    response = api.post(WORKFLOWS, json=body)
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == PROBLEMS + "validation-error"
    assert list(problem["field_errors"]) == ["content_hash"]


def test_duplicate_name_and_version_is_a_conflict(api):
    body = workflow_body(unique("dup"))
    first = create(api, body)
    response = api.post(WORKFLOWS, json=body)
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEMS + "conflict"
    assert response.json()["workflow_id"] == first["workflow_id"]


def test_create_lists_every_failing_field(api):
    body = workflow_body(unique("invalid"), severity="urgent", priority="P9")
    del body["content"]
    body["version"] = "x" * 51
    response = api.post(WORKFLOWS, json=body)
    assert response.status_code == 400
    assert set(response.json()["field_errors"]) == {
        "content",
        "version",
        "labels.severity",
        "labels.priority",
    }


def test_create_requires_json(api):
    response = api.post(
        WORKFLOWS, content=b"workflow_name: x", headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 415


# ---- versions and the latest flag ---------------------------------------------------------------


def test_latest_version_is_the_highest_semantic_version(api, db):
    name = unique("semver")
    for version in ("v1.0.0", "v1.1.0", "v2.0.0"):
        stored = create(api, workflow_body(name, version))
        assert stored["is_latest_version"] is True
        assert latest_rows(db, name) == [version]
    older = create(api, workflow_body(name, "v1.5.0"))
    assert older["is_latest_version"] is False
    assert latest_rows(db, name) == ["v2.0.0"]
    listed = api.get(f"{WORKFLOWS}/by-name/{name}/versions").json()
    assert listed["workflow_name"] == name
    assert listed["total"] == 4
    assert [v["version"] for v in listed["versions"]] == ["v2.0.0", "v1.5.0", "v1.1.0", "v1.0.0"]
    assert [v["is_latest_version"] for v in listed["versions"]] == [True, False, False, False]


def test_prerelease_and_non_semantic_versions(api, db):
    name = unique("mixed")
    create(api, workflow_body(name, "latest"))
    create(api, workflow_body(name, "nightly"))
    assert latest_rows(db, name) == ["nightly"]  # creation order among non-semver
    create(api, workflow_body(name, "1.0.0-rc.1"))
    assert latest_rows(db, name) == ["1.0.0-rc.1"]  # any semver outranks non-semver
    create(api, workflow_body(name, "1.0.0"))
    create(api, workflow_body(name, "1.0.0-rc.2"))
    assert latest_rows(db, name) == ["1.0.0"]  # a release outranks its pre-releases
    listed = api.get(f"{WORKFLOWS}/by-name/{name}/versions").json()
    assert [v["version"] for v in listed["versions"]] == [
        "1.0.0",
        "1.0.0-rc.2",
        "1.0.0-rc.1",
        "nightly",
        "latest",
    ]


def test_versions_of_an_unknown_name_is_404(api):
    response = api.get(f"{WORKFLOWS}/by-name/{unique('nobody')}/versions")
    assert response.status_code == 404
    assert response.json()["type"] == PROBLEMS + "not-found"


def test_concurrent_creates_of_one_name_keep_exactly_one_latest(api, server, db):
    name = unique("race")
    # 20 requests over 14 distinct versions: the repeats must lose with 409, never 5xx.
    versions = [f"1.{minor}.0" for minor in range(14)] + [f"1.{minor}.0" for minor in range(6)]

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.post(WORKFLOWS, json=workflow_body(name, version)) for version in versions)
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(run())
    assert set(statuses) <= {201, 409}, statuses
    assert statuses.count(201) == 14 and statuses.count(409) == 6
    assert latest_rows(db, name) == ["1.13.0"]
    (count,) = db.execute(
        "SELECT count(*) FROM remediation_workflow_catalog WHERE workflow_name = %s", (name,)
    ).fetchone()
    assert count == 14


# ---- reads -------------------------------------------------------------------------------------


def test_list_filters_and_pages(api):
    name = unique("list")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        create(api, workflow_body(name, version, environment="staging"))
    page = api.get(WORKFLOWS, params={"workflow_name": name, "limit": 2}).json()
    assert page["limit"] == 2 and page["offset"] == 0 and page["total"] == 3
    assert [w["version"] for w in page["workflows"]] == ["1.2.0", "1.1.0"]  # newest first
    rest = api.get(WORKFLOWS, params={"workflow_name": name, "limit": 2, "offset": 2}).json()
    assert [w["version"] for w in rest["workflows"]] == ["1.0.0"]
    latest = api.get(WORKFLOWS, params={"workflow_name": name, "latest_only": "true"}).json()
    assert [w["version"] for w in latest["workflows"]] == ["1.2.0"]
    by_label = api.get(WORKFLOWS, params={"workflow_name": name, "environment": "production"})
    assert by_label.json()["total"] == 0
    by_label = api.get(
        WORKFLOWS,
        params={
            "workflow_name": name,
            "environment": "staging",
            "severity": "critical",
            "status": "active",
        },
    )
    assert by_label.json()["total"] == 3


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"offset": "-1"},
        {"status": "gone"},
        {"latest_only": "maybe"},
    ],
)
def test_list_rejects_bad_parameters(api, params):
    response = api.get(WORKFLOWS, params=params)
    assert response.status_code == 400
    assert list(response.json()["field_errors"]) == list(params)


@pytest.mark.parametrize(
    "method,suffix,body",
    [
        ("GET", "", None),
        ("PATCH", "", {"status": "disabled"}),
        ("PATCH", "/disable", {}),
    ],
)
def test_unknown_id_is_404_and_malformed_id_is_400(api, method, suffix, body):
    unknown = api.request(method, f"{WORKFLOWS}/{uuid.uuid4()}{suffix}", json=body)
    assert unknown.status_code == 404
    assert unknown.json()["type"] == PROBLEMS + "not-found"
    malformed = api.request(method, f"{WORKFLOWS}/not-a-uuid{suffix}", json=body)
    assert malformed.status_code == 400
    assert malformed.json()["field_errors"] == {"workflow_id": "must be a UUID"}


def test_wrong_method_is_405_with_allow(api):
    response = api.delete(f"{WORKFLOWS}/{uuid.uuid4()}")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "PATCH"}


# ---- lifecycle ---------------------------------------------------------------------------------


def test_patch_rejects_every_immutable_field(api):
    stored = create(api, workflow_body(unique("immutable")))
    response = api.patch(
        f"{WORKFLOWS}/{stored['workflow_id']}",
        json={"status": "disabled", "content": "changed", "labels": {}, "version": "9.9.9"},
    )
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == PROBLEMS + "immutable-field"
    assert set(problem["field_errors"]) == {"content", "labels", "version"}
    assert api.get(f"{WORKFLOWS}/{stored['workflow_id']}").json()["status"] == "active"


def test_patch_validates_mutable_fields(api):
    stored = create(api, workflow_body(unique("patch-invalid")))
    response = api.patch(f"{WORKFLOWS}/{stored['workflow_id']}", json={"status": "Active"})
    assert response.status_code == 400
    assert list(response.json()["field_errors"]) == ["status"]


@pytest.mark.parametrize("source,target", list(itertools.product(STATUSES, STATUSES)))
def test_every_status_transition(api, source, target):
    stored = create(api, workflow_body(unique(f"{source}-{target}"), status=source))
    assert stored["status"] == source
    url = f"{WORKFLOWS}/{stored['workflow_id']}"
    response = api.patch(url, json={"status": target, "updated_by": "tester"})
    if source == target:
        assert response.status_code == 200
        assert response.json() == stored  # no-op: nothing written, not even updated_at
    elif (source, target) in LEGAL:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == target
        assert response.json()["updated_by"] == "tester"
        assert _instant(response.json()["updated_at"]) > _instant(stored["updated_at"])
    else:
        assert response.status_code == 409, response.text
        problem = response.json()
        assert problem["type"] == PROBLEMS + "invalid-transition"
        assert problem["current_status"] == source and problem["target_status"] == target
        assert api.get(url).json()["status"] == source


def test_disable_then_reenable_clears_the_disable_fields(api):
    stored = create(api, workflow_body(unique("reenable")))
    url = f"{WORKFLOWS}/{stored['workflow_id']}"
    disabled = api.patch(
        url, json={"status": "disabled", "disabled_reason": "flaky", "updated_by": "alice"}
    ).json()
    assert disabled["disabled_reason"] == "flaky"
    assert disabled["disabled_by"] == "alice"
    assert disabled["disabled_at"] is not None
    enabled = api.patch(url, json={"status": "active", "status_reason": "fixed"}).json()
    assert enabled["status"] == "active" and enabled["status_reason"] == "fixed"
    assert enabled["disabled_at"] is None
    assert enabled["disabled_by"] is None
    assert enabled["disabled_reason"] is None


def test_disable_endpoint(api):
    stored = create(api, workflow_body(unique("disable")))
    url = f"{WORKFLOWS}/{stored['workflow_id']}/disable"
    response = api.patch(url)  # no body at all
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "disabled"
    again = api.patch(url, json={"reason": "again", "updated_by": "bob"})
    assert again.status_code == 200
    assert again.json() == response.json()  # already disabled: no-op

    other = create(api, workflow_body(unique("disable-body")))
    body = api.patch(
        f"{WORKFLOWS}/{other['workflow_id']}/disable",
        json={"reason": "broken image", "updated_by": "bob"},
    ).json()
    assert (body["disabled_reason"], body["disabled_by"], body["updated_by"]) == (
        "broken image",
        "bob",
        "bob",
    )


def test_disable_of_a_deprecated_workflow_is_an_invalid_transition(api):
    stored = create(api, workflow_body(unique("disable-deprecated"), status="deprecated"))
    response = api.patch(f"{WORKFLOWS}/{stored['workflow_id']}/disable", json={})
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEMS + "invalid-transition"


def test_disable_rejects_an_invalid_body(api):
    stored = create(api, workflow_body(unique("disable-invalid")))
    response = api.patch(f"{WORKFLOWS}/{stored['workflow_id']}/disable", json={"reason": 5})
    assert response.status_code == 400
    assert list(response.json()["field_errors"]) == ["reason"]


# ---- self-audit --------------------------------------------------------------------------------


def test_create_update_and_disable_are_audited_in_the_catalog_transaction(api, db):
    name = unique("audited")
    stored = create(api, workflow_body(name, created_by="ci"))
    url = f"{WORKFLOWS}/{stored['workflow_id']}"
    api.patch(url, json={"deprecation_notice": "use v2", "updated_by": "alice"})
    api.patch(url, json={"deprecation_notice": "use v2"})  # no change: no event
    api.patch(f"{url}/disable", json={"reason": "retired", "updated_by": "bob"})
    api.patch(f"{url}/disable", json={"reason": "retired"})  # already disabled: no event

    events = self_audit_events(db, name)
    assert [e["event_type"] for e in events] == [
        "datastorage.workflow.created",
        "datastorage.workflow.updated",
        "datastorage.workflow.disabled",
    ]
    for event in events:
        assert event["event_category"] == "workflow"
        assert event["event_action"] == event["event_type"].rsplit(".", 1)[1]
        assert (event["actor_type"], event["actor_id"]) == ("service", "datastorage")
        assert event["resource_type"] == "workflow"
        assert event["resource_id"] == stored["workflow_id"]
        assert event["event_data"]["version"] == "1.0.0"
        assert event["event_data"]["workflow_id"] == stored["workflow_id"]
    created, updated, disabled = (e["event_data"] for e in events)
    assert created["created_by"] == "ci"
    assert updated["changes"] == {
        "deprecation_notice": {"old": None, "new": "use v2"},
        "updated_by": {"old": "ci", "new": "alice"},
    }
    assert disabled["reason"] == "retired"
    assert disabled["previous_status"] == "active"
    assert disabled["changes"]["status"] == {"old": "active", "new": "disabled"}


def test_self_audit_events_are_queryable_through_the_api(api):
    name = unique("audit-api")
    stored = create(api, workflow_body(name))
    page = api.get("/api/v1/audit/events", params={"correlation_id": name}).json()
    assert [e["event_type"] for e in page["data"]] == ["datastorage.workflow.created"]
    assert page["data"][0]["resource_id"] == stored["workflow_id"]


@pytest.mark.parametrize("body", [[], "text", 3])
def test_bodies_that_are_not_objects_are_validation_errors(api, body):
    stored = create(api, workflow_body(unique("shape")))
    for method, path in [
        ("POST", WORKFLOWS),
        ("POST", f"{WORKFLOWS}/search"),
        ("PATCH", f"{WORKFLOWS}/{stored['workflow_id']}"),
        ("PATCH", f"{WORKFLOWS}/{stored['workflow_id']}/disable"),
    ]:
        response = api.request(method, path, json=body)
        assert response.status_code == 400, (method, path, response.text)
        assert response.json()["type"].endswith("/validation-error")
