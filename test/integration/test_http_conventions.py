"""HTTP conventions (docs/architecture.md), notifications (docs/api.md), metrics
(docs/operations.md), OpenAPI, burst on the pool."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
import yaml
from support import make_event, make_notification, now_rfc3339

NOTIFICATIONS = "/api/v1/audit/notifications"


def test_unknown_route_is_a_404_problem(api):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://kubernaut.ai/problems/not-found"
    assert problem["instance"] == "/api/v1/nothing-here"


def test_wrong_method_is_a_405_problem_with_allow(api):
    response = api.delete("/api/v1/audit/events")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert response.json()["type"].endswith("/method-not-allowed")


def test_request_id_is_echoed_or_generated(api):
    response = api.get("/health/live", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = api.get("/health/live").headers["x-request-id"]
    assert uuid.UUID(generated)
    problem = api.get("/nope", headers={"X-Request-Id": "req-9"})
    assert problem.headers["x-request-id"] == "req-9"


def test_problem_instance_has_no_query_string(api):
    response = api.get("/api/v1/audit/events", params={"limit": 0})
    assert response.json()["instance"] == "/api/v1/audit/events"


def test_openapi_is_served_as_json_and_yaml(api):
    as_json = api.get("/openapi.json").json()
    as_yaml = yaml.safe_load(api.get("/openapi.yaml").text)
    assert as_json == as_yaml
    assert as_json["openapi"].startswith("3.1")
    assert "/api/v1/audit/events/batch" in as_json["paths"]


def test_health_endpoints(api):
    assert api.get("/health/live").json()["status"] == "alive"
    ready = api.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    health = api.get("/health").json()
    assert health["status"] == "healthy"
    assert health["checks"]["database"]["status"] == "up"


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_expose_real_values(api):
    assert api.post("/api/v1/audit/events", json=make_event()).status_code == 201
    api.post("/api/v1/audit/events", json=make_event(event_outcome="bad"))
    text = api.get("/metrics").text
    assert _metric(text, "datastorage_audit_traces_total", service="gateway", status="success") >= 1
    assert _metric(text, "datastorage_write_duration_seconds_count", table="audit_events") >= 1
    assert (
        _metric(text, "datastorage_validation_failures_total", field="event_outcome", reason="enum")
        >= 1
    )
    assert (
        _metric(
            text,
            "datastorage_http_requests_total",
            method="POST",
            route="/api/v1/audit/events",
            status="201",
        )
        >= 1
    )
    assert (
        _metric(
            text,
            "datastorage_http_request_duration_seconds_count",
            method="POST",
            route="/api/v1/audit/events",
        )
        >= 1
    )
    assert _metric(text, "datastorage_db_pool_connections", state="idle") is not None
    assert _metric(text, "datastorage_db_pool_connections", state="in_use") is not None
    assert _metric(text, "datastorage_db_pool_waiting") is not None
    assert _metric(text, "datastorage_db_pool_timeouts_total") is not None
    assert _metric(text, "datastorage_audit_lag_seconds_count", service="gateway") >= 1


def test_route_label_uses_the_template_not_the_path(api):
    event_id = str(uuid.uuid4())
    api.get(f"/api/v1/audit/events/{event_id}")
    text = api.get("/metrics").text
    assert event_id not in text
    assert 'route="/api/v1/audit/events/{event_id}"' in text


# ---- notifications ---------------------------------------------------------------------------


def test_notification_is_stored_and_listed(api):
    body = make_notification(escalation_level=2, delivery_status="250 OK")
    response = api.post(NOTIFICATIONS, json=body)
    assert response.status_code == 201, response.text
    stored = response.json()
    assert type(stored["id"]) is int and stored["created_at"] and stored["updated_at"]
    assert stored["escalation_level"] == 2 and stored["channel"] == "email"
    listed = api.get(NOTIFICATIONS, params={"remediation_id": body["remediation_id"]}).json()
    assert [n["notification_id"] for n in listed["data"]] == [body["notification_id"]]
    assert listed["pagination"]["total"] == 1
    by_status = api.get(
        NOTIFICATIONS, params={"notification_id": body["notification_id"], "status": "failed"}
    ).json()
    assert by_status["data"] == []


def test_duplicate_notification_id_is_409(api):
    body = make_notification()
    assert api.post(NOTIFICATIONS, json=body).status_code == 201
    response = api.post(NOTIFICATIONS, json=body)
    assert response.status_code == 409
    assert response.json()["type"].endswith("/conflict")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel", "pigeon"),
        ("status", "lost"),
        ("escalation_level", 11),
        ("recipient", "x" * 501),
        ("message_summary", "x" * 1001),
        ("error_message", "x" * 1001),
        ("delivery_status", "x" * 256),
        ("sent_at", "yesterday"),
    ],
)
def test_notification_field_errors(api, field, value):
    response = api.post(NOTIFICATIONS, json=make_notification(**{field: value}))
    assert response.status_code == 400
    assert field in response.json()["field_errors"]


def test_notification_sent_in_the_future_is_rejected(api):
    response = api.post(NOTIFICATIONS, json=make_notification(sent_at=now_rfc3339(3600)))
    assert response.status_code == 400
    assert "sent_at" in response.json()["field_errors"]


# ---- burst ---------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [50])
def test_burst_of_concurrent_writes_gets_only_201(server, db, concurrency):
    correlation = f"burst-{uuid.uuid4()}"

    async def burst():
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post("/api/v1/audit/events", json=make_event(correlation_id=correlation))
                    for _ in range(concurrency)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [201] * concurrency
    stored = db.execute(
        "SELECT count(*) FROM audit_events WHERE correlation_id = %s", (correlation,)
    ).fetchone()[0]
    assert stored == concurrency


def test_metrics_text_is_prometheus_format(api):
    text = api.get("/metrics").text
    assert re.search(r"^# TYPE datastorage_http_requests_total counter$", text, re.M)
