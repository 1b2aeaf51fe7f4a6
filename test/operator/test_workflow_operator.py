"""The operator end to end: RemediationWorkflow objects in the kmock emulator -> catalog rows in
PostgreSQL, through `datastorage operator` as a subprocess (docs/api.md)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from conftest import NAMESPACE, RESYNC_INTERVAL
from kubernetes.client import ApiException
from psycopg.rows import dict_row
from support import eventually

# One xdist worker runs the whole suite: one emulator and one operator process, not one each.
pytestmark = pytest.mark.xdist_group("operator")

GROUP, VERSION, PLURAL = "kubernaut.ai", "v1alpha1", "remediationworkflows"
FINALIZER = "datastorage.kubernaut.ai/catalog"
CONTENT = """apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: restart-pod
spec:
  tasks:
    - name: delete-pod
      taskRef: {name: kubectl-delete-pod}
"""


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def workflow(name: str, workflow_name: str, version: str = "1.0.0", **spec: Any) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RemediationWorkflow",
        "metadata": {"name": name},
        "spec": {
            "workflowName": workflow_name,
            "version": version,
            "name": "Restart a crash-looping pod",
            "description": "Deletes the failing pod so its controller recreates it.",
            "content": CONTENT,
            "labels": {
                "signalType": "KubePodCrashLooping",
                "severity": "high",
                "component": "pod",
                "environment": "*",
                "priority": "P2",
            },
            "customLabels": {"team": ["sre"], "costCenter": ["cc-1"]},
            "detectedLabels": {"gitOpsManaged": True, "gitOpsTool": "argocd"},
            "parameters": {"podName": {"type": "string", "required": True}},
            "containerImage": "quay.io/kubernaut/restart-pod:1.0",
            "executionEngine": "tekton",
        },
    }
    body["spec"].update(spec)
    return body


class Workflows:
    """The RemediationWorkflow API of the emulator, plus waits on the operator's status."""

    def __init__(self, custom_api) -> None:
        self.api = custom_api

    def create(self, body: dict) -> dict:
        return self.api.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, copy.deepcopy(body)
        )

    def get(self, name: str) -> dict:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)

    def patch_spec(self, name: str, changes: dict) -> dict:
        return self.api.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": changes}
        )

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)

    def wait(self, name: str, check, timeout: float = 20.0) -> dict:
        def ready() -> dict:
            obj = self.get(name)
            check(obj)
            return obj

        return eventually(ready, timeout=timeout)

    def wait_synced(self, name: str, timeout: float = 20.0) -> dict:
        def synced(obj: dict) -> None:
            status = obj.get("status") or {}
            assert status.get("observedGeneration") == obj["metadata"]["generation"], status
            assert condition(obj, "Synced")["status"] == "True", status

        return self.wait(name, synced, timeout)


def condition(obj: dict, kind: str) -> dict:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return item
    raise AssertionError(f"no {kind} condition in {obj.get('status')}")


@pytest.fixture()
def workflows(custom_api) -> Workflows:
    return Workflows(custom_api)


def catalog_rows(db, workflow_name: str) -> list[dict]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM remediation_workflow_catalog WHERE workflow_name = %s "
            "ORDER BY creation_order",
            (workflow_name,),
        ).fetchall()


def catalog_fingerprint(db) -> tuple:
    """Everything a catalog write would change: rows, last update, self-audit events."""
    return db.execute(
        "SELECT (SELECT count(*) FROM remediation_workflow_catalog),"
        " (SELECT max(updated_at) FROM remediation_workflow_catalog),"
        " (SELECT count(*) FROM audit_events WHERE event_type LIKE 'datastorage.workflow.%%')"
    ).fetchone()


def _settled(read, timeout: float = 10.0):
    """The value of `read()` once two consecutive polls agree."""
    last = [read()]

    def unchanged():
        current = read()
        if current != last[0]:
            last[0] = current
            raise AssertionError("still changing")
        return current

    return eventually(unchanged, timeout=timeout, interval=0.5)


