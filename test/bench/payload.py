"""The audit event the benchmark writes, as the API receives it and as the table stores it.

Every optional field is given explicitly, so the stored row is the request body plus the
columns the service derives (`event_date`, `parent_event_date`, `retention_days`,
`is_sensitive`); the raw baselines write exactly these values, so both sides pay for the same
bytes and the same index entries. The body is ≈ 1 KB of JSON, the size of a typical platform
event.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from datastorage.store.audit_rows import COLUMNS as STORE_COLUMNS

# Placeholders the load generators substitute per request (timestamp, correlation id).
TIMESTAMP_MARK = "@@TS@@"
CORRELATION_MARK = "@@CORR@@"

# Table columns written on insert, in table order: the store's own list (one definition).
COLUMNS: tuple[str, ...] = tuple(column for column, _ in STORE_COLUMNS)

EVENT_DATA: dict[str, Any] = {
    "signal": "HighMemoryUsage",
    "fingerprint": "5f2b0c1e9d8a7b6c5d4e3f2a1b0c9d8e",
    "alert_name": "KubePodMemoryHigh",
    "labels": {
        "alertname": "KubePodMemoryHigh",
        "namespace": "payments",
        "pod": "payments-api-7d9f8b6c5-x2k4q",
        "container": "api",
        "severity": "warning",
    },
    "annotations": {
        "summary": "Pod memory usage above 90% of its limit for 5 minutes",
        "runbook_url": "https://runbooks.example.com/kube/pod-memory-high",
    },
    "replicas": 3,
    "memory_bytes": 1932735283,
    "limit_bytes": 2147483648,
    "deduplicated": False,
    "storm": False,
    "source": "prometheus",
}


def api_event(timestamp: str, correlation_id: str) -> dict[str, Any]:
    """A valid POST /api/v1/audit/events body with every optional field set."""
    return {
        "version": "1.0",
        "event_type": "gateway.signal.received",
        "event_timestamp": timestamp,
        "event_category": "gateway",
        "event_action": "received",
        "event_outcome": "success",
        "correlation_id": correlation_id,
        "actor_type": "service",
        "actor_id": "gateway-service",
        "resource_type": "signal",
        "resource_id": correlation_id,
        "namespace": "payments",
        "cluster_name": "prod-eu-1",
        "severity": "warning",
        "duration_ms": 12,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "event_data": EVENT_DATA,
    }


def body_template() -> str:
    """The JSON body with TIMESTAMP_MARK and CORRELATION_MARK left to substitute."""
    return json.dumps(api_event(TIMESTAMP_MARK, CORRELATION_MARK), separators=(",", ":"))


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stored_row(timestamp: dt.datetime, correlation_id: str) -> tuple[Any, ...]:
    """The row the service stores for `api_event(...)`, in COLUMNS order (event_data as JSON
    text; callers adapt it to jsonb)."""
    event = api_event("", correlation_id)
    return (
        uuid.uuid4(),
        event["version"],
        timestamp,
        timestamp.astimezone(dt.UTC).date(),
        event["event_type"],
        event["event_category"],
        event["event_action"],
        event["event_outcome"],
        event["actor_type"],
        event["actor_id"],
        event["resource_type"],
        event["resource_id"],
        correlation_id,
        None,
        None,
        event["namespace"],
        event["cluster_name"],
        event["severity"],
        event["duration_ms"],
        None,
        None,
        event["trace_id"],
        event["span_id"],
        json.dumps(EVENT_DATA, separators=(",", ":")),
        2555,
        False,
        None,  # recorded_by: what the service stores with authentication off
    )
