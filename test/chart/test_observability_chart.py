"""The chart's operations objects (docs/operations.md): the PrometheusRule renders exactly the
plain rules file (with absolute runbook links) and promtool accepts the rendered groups; the Grafana
dashboard ConfigMap carries the dashboard file and the sidecar label; the `helm test` Pod runs
restricted and its script really writes and reads back an event against a running server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from chart_helpers import CHART, one, render
from test_alert_rules import RULES, promtool

FULLNAME = "ds-datastorage"
BASE = "https://git.example.com/datastorage/blob/main"


def test_rules_and_dashboard_are_off_by_default_and_helm_test_on() -> None:
    docs = render()
    assert not [d for d in docs if d["kind"] == "PrometheusRule"]
    assert not [d for d in docs if d["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert one(docs, "Pod", f"{FULLNAME}-smoke-test")
    assert not [d for d in render(None, ("tests.enabled=false",)) if d["kind"] == "Pod"]


def test_prometheus_rule_renders_the_plain_rules_file(tmp_path) -> None:
    rule = one(render("observability.yaml"), "PrometheusRule", FULLNAME)
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    expected = yaml.safe_load(
        RULES.read_text().replace(
            "runbook_url: docs/runbooks/", f"runbook_url: {BASE}/docs/runbooks/"
        )
    )
    assert rule["spec"] == {"groups": expected["groups"]}
    rendered = tmp_path / "rendered-rules.yaml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    proc = subprocess.run(
        [promtool(), "check", "rules", str(rendered)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runbook_links_stay_repository_paths_without_a_base_url() -> None:
    rule = one(render(None, ("prometheusRule.enabled=true",)), "PrometheusRule", FULLNAME)
    urls = {
        r["alert"]: r["annotations"]["runbook_url"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    }
    assert urls and all(url == f"docs/runbooks/{name}.md" for name, url in urls.items())


def test_dashboard_config_map_carries_the_dashboard() -> None:
    cm = one(render("observability.yaml"), "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "DataStorage"}
    dashboard = json.loads(cm["data"]["datastorage.json"])
    assert dashboard == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())


def test_smoke_pod_is_a_restricted_helm_test_hook() -> None:
    pod = one(render("observability.yaml"), "Pod", f"{FULLNAME}-smoke-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["args"] == [(CHART / "files" / "smoke-test.py").read_text()]
    assert {"name": "SMOKE_URL", "value": f"http://{FULLNAME}:8080"} in container["env"]


def test_smoke_script_writes_and_reads_back_against_a_server(server) -> None:
    script = (CHART / "files" / "smoke-test.py").read_text()
    ok = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "SMOKE_URL": server.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok: wrote and read back audit event ")
    down = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "SMOKE_URL": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode != 0


def test_operator_peering_object_per_watched_namespace_and_its_name_in_the_config() -> None:
    docs = render("everything.yaml")
    peerings = [d for d in docs if d["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["kubernaut-system", "team-a"]
    assert {p["metadata"]["name"] for p in peerings} == {FULLNAME}
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert config["DATASTORAGE_OPERATOR_PEERING"] == FULLNAME
    assert config["DATASTORAGE_OPERATOR_PEERING_LIFETIME"] == "60"
    crd = yaml.safe_load((CHART / "crds" / "kopfpeerings.kopf.dev.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == "KopfPeering"
    off = render(None, ("operator.peering.enabled=false",))
    assert not [d for d in off if d["kind"] == "KopfPeering"]
    assert "DATASTORAGE_OPERATOR_PEERING" not in one(off, "ConfigMap", FULLNAME)["data"]
    assert all("kopf.dev" not in rule["apiGroups"] for rule in one(off, "Role")["rules"])
