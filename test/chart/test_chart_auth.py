"""The chart's API authentication (docs/auth.md): on by default, the server may review tokens and
access (system:auth-delegator), ClusterRoles writer/reader/admin that match the service's route
permission table, values that bind subjects, the metrics reader, and a `helm test` Pod that
calls with a token of its own (its script run here against a server asking a stand-in API).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from chart_helpers import CHART, NAMESPACE, RELEASE, helm_template, objects, one, render, run, tool
from kube_api_standin import Grant, KubeApiStandin, User
from support import ServerProcess

from datastorage.auth.permissions import PERMISSIONS

FULLNAME = f"{RELEASE}-datastorage"
GROUP = "datastorage.kubernaut.ai"
WRITERS = (
    'json:auth.writers=[{"kind":"Group","apiGroup":"rbac.authorization.k8s.io",'
    '"name":"system:serviceaccounts:team-a"}]'
)
ADMINS = 'json:auth.admins=[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"ops"}]'
SCRAPER = 'json:auth.metricsReaders=[{"kind":"ServiceAccount","name":"prom","namespace":"mon"}]'


def grants(role: dict) -> set[tuple[str, str]]:
    """(verb, resource) pairs a ClusterRole grants on the service's API group."""
    return {
        (verb, resource)
        for rule in role["rules"]
        if rule.get("apiGroups") == [GROUP]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def table(verbs: tuple[str, ...] | None = None) -> set[tuple[str, str]]:
    """(verb, resource) of every resource permission of the route table."""
    pairs = set()
    for permission in PERMISSIONS.values():
        if permission.non_resource_path:
            continue
        target = permission.resource
        if permission.subresource:
            target += "/" + permission.subresource
        if verbs is None or permission.verb in verbs:
            pairs.add((permission.verb, target))
    return pairs


def test_auth_is_on_by_default_and_the_server_may_review_tokens_and_access():
    docs = render()
    assert one(docs, "ConfigMap", FULLNAME)["data"]["DATASTORAGE_AUTH"] == "kubernetes"
    delegator = one(docs, "ClusterRoleBinding", f"{FULLNAME}-auth-delegator")
    assert delegator["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    pod = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert delegator["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    assert pod["automountServiceAccountToken"] is True  # the reviews are made with it


def test_cluster_roles_match_the_route_permission_table():
    docs = render()
    writer, reader, admin = (
        one(docs, "ClusterRole", f"{FULLNAME}-{name}") for name in ("writer", "reader", "admin")
    )
    # Every write route of the table, nothing else.
    assert grants(writer) == {("create", "auditevents"), ("create", "notifications")}
    assert grants(writer) == {
        pair for pair in table(("create",)) if pair[1] in ("auditevents", "notifications")
    }
    expected_reads = {
        (verb, resource)
        for verb in ("get", "list")
        for resource in ("auditevents", "notifications", "workflows", "auditlog")
    }
    assert grants(reader) == expected_reads
    assert table() <= grants(admin)  # every permission a route needs
    assert {resource for _, resource in grants(admin)} == {resource for _, resource in table()}
    metrics = one(docs, "ClusterRole", f"{FULLNAME}-metrics-reader")
    assert metrics["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    # Explicit verbs and resources only (checkov CKV_K8S_49: no wildcards).
    for role in (writer, reader, admin, metrics):
        for rule in role["rules"]:
            assert "*" not in str(rule), role["metadata"]["name"]


def test_listed_subjects_are_bound_in_the_release_namespace():
    docs = render(None, (WRITERS, ADMINS, SCRAPER))
    writers = one(docs, "RoleBinding", f"{FULLNAME}-writer")
    assert writers["metadata"]["namespace"] == NAMESPACE
    assert writers["roleRef"]["name"] == f"{FULLNAME}-writer"
    assert writers["subjects"] == [
        {
            "kind": "Group",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:serviceaccounts:team-a",
        }
    ]
    assert one(docs, "RoleBinding", f"{FULLNAME}-admin")["subjects"][0]["name"] == "ops"
    names = {b["metadata"]["name"] for b in objects(docs, "RoleBinding")}
    assert f"{FULLNAME}-reader" not in names  # no readers listed: no binding
    scraper = one(docs, "ClusterRoleBinding", f"{FULLNAME}-metrics-reader")
    assert scraper["roleRef"]["name"] == f"{FULLNAME}-metrics-reader"
    assert scraper["subjects"] == [{"kind": "ServiceAccount", "name": "prom", "namespace": "mon"}]
    default = render()
    assert {b["metadata"]["name"] for b in objects(default, "RoleBinding")} == {
        f"{FULLNAME}-operator",
        f"{FULLNAME}-smoke-test-writer",
        f"{FULLNAME}-smoke-test-reader",
    }


def test_audiences_and_the_rate_limit_reach_the_configuration_and_the_test_token():
    docs = render(
        None,
        (
            "auth.audiences={datastorage,other}",
            "json:auth.rateLimit.eventsPerSecond=100",
            "auth.rateLimit.burst=500",
        ),
    )
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert config["DATASTORAGE_AUTH_AUDIENCES"] == "datastorage,other"
    assert (config["DATASTORAGE_RATE_LIMIT_EVENTS"], config["DATASTORAGE_RATE_LIMIT_BURST"]) == (
        "100",
        "500",
    )
    pod = one(docs, "Pod", f"{FULLNAME}-smoke-test")["spec"]
    (source,) = pod["volumes"][0]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "datastorage"
    default = one(render(), "ConfigMap", FULLNAME)["data"]
    assert "DATASTORAGE_AUTH_AUDIENCES" not in default
    assert "DATASTORAGE_RATE_LIMIT_EVENTS" not in default


def test_the_helm_test_pod_calls_with_a_token_of_its_own_account_bound_to_write_and_read():
    docs = render()
    pod = one(docs, "Pod", f"{FULLNAME}-smoke-test")
    spec = pod["spec"]
    account = one(docs, "ServiceAccount", f"{FULLNAME}-smoke-test")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False  # only the projected token
    (volume,) = spec["volumes"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["path"] == "token"
    assert "audience" not in source["serviceAccountToken"]  # the API server's own
    (container,) = spec["containers"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SMOKE_TOKEN_FILE"] == mount["mountPath"] + "/token"
    bound = {}
    for role in ("writer", "reader"):
        binding = one(docs, "RoleBinding", f"{FULLNAME}-smoke-test-{role}")
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"{FULLNAME}-smoke-test", "namespace": NAMESPACE}
        ]
        bound[role] = binding["roleRef"]["name"]
        annotations = binding["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "test"
        # Created before the Pod (weight 0), removed with it.
        assert int(annotations["helm.sh/hook-weight"]) < 0
    assert bound == {"writer": f"{FULLNAME}-writer", "reader": f"{FULLNAME}-reader"}
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0


def test_auth_off_renders_no_auth_objects_and_a_tokenless_test_pod():
    docs = render(None, ("auth.mode=none",))
    assert one(docs, "ConfigMap", FULLNAME)["data"]["DATASTORAGE_AUTH"] == "none"
    assert not objects(docs, "ClusterRole") and not objects(docs, "ClusterRoleBinding")
    spec = one(docs, "Pod", f"{FULLNAME}-smoke-test")["spec"]
    assert "volumes" not in spec and "serviceAccountName" not in spec
    assert [a["metadata"]["name"] for a in objects(docs, "ServiceAccount")] == [FULLNAME]


def test_a_rate_limit_without_auth_fails_with_a_message():
    proc = helm_template(
        None, ("auth.mode=none", "json:auth.rateLimit.eventsPerSecond=10"), check=False
    )
    assert proc.returncode != 0
    assert "auth.mode=kubernetes" in proc.stderr


@pytest.mark.parametrize(
    "bad",
    [
        "auth.mode=basic",
        'json:auth.writers=[{"kind":"Group"}]',
        'json:auth.readers=[{"kind":"Robot","name":"r2"}]',
        "json:auth.rateLimit.eventsPerSecond=-1",
        "auth.audiences={a,b,c}x",
    ],
)
def test_values_schema_rejects_bad_auth_values(bad):
    flag, value = ("--set-json", bad[5:]) if bad.startswith("json:") else ("--set", bad)
    proc = run([tool("helm"), "template", RELEASE, str(CHART), flag, value], check=False)
    assert proc.returncode != 0, proc.stdout[:300]


def test_service_monitor_sends_prometheus_token_to_the_api_metrics_only():
    endpoints = {
        e["port"]: e
        for e in one(render(None, ("serviceMonitor.enabled=true",)), "ServiceMonitor")["spec"][
            "endpoints"
        ]
    }
    token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert endpoints["http"]["bearerTokenFile"] == token
    assert "bearerTokenFile" not in endpoints["op-metrics"]  # the operator's port is open
    off = one(render(None, ("serviceMonitor.enabled=true", "auth.mode=none")), "ServiceMonitor")
    assert all("bearerTokenFile" not in e for e in off["spec"]["endpoints"])


def test_smoke_script_uses_its_token_against_a_server_that_authenticates(database_url, tmp_path):
    standin = KubeApiStandin().start()
    account = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}-smoke-test"
    standin.add_token("smoke-token", User(account))
    standin.grant(f"user:{account}", Grant(("create", "get"), ("auditevents",)))
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": database_url,
            "DATASTORAGE_AUTH": "kubernetes",
            "KUBECONFIG": str(standin.write_kubeconfig(tmp_path / "kubeconfig")),
        },
        tmp_path,
    )
    token_file = tmp_path / "token"
    token_file.write_text("smoke-token\n")
    script = (CHART / "files" / "smoke-test.py").read_text()

    def smoke(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "SMOKE_URL": server.url, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        ok = smoke(SMOKE_TOKEN_FILE=str(token_file))
        refused = smoke()
    finally:
        server.stop()
        standin.stop()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok: wrote and read back audit event ")
    assert refused.returncode != 0 and "write answered 401" in refused.stderr


def test_notes_show_how_to_call_with_a_token_when_auth_is_on():
    def notes(*sets: str) -> str:
        args = [tool("helm"), "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client"]
        for item in sets:
            args += ["--set", item]
        return run(args).stdout.split("NOTES:", 1)[1]

    on = notes("auth.audiences={datastorage}")
    assert f"--clusterrole={FULLNAME}-admin" in on
    assert "create token datastorage-try --audience datastorage" in on
    assert on.count('-H "Authorization: Bearer $TOKEN"') == 2
    off = notes("auth.mode=none")
    assert "TOKEN" not in off and "3. Call it:" in off
