"""The alerting rules (docs/operations.md): promtool accepts them, every alert fires on its case
and stays quiet on its counter-case, every alert has a runbook and every runbook an alert, and every
metric a rule or a dashboard panel reads is one the service exports.

The promtool unit-test file is generated from CASES below (one firing and one quiet series set
per alert) so that a new alert without cases fails `test_every_alert_has_cases`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, REPO

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RUNBOOKS = REPO / "docs" / "runbooks"
LABELS = 'namespace="ns", job="ds"'
GROUP = {"namespace": "ns", "job": "ds"}


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool not found: `make tools` installs it (Debian package prometheus)")
    return found


def _series(name: str, labels: str, values: str) -> dict[str, str]:
    selector = f"{name}{{{LABELS}{', ' + labels if labels else ''}}}"
    return {"series": selector, "values": values}


def _post(status: str, values: str) -> dict[str, str]:
    return _series(
        "datastorage_http_requests_total",
        f'method="POST", route="/api/v1/audit/events", status="{status}"',
        values,
    )


def _traces(status: str, values: str) -> dict[str, str]:
    return _series(
        "datastorage_audit_traces_total", f'service="gateway", status="{status}"', values
    )


# alert -> (eval time, firing series, quiet series, extra labels of the firing alert)
CASES: dict[str, tuple[str, list[dict], list[dict], dict[str, str]]] = {
    "DataStorageAuditPersistenceLow": (
        "30m",
        [_traces("success", "0+1000x60"), _post("201", "0+1000x60"), _post("503", "0+10x60")],
        [_traces("success", "0+1000x60"), _post("201", "0+1000x60"), _post("503", "0+0x60")],
        {},
    ),
    "DataStorageDLQFallbackRateHigh": (
        "30m",
        [_traces("success", "0+1000x60"), _traces("dlq_fallback", "0+10x60")],
        [_traces("success", "0+1000x60"), _traces("dlq_fallback", "0+0x60")],
        {},
    ),
    "DataStorageHTTP5xxRatioHigh": (
        "30m",
        [_post("201", "0+100x60"), _post("503", "0+10x60")],
        [_post("201", "0+100x60"), _post("503", "0+0x60")],
        {},
    ),
    "DataStorageDBPoolErrors": (
        "30m",
        [_series("datastorage_db_pool_timeouts_total", "", "0+1x60")],
        [_series("datastorage_db_pool_timeouts_total", "", "0+0x60")],
        {},
    ),
    "DataStorageDLQDepthHigh": (
        "30m",
        [_series("datastorage_dlq_depth", 'stream="audit"', "20000x60")],
        [_series("datastorage_dlq_depth", 'stream="audit"', "5x60")],
        {"stream": "audit"},
    ),
    "DataStorageDLQOldestAgeHigh": (
        "30m",
        [_series("datastorage_dlq_oldest_age_seconds", 'stream="audit"', "1000+60x60")],
        [_series("datastorage_dlq_oldest_age_seconds", 'stream="audit"', "10x60")],
        {"stream": "audit"},
    ),
    "DataStorageDLQDeadLettered": (
        "30m",
        [_series("datastorage_dlq_dead_lettered_total", 'stream="audit"', "0x20 1x40")],
        [_series("datastorage_dlq_dead_lettered_total", 'stream="audit"', "0x60")],
        {"stream": "audit"},
    ),
    "DataStoragePartitionMonthsAheadLow": (
        "90m",
        [_series("datastorage_partition_months_ahead", "", "1x120")],
        [_series("datastorage_partition_months_ahead", "", "3x120")],
        {},
    ),
    "DataStoragePartitionMaintenanceFailing": (
        "40m",
        [_series("datastorage_partition_maintenance_failures_total", "", "0x30 1x30")],
        [_series("datastorage_partition_maintenance_failures_total", "", "0x60")],
        {},
    ),
    "DataStorageArchiveFailing": (
        "40m",
        [_series("datastorage_archive_failures_total", "", "0x30 1x30")],
        [_series("datastorage_archive_failures_total", "", "0x60")],
        {},
    ),
    "DataStoragePartitionMaintenanceStale": (
        "4h",
        [_series("datastorage_partition_maintenance_last_success_timestamp_seconds", "", "0x300")],
        [
            _series(
                "datastorage_partition_maintenance_last_success_timestamp_seconds",
                "",
                "0+60x300",
            )
        ],
        {},
    ),
    "DataStoragePartitionCreatedOnWritePath": (
        "40m",
        [_series("datastorage_partition_created_total", 'trigger="write_path"', "0x30 1x30")],
        [
            _series("datastorage_partition_created_total", 'trigger="write_path"', "0x60"),
            _series("datastorage_partition_created_total", 'trigger="maintenance"', "0x30 1x30"),
        ],
        {},
    ),
    "DataStorageOperatorReconcileErrors": (
        "40m",
        [_series("datastorage_workflow_reconcile_total", 'result="error"', "0+1x60")],
        [
            _series("datastorage_workflow_reconcile_total", 'result="error"', "0x60"),
            _series("datastorage_workflow_reconcile_total", 'result="created"', "0+1x60"),
        ],
        {},
    ),
    "DataStorageLogSequencingLag": (
        "30m",
        [_series("datastorage_log_sequencing_lag_seconds", "", "0+60x60")],
        [_series("datastorage_log_sequencing_lag_seconds", "", "0 2 0 1 3 0x55")],
        {},
    ),
    "DataStorageLogCheckpointStale": (
        "40m",
        [
            _series("datastorage_log_checkpoint_age_seconds", "", "0+60x60"),
            _series("datastorage_log_tree_size", "", "0+100x60"),
        ],
        [  # an idle log signs nothing new: an old checkpoint is expected there
            _series("datastorage_log_checkpoint_age_seconds", "", "0+60x60"),
            _series("datastorage_log_tree_size", "", "500x60"),
        ],
        {},
    ),
    "DataStorageLogConsistencyFailure": (
        "30m",
        [_series("datastorage_log_consistency_failures_total", "", "0x20 1x40")],
        [_series("datastorage_log_consistency_failures_total", "", "0x60")],
        {},
    ),
}


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in load_rules() if "alert" in rule}


def test_promtool_check_rules() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_cases() -> None:
    assert set(CASES) == set(alerts())


def test_names_labels_and_annotations() -> None:
    for name, rule in alerts().items():
        assert re.fullmatch(r"DataStorage([A-Z][A-Za-z0-9]*)+", name), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{name}.md", name


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    runbooks = {path.stem for path in RUNBOOKS.glob("*.md") if path.name != "README.md"}
    assert runbooks == set(alerts())
    for name in runbooks:
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        for must in (
            r"datastorage (partitions|dlq|verify|log) ",
            r"kubectl .*\blogs\b",
            "## What to do",
        ):
            assert re.search(must, text), f"{name}.md lacks {must!r}"


def test_promtool_unit_tests_fire_and_stay_quiet(tmp_path: Path) -> None:
    tests = []
    for name, (at, firing, quiet, extra) in CASES.items():
        severity = alerts()[name]["labels"]["severity"]
        expected = {"exp_labels": {**GROUP, **extra, "severity": severity, "alertname": name}}
        for series, exp in ((firing, [expected]), (quiet, [])):
            tests.append(
                {
                    "name": f"{name} {'fires' if exp else 'stays quiet'}",
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": exp}],
                }
            )
    # promtool compares rendered annotations too; they hold $value, so the unit tests run on a
    # copy without them (their presence and templates are checked above and by `check rules`).
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests}))
    proc = subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def exported_metrics() -> set[str]:
    """Every sample name the service can export, from the registry of datastorage.metrics."""
    from prometheus_client import REGISTRY

    import datastorage.metrics  # noqa: F401 — registers the families

    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("datastorage_"):
            suffixes = {
                "counter": ("_total", "_created"),
                "histogram": ("_bucket", "_count", "_sum", "_created"),
            }.get(family.type, ("",))
            names.update(family.name + suffix for suffix in suffixes)
    return names


METRIC_NAME = re.compile(r"\b(datastorage_[a-z_]+)\b")


def test_rules_use_only_exported_metrics() -> None:
    used = {m for rule in load_rules() for m in METRIC_NAME.findall(rule["expr"])}
    assert used and used <= exported_metrics(), used - exported_metrics()


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    used = {m for expr in exprs for m in METRIC_NAME.findall(expr)}
    assert exprs and used <= exported_metrics(), used - exported_metrics()
