"""The workflow catalog family, and a RemediationWorkflow applied with kubectl reaching it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
from e2e_helpers import env_or_skip, eventually


def _workflow(name: str, version: str) -> dict:
    return {
        "workflow_name": name,
        "version": version,
        "name": f"{name} {version}",
        "description": "e2e",
        "content": f"steps: [{version}]",
        "labels": {
            "signal_type": "OOMKilled",
            "severity": "critical",
            "component": "pod",
            "environment": "production",
            "priority": "P0",
        },
        "detected_labels": {"gitOpsManaged": True},
    }


def test_catalog_family(http):
    name = f"e2e-wf-{uuid.uuid4().hex[:8]}"
    first = http.post("/api/v1/workflows", json=_workflow(name, "1.0.0"))
    assert first.status_code == 201, first.text
    second = http.post("/api/v1/workflows", json=_workflow(name, "1.1.0"))
    assert second.status_code == 201
    assert http.post("/api/v1/workflows", json=_workflow(name, "1.1.0")).status_code == 409
    workflow_id = second.json()["workflow_id"]
    assert http.get(f"/api/v1/workflows/{workflow_id}").json()["is_latest_version"] is True
    versions = http.get(f"/api/v1/workflows/by-name/{name}/versions").json()
    assert [v["version"] for v in versions["versions"]] == ["1.1.0", "1.0.0"]
    listed = http.get("/api/v1/workflows", params={"workflow_name": name}).json()
    assert listed["total"] == 2
    search = http.post(
        "/api/v1/workflows/search",
        json={
            "filters": {
                "signal_type": "OOMKilled",
                "severity": "critical",
                "component": "pod",
                "environment": "production",
                "priority": "P0",
                "detected_labels": {"gitOpsManaged": True},
            },
            "top_k": 100,
        },
    ).json()
    mine = [w for w in search["workflows"] if w["workflow_id"] == workflow_id]
    assert mine and mine[0]["final_score"] == 0.6
    disabled = http.patch(f"/api/v1/workflows/{workflow_id}/disable", json={"reason": "e2e"})
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    illegal = http.patch(f"/api/v1/workflows/{workflow_id}", json={"status": "archived"})
    assert illegal.status_code == 409
    assert http.get("/api/v1/workflows/not-a-uuid").status_code == 400
    assert http.get(f"/api/v1/workflows/{uuid.uuid4()}").status_code == 404


def _kubectl(*args: str, stdin: str | None = None) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH (make tools puts one in .tools/bin)")
    env = {**os.environ, "KUBE_FEATURE_WatchListClient": "false"}
    result = subprocess.run(
        [kubectl, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_custom_resource_applied_with_kubectl_reaches_the_catalog(http):
    env_or_skip("KUBECONFIG")
    namespace = os.environ.get("E2E_NAMESPACE", "default")
    name = f"e2e-cr-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationWorkflow",
        "metadata": {"name": name},
        "spec": {
            "workflowName": name,
            "version": "1.0.0",
            "name": "Restart pod",
            "content": "steps: [restart]",
            "labels": {
                "signalType": "KubePodCrashLooping",
                "severity": "high",
                "component": "pod",
                "environment": "*",
                "priority": "P2",
            },
        },
    }
    _kubectl("apply", "--validate=false", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))

    def in_catalog():
        listed = http.get("/api/v1/workflows", params={"workflow_name": name}).json()
        assert listed["total"] == 1
        return listed["workflows"][0]

    row = eventually(in_catalog, timeout=60, interval=0.5)
    assert row["status"] == "active" and row["labels"]["signal_type"] == "KubePodCrashLooping"

    def status_synced():
        status = json.loads(
            _kubectl("get", "remediationworkflows", name, "-n", namespace, "-o", "json")
        ).get("status", {})
        assert status.get("workflowId") == row["workflow_id"]

    eventually(status_synced, timeout=60, interval=0.5)
    _kubectl("delete", "remediationworkflows", name, "-n", namespace, "--wait=false")

    def disabled():
        assert http.get(f"/api/v1/workflows/{row['workflow_id']}").json()["status"] == "disabled"

    eventually(disabled, timeout=60, interval=0.5)
