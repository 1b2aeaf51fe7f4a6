"""Request bodies and small calls shared by the workflow catalog and search tests.

The database is shared by every test of an xdist worker, so each test makes its own workflow
names (and, for search, its own signal type) with `unique()`.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx

WORKFLOWS = "/api/v1/workflows"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def workflow_body(
    workflow_name: str,
    version: str = "1.0.0",
    *,
    signal_type: str = "OOMKilled",
    severity: str = "critical",
    component: str = "deployment",
    environment: str = "production",
    priority: str = "P1",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workflow_name": workflow_name,
        "version": version,
        "name": f"{workflow_name} {version}",
        "description": f"restart {component} on {signal_type}",
        "content": f"apiVersion: tekton.dev/v1\nkind: Pipeline\n# {workflow_name} {version}\n",
        "labels": {
            "signal_type": signal_type,
            "severity": severity,
            "component": component,
            "environment": environment,
            "priority": priority,
        },
        "container_image": "quay.io/kubernaut/restart:1",
        "container_digest": "sha256:" + "a" * 64,
        "execution_engine": "tekton",
    }
    body.update(fields)
    return body


def create(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(WORKFLOWS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def search_body(signal_type: str, **overrides: Any) -> dict[str, Any]:
    filters = {
        "signal_type": signal_type,
        "severity": "critical",
        "component": "deployment",
        "environment": "production",
        "priority": "P1",
    }
    filters.update(overrides.pop("filters", {}))
    return {"filters": filters, **overrides}


def search(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"{WORKFLOWS}/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()
