"""Pure rules of the operator and of partition maintenance (no I/O)."""

from __future__ import annotations

import datetime as dt

from datastorage.operator.handlers import (
    WorkflowObject,
    catalog_spec,
    condition,
    expected_content_hash,
    spec_hash,
)
from datastorage.operator.maintenance import MaintenanceReport
from datastorage.store.partitions import PartitionState, retention_cutoff, summarize

SPEC = {
    "workflowName": "restart-pod",
    "version": "1.0.0",
    "name": "Restart",
    "content": "kind: Pipeline\n",
    "contentHash": "AB" * 32,
    "labels": {
        "signalType": "KubePodCrashLooping",
        "severity": "high",
        "component": "pod",
        "environment": "*",
        "priority": "P2",
    },
    "customLabels": {"costCenter": ["cc-1"]},
    "detectedLabels": {"gitOpsManaged": True, "serviceMesh": "istio"},
    "parameters": {"podName": {"isRequired": True}},
    "containerImage": "quay.io/x:1",
    "lifecycle": "disabled",
}


def test_catalog_spec_is_snake_case_except_user_keys_and_detected_labels():
    body = catalog_spec(SPEC)
    assert body["workflow_name"] == "restart-pod"
    assert body["content_hash"] == "AB" * 32
    assert body["container_image"] == "quay.io/x:1"
    assert body["labels"]["signal_type"] == "KubePodCrashLooping"
    assert body["custom_labels"] == {"costCenter": ["cc-1"]}
    assert body["detected_labels"] == {"gitOpsManaged": True, "serviceMesh": "istio"}
    assert body["parameters"] == {"podName": {"isRequired": True}}
    assert "lifecycle" not in body and "status" not in body


def test_spec_hash_ignores_lifecycle_and_key_order_only():
    reordered = dict(reversed(list(SPEC.items())))
    assert spec_hash(reordered) == spec_hash(SPEC)
    assert spec_hash({**SPEC, "lifecycle": "active"}) == spec_hash(SPEC)
    assert spec_hash({**SPEC, "labels": {**SPEC["labels"], "severity": "low"}}) != spec_hash(SPEC)


def test_expected_content_hash_prefers_the_given_hash_in_lower_case():
    assert expected_content_hash(SPEC) == "ab" * 32
    computed = expected_content_hash({"content": "kind: Pipeline\n"})
    assert computed is not None and len(computed) == 64


def test_condition_keeps_its_transition_time_while_the_status_holds():
    first = condition("Synced", True, "Synced", "ok", 1, None)
    again = condition(
        "Synced",
        True,
        "Synced",
        "still ok",
        2,
        {**first, "lastTransitionTime": "2020-01-01T00:00:00Z"},
    )
    flipped = condition("Synced", False, "ImmutableFieldChanged", "no", 3, again)
    assert again["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert flipped["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert flipped["observedGeneration"] == 3


def test_workflow_object_defaults_lifecycle_to_active():
    obj = WorkflowObject.from_body({"metadata": {"namespace": "ns", "name": "w"}, "spec": {}})
    assert obj.lifecycle == "active"
    assert obj.actor == "RemediationWorkflow/ns/w"


def test_months_ahead_counts_consecutive_attached_months_after_the_current_one():
    now = dt.datetime(2026, 11, 28, 23, 59, tzinfo=dt.UTC)

    def state(year: int, month: int, attached: bool = True, pending: bool = False):
        return PartitionState(
            f"audit_events_{year}_{month:02d}", dt.date(year, month, 1), attached, pending
        )

    states = [
        state(2026, 11),
        state(2026, 12),
        state(2027, 1),
        state(2027, 3),
        state(2026, 10, attached=False),
        state(2027, 2, pending=True),
    ]
    summary = summarize(states, now)
    assert summary.months_ahead == 2  # the pending detach of 2027-02 breaks the run
    assert (summary.attached, summary.detached) == (4, 2)
    assert summary.current_attached


def test_retention_keeps_whole_months_only():
    now = dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.UTC)
    assert retention_cutoff(84, now) == dt.date(2019, 11, 1)
    # UTC decides the month, whatever the offset of the given time.
    late = dt.datetime(2026, 10, 31, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert retention_cutoff(1, late) == dt.date(2026, 10, 1)


def test_report_lines_say_what_a_dry_run_would_retire():
    report = MaintenanceReport(
        dry_run=True,
        started_at=dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
        window=[dt.date(2026, 11, 1), dt.date(2027, 2, 1)],
        retain_from=dt.date(2019, 11, 1),
        would_retire=["audit_events_2010_01"],
    )
    lines = report.lines()
    assert lines[0] == "partition maintenance (dry run) at 2026-11-28T00:00:00Z"
    assert "would retire audit_events_2010_01 (dry run: nothing retired)" in lines
    assert "nothing to do" not in lines
