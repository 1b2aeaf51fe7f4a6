"""checkov, an independent Kubernetes scanner, over what users deploy: the chart rendered with
its defaults and with every test value set, checkov's own Helm rendering of the chart, and the
kustomize base (built under a namespace overlay, as it is meant to be used).

No finding may stand without a written reason: a check the chart keeps failing on purpose is
skipped with a `checkov.io/skipN: CHECK=reason` annotation in the template, and every skip must
carry its reason. checkov lives in its own venv (.tools/checkov, from requirements/checkov.lock,
installed by `make tools`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import CHART, REPO, VALUE_SETS, helm_template, run, tool

CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"
BASE = REPO / "manifests" / "base"
# The manifests are scanned offline: no guideline download, no result upload.
CHECKOV_ARGS = ["--compact", "--output", "json", "--skip-download"]

pytestmark = pytest.mark.xdist_group("checkov")


def checkov(args: list[str]) -> list[dict[str, Any]]:
    if not CHECKOV.exists():
        raise AssertionError(f"{CHECKOV} is missing: run `make tools`")
    env = {**os.environ, "PATH": f"{Path(tool('helm')).parent}:{os.environ['PATH']}"}
    proc = run([str(CHECKOV), *args, *CHECKOV_ARGS], check=False, env=env)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    return reports if isinstance(reports, list) else [reports]


def findings(reports: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]], int]:
    failed, skipped, passed = [], [], 0
    for report in reports:
        results = report.get("results", {})
        failed += [
            f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
            for c in results.get("failed_checks", [])
        ]
        skipped += results.get("skipped_checks", [])
        passed += len(results.get("passed_checks", []))
    return failed, skipped, passed


def assert_clean(reports: list[dict[str, Any]]) -> None:
    failed, skipped, passed = findings(reports)
    assert failed == [], "checkov findings without a skip reason:\n" + "\n".join(failed)
    unexplained = [
        f"{c['check_id']} on {c['resource']}"
        for c in skipped
        if len(c["check_result"].get("suppress_comment") or "") < 20
    ]
    assert unexplained == [], f"skips without a written reason: {unexplained}"
    assert passed > 0


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """One directory per value set (and the kustomize base), each with the rendered objects."""
    root = tmp_path_factory.mktemp("rendered")
    for name, values_file in VALUE_SETS.items():
        (root / name).mkdir()
        (root / name / "all.yaml").write_text(helm_template(values_file).stdout)
    overlay = root.parent / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"namespace: kubernaut-system\nresources:\n  - {os.path.relpath(BASE, overlay)}\n"
    )
    (root / "kustomize-base").mkdir()
    (root / "kustomize-base" / "all.yaml").write_text(
        run([tool("kubectl"), "kustomize", str(overlay)]).stdout
    )
    return root


def test_rendered_chart_and_kustomize_base_have_no_unexplained_findings(rendered):
    reports = checkov(["--directory", str(rendered), "--framework", "kubernetes"])
    assert_clean(reports)
    scanned = {c["file_path"].split("/")[1] for r in reports for c in r["results"]["passed_checks"]}
    assert scanned == {*VALUE_SETS, "kustomize-base"}


# checkov's Helm runner renders the chart with `helm template` and no --namespace, so every
# object lands in "default" and fails CKV_K8S_21 ("the default namespace should not be used").
# The chart puts every object in the release namespace; the kubernetes-framework scan above,
# of renders with a real namespace, keeps CKV_K8S_21 on.
HELM_RUNNER_SKIPS = ["--skip-check", "CKV_K8S_21"]


def test_checkovs_own_helm_rendering_has_no_unexplained_findings():
    assert_clean(checkov(["--directory", str(CHART), "--framework", "helm", *HELM_RUNNER_SKIPS]))


def test_every_skip_annotation_of_the_chart_names_a_check_and_a_reason():
    for name, values_file in VALUE_SETS.items():
        for line in helm_template(values_file).stdout.splitlines():
            if "checkov.io/skip" in line:
                _, value = line.split(":", 1)
                check, _, reason = value.strip().strip('"').partition("=")
                assert check.startswith(("CKV_K8S_", "CKV2_K8S_")), (name, line)
                # checkov splits the value at "=": one only, between check and reason.
                assert len(reason) >= 20 and "=" not in reason, (name, line)