def test_create_registers_a_catalog_version_and_reports_it(workflows, catalog_db):
    name, workflow_name = _unique("rwf"), _unique("restart-pod")
    workflows.create(workflow(name, workflow_name))

    obj = workflows.wait_synced(name)

    assert FINALIZER in obj["metadata"]["finalizers"]
    status = obj["status"]
    (row,) = catalog_rows(catalog_db, workflow_name)
    assert status["workflowId"] == str(row["workflow_id"])
    assert status["catalogStatus"] == "active" == row["status"]
    assert status["observedGeneration"] == 1
    assert status["catalogVersions"] == [
        {"version": "1.0.0", "workflowId": str(row["workflow_id"])}
    ]
    for kind in ("Ready", "Synced"):
        cond = condition(obj, kind)
        assert cond["status"] == "True" and cond["reason"] and cond["message"]
        assert cond["lastTransitionTime"].endswith("Z")
    # camelCase in the object, the API's snake_case in the catalog; detected labels stay camel.
    assert row["labels"] == {
        "signal_type": "KubePodCrashLooping",
        "severity": "high",
        "component": "pod",
        "environment": "*",
        "priority": "P2",
    }
    assert row["custom_labels"] == {"team": ["sre"], "costCenter": ["cc-1"]}
    assert row["detected_labels"] == {"gitOpsManaged": True, "gitOpsTool": "argocd"}
    assert row["parameters"] == {"podName": {"type": "string", "required": True}}
    assert row["container_image"] == "quay.io/kubernaut/restart-pod:1.0"
    assert row["execution_engine"] == "tekton"
    assert row["content"] == CONTENT and row["version"] == "1.0.0"
    assert row["created_by"] == f"RemediationWorkflow/{NAMESPACE}/{name}"


def test_an_existing_version_with_the_same_content_is_adopted(workflows, catalog_db):
    workflow_name = _unique("adopted")
    first, second = _unique("rwf"), _unique("rwf")
    workflows.create(workflow(first, workflow_name))
    workflow_id = workflows.wait_synced(first)["status"]["workflowId"]

    workflows.create(workflow(second, workflow_name))

    assert workflows.wait_synced(second)["status"]["workflowId"] == workflow_id
    assert len(catalog_rows(catalog_db, workflow_name)) == 1


def test_a_change_under_the_same_version_is_rejected_and_leaves_the_catalog_alone(
    workflows, catalog_db, core_api
):
    name, workflow_name = _unique("rwf"), _unique("immutable")
    workflows.create(workflow(name, workflow_name))
    workflows.wait_synced(name)
    before = catalog_rows(catalog_db, workflow_name)

    workflows.patch_spec(
        name, {"content": CONTENT + "# edited in place\n", "labels": {"severity": "critical"}}
    )

    def rejected(obj: dict) -> None:
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
        synced = condition(obj, "Synced")
        assert (synced["status"], synced["reason"]) == ("False", "ImmutableFieldChanged")

    obj = workflows.wait(name, rejected)
    assert condition(obj, "Ready")["status"] == "True"  # the catalog version still serves

    def event_posted() -> None:
        events = core_api.list_namespaced_event(NAMESPACE).items
        assert any(
            e.reason == "ImmutableFieldChanged"
            and e.involved_object.name == name
            and e.type == "Warning"
            for e in events
        )

    eventually(event_posted, timeout=10)
    assert catalog_rows(catalog_db, workflow_name) == before

    # Reverting the edit makes the object synced again, still without a catalog write.
    workflows.patch_spec(name, {"content": CONTENT, "labels": {"severity": "high"}})
    workflows.wait_synced(name)
    assert catalog_rows(catalog_db, workflow_name) == before


def test_a_new_version_adds_a_catalog_version_and_keeps_the_old_one(workflows, catalog_db):
    name, workflow_name = _unique("rwf"), _unique("versioned")
    workflows.create(workflow(name, workflow_name))
    first_id = workflows.wait_synced(name)["status"]["workflowId"]

    workflows.patch_spec(name, {"version": "1.1.0", "content": CONTENT + "# v1.1\n"})
    obj = workflows.wait_synced(name)

    old, new = catalog_rows(catalog_db, workflow_name)
    assert (old["version"], new["version"]) == ("1.0.0", "1.1.0")
    assert old["status"] == "active" and old["content"] == CONTENT  # history untouched
    assert new["is_latest_version"] and not old["is_latest_version"]
    assert obj["status"]["workflowId"] == str(new["workflow_id"]) != first_id
    assert obj["status"]["catalogVersions"] == [
        {"version": "1.0.0", "workflowId": first_id},
        {"version": "1.1.0", "workflowId": str(new["workflow_id"])},
    ]


