"""Hostile input against every write endpoint and every query parameter (issue 8, acceptance 2).

Two halves:

- `test_invalid_input_is_rejected_and_nothing_is_stored`: strings and JSON values PostgreSQL
  cannot store, invalid UTF-8, every column limit + 1, out-of-range numbers, wrong types, deep
  nesting, huge arrays, duplicate keys, oversized bodies, wrong and missing content types, bad
  methods. Each gets a 4xx `application/problem+json` naming the field, and SQL plus the DLQ
  counter prove nothing was stored and nothing was queued.
- the round-trip tests: malicious but valid strings (SQL injection, quotes, backslashes, LIKE
  wildcards, odd Unicode, JSON-looking text) and strings exactly at a column's limit are data:
  stored and read back byte for byte (by GET and by SQL), and filtering by them returns exactly
  the matching row, never a LIKE match, a case-folded, normalized or trimmed one.
"""

from __future__ import annotations

import copy
import json
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from support import eventually, make_event, make_notification, now_rfc3339

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"
NOTIFICATIONS = "/api/v1/audit/notifications"
WORKFLOWS = "/api/v1/workflows"
SEARCH = "/api/v1/workflows/search"
# The target of the PATCH cases: a workflow created once per module (see `target_workflow`).
TARGET = "/api/v1/workflows/{workflow_id}"
LOG_PROOF = "/api/v1/audit/log/proof/{event_id}"  # the contract stack runs with the log on
LOG_CONSISTENCY = "/api/v1/audit/log/consistency"
PROBLEM_TYPE = "https://kubernaut.ai/problems/"
MiB = 1 << 20
DELETE = object()  # `edit` marker: remove the field

# --------------------------------------------------------------------------------------------
# Request bodies


def valid_workflow(workflow_name: str | None = None, **fields: Any) -> dict[str, Any]:
    workflow_name = workflow_name or f"hostile-{uuid.uuid4().hex[:12]}"
    body = {
        "workflow_name": workflow_name,
        "version": "1.0.0",
        "name": f"{workflow_name} 1.0.0",
        "description": "restart the deployment",
        "content": f"apiVersion: tekton.dev/v1\nkind: Pipeline\n# {workflow_name}\n",
        "labels": {
            "signal_type": "OOMKilled",
            "severity": "critical",
            "component": "deployment",
            "environment": "production",
            "priority": "P1",
        },
        "container_image": "quay.io/kubernaut/restart:1",
        "execution_engine": "tekton",
    }
    body.update(fields)
    return body


def valid_search(**fields: Any) -> dict[str, Any]:
    body = {
        "filters": {
            "signal_type": "OOMKilled",
            "severity": "critical",
            "component": "deployment",
            "environment": "production",
            "priority": "P1",
        },
        "top_k": 5,
    }
    body.update(fields)
    return body


def edit(body: Any, changes: dict[str, Any]) -> Any:
    """A deep copy of `body` with dotted paths set (`DELETE` removes the field)."""
    body = copy.deepcopy(body)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = body
        for name in parents:
            node = node[int(name)] if isinstance(node, list) else node[name]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return body


