"""Clients generated from the reference contract (V1.0) keep working unchanged
(docs/compatibility.md).

The requests below are what such a client sends: an explicit `null` for each optional field
the reference declares nullable, a workflow with the fields the reference requires. They go to
the real server of the contract tier (Hypercorn, PostgreSQL, Redis DLQ), and one test takes
the database down for the 202s. Every response is checked against the reference's response
shape for that operation, written here as small JSON Schema fragments from the reference's
facts (field names, types, formats, required and nullable fields); extra fields are allowed,
missing or retyped ones fail.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
from psycopg.rows import dict_row
from support import ServerProcess, eventually, make_event, make_notification

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"
NOTIFICATIONS = "/api/v1/audit/notifications"
WORKFLOWS = "/api/v1/workflows"

# The optional fields the reference declares nullable, per request kind.
EVENT_NULLABLE = ("parent_event_id", "namespace", "cluster_name", "severity", "duration_ms")
NOTIFICATION_NULLABLE = ("delivery_status", "error_message")


# ---- the reference's response shapes (facts only, as JSON Schema) ------------------------------


def field(kind: str, *, fmt: str | None = None, nullable: bool = False, **more: Any) -> dict:
    schema: dict[str, Any] = {"type": [kind, "null"] if nullable else kind, **more}
    if fmt:
        schema["format"] = fmt
    return schema


def shape(required: list[str], properties: dict[str, Any], *, unset_as_null: bool = False):
    """An object with the reference's fields; extra fields are allowed.

    `unset_as_null`: an optional scalar may also be `null`. Only the catalog shapes use it:
    this service answers every stored column, `null` when unset, where the reference's own
    server left such a field out; a generated client reads both as "not set" for an optional
    field. Required fields never get this leeway."""
    if unset_as_null:
        properties = {
            name: (
                {**schema, "type": [schema["type"], "null"]}
                if name not in required
                and isinstance(schema.get("type"), str)
                and schema["type"] not in ("object", "array")
                else schema
            )
            for name, schema in properties.items()
        }
    return {"type": "object", "required": required, "properties": properties}


STRING = field("string")
INTEGER = field("integer")
UUID = field("string", fmt="uuid")
TIMESTAMP = field("string", fmt="date-time")

AUDIT_EVENT_RESPONSE = shape(
    ["event_id", "event_timestamp", "message"],
    {"event_id": UUID, "event_timestamp": TIMESTAMP, "message": STRING},
)
BATCH_RESPONSE = shape([], {"event_ids": {"type": "array", "items": UUID}, "message": STRING})
EVENT_REQUIRED = [
    "version",
    "event_type",
    "event_timestamp",
    "event_category",
    "event_action",
    "event_outcome",
    "correlation_id",
    "event_data",
]
AUDIT_EVENT = shape(
    EVENT_REQUIRED,
    {
        "version": STRING,
        "event_type": STRING,
        "event_timestamp": TIMESTAMP,
        "event_category": field(
            "string",
            enum=[
                "gateway",
                "notification",
                "analysis",
                "signalprocessing",
                "workflow",
                "execution",
                "orchestration",
                "webhook",
            ],
        ),
        "event_action": STRING,
        "event_outcome": field("string", enum=["success", "failure", "pending"]),
        "actor_type": STRING,
        "actor_id": STRING,
        "resource_type": STRING,
        "resource_id": STRING,
        "correlation_id": STRING,
        "parent_event_id": field("string", fmt="uuid", nullable=True),
        "namespace": field("string", nullable=True),
        "cluster_name": field("string", nullable=True),
        "severity": field("string", nullable=True),
        "duration_ms": field("integer", nullable=True),
        "event_data": {},
        "event_id": UUID,
        "event_date": field("string", fmt="date", nullable=True),
    },
)
QUERY_RESPONSE = shape(
    [],
    {
        "data": {"type": "array", "items": AUDIT_EVENT},
        "pagination": shape(
            [],
            {
                "limit": INTEGER,
                "offset": INTEGER,
                "total": INTEGER,
                "has_more": field("boolean"),
            },
        ),
    },
)
NOTIFICATION_REQUIRED = [
    "remediation_id",
    "notification_id",
    "recipient",
    "channel",
    "message_summary",
    "status",
    "sent_at",
]
NOTIFICATION_RESPONSE = shape(
    [*NOTIFICATION_REQUIRED, "id", "created_at", "updated_at"],
    {
        "remediation_id": STRING,
        "notification_id": STRING,
        "recipient": STRING,
        "channel": STRING,
        "message_summary": STRING,
        "status": STRING,
        "sent_at": TIMESTAMP,
        "delivery_status": field("string", nullable=True),
        "error_message": field("string", nullable=True),
        "escalation_level": INTEGER,
        "id": field("integer", minimum=-(2**63), maximum=2**63 - 1),
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
)
# The reference's 202 (status, message) plus docs/compatibility.md's notification_id.
NOTIFICATION_ACCEPTED = shape(
    ["status", "message", "notification_id"],
    {"status": field("string", enum=["accepted"]), "message": STRING, "notification_id": STRING},
)
PROBLEM = shape(
    ["type", "title", "status"],
    {
        "type": field("string", fmt="uri"),
        "title": STRING,
        "status": INTEGER,
        "detail": STRING,
        "instance": STRING,
        "field_errors": {"type": "object", "additionalProperties": STRING},
    },
)
HEALTHY = shape(["status"], {"status": field("string", enum=["healthy"])})
UNHEALTHY = shape(
    ["status", "error"], {"status": field("string", enum=["unhealthy"]), "error": STRING}
)
SEVERITY = field("string", enum=["critical", "high", "medium", "low"])
PRIORITIES = ["P0", "P1", "P2", "P3"]


def mandatory_labels(priorities: list[str]) -> dict[str, Any]:
    """The five mandatory labels (a workflow's, or a search's filters)."""
    return shape(
        ["signal_type", "severity", "component", "environment", "priority"],
        {
            "signal_type": STRING,
            "severity": SEVERITY,
            "component": STRING,
            "environment": STRING,
            "priority": field("string", enum=priorities),
        },
    )


MANDATORY_LABELS = mandatory_labels([*PRIORITIES, "*"])
CUSTOM_LABELS = {"type": "object", "additionalProperties": {"type": "array", "items": STRING}}
DETECTED_LABELS = shape(
    [],
    {
        "failed_detections": {"type": "array", "items": STRING},
        "gitOpsManaged": field("boolean"),
        "gitOpsTool": field("string", enum=["argocd", "flux", "*"]),
        "pdbProtected": field("boolean"),
        "hpaEnabled": field("boolean"),
        "stateful": field("boolean"),
        "helmManaged": field("boolean"),
        "networkIsolated": field("boolean"),
        "serviceMesh": field("string", enum=["istio", "linkerd", "*"]),
    },
)
WORKFLOW_STATUS = field("string", enum=["active", "disabled", "deprecated", "archived"])
WORKFLOW = shape(
    [
        "workflow_name",
        "version",
        "name",
        "description",
        "content",
        "content_hash",
        "labels",
        "execution_engine",
        "status",
    ],
    {
        "workflow_id": UUID,
        "workflow_name": STRING,
        "version": STRING,
        "name": STRING,
        "description": STRING,
        "owner": STRING,
        "maintainer": field("string", fmt="email"),
        "content": STRING,
        "content_hash": field("string", minLength=64, maxLength=64),
        "parameters": field("object"),
        "execution_engine": STRING,
        "container_image": STRING,
        "container_digest": STRING,
        "labels": MANDATORY_LABELS,
        "custom_labels": CUSTOM_LABELS,
        "detected_labels": DETECTED_LABELS,
        "status": WORKFLOW_STATUS,
        "disabled_at": TIMESTAMP,
        "disabled_by": STRING,
        "disabled_reason": STRING,
        "is_latest_version": field("boolean"),
        "previous_version": STRING,
        "deprecation_notice": STRING,
        "version_notes": STRING,
        "change_summary": STRING,
        "approved_by": STRING,
        "approved_at": TIMESTAMP,
        "expected_success_rate": field("number"),
        "expected_duration_seconds": INTEGER,
        "actual_success_rate": field("number"),
        "total_executions": INTEGER,
        "successful_executions": INTEGER,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "created_by": STRING,
        "updated_by": STRING,
    },
    unset_as_null=True,
)
WORKFLOW_LIST = shape(
    [],
    {
        "workflows": {"type": "array", "items": WORKFLOW},
        "limit": INTEGER,
        "offset": INTEGER,
        "total": INTEGER,
    },
)
SEARCH_RESULT = shape(
    ["workflow_id", "title", "description", "signal_type", "confidence", "final_score", "rank"],
    {
        "workflow_id": UUID,
        "title": STRING,
        "description": STRING,
        "signal_type": STRING,
        "container_image": STRING,
        "container_digest": STRING,
        "confidence": field("number", minimum=0, maximum=1),
        "label_boost": field("number", minimum=0),
        "label_penalty": field("number", minimum=0),
        "final_score": field("number", minimum=0, maximum=1),
        "rank": field("integer", minimum=1),
        "custom_labels": CUSTOM_LABELS,
        "detected_labels": DETECTED_LABELS,
    },
    unset_as_null=True,
)
SEARCH_RESPONSE = shape(
    [],
    {
        "workflows": {"type": "array", "items": SEARCH_RESULT},
        "total_results": INTEGER,
        "filters": mandatory_labels(PRIORITIES),
    },
)


def conforms(schema: dict[str, Any], response: httpx.Response, status: int) -> Any:
    """The response has `status` and a body of the reference's shape; returns the body."""
    assert response.status_code == status, response.text[:1000]
    body = response.json()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, "\n".join(errors)
    return body