def test_lifecycle_drives_the_catalog_status_and_illegal_moves_are_reported(workflows, catalog_db):
    name, workflow_name = _unique("rwf"), _unique("lifecycle")
    workflows.create(workflow(name, workflow_name))
    workflows.wait_synced(name)

    workflows.patch_spec(name, {"lifecycle": "disabled"})
    obj = workflows.wait_synced(name)
    assert obj["status"]["catalogStatus"] == "disabled"
    assert (condition(obj, "Ready")["status"], condition(obj, "Ready")["reason"]) == (
        "False",
        "Disabled",
    )
    (row,) = catalog_rows(catalog_db, workflow_name)
    assert row["status"] == "disabled"
    assert row["updated_by"] == f"RemediationWorkflow/{NAMESPACE}/{name}"

    workflows.patch_spec(name, {"lifecycle": "archived"})  # disabled -> archived: not allowed

    def invalid(obj: dict) -> None:
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        synced = condition(obj, "Synced")
        assert (synced["status"], synced["reason"]) == ("False", "InvalidTransition")

    workflows.wait(name, invalid)
    assert catalog_rows(catalog_db, workflow_name)[0]["status"] == "disabled"

    workflows.patch_spec(name, {"lifecycle": "deprecated"})
    assert workflows.wait_synced(name)["status"]["catalogStatus"] == "deprecated"
    assert catalog_rows(catalog_db, workflow_name)[0]["status"] == "deprecated"


def test_an_invalid_spec_is_reported_without_a_catalog_write(workflows, catalog_db):
    name, workflow_name = _unique("rwf"), _unique("invalid")
    body = workflow(name, workflow_name)
    body["spec"]["labels"]["severity"] = "urgent"  # not in the enum
    workflows.create(body)

    def invalid(obj: dict) -> None:
        synced = condition(obj, "Synced")
        assert (synced["status"], synced["reason"]) == ("False", "InvalidSpec")
        assert "severity" in synced["message"]

    obj = workflows.wait(name, invalid)
    assert condition(obj, "Ready")["status"] == "False"
    assert catalog_rows(catalog_db, workflow_name) == []


def test_delete_disables_every_version_then_releases_the_object(workflows, catalog_db):
    name, workflow_name = _unique("rwf"), _unique("deleted")
    workflows.create(workflow(name, workflow_name))
    workflows.wait_synced(name)
    workflows.patch_spec(name, {"version": "2.0.0"})
    workflows.wait_synced(name)
    assert [r["status"] for r in catalog_rows(catalog_db, workflow_name)] == ["active", "active"]

    workflows.delete(name)

    def gone() -> None:
        try:
            obj = workflows.get(name)
        except ApiException as exc:
            assert exc.status == 404
        else:
            raise AssertionError(f"still there: {obj['metadata']}")

    eventually(gone, timeout=20)
    rows = catalog_rows(catalog_db, workflow_name)
    assert [r["status"] for r in rows] == ["disabled", "disabled"]
    assert all(
        r["disabled_reason"] == f"RemediationWorkflow/{NAMESPACE}/{name} was deleted" for r in rows
    )


def test_restart_and_resync_of_unchanged_objects_write_nothing(workflows, catalog_db, operator):
    names = [_unique("quiet") for _ in range(20)]
    for name in names:
        workflows.create(workflow(name, _unique("quiet-wf")))
    for name in names:
        workflows.wait_synced(name, timeout=40)

    def snapshot() -> tuple[dict[str, str], tuple]:
        return (
            {n: workflows.get(n)["metadata"]["resourceVersion"] for n in names},
            catalog_fingerprint(catalog_db),
        )

    before = _settled(snapshot)  # kopf has stored its last-handled state on every object

    assert operator.stop() == 0  # SIGTERM: a clean exit
    operator.start()

    # Every object resumed once, then resynced at least once by the timer: all "unchanged".
    def resumed_and_resynced() -> None:
        assert operator.metric(
            "datastorage_workflow_reconcile_total", result="unchanged"
        ) >= 2 * len(names)

    eventually(resumed_and_resynced, timeout=RESYNC_INTERVAL * 5 + 20)
    after = snapshot()
    assert after[1] == before[1], "the catalog was written"
    assert after[0] == before[0], "an object was patched"
    for result in ("created", "adopted", "updated", "error"):
        assert operator.metric("datastorage_workflow_reconcile_total", result=result) == 0


def test_operator_metrics_include_partition_maintenance(operator):
    metrics = operator.metrics()
    assert "datastorage_partition_maintenance_last_success_timestamp_seconds" in metrics
    assert operator.metric("datastorage_partition_months_ahead") == 3
    assert operator.metric("datastorage_partitions", state="attached") >= 4