def nested(depth: int) -> Any:
    """A JSON value `depth` objects deep."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def splice(body: Any, marker: str, literal: str) -> bytes:
    """The JSON text of `body` with the string "marker" replaced by a raw JSON token."""
    text = json.dumps(body)
    assert f'"{marker}"' in text
    return text.replace(f'"{marker}"', literal).encode()


def varied(length: int, seed: int = 0) -> str:
    """`length` distinct-looking 4-byte characters (CJK Extension B): incompressible, and
    4 bytes each, so a limit counted in bytes instead of characters shows."""
    return "".join(chr(0x20000 + (seed * 7907 + i * 7919) % 0xA6D0) for i in range(length))


# --------------------------------------------------------------------------------------------
# The invalid corpus


@dataclass(frozen=True)
class Bad:
    """One invalid request and the problem it must get."""

    method: str
    path: str
    field: str | None  # the field the problem must name; None where none exists
    json: Any = None  # a body sent as JSON (ASCII-escaped, so lone surrogates can be sent)
    raw: bytes | None = None  # or raw body bytes
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 400
    slug: str = "validation-error"
    chunked: bool = False  # send the raw body without Content-Length


def post(path: str, field: str | None, body: Any, **kw: Any) -> Bad:
    return Bad("POST", path, field, json=body, **kw)


def post_raw(path: str, field: str | None, raw: bytes, **kw: Any) -> Bad:
    kw.setdefault("slug", "invalid-json")
    kw.setdefault("headers", JSON_HEADERS)
    return Bad("POST", path, field, raw=raw, **kw)


def get(path: str, field: str | None, **params: str) -> Bad:
    return Bad("GET", path, field, params=params or None)


# Column limits (characters) of every length-limited request field, from the migrations.
EVENT_LIMITS = {
    "version": 10,
    "event_type": 100,
    "event_action": 50,
    "correlation_id": 255,
    "actor_type": 50,
    "actor_id": 255,
    "resource_type": 100,
    "resource_id": 255,
    "namespace": 253,
    "cluster_name": 255,
    "severity": 20,
    "error_code": 50,
    "trace_id": 255,
    "span_id": 255,
}
NOTIFICATION_LIMITS = {
    "remediation_id": 255,
    "notification_id": 255,
    "recipient": 500,
    "message_summary": 1000,
    "delivery_status": 255,
    "error_message": 1000,
}
WORKFLOW_LIMITS = {
    "workflow_name": 255,
    "version": 50,
    "name": 255,
    "execution_engine": 50,
    "container_image": 500,
    "container_digest": 255,
    "owner": 255,
    "maintainer": 255,
    "disabled_by": 255,
    "approved_by": 255,
    "created_by": 255,
    "labels.signal_type": 255,
    "labels.component": 255,
    "labels.environment": 255,
}
PATCH_LIMITS = {"disabled_by": 255, "updated_by": 255, "status_reason": 10000}
EVENT_QUERY_LIMITS = {
    "correlation_id": 255,
    "event_type": 100,
    "event_action": 50,
    "severity": 20,
    "actor_type": 50,
    "actor_id": 255,
    "resource_type": 100,
    "resource_id": 255,
    "namespace": 253,
    "cluster_name": 255,
}
WORKFLOW_QUERY_LIMITS = {
    "workflow_name": 255,
    "signal_type": 255,
    "component": 255,
    "environment": 255,
}
NOTIFICATION_QUERY_LIMITS = {"remediation_id": 255, "notification_id": 255}

BIG = 2**70  # beyond 64 bits
EVENT = make_event(event_timestamp=now_rfc3339(-60))
NOTIFICATION = make_notification()
WORKFLOW = valid_workflow()
SEARCH_BODY = valid_search()
JSON_HEADERS = {"Content-Type": "application/json"}


def _overlong_cases() -> dict[str, Bad]:
    cases: dict[str, Bad] = {}
    for name, limit in EVENT_LIMITS.items():
        body = edit(EVENT, {name: varied(limit + 1)})
        cases[f"event-{name}-{limit + 1}-chars"] = post(EVENTS, name, body)
    for name, limit in NOTIFICATION_LIMITS.items():
        body = edit(NOTIFICATION, {name: varied(limit + 1)})
        cases[f"notification-{name}-{limit + 1}-chars"] = post(NOTIFICATIONS, name, body)
    for name, limit in WORKFLOW_LIMITS.items():
        body = edit(WORKFLOW, {name: varied(limit + 1)})
        cases[f"workflow-{name}-{limit + 1}-chars"] = post(WORKFLOWS, name, body)
    for name, limit in PATCH_LIMITS.items():
        body = {"status": "active", name: varied(limit + 1)}
        cases[f"patch-{name}-{limit + 1}-chars"] = Bad("PATCH", TARGET, name, json=body)
    for name, limit in EVENT_QUERY_LIMITS.items():
        cases[f"query-events-{name}-{limit + 1}-chars"] = get(
            EVENTS, name, **{name: varied(limit + 1)}
        )
    for name, limit in WORKFLOW_QUERY_LIMITS.items():
        cases[f"query-workflows-{name}-{limit + 1}-chars"] = get(
            WORKFLOWS, name, **{name: varied(limit + 1)}
        )
    for name, limit in NOTIFICATION_QUERY_LIMITS.items():
        cases[f"query-notifications-{name}-{limit + 1}-chars"] = get(
            NOTIFICATIONS, name, **{name: varied(limit + 1)}
        )
    return cases


def _event_cases() -> dict[str, Bad]:
    e = EVENT
    evt = json.dumps(e)
    return {
        "event-missing-correlation_id": post(EVENTS, "correlation_id", edit(e, {"correlation_id": DELETE})),
        "event-empty-event_type": post(EVENTS, "event_type", edit(e, {"event_type": ""})),
        "event-null-event_type": post(EVENTS, "event_type", edit(e, {"event_type": None})),
        "event-number-correlation_id": post(EVENTS, "correlation_id", edit(e, {"correlation_id": 42})),
        "event-category-wrong-case": post(EVENTS, "event_category", edit(e, {"event_category": "Gateway"})),
        "event-outcome-unknown": post(EVENTS, "event_outcome", edit(e, {"event_outcome": "ok"})),
        "event-category-mismatch-known-type": post(EVENTS, "event_category", edit(e, {"event_category": "analysis"})),
        "event-timestamp-not-a-date": post(EVENTS, "event_timestamp", edit(e, {"event_timestamp": "yesterday"})),
        "event-timestamp-no-zone": post(EVENTS, "event_timestamp", edit(e, {"event_timestamp": "2024-01-01T00:00:00"})),
        "event-timestamp-8-days-old": post(EVENTS, "event_timestamp", edit(e, {"event_timestamp": now_rfc3339(-8 * 86400)})),
        "event-timestamp-1h-ahead": post(EVENTS, "event_timestamp", edit(e, {"event_timestamp": now_rfc3339(3600)})),
        "event-timestamp-year-0": post(EVENTS, "event_timestamp", edit(e, {"event_timestamp": "0000-01-01T00:00:00Z"})),
        "event-id-not-uuid": post(EVENTS, "event_id", edit(e, {"event_id": "'; DROP TABLE audit_events; --"})),
        "event-parent-unknown": post(EVENTS, "parent_event_id", edit(e, {"parent_event_id": str(uuid.uuid4())})),
        "event-duration-negative": post(EVENTS, "duration_ms", edit(e, {"duration_ms": -1})),
        "event-duration-2^63": post(EVENTS, "duration_ms", edit(e, {"duration_ms": 2**63})),
        "event-duration-2^70": post(EVENTS, "duration_ms", edit(e, {"duration_ms": BIG})),
        "event-duration-float": post(EVENTS, "duration_ms", edit(e, {"duration_ms": 1.5})),
        "event-duration-string": post(EVENTS, "duration_ms", edit(e, {"duration_ms": "5"})),
        "event-duration-bool": post(EVENTS, "duration_ms", edit(e, {"duration_ms": True})),
        "event-data-array": post(EVENTS, "event_data", edit(e, {"event_data": [1, 2]})),
        "event-data-string": post(EVENTS, "event_data", edit(e, {"event_data": "{}"})),
        "event-data-over-64KiB": post(EVENTS, "event_data", edit(e, {"event_data": {"x": "y" * (64 << 10)}})),
        "event-data-huge-array": post(EVENTS, "event_data", edit(e, {"event_data": {"items": [0] * 50_000}})),
        "event-data-nested-33": post(EVENTS, "event_data", edit(e, {"event_data": nested(33)})),
        "event-data-nested-100000": post_raw(EVENTS, None, evt.replace('"event_data": {', '"event_data": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ",").encode(), slug="validation-error"),
        "event-data-nul-value": post(EVENTS, "event_data", edit(e, {"event_data": {"x": "a\x00b"}})),
        "event-data-nul-key": post(EVENTS, "event_data", edit(e, {"event_data": {"a\x00": 1}})),
        "event-data-lone-surrogate": post(EVENTS, "event_data", edit(e, {"event_data": {"x": "\udc00"}})),
        "event-data-number-1e400": post_raw(EVENTS, None, splice(edit(e, {"event_data.replicas": "@N"}), "@N", "1e400")),
        "event-data-NaN": post_raw(EVENTS, None, splice(edit(e, {"event_data.replicas": "@N"}), "@N", "NaN")),
        "event-data-Infinity": post_raw(EVENTS, None, splice(edit(e, {"event_data.replicas": "@N"}), "@N", "-Infinity")),
        "event-correlation-nul": post(EVENTS, "correlation_id", edit(e, {"correlation_id": "a\x00b"})),
        "event-type-lone-surrogate": post(EVENTS, "event_type", edit(e, {"event_type": "x\ud800"})),
        "event-duplicate-key": post_raw(EVENTS, "correlation_id", evt.replace("{", '{"correlation_id": "first", ', 1).encode()),
        "event-invalid-utf8": post_raw(EVENTS, None, evt.encode().replace(b'"received"', b'"rec\xff\xfe"')),
        "event-overlong-utf8-nul": post_raw(EVENTS, None, evt.replace('"received"', '"rec\\@"').encode().replace(b"\\@", b"\xc0\x80")),
        "event-truncated-json": post_raw(EVENTS, None, evt.encode()[:-10]),
        "event-trailing-garbage": post_raw(EVENTS, None, evt.encode() + b" {}"),
        "event-empty-body": post_raw(EVENTS, None, b""),
        "event-body-array": post(EVENTS, "body", [e]),
        "event-body-string": post(EVENTS, "body", "hello"),
        "event-body-null": post_raw(EVENTS, "body", b"null", slug="validation-error"),
        "event-body-over-1MiB": post(EVENTS, None, edit(e, {"error_message": "x" * MiB}), status=413, slug="payload-too-large"),
        "event-body-over-1MiB-chunked": Bad("POST", EVENTS, None, raw=json.dumps(edit(e, {"error_message": "x" * MiB})).encode(), headers=JSON_HEADERS, status=413, slug="payload-too-large", chunked=True),
        "event-content-type-text": Bad("POST", EVENTS, None, raw=evt.encode(), headers={"Content-Type": "text/plain"}, status=415, slug="unsupported-media-type"),
        "event-content-type-form": Bad("POST", EVENTS, None, raw=b"version=1.0", headers={"Content-Type": "application/x-www-form-urlencoded"}, status=415, slug="unsupported-media-type"),
        "event-content-type-missing": Bad("POST", EVENTS, None, raw=evt.encode(), status=415, slug="unsupported-media-type"),
        "event-content-type-xml": Bad("POST", EVENTS, None, raw=b"<event/>", headers={"Content-Type": "application/xml"}, status=415, slug="unsupported-media-type"),
    }  # fmt: skip


def _batch_cases() -> dict[str, Bad]:
    e = EVENT
    fixed = str(uuid.uuid4())
    return {
        "batch-empty": post(BATCH, "body", []),
        "batch-1001-items": post(BATCH, "body", [e] * 1001),
        "batch-object-not-array": post(BATCH, "body", e),
        "batch-item-not-object": post(BATCH, "[1]", [e, "x"]),
        "batch-item-overlong": post(BATCH, "[1].correlation_id", [e, edit(e, {"correlation_id": "c" * 256})]),
        "batch-item-nul": post(BATCH, "[0].event_type", [edit(e, {"event_type": "a\x00"}), e]),
        "batch-item-missing-field": post(BATCH, "[2].event_outcome", [e, e, edit(e, {"event_outcome": DELETE})]),
        "batch-duplicate-event_id": post(BATCH, "[1].event_id", [edit(e, {"event_id": fixed}), edit(e, {"event_id": fixed})]),
        "batch-item-duration-2^70": post(BATCH, "[0].duration_ms", [edit(e, {"duration_ms": BIG})]),
        "batch-body-over-16MiB": post_raw(BATCH, None, b"[" + b" " * (16 * MiB) + b"]", headers=JSON_HEADERS, status=413, slug="payload-too-large"),
        "batch-content-type-text": Bad("POST", BATCH, None, raw=json.dumps([e]).encode(), headers={"Content-Type": "text/plain"}, status=415, slug="unsupported-media-type"),
    }  # fmt: skip


def _notification_cases() -> dict[str, Bad]:
    n = NOTIFICATION
    return {
        "notification-missing-recipient": post(NOTIFICATIONS, "recipient", edit(n, {"recipient": DELETE})),
        "notification-channel-unknown": post(NOTIFICATIONS, "channel", edit(n, {"channel": "pigeon"})),
        "notification-status-wrong-case": post(NOTIFICATIONS, "status", edit(n, {"status": "SENT"})),
        "notification-escalation-11": post(NOTIFICATIONS, "escalation_level", edit(n, {"escalation_level": 11})),
        "notification-escalation-negative": post(NOTIFICATIONS, "escalation_level", edit(n, {"escalation_level": -1})),
        "notification-escalation-2^70": post(NOTIFICATIONS, "escalation_level", edit(n, {"escalation_level": BIG})),
        "notification-escalation-string": post(NOTIFICATIONS, "escalation_level", edit(n, {"escalation_level": "1"})),
        "notification-sent_at-1h-ahead": post(NOTIFICATIONS, "sent_at", edit(n, {"sent_at": now_rfc3339(3600)})),
        "notification-sent_at-garbage": post(NOTIFICATIONS, "sent_at", edit(n, {"sent_at": "' OR 1=1 --"})),
        "notification-summary-nul": post(NOTIFICATIONS, "message_summary", edit(n, {"message_summary": "a\x00"})),
        "notification-duplicate-key": post_raw(NOTIFICATIONS, "channel", json.dumps(n).replace("{", '{"channel": "sms", ', 1).encode()),
        "notification-content-type-missing": Bad("POST", NOTIFICATIONS, None, raw=json.dumps(n).encode(), status=415, slug="unsupported-media-type"),
    }  # fmt: skip


def _workflow_cases() -> dict[str, Bad]:
    w = WORKFLOW
    return {
        "workflow-name-with-slash": post(WORKFLOWS, "workflow_name", edit(w, {"workflow_name": "a/../b"})),
        "workflow-content-empty": post(WORKFLOWS, "content", edit(w, {"content": ""})),
        "workflow-content-nul": post(WORKFLOWS, "content", edit(w, {"content": "a\x00b"})),
        "workflow-content_hash-not-hex": post(WORKFLOWS, "content_hash", edit(w, {"content_hash": "z" * 64})),
        "workflow-content_hash-mismatch": post(WORKFLOWS, "content_hash", edit(w, {"content_hash": "0" * 64})),
        "workflow-labels-missing": post(WORKFLOWS, "labels", edit(w, {"labels": DELETE})),
        "workflow-labels-severity-unknown": post(WORKFLOWS, "labels.severity", edit(w, {"labels.severity": "urgent"})),
        "workflow-labels-priority-missing": post(WORKFLOWS, "labels.priority", edit(w, {"labels.priority": DELETE})),
        "workflow-labels-priority-P9": post(WORKFLOWS, "labels.priority", edit(w, {"labels.priority": "P9"})),
        "workflow-custom_labels-not-array": post(WORKFLOWS, "custom_labels", edit(w, {"custom_labels": {"team": "sre"}})),
        "workflow-custom_labels-101-values": post(WORKFLOWS, "custom_labels", edit(w, {"custom_labels": {"team": [f"v{i}" for i in range(101)]}})),
        "workflow-custom_labels-key-256": post(WORKFLOWS, "custom_labels", edit(w, {"custom_labels": {"k" * 256: ["v"]}})),
        "workflow-detected-gitOpsTool-unknown": post(WORKFLOWS, "detected_labels.gitOpsTool", edit(w, {"detected_labels": {"gitOpsTool": "jenkins"}})),
        "workflow-detected-gitOpsManaged-string": post(WORKFLOWS, "detected_labels.gitOpsManaged", edit(w, {"detected_labels": {"gitOpsManaged": "yes"}})),
        "workflow-status-unknown": post(WORKFLOWS, "status", edit(w, {"status": "enabled"})),
        "workflow-description-100001": post(WORKFLOWS, "description", edit(w, {"description": "d" * 100_001})),
        "workflow-parameters-array": post(WORKFLOWS, "parameters", edit(w, {"parameters": [1]})),
        "workflow-parameters-2^70": post(WORKFLOWS, "parameters", edit(w, {"parameters": {"n": BIG}})),
        "workflow-parameters-nested-40": post(WORKFLOWS, "parameters", edit(w, {"parameters": nested(40)})),
        "workflow-approved_at-garbage": post(WORKFLOWS, "approved_at", edit(w, {"approved_at": "soon"})),
        "workflow-body-over-1MiB": post(WORKFLOWS, None, edit(w, {"content": "c" * MiB}), status=413, slug="payload-too-large"),
        "workflow-content-type-text": Bad("POST", WORKFLOWS, None, raw=json.dumps(w).encode(), headers={"Content-Type": "text/yaml"}, status=415, slug="unsupported-media-type"),
    }  # fmt: skip


def _patch_cases() -> dict[str, Bad]:
    bad_id = "/api/v1/workflows/not-a-uuid"
    return {
        "patch-status-unknown": Bad("PATCH", TARGET, "status", json={"status": "gone"}),
        "patch-immutable-version": Bad("PATCH", TARGET, "version", json={"version": "9.9.9"}, slug="immutable-field"),
        "patch-immutable-content": Bad("PATCH", TARGET, "content", json={"status": "active", "content": "x"}, slug="immutable-field"),
        "patch-status-number": Bad("PATCH", TARGET, "status", json={"status": 1}),
        "patch-reason-nul": Bad("PATCH", TARGET, "status_reason", json={"status_reason": "a\x00"}),
        "patch-body-array": Bad("PATCH", TARGET, "body", json=[{"status": "disabled"}]),
        "patch-duplicate-key": Bad("PATCH", TARGET, "status", raw=b'{"status": "disabled", "status": "active"}', headers=JSON_HEADERS, slug="invalid-json"),
        "patch-empty-body": Bad("PATCH", TARGET, None, raw=b"", headers=JSON_HEADERS, slug="invalid-json"),
        "patch-content-type-text": Bad("PATCH", TARGET, None, raw=b'{"status": "disabled"}', headers={"Content-Type": "text/plain"}, status=415, slug="unsupported-media-type"),
        "patch-bad-uuid-path": Bad("PATCH", bad_id, "workflow_id", json={"status": "disabled"}),
        "disable-reason-10001": Bad("PATCH", TARGET + "/disable", "reason", json={"reason": "r" * 10_001}),
        "disable-updated_by-number": Bad("PATCH", TARGET + "/disable", "updated_by", json={"updated_by": 7}),
        "disable-bad-uuid-path": Bad("PATCH", bad_id + "/disable", "workflow_id", json={}),
    }  # fmt: skip


def _search_cases() -> dict[str, Bad]:
    s = SEARCH_BODY
    return {
        "search-filters-missing": post(SEARCH, "filters", edit(s, {"filters": DELETE})),
        "search-severity-unknown": post(SEARCH, "filters.severity", edit(s, {"filters.severity": "urgent"})),
        "search-signal_type-missing": post(SEARCH, "filters.signal_type", edit(s, {"filters.signal_type": DELETE})),
        "search-signal_type-nul": post(SEARCH, "filters.signal_type", edit(s, {"filters.signal_type": "a\x00"})),
        "search-top_k-0": post(SEARCH, "top_k", edit(s, {"top_k": 0})),
        "search-top_k-101": post(SEARCH, "top_k", edit(s, {"top_k": 101})),
        "search-top_k-fraction": post(SEARCH, "top_k", edit(s, {"top_k": 5.5})),
        "search-top_k-2^70": post(SEARCH, "top_k", edit(s, {"top_k": BIG})),
        "search-top_k-string": post(SEARCH, "top_k", edit(s, {"top_k": "5"})),
        "search-min_score-1.5": post(SEARCH, "min_score", edit(s, {"min_score": 1.5})),
        "search-min_score-negative": post(SEARCH, "min_score", edit(s, {"min_score": -0.1})),
        "search-include_disabled-string": post(SEARCH, "include_disabled", edit(s, {"include_disabled": "true"})),
        "search-status-empty": post(SEARCH, "filters.status", edit(s, {"filters.status": []})),
        "search-status-duplicates": post(SEARCH, "filters.status", edit(s, {"filters.status": ["active", "active"]})),
        "search-failed_detections-unknown": post(SEARCH, "filters.detected_labels", edit(s, {"filters.detected_labels": {"failed_detections": ["bogus"]}})),
        "search-custom_labels-huge-array": post(SEARCH, "filters.custom_labels", edit(s, {"filters.custom_labels": {"team": ["x"] * 10_000}})),
        "search-remediation_id-256": post(SEARCH, "remediation_id", edit(s, {"remediation_id": "r" * 256})),
        "search-content-type-missing": Bad("POST", SEARCH, None, raw=json.dumps(s).encode(), status=415, slug="unsupported-media-type"),
    }  # fmt: skip


HOLDS = "/api/v1/audit/legal-holds"
HOLD = HOLDS + "/{correlation_id}"  # the template itself: a valid correlation id
EXPORT = "/api/v1/audit/export"


def _compliance_cases() -> dict[str, Bad]:
    return {
        "hold-reason-missing": Bad("PUT", HOLD, "reason", json={"case_id": "C-1"}),
        "hold-reason-empty": Bad("PUT", HOLD, "reason", json={"reason": ""}),
        "hold-reason-1001": Bad("PUT", HOLD, "reason", json={"reason": "r" * 1001}),
        "hold-reason-nul": Bad("PUT", HOLD, "reason", json={"reason": "a\x00"}),
        "hold-case_id-256": Bad("PUT", HOLD, "case_id", json={"reason": "r", "case_id": "c" * 256}),
        "hold-case_id-number": Bad("PUT", HOLD, "case_id", json={"reason": "r", "case_id": 7}),
        "hold-body-array": Bad("PUT", HOLD, "body", json=[{"reason": "r"}]),
        "hold-correlation-256": Bad("PUT", HOLDS + "/" + "c" * 256, "correlation_id", json={"reason": "r"}),
        "hold-content-type-text": Bad("PUT", HOLD, None, raw=b'{"reason": "r"}', headers={"Content-Type": "text/plain"}, status=415, slug="unsupported-media-type"),
        "release-reason-empty": Bad("DELETE", HOLD, "reason", params={"reason": ""}),
        "query-holds-limit-0": get(HOLDS, "limit", limit="0"),
        "query-holds-offset-negative": get(HOLDS, "offset", offset="-1"),
        "query-export-format-unknown": get(EXPORT, "format", format="xml"),
        "query-export-since-garbage": get(EXPORT, "since", since="yesterday"),
    }  # fmt: skip


def _query_cases() -> dict[str, Bad]:
    cases = {
        "query-events-category-unknown": get(EVENTS, "event_category", event_category="Gateway"),
        "query-events-outcome-unknown": get(EVENTS, "event_outcome", event_outcome="' OR 1=1 --"),
        "query-events-parent-not-uuid": get(EVENTS, "parent_event_id", parent_event_id="1 OR 1=1"),
        "query-events-since-garbage": get(EVENTS, "since", since="yesterday"),
        "query-events-since-huge-duration": get(EVENTS, "since", since="99999999999d"),
        "query-events-until-bad-date": get(EVENTS, "until", until="2024-13-45"),
        "query-events-event_data-not-json": get(EVENTS, "event_data", event_data="{'a': 1}"),
        "query-events-event_data-array": get(EVENTS, "event_data", event_data="[1]"),
        "query-events-event_data-nul": get(EVENTS, "event_data", event_data='{"a": "\\u0000"}'),
        "query-events-event_data-duplicate-key": get(EVENTS, "event_data", event_data='{"a": 1, "a": 2}'),
        "query-events-event_data-NaN": get(EVENTS, "event_data", event_data='{"a": NaN}'),
        "query-events-order-unknown": get(EVENTS, "order", order="sideways; DROP TABLE x"),
        "query-events-limit-0": get(EVENTS, "limit", limit="0"),
        "query-events-limit-1001": get(EVENTS, "limit", limit="1001"),
        "query-events-limit-2^70": get(EVENTS, "limit", limit=str(BIG)),
        "query-events-limit-text": get(EVENTS, "limit", limit="1; SELECT 1"),
        "query-events-offset-negative": get(EVENTS, "offset", offset="-1"),
        "query-events-offset-huge": get(EVENTS, "offset", offset="100000001"),
        "query-events-cursor-garbage": get(EVENTS, "cursor", cursor="'; DROP TABLE audit_events; --"),
        "query-events-cursor-513": get(EVENTS, "cursor", cursor="c" * 513),
        "query-events-cursor-and-offset": get(EVENTS, "cursor", cursor="abc", offset="0"),
        "query-events-correlation-nul": get(EVENTS, "correlation_id", correlation_id="a\x00b"),
        "query-events-correlation-empty": get(EVENTS, "correlation_id", correlation_id=""),
        "query-workflows-status-unknown": get(WORKFLOWS, "status", status="enabled"),
        "query-workflows-severity-unknown": get(WORKFLOWS, "severity", severity="urgent"),
        "query-workflows-priority-unknown": get(WORKFLOWS, "priority", priority="P7"),
        "query-workflows-latest_only-maybe": get(WORKFLOWS, "latest_only", latest_only="maybe"),
        "query-workflows-limit-0": get(WORKFLOWS, "limit", limit="0"),
        "query-workflows-offset-negative": get(WORKFLOWS, "offset", offset="-5"),
        "query-workflows-name-nul": get(WORKFLOWS, "workflow_name", workflow_name="a\x00"),
        "query-notifications-status-unknown": get(NOTIFICATIONS, "status", status="read"),
        "query-notifications-limit-text": get(NOTIFICATIONS, "limit", limit="ten"),
        "query-notifications-offset-negative": get(NOTIFICATIONS, "offset", offset="-1"),
        "query-events-recorded_by-empty": get(EVENTS, "recorded_by", recorded_by=""),
        "query-events-recorded_by-1001": get(EVENTS, "recorded_by", recorded_by="u" * 1001),
        "query-notifications-recorded_by-nul": get(NOTIFICATIONS, "recorded_by", recorded_by="a\x00b"),
        "path-event-id-not-uuid": get(EVENTS + "/1%20OR%201=1", "event_id"),
        "path-event-id-nul": get(EVENTS + "/%00", "event_id"),
        "path-workflow-id-not-uuid": get(WORKFLOWS + "/'; DROP TABLE x; --", "workflow_id"),
        "query-log-proof-tree_size-0": get(LOG_PROOF, "tree_size", tree_size="0"),
        "query-log-proof-tree_size-text": get(LOG_PROOF, "tree_size", tree_size="ten"),
        "query-log-consistency-first-0": get(LOG_CONSISTENCY, "first", first="0", second="1"),
        "query-log-consistency-first-missing": get(LOG_CONSISTENCY, "first", second="1"),
        "query-log-consistency-second-huge": get(LOG_CONSISTENCY, "second", first="1", second="9" * 30),
        "method-delete-events": Bad("DELETE", EVENTS, None, status=405, slug="method-not-allowed"),
        "method-put-workflow": Bad("PUT", TARGET, None, json={}, status=405, slug="method-not-allowed"),
        "method-get-search": Bad("GET", SEARCH, None, status=405, slug="method-not-allowed"),
        "method-patch-search": Bad("PATCH", SEARCH, None, json={"status": "disabled"}, status=405, slug="method-not-allowed"),
    }  # fmt: skip
    # Query strings that are not UTF-8 (Starlette would silently turn them into U+FFFD).
    for name, path in (
        ("events-correlation_id", EVENTS),
        ("workflows-workflow_name", WORKFLOWS),
        ("notifications-remediation_id", NOTIFICATIONS),
    ):
        param = name.split("-", 1)[1]
        cases[f"query-{name}-invalid-utf8"] = get(f"{path}?{param}=%FF%FEx", param)
    return cases


INVALID: dict[str, Bad] = {
    **_overlong_cases(),
    **_event_cases(),
    **_batch_cases(),
    **_notification_cases(),
    **_workflow_cases(),
    **_patch_cases(),
    **_search_cases(),
    **_query_cases(),
    **_compliance_cases(),
}


# --------------------------------------------------------------------------------------------
# Fixtures and checks


@pytest.fixture(scope="module")
def target_workflow(contract_stack) -> dict[str, Any]:
    """One stored workflow the PATCH cases aim at (they must leave it unchanged)."""
    response = httpx.post(contract_stack.url + WORKFLOWS, json=valid_workflow(), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def db_rows(stack: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def snapshot(stack: Any, workflow_id: str) -> tuple[Any, ...]:
    """What an invalid request must not change: row counts, the PATCH target, the DLQ
    counter. Taken until two readings agree, so a write still settling from an earlier test
    cannot be blamed on this one."""

    def read() -> tuple[Any, ...]:
        row = db_rows(
            stack,
            "SELECT to_jsonb(w) AS row FROM remediation_workflow_catalog w WHERE workflow_id = %s",
            workflow_id,
        )
        return stack.stored_rows(), row, stack.dlq_enqueued()

    previous = read()
    for _ in range(50):
        current = read()
        if current == previous:
            return current
        previous = current
    raise AssertionError("the stored state does not settle")


def send(client: httpx.Client, case: Bad, workflow_id: str) -> httpx.Response:
    path = case.path.replace("{workflow_id}", workflow_id).replace("{event_id}", str(uuid.uuid4()))
    headers = dict(case.headers)
    content: Any = case.raw
    if case.json is not None:
        content = json.dumps(case.json).encode()  # ASCII escapes: lone surrogates survive
        headers.setdefault("Content-Type", "application/json")
    if case.chunked and content is not None:
        content = iter([content])
    return client.request(case.method, path, content=content, params=case.params, headers=headers)


def names_field(problem: dict[str, Any], name: str) -> bool:
    """The problem points at `name`: a field_errors key equal to it or below it, or the
    detail mentions it."""
    keys = problem.get("field_errors") or {}
    if any(key == name or key.startswith((name + ".", name + "[")) for key in keys):
        return True
    return name in str(problem.get("detail", ""))


def assert_problem(response: httpx.Response, status: int, slug: str, name: str | None) -> None:
    summary = f"{response.status_code} {response.text[:600]}"
    assert response.status_code == status, summary
    assert response.headers["content-type"] == "application/problem+json", summary
    problem = response.json()
    assert problem["type"] == PROBLEM_TYPE + slug, summary
    assert problem["status"] == status
    if name is not None:
        assert names_field(problem, name), f"the problem does not name {name!r}: {summary}"


@pytest.mark.parametrize("case", list(INVALID.values()), ids=list(INVALID))
def test_invalid_input_is_rejected_and_nothing_is_stored(
    case: Bad, client, contract_stack, target_workflow
):
    """An invalid request gets its 4xx problem naming the field; SQL and the DLQ counter show
    nothing was stored, changed or queued."""
    workflow_id = target_workflow["workflow_id"]
    before = snapshot(contract_stack, workflow_id)
    response = send(client, case, workflow_id)
    assert_problem(response, case.status, case.slug, case.field)
    assert snapshot(contract_stack, workflow_id) == before


def test_the_corpus_is_large_enough():
    """Acceptance 2 asks for at least 60 invalid cases."""
    assert len(INVALID) >= 60


def test_the_corpus_covers_every_write_endpoint_and_query_parameter(client):
    """Every write operation and every query parameter of the served contract is attacked by
    at least one case."""
    spec = client.get("/openapi.json").json()
    attacked_writes = {(c.method, c.path) for c in INVALID.values() if c.method != "GET"}
    attacked_params = {
        (c.path.split("?")[0], name)
        for c in INVALID.values()
        for name in [*(c.params or {}), *([c.path.split("?")[1].split("=")[0]] if "?" in c.path else [])]
    }  # fmt: skip
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            target = path.replace("{workflow_id}", "{workflow_id}")
            if method in ("post", "put", "patch") and "requestBody" in operation:
                assert (method.upper(), target) in attacked_writes, (method, path)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    assert (path, parameter["name"]) in attacked_params, (path, parameter["name"])


# --------------------------------------------------------------------------------------------
# Valid but malicious strings: data, stored and returned verbatim

MALICIOUS = {
    "sql-drop-table": "'; DROP TABLE audit_events; --",
    "sql-or-1-1": "' OR 1=1 --",
    "sql-union": "x' UNION SELECT usename, passwd FROM pg_shadow --",
    "sql-cast-sleep": "1::int); SELECT pg_sleep(10); --",
    "dollar-quote": "$$; DELETE FROM notification_audit; $$",
    "quotes": "it's \"quoted\" `back` ''",
    "backslashes": "C:\\temp\\new \\\\server\\share \\n \\t \\'",
    "escaped-nul-text": "\\u0000 \\x00 %00",
    "like-percent": "100%",
    "like-underscore": "a_b_c",
    "like-both": "%_%",
    "emoji-4-byte": "🔥💥🚀 alert",
    "rtl-override": "\u202eevil\u202c \u200fשלום עולם\u200e",
    "combining-nfd": "Cafe\u0301 Z\u0351\u0360\u0489alg\u0337o",
    "precomposed-nfc": "Caf\u00e9 \u212b \ufb01",
    "zero-width": "👩\u200d💻 zero\u200bwidth\u2060joiner\ufeff",
    "astral-math": "𝕳𝖊𝖑𝖑𝖔 𠜎𠜱𠝹",
    "json-object": '{"$ne": null, "a": [1, 2]}',
    "json-null": "null",
    "html-script": "<script>alert('x')</script>",
    "control-chars": "line1\nline2\r\n\ttab\x1b[31mred\x7f",
    "spaces": "  leading and trailing  ",
    "mixed-case": "MiXeD CaSe",
}


def with_token(value: str) -> str:
    """The malicious value made unique to this test run (the database is shared)."""
    return f"{value}~{uuid.uuid4().hex[:10]}"


def decoys(value: str) -> list[str]:
    """Other strings a wrong filter would also return: the value read as a LIKE pattern,
    case-folded, Unicode-normalized, trimmed, or as a prefix."""
    candidates = {
        value.replace("%", "Q").replace("_", "Q"),
        value.replace("%", "").replace("_", "W"),
        value.swapcase(),
        value.lower(),
        unicodedata.normalize("NFC", value),
        unicodedata.normalize("NFKC", value),
        unicodedata.normalize("NFD", value),
        value.strip(),
        value + "x",
        value.replace("'", "''"),
        value.replace("\\", "\\\\"),
    }
    candidates.discard(value)
    return sorted(candidates)


def assert_same(stored: Any, expected: str, where: str) -> None:
    assert isinstance(stored, str), f"{where}: {stored!r}"
    assert stored.encode() == expected.encode(), f"{where}: {stored!r} != {expected!r}"


def only(response: httpx.Response, key: str | Callable[[Any], list]) -> list[Any]:
    assert response.status_code == 200, response.text[:600]
    body = response.json()
    return key(body) if callable(key) else body[key]


EVENT_STRING_FIELDS = (
    "correlation_id",
    "event_type",
    "actor_id",
    "resource_id",
    "namespace",
    "cluster_name",
    "error_message",
    "trace_id",
)
EVENT_FILTERS = (
    "correlation_id",
    "event_type",
    "actor_id",
    "resource_id",
    "namespace",
    "cluster_name",
)


def malicious_event(value: str) -> dict[str, Any]:
    body = make_event(
        event_category="gateway",
        event_data={"note": value, value: "as a key", "nested": {"list": [value]}},
    )
    body.update({name: value for name in EVENT_STRING_FIELDS})
    return body


def event_ids(response: httpx.Response) -> list[str]:
    return only(response, lambda body: [event["event_id"] for event in body["data"]])


@pytest.mark.parametrize("value", list(MALICIOUS.values()), ids=list(MALICIOUS))
def test_malicious_strings_round_trip_through_audit_events(value, client, contract_stack):
    """Every string field and event_data (values and keys) keep the value byte for byte, and
    every filter returns exactly that event, none of the decoys."""
    value = with_token(value)
    main = malicious_event(value)
    others = [malicious_event(decoy) for decoy in decoys(value)]
    response = client.post(BATCH, json=[main, *others])
    assert response.status_code == 201, response.text[:600]
    event_id = response.json()["event_ids"][0]

    read = client.get(f"{EVENTS}/{event_id}").json()
    (stored,) = db_rows(contract_stack, "SELECT * FROM audit_events WHERE event_id = %s", event_id)
    for name in EVENT_STRING_FIELDS:
        assert_same(read[name], value, f"GET {name}")
        assert_same(stored[name], value, f"SQL {name}")
    for data in (read["event_data"], stored["event_data"]):
        assert data == main["event_data"]
        assert_same(data["note"], value, "event_data.note")
        assert [key for key in data if key not in ("note", "nested")] == [value]

    for name in EVENT_FILTERS:
        assert event_ids(client.get(EVENTS, params={name: value})) == [event_id], name
    for probe in ({"note": value}, {value: "as a key"}, {"nested": {"list": [value]}}):
        found = event_ids(client.get(EVENTS, params={"event_data": json.dumps(probe)}))
        assert found == [event_id], probe


@pytest.mark.parametrize("value", list(MALICIOUS.values()), ids=list(MALICIOUS))
def test_malicious_strings_round_trip_through_notifications(value, client, contract_stack):
    """Notification strings are stored verbatim; the list filters match them exactly."""
    value = with_token(value)
    fields = ("remediation_id", "notification_id", "recipient", "message_summary")
    fields += ("delivery_status", "error_message")
    created = []
    for text in (value, *decoys(value)):
        body = make_notification(**dict.fromkeys(fields, text))
        response = client.post(NOTIFICATIONS, json=body)
        assert response.status_code == 201, response.text[:600]
        created.append(response.json())
    main = created[0]
    (stored,) = db_rows(
        contract_stack, "SELECT * FROM notification_audit WHERE seq = %s", main["id"]
    )
    for name in fields:
        assert_same(main[name], value, f"response {name}")
        assert_same(stored[name], value, f"SQL {name}")
    for name in ("remediation_id", "notification_id"):
        found = only(client.get(NOTIFICATIONS, params={name: value}), "data")
        assert [record["id"] for record in found] == [main["id"]], name
        for key in fields:
            assert_same(found[0][key], value, f"GET {key}")


def workflow_safe(text: str) -> str:
    return text.replace("/", "|")  # workflow names are path segments: no '/'


def malicious_workflow(value: str) -> dict[str, Any]:
    body = valid_workflow(
        workflow_safe(value),
        name=value,
        description=value,
        owner=value,
        maintainer=value,
        version_notes=value,
        custom_labels={value: [value, "*"]},
        parameters={value: {"default": value}},
    )
    body["labels"].update(signal_type=value, component=value, environment=value)
    return body


WORKFLOW_STRING_FIELDS = ("name", "description", "owner", "maintainer", "version_notes")
PATCHED_FIELDS = ("status_reason", "updated_by", "disabled_reason", "disabled_by")


@pytest.mark.parametrize("value", list(MALICIOUS.values()), ids=list(MALICIOUS))
def test_malicious_strings_round_trip_through_workflows(value, client, contract_stack):
    """Workflow strings and labels are stored verbatim; list filters, the versions path, PATCH
    and search treat the value as data and find exactly this workflow."""
    value = with_token(value)
    created = []
    for text in (value, *decoys(value)):
        response = client.post(WORKFLOWS, json=malicious_workflow(text))
        assert response.status_code == 201, response.text[:600]
        created.append(response.json())
    main = created[0]
    workflow_id = main["workflow_id"]

    patch = {"status": "disabled", "disabled_reason": value, "disabled_by": value}
    patch |= {"status_reason": value, "updated_by": value}
    response = client.patch(f"{WORKFLOWS}/{workflow_id}", json=patch)
    assert response.status_code == 200, response.text[:600]

    read = client.get(f"{WORKFLOWS}/{workflow_id}").json()
    (stored,) = db_rows(
        contract_stack,
        "SELECT * FROM remediation_workflow_catalog WHERE workflow_id = %s",
        workflow_id,
    )
    for source, row in (("GET", read), ("SQL", stored)):
        assert_same(row["workflow_name"], workflow_safe(value), f"{source} workflow_name")
        for name in (*WORKFLOW_STRING_FIELDS, *PATCHED_FIELDS):
            assert_same(row[name], value, f"{source} {name}")
        for name in ("signal_type", "component", "environment"):
            assert_same(row["labels"][name], value, f"{source} labels.{name}")
        assert row["custom_labels"] == {value: [value, "*"]}
        assert row["parameters"] == {value: {"default": value}}

    def listed(**params: str) -> list[str]:
        found = only(client.get(WORKFLOWS, params=params), "workflows")
        return [workflow["workflow_id"] for workflow in found]

    assert listed(workflow_name=workflow_safe(value)) == [workflow_id]
    for name in ("signal_type", "component", "environment"):
        assert listed(**{name: value}) == [workflow_id], name
    versions = client.get(f"{WORKFLOWS}/by-name/{quote(workflow_safe(value), safe='')}/versions")
    assert [v["workflow_id"] for v in only(versions, "versions")] == [workflow_id]

    filters = {**main["labels"], "custom_labels": {value: [value]}}
    search = {"filters": filters, "remediation_id": value, "include_disabled": True}
    response = client.post(SEARCH, json=search)
    results = only(response, "workflows")
    assert [result["workflow_id"] for result in results] == [workflow_id]
    assert_same(results[0]["title"], value, "search title")
    # The search audit event is written after the response: wait for it, so it cannot land
    # in another test's before/after comparison, and check its correlation id is verbatim.
    params = {"correlation_id": value, "event_type": "workflow.catalog.search_completed"}
    search_events = eventually(lambda: event_ids(client.get(EVENTS, params=params)) or False)
    assert len(search_events) == 1


def test_batch_keeps_every_malicious_string_and_its_order(client, contract_stack):
    """One batch with every malicious string as correlation id: ids in input order, each
    stored verbatim."""
    values = [with_token(value) for value in MALICIOUS.values()]
    response = client.post(BATCH, json=[make_event(correlation_id=v) for v in values])
    assert response.status_code == 201, response.text[:600]
    ids = response.json()["event_ids"]
    rows = db_rows(
        contract_stack,
        "SELECT event_id::text AS id, correlation_id FROM audit_events WHERE event_id = ANY(%s)",
        [uuid.UUID(i) for i in ids],
    )
    stored = {row["id"]: row["correlation_id"] for row in rows}
    for event_id, value in zip(ids, values, strict=True):
        assert_same(stored[event_id], value, event_id)


def at_limit(limits: dict[str, int], seed: int) -> dict[str, str]:
    return {name: varied(limit, seed + i) for i, (name, limit) in enumerate(limits.items())}


def stored_by_path(row: dict[str, Any], dotted: str) -> Any:
    for name in dotted.split("."):
        row = row[name]
    return row


def assert_kept(values: dict[str, str], *rows: dict[str, Any]) -> None:
    for row in rows:
        for name, value in values.items():
            assert_same(stored_by_path(row, name), value, name)


def test_audit_event_fields_exactly_at_their_limits_are_stored(client, contract_stack):
    """Every limited event field at its limit in 4-byte characters is accepted and kept
    (limits count characters, and no index or column is narrower than the contract)."""
    values = at_limit(EVENT_LIMITS, seed=1)
    response = client.post(EVENTS, json=make_event(event_category="gateway", **values))
    assert response.status_code == 201, response.text[:600]
    event_id = response.json()["event_id"]
    (stored,) = db_rows(contract_stack, "SELECT * FROM audit_events WHERE event_id = %s", event_id)
    stored["version"] = stored["event_version"]
    assert_kept(values, client.get(f"{EVENTS}/{event_id}").json(), stored)
    query = {name: values[name] for name in EVENT_QUERY_LIMITS}
    assert event_ids(client.get(EVENTS, params=query)) == [event_id]


def test_notification_fields_exactly_at_their_limits_are_stored(client, contract_stack):
    """Every limited notification field at its limit in 4-byte characters is kept."""
    values = at_limit(NOTIFICATION_LIMITS, seed=2)
    response = client.post(NOTIFICATIONS, json=make_notification(**values))
    assert response.status_code == 201, response.text[:600]
    record = response.json()
    (stored,) = db_rows(
        contract_stack, "SELECT * FROM notification_audit WHERE seq = %s", record["id"]
    )
    assert_kept(values, record, stored)


def test_workflow_fields_exactly_at_their_limits_are_stored(client, contract_stack):
    """Every limited workflow field at its limit in incompressible 4-byte characters is kept,
    including the labels that feed the search index."""
    values = at_limit(WORKFLOW_LIMITS, seed=3)
    # disabled_by and disabled_reason are kept only on a disabled version.
    body = edit(valid_workflow(), {"status": "disabled"})
    for name, value in values.items():
        body = edit(body, {name: value})
    response = client.post(WORKFLOWS, json=body)
    assert response.status_code == 201, response.text[:600]
    workflow_id = response.json()["workflow_id"]
    (stored,) = db_rows(
        contract_stack,
        "SELECT * FROM remediation_workflow_catalog WHERE workflow_id = %s",
        workflow_id,
    )
    assert_kept(values, response.json(), stored)
    listed = only(
        client.get(WORKFLOWS, params={"workflow_name": values["workflow_name"]}), "workflows"
    )
    assert [w["workflow_id"] for w in listed] == [workflow_id]