def with_nulls(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {**body, **dict.fromkeys(names, None)}


def stored_event(database_url: str, event_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM audit_events WHERE event_id = %s", (event_id,)
        ).fetchone()


STORED_ONLY = ("event_id", "created_at")  # differ between two otherwise equal events


def same_as_omitted(client: httpx.Client, with_null: str, omitted: str) -> dict[str, Any]:
    """Two stored events, one sent with nulls and one without the fields, read back equal."""
    first = conforms(AUDIT_EVENT, client.get(f"{EVENTS}/{with_null}"), 200)
    second = conforms(AUDIT_EVENT, client.get(f"{EVENTS}/{omitted}"), 200)
    for name in STORED_ONLY:
        first.pop(name), second.pop(name)
    assert first == second
    return first


# ---- explicit nulls ----------------------------------------------------------------------------


def test_explicit_nulls_in_a_single_event_are_stored_as_absent(client, contract_stack):
    base = make_event(correlation_id=f"compat-{uuid.uuid4()}")
    sent = conforms(
        AUDIT_EVENT_RESPONSE, client.post(EVENTS, json=with_nulls(base, EVENT_NULLABLE)), 201
    )
    plain = conforms(AUDIT_EVENT_RESPONSE, client.post(EVENTS, json=base), 201)
    event = same_as_omitted(client, sent["event_id"], plain["event_id"])
    assert event["severity"] == "info"  # the default of an absent severity
    for name in ("parent_event_id", "namespace", "cluster_name", "duration_ms"):
        assert event[name] is None, name
    row = stored_event(contract_stack.database_url, sent["event_id"])
    assert row["severity"] == "info"
    assert [row[n] for n in ("parent_event_id", "namespace", "cluster_name", "duration_ms")] == [
        None
    ] * 4
    listed = conforms(
        QUERY_RESPONSE, client.get(EVENTS, params={"correlation_id": base["correlation_id"]}), 200
    )
    assert {e["event_id"] for e in listed["data"]} == {sent["event_id"], plain["event_id"]}


def test_a_null_resent_under_the_same_id_is_the_same_content(client):
    """Idempotency compares stored content: null and omitted are the same event."""
    event_id = str(uuid.uuid4())
    base = make_event(event_id=event_id)
    assert client.post(EVENTS, json=with_nulls(base, EVENT_NULLABLE)).status_code == 201
    again = client.post(EVENTS, json=base)
    assert again.status_code == 200, again.text
    assert again.json()["event_id"] == event_id


def test_explicit_nulls_in_batches_are_stored_as_absent(client):
    correlation = f"compat-batch-{uuid.uuid4()}"
    # The common batch (no client ids, no parents): streamed into COPY item by item.
    streamed = [with_nulls(make_event(correlation_id=correlation), EVENT_NULLABLE)] * 3
    streamed_ids = conforms(BATCH_RESPONSE, client.post(BATCH, json=streamed), 201)["event_ids"]
    plain = conforms(AUDIT_EVENT_RESPONSE, client.post(EVENTS, json=make_event()), 201)
    for event_id in streamed_ids:
        same_as_omitted_fields(client, event_id, plain["event_id"])
    # A batch with a real parent takes the look-up path; its other items send null parents.
    parent = streamed_ids[0]
    mixed = [
        with_nulls(make_event(correlation_id=correlation), EVENT_NULLABLE),
        make_event(correlation_id=correlation, parent_event_id=parent),
        with_nulls(make_event(correlation_id=correlation), EVENT_NULLABLE),
    ]
    mixed_ids = conforms(BATCH_RESPONSE, client.post(BATCH, json=mixed), 201)["event_ids"]
    for index in (0, 2):
        same_as_omitted_fields(client, mixed_ids[index], plain["event_id"])
    child = conforms(AUDIT_EVENT, client.get(f"{EVENTS}/{mixed_ids[1]}"), 200)
    assert child["parent_event_id"] == parent


def same_as_omitted_fields(client: httpx.Client, event_id: str, reference_id: str) -> None:
    """The nullable fields of `event_id` read back as those of an event that omitted them."""
    event = conforms(AUDIT_EVENT, client.get(f"{EVENTS}/{event_id}"), 200)
    omitted = client.get(f"{EVENTS}/{reference_id}").json()
    assert {n: event[n] for n in EVENT_NULLABLE} == {n: omitted[n] for n in EVENT_NULLABLE}


def test_notification_nulls_are_absent_and_the_id_is_an_int64(client, contract_stack):
    body = with_nulls(make_notification(), NOTIFICATION_NULLABLE)
    created = conforms(NOTIFICATION_RESPONSE, client.post(NOTIFICATIONS, json=body), 201)
    assert type(created["id"]) is int
    assert created["delivery_status"] is None and created["error_message"] is None
    plain = conforms(
        NOTIFICATION_RESPONSE, client.post(NOTIFICATIONS, json=make_notification()), 201
    )
    assert plain["id"] > created["id"]
    for name in ("id", "notification_id", "remediation_id", "created_at", "updated_at", "sent_at"):
        created.pop(name), plain.pop(name)
    assert created == plain  # null reads back exactly as omitted
    with psycopg.connect(contract_stack.database_url) as conn:
        row = conn.execute(
            "SELECT seq, delivery_status, error_message FROM notification_audit "
            "WHERE notification_id = %s",
            (body["notification_id"],),
        ).fetchone()
    assert row[1:] == (None, None)
    listed = client.get(NOTIFICATIONS, params={"notification_id": body["notification_id"]})
    assert listed.status_code == 200
    (record,) = listed.json()["data"]
    assert record["id"] == row[0] and type(record["id"]) is int


def notification_conflict(client: httpx.Client) -> httpx.Response:
    body = make_notification()
    assert client.post(NOTIFICATIONS, json=body).status_code == 201
    return client.post(NOTIFICATIONS, json=body)


@pytest.mark.parametrize(
    ("path", "body", "field_name"),
    [
        (EVENTS, make_event() | {"version": None}, "version"),
        (EVENTS, make_event() | {"event_data": None}, "event_data"),
        (EVENTS, make_event() | {"actor_type": None}, "actor_type"),
        (EVENTS, make_event() | {"error_code": None}, "error_code"),
        (EVENTS, make_event() | {"namespace": 5}, "namespace"),
        (EVENTS, make_event() | {"duration_ms": -1}, "duration_ms"),
        (EVENTS, make_event() | {"parent_event_id": "not-a-uuid"}, "parent_event_id"),
        (BATCH, [make_event(), make_event() | {"event_type": None}], "[1].event_type"),
        (NOTIFICATIONS, make_notification(channel=None), "channel"),
        (NOTIFICATIONS, make_notification(escalation_level=None), "escalation_level"),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None,
)
def test_a_null_for_a_required_or_non_nullable_field_is_still_a_400(
    path, body, field_name, client, contract_stack
):
    before = contract_stack.stored_rows()
    problem = conforms(PROBLEM, client.post(path, json=body), 400)
    assert field_name in problem["field_errors"], problem
    assert contract_stack.stored_rows() == before


# ---- every documented response keeps its shape ------------------------------------------------


def reference_workflow(name: str) -> dict[str, Any]:
    """A create request as the reference's client builds it (its required fields included)."""
    content = f"apiVersion: tekton.dev/v1\nkind: Pipeline\n# {name}\n"
    return {
        "workflow_name": name,
        "version": "v1.0.0",
        "name": f"{name} title",
        "description": "restart the deployment",
        "owner": "platform",
        "maintainer": "oncall@example.com",
        "content": content,
        "content_hash": hashlib.sha256(content.encode()).hexdigest(),
        "parameters": {"replicas": 2},
        "execution_engine": "tekton",
        "container_image": "quay.io/kubernaut/restart:1",
        "container_digest": "sha256:" + "a" * 64,
        "labels": {
            "signal_type": name,
            "severity": "critical",
            "component": "deployment",
            "environment": "production",
            "priority": "P1",
        },
        "custom_labels": {"team": ["payments"]},
        "detected_labels": {"gitOpsManaged": True, "gitOpsTool": "argocd"},
        "status": "active",
    }


def test_workflow_responses_keep_the_reference_shape(client):
    name = f"compat-{uuid.uuid4().hex[:12]}"
    created = conforms(WORKFLOW, client.post(WORKFLOWS, json=reference_workflow(name)), 201)
    workflow_id = created["workflow_id"]
    conforms(WORKFLOW, client.get(f"{WORKFLOWS}/{workflow_id}"), 200)
    listed = conforms(WORKFLOW_LIST, client.get(WORKFLOWS, params={"workflow_name": name}), 200)
    assert [w["workflow_id"] for w in listed["workflows"]] == [workflow_id]
    search = {
        "filters": {
            "signal_type": name,
            "severity": "critical",
            "component": "deployment",
            "environment": "production",
            "priority": "P1",
            "detected_labels": {"gitOpsManaged": True, "gitOpsTool": "argocd"},
        },
        "top_k": 5,
    }
    found = conforms(SEARCH_RESPONSE, client.post(f"{WORKFLOWS}/search", json=search), 200)
    assert [w["workflow_id"] for w in found["workflows"]] == [workflow_id]
    patched = conforms(
        WORKFLOW,
        client.patch(
            f"{WORKFLOWS}/{workflow_id}",
            json={"status": "disabled", "disabled_by": "ops", "disabled_reason": "flaky"},
        ),
        200,
    )
    assert patched["status"] == "disabled" and patched["disabled_at"]
    conforms(WORKFLOW, client.patch(f"{WORKFLOWS}/{workflow_id}", json={"status": "active"}), 200)
    disabled = client.patch(f"{WORKFLOWS}/{workflow_id}/disable", json={"reason": "retired"})
    assert conforms(WORKFLOW, disabled, 200)["status"] == "disabled"
    conforms(PROBLEM, client.get(f"{WORKFLOWS}/{uuid.uuid4()}"), 404)
    conforms(PROBLEM, client.post(WORKFLOWS, json=reference_workflow(name)), 409)
    conforms(PROBLEM, client.patch(f"{WORKFLOWS}/{workflow_id}", json={"content": "x"}), 400)


def test_audit_and_health_responses_keep_the_reference_shape(client):
    correlation = f"compat-shape-{uuid.uuid4()}"
    full = make_event(
        correlation_id=correlation,
        namespace="prod",
        cluster_name="east",
        severity="critical",
        duration_ms=1500,
        actor_type="service",
        actor_id="gateway-service",
        resource_type="Signal",
        resource_id="fp-1",
    )
    first = conforms(AUDIT_EVENT_RESPONSE, client.post(EVENTS, json=full), 201)
    child = make_event(correlation_id=correlation, parent_event_id=first["event_id"])
    conforms(AUDIT_EVENT_RESPONSE, client.post(EVENTS, json=child), 201)
    conforms(BATCH_RESPONSE, client.post(BATCH, json=[make_event(correlation_id=correlation)]), 201)
    page = conforms(
        QUERY_RESPONSE,
        client.get(EVENTS, params={"correlation_id": correlation, "limit": 2, "offset": 1}),
        200,
    )
    assert page["pagination"] == {**page["pagination"], "limit": 2, "offset": 1, "total": 3}
    assert page["pagination"]["has_more"] is False
    conforms(PROBLEM, client.get(EVENTS, params={"since": "yesterday"}), 400)
    conforms(PROBLEM, client.get(f"{EVENTS}/{uuid.uuid4()}"), 404)
    conforms(PROBLEM, notification_conflict(client), 409)
    conforms(HEALTHY, client.get("/health"), 200)


# ---- while the database is down (202) ----------------------------------------------------------


def test_queued_writes_keep_the_reference_shape_and_replay_nulls_as_absent(database, tmp_path):
    pg, url = database
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_DLQ_URL": f"file://{tmp_path / 'spool'}",
            "DATASTORAGE_DB_POOL_TIMEOUT": "2",
        },
        tmp_path,
    )
    correlation = f"compat-queued-{uuid.uuid4()}"
    notification = with_nulls(make_notification(remediation_id=correlation), NOTIFICATION_NULLABLE)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            pg.stop()
            event = with_nulls(make_event(correlation_id=correlation), EVENT_NULLABLE)
            queued = conforms(AUDIT_EVENT_RESPONSE, api.post(EVENTS, json=event), 202)
            batch = [with_nulls(make_event(correlation_id=correlation), EVENT_NULLABLE)] * 2
            queued_ids = conforms(BATCH_RESPONSE, api.post(BATCH, json=batch), 202)["event_ids"]
            accepted = conforms(
                NOTIFICATION_ACCEPTED, api.post(NOTIFICATIONS, json=notification), 202
            )
            assert accepted["notification_id"] == notification["notification_id"]
            assert "id" not in accepted  # the database assigns it on replay
            conforms(UNHEALTHY, api.get("/health"), 503)
            pg.start()
            ids = {queued["event_id"], *queued_ids}

            def replayed() -> list[dict[str, Any]]:
                with psycopg.connect(url, row_factory=dict_row) as conn:
                    rows = conn.execute(
                        "SELECT event_id::text, severity, namespace, cluster_name, duration_ms,"
                        " parent_event_id FROM audit_events WHERE correlation_id = %s",
                        (correlation,),
                    ).fetchall()
                    stored = conn.execute(
                        "SELECT id FROM notification_audit WHERE notification_id = %s",
                        (notification["notification_id"],),
                    ).fetchall()
                assert {r["event_id"] for r in rows} == ids and len(stored) == 1
                return rows

            rows = eventually(replayed, timeout=30, interval=0.5)
            for row in rows:
                assert row["severity"] == "info"
                assert [row[n] for n in EVENT_NULLABLE if n != "severity"] == [None] * 4
            listed = api.get(
                NOTIFICATIONS, params={"notification_id": notification["notification_id"]}
            )
            (record,) = listed.json()["data"]
            assert type(record["id"]) is int
            assert record["delivery_status"] is None and record["error_message"] is None
    finally:
        server.stop()
