"""Every endpoint family of the audit API, black box."""

from __future__ import annotations

import uuid

from e2e_helpers import event, now


def test_health_family(http):
    assert http.get("/health/live").json()["status"] == "alive"
    assert http.get("/health/ready").status_code == 200
    health = http.get("/health").json()
    assert health["checks"]["database"]["status"] == "up"


def test_write_then_read_the_timeline(http):
    correlation = f"e2e-{uuid.uuid4()}"
    first = http.post("/api/v1/audit/events", json=event(correlation_id=correlation))
    assert first.status_code == 201, first.text
    batch = http.post(
        "/api/v1/audit/events/batch", json=[event(correlation_id=correlation) for _ in range(5)]
    )
    assert batch.status_code == 201
    timeline = http.get(
        "/api/v1/audit/events", params={"correlation_id": correlation, "order": "asc"}
    ).json()
    assert len(timeline["data"]) == 6 and timeline["pagination"]["total"] == 6
    one = http.get(f"/api/v1/audit/events/{first.json()['event_id']}")
    assert one.status_code == 200 and one.json()["correlation_id"] == correlation


def test_event_types_and_notifications(http):
    types = http.get("/api/v1/audit/event-types").json()["event_types"]
    assert len(types) >= 27
    body = {
        "remediation_id": f"rem-{uuid.uuid4()}",
        "notification_id": f"n-{uuid.uuid4()}",
        "recipient": "ops@example.com",
        "channel": "email",
        "message_summary": "hi",
        "status": "sent",
        "sent_at": now(),
    }
    assert http.post("/api/v1/audit/notifications", json=body).status_code == 201
    assert http.post("/api/v1/audit/notifications", json=body).status_code == 409
    listed = http.get(
        "/api/v1/audit/notifications", params={"remediation_id": body["remediation_id"]}
    ).json()
    assert listed["data"][0]["notification_id"] == body["notification_id"]


def test_problems(http):
    bad = http.post("/api/v1/audit/events", json=event(event_outcome="maybe"))
    assert bad.status_code == 400 and "event_outcome" in bad.json()["field_errors"]
    assert bad.headers["content-type"] == "application/problem+json"
    assert http.get("/api/v1/nope").status_code == 404
    assert http.delete("/api/v1/audit/events").status_code == 405
    assert (
        http.post(
            "/api/v1/audit/events", data="x", headers={"Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    assert http.get(f"/api/v1/audit/events/{uuid.uuid4()}").status_code == 404


def test_operations_endpoints(http):
    assert "datastorage_http_requests_total" in http.get("/metrics").text
    assert http.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "openapi:" in http.get("/openapi.yaml").text
    streams = http.get("/api/v1/admin/dlq").json()["streams"]
    assert {s["stream"] for s in streams} >= {"audit_events", "notifications"}
