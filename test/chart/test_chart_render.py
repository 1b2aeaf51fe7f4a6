"""The Helm chart, checked with the real helm binary and the Kubernetes OpenAPI schemas.

Every value set in chart_helpers.VALUE_SETS is linted (`helm lint --strict`), rendered, and every
rendered object is validated with kubernetes-validate in strict mode for Kubernetes 1.30 and 1.33.
The remaining tests pin the behaviour the spec asks of the chart (probes, shutdown budget, pod
security, RBAC, hooks, DLQ backends, bundled databases) and the values schema.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    CHART,
    CHART_CRD_FILE,
    CRD_FILE,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    container,
    containers,
    env_map,
    helm_args,
    helm_template,
    objects,
    one,
    pod_templates,
    render,
    run,
    tool,
)

FULLNAME = f"{RELEASE}-datastorage"

# Custom resources whose schema is not part of Kubernetes (kubernetes-validate has none).
# ServiceMonitor is checked structurally in test_service_monitor_scrapes_both_metrics_ports.
NOT_IN_KUBERNETES_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # test_alert_rules checks it with promtool
    ("kopf.dev/v1", "KopfPeering"),  # its CRD is chart/crds/kopfpeerings.kopf.dev.yaml
}

SETTINGS_DEFAULTS = {
    "DATASTORAGE_HTTP_HOST": "0.0.0.0",
    "DATASTORAGE_HTTP_PORT": "8080",
    "DATASTORAGE_SERVER": "hypercorn",
    "DATASTORAGE_WORKERS": "1",
    "DATASTORAGE_DB_POOL_MIN": "5",
    "DATASTORAGE_DB_POOL_MAX": "25",
    "DATASTORAGE_DB_POOL_TIMEOUT": "5",
    "DATASTORAGE_SHUTDOWN_DELAY": "5",
    "DATASTORAGE_SHUTDOWN_TIMEOUT": "25",
    "DATASTORAGE_LOG_LEVEL": "INFO",
    "DATASTORAGE_LOG_FORMAT": "json",
    "DATASTORAGE_DLQ_CAPACITY": "1000000",
    "DATASTORAGE_PARTITION_PREMAKE": "3",
    "DATASTORAGE_PARTITION_RETENTION_MONTHS": "84",
    "DATASTORAGE_PARTITION_MAINTENANCE_INTERVAL": "3600",
    "DATASTORAGE_OPERATOR_NAMESPACES": NAMESPACE,
    "DATASTORAGE_OPERATOR_RESYNC_INTERVAL": "600",
    "DATASTORAGE_OPERATOR_METRICS_PORT": "8081",
    "DATASTORAGE_OPERATOR_HEALTH_PORT": "8082",
    "DATASTORAGE_AUTH": "kubernetes",
}


def deployment_pod(docs):
    return one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]


# --- lint, render, validate -------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict_passes(value_set):
    proc = run([tool("helm"), "lint", "--strict", str(CHART), *helm_args(VALUE_SETS[value_set])])
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_object_passes_strict_kubernetes_validation(value_set, version):
    docs = render(VALUE_SETS[value_set], include_crds=True)
    validated = 0
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in NOT_IN_KUBERNETES_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc.message} at {list(exc.path)}"
            )
        validated += 1
    assert validated >= 8


def test_kubernetes_validate_cli_accepts_the_default_render(tmp_path):
    cli = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).parent / "kubernetes-validate"
    )
    rendered = tmp_path / "default.yaml"
    rendered.write_text(helm_template(include_crds=True).stdout)
    for version in KUBERNETES_VERSIONS:
        proc = run([cli, "-k", version, "--strict", "--quiet", str(rendered)], check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strict_validation_is_not_vacuous():
    deployment = json.loads(json.dumps(one(render(), "Deployment", FULLNAME)))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33.0", strict=True)


def test_only_known_custom_kinds_lack_a_kubernetes_schema():
    kinds = {
        (d["apiVersion"], d["kind"]) for d in render(VALUE_SETS["everything"], include_crds=True)
    }
    assert {k for k in kinds if "coreos" in k[0] or "kopf" in k[0]} == NOT_IN_KUBERNETES_SCHEMAS


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_port_names_are_valid_service_names(value_set):
    # The API server rejects port names over 15 characters; the OpenAPI schema does not say so.
    pattern = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
    docs = render(VALUE_SETS[value_set])
    for where, pod in pod_templates(docs):
        for c in containers(pod):
            for port in c.get("ports", []):
                assert pattern.match(port["name"]) and re.search("[a-z]", port["name"]), (
                    where,
                    port,
                )
    for service in objects(docs, "Service"):
        for port in service["spec"]["ports"]:
            assert pattern.match(port["name"]), (service["metadata"]["name"], port)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_render_leaves_no_template_residue(value_set):
    out = helm_template(VALUE_SETS[value_set]).stdout
    assert "<no value>" not in out and "%!" not in out
    # Alert annotations and dashboard legends carry Prometheus/Grafana templates on purpose.
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] != "PrometheusRule" and "grafana_dashboard" not in str(doc):
            assert "{{" not in yaml.safe_dump(doc), doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("sets", "reach"),
    [
        ((), "port-forward service/ds-datastorage 8080:8080"),
        (("service.type=NodePort",), "NODE_PORT="),
    ],
)
def test_notes_explain_how_to_reach_and_call_the_api(sets, reach):
    args = [tool("helm"), "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client"]
    for item in sets:
        args += ["--set", item]
    notes = run(args).stdout.split("NOTES:", 1)[1]
    assert reach in notes
    assert "curl -s $DATASTORAGE_URL/health" in notes
    assert "/api/v1/audit/events" in notes
    assert f"kubectl -n {NAMESPACE} get rwf" in notes


def test_chart_crd_is_an_identical_copy_of_the_manifest():
    assert CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes()


def test_no_bitnami_anywhere():
    for path in CHART.rglob("*"):
        if path.is_file():
            assert "bitnami" not in path.read_text().lower(), path
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "datastorage"
    assert not chart.get("dependencies")


# --- the Deployment ---------------------------------------------------------------------------


def test_server_and_operator_commands():
    pod = deployment_pod(render())
    server, operator = container(pod, "datastorage"), container(pod, "operator")
    assert server["command"] + server["args"] == ["datastorage", "serve"]
    assert operator["command"] + operator["args"] == ["datastorage", "operator"]
    assert {p["containerPort"] for p in server["ports"]} == {8080}
    assert {p["containerPort"] for p in operator["ports"]} == {8081, 8082}


def test_probes_use_live_and_ready_endpoints():
    pod = deployment_pod(render())
    server = container(pod, "datastorage")
    assert server["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert server["livenessProbe"]["httpGet"]["port"] == "http"
    assert server["startupProbe"]["httpGet"]["path"] == "/health/live"
    operator = container(pod, "operator")
    assert operator["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_name = operator["livenessProbe"]["httpGet"]["port"]
    assert next(p["containerPort"] for p in operator["ports"] if p["name"] == port_name) == 8082


@pytest.mark.parametrize(
    ("delay", "timeout", "expected"),
    [(5, 25, 35), (0, 0, 5), (10, 50, 65), (2.5, 7.2, 16)],
)
def test_termination_grace_covers_delay_timeout_and_slack(delay, timeout, expected):
    # --set-json: helm's --set turns 2.5 into a string.
    docs = render(None, (f"json:shutdownDelay={delay}", f"json:shutdownTimeout={timeout}"))
    grace = deployment_pod(docs)["terminationGracePeriodSeconds"]
    assert grace == expected
    assert grace >= delay + timeout + 5
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert float(config["DATASTORAGE_SHUTDOWN_DELAY"]) == delay
    assert float(config["DATASTORAGE_SHUTDOWN_TIMEOUT"]) == timeout


def test_configmap_carries_every_setting_with_its_default():
    docs = render()
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    for name, value in SETTINGS_DEFAULTS.items():
        assert config.get(name) == value, name
    assert config["DATASTORAGE_DATABASE_URL"] == (
        f"postgresql://datastorage@{FULLNAME}-postgresql:5432/datastorage"
    )
    assert config["DATASTORAGE_DATABASE_PASSWORD_FILE"] == "/etc/datastorage/postgresql/password"
    for c in deployment_pod(docs)["containers"]:
        assert c["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]


def test_every_config_value_reaches_the_configmap():
    sets = (
        "config.server=uvicorn",
        "config.workers=3",
        "config.logLevel=DEBUG",
        "config.logFormat=console",
        "config.dbPool.min=2",
        "config.dbPool.max=40",
        "json:config.dbPool.timeout=1.5",
        "config.dlqCapacity=2500000",
        "config.partitions.premake=6",
        "config.partitions.retentionMonths=12",
        "config.partitions.maintenanceInterval=900",
        "operator.resyncInterval=120",
        "operator.metricsPort=9091",
        "operator.healthPort=9092",
    )
    config = one(render(None, sets), "ConfigMap", FULLNAME)["data"]
    assert config["DATASTORAGE_SERVER"] == "uvicorn"
    assert config["DATASTORAGE_WORKERS"] == "3"
    assert config["DATASTORAGE_LOG_LEVEL"] == "DEBUG"
    assert config["DATASTORAGE_LOG_FORMAT"] == "console"
    assert (config["DATASTORAGE_DB_POOL_MIN"], config["DATASTORAGE_DB_POOL_MAX"]) == ("2", "40")
    assert config["DATASTORAGE_DB_POOL_TIMEOUT"] == "1.5"
    assert config["DATASTORAGE_DLQ_CAPACITY"] == "2500000"
    assert config["DATASTORAGE_PARTITION_PREMAKE"] == "6"
    assert config["DATASTORAGE_PARTITION_RETENTION_MONTHS"] == "12"
    assert config["DATASTORAGE_PARTITION_MAINTENANCE_INTERVAL"] == "900"
    assert config["DATASTORAGE_OPERATOR_RESYNC_INTERVAL"] == "120"
    assert (
        config["DATASTORAGE_OPERATOR_METRICS_PORT"],
        config["DATASTORAGE_OPERATOR_HEALTH_PORT"],
    ) == ("9091", "9092")


def test_image_tag_defaults_to_app_version_and_can_be_overridden():
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for _, pod in pod_templates(render()) for c in containers(pod)}
    assert f"ghcr.io/kubernaut/datastorage:{app_version}" in images
    docs = render(
        None, ("image.repository=registry.local/ds", "image.tag=1.2.3", "image.pullPolicy=Always")
    )
    server = container(deployment_pod(docs), "datastorage")
    assert (server["image"], server["imagePullPolicy"]) == ("registry.local/ds:1.2.3", "Always")


# --- pod security and resources on every pod -----------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_runs_restricted(value_set):
    docs = render(VALUE_SETS[value_set])
    seen = []
    for where, pod in pod_templates(docs):
        seen.append(where)
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] > 0 and security["fsGroup"] > 0, where
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in containers(pod):
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert ctx["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert ctx["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "add" not in ctx["capabilities"], (where, c["name"])
            assert ctx.get("privileged") is not True, (where, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"], (where, c["name"])
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], (where, c["name"])
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where
    assert any(w.startswith("Job/") for w in seen)
    assert any(w.startswith("Deployment/") for w in seen)


def test_service_pods_run_as_uid_10001_and_bundled_databases_as_their_image_users():
    docs = render()
    uids = {where: pod["securityContext"] for where, pod in pod_templates(docs)}
    assert uids[f"Deployment/{FULLNAME}"]["runAsUser"] == 10001
    assert uids[f"Job/{FULLNAME}-migrate"]["runAsUser"] == 10001
    pg = uids[f"StatefulSet/{FULLNAME}-postgresql"]
    assert (pg["runAsUser"], pg["fsGroup"]) == (70, 70)  # postgres user of the -alpine image
    redis = uids[f"StatefulSet/{FULLNAME}-redis"]
    assert (redis["runAsUser"], redis["fsGroup"]) == (999, 1000)  # redis user/group of -alpine
    debian = render(
        None,
        (
            "postgresql.image.tag=16",
            "postgresql.runAsUser=999",
            "postgresql.runAsGroup=999",
            "postgresql.fsGroup=999",
        ),
    )
    pod = dict(pod_templates(debian))[f"StatefulSet/{FULLNAME}-postgresql"]
    assert pod["securityContext"]["fsGroup"] == 999
    assert pod["containers"][0]["image"] == "postgres:16"


# --- RBAC ------------------------------------------------------------------------------------------

EXPECTED_RULES = [
    {
        "apiGroups": ["kubernaut.ai"],
        "resources": ["remediationworkflows"],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    {
        "apiGroups": ["kubernaut.ai"],
        "resources": ["remediationworkflows/status"],
        "verbs": ["get", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]


def test_rbac_grants_exactly_the_operator_verbs_in_the_release_namespace():
    docs = render()
    # Cluster-wide objects are those of API authentication only (test_chart_auth.py).
    cluster_wide = objects(docs, "ClusterRole") + objects(docs, "ClusterRoleBinding")
    assert {d["metadata"]["name"] for d in cluster_wide} == {
        f"{FULLNAME}-{name}" for name in ("writer", "reader", "admin", "metrics-reader")
    } | {f"{FULLNAME}-auth-delegator"}
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == EXPECTED_RULES
    binding = one(docs, "RoleBinding", f"{FULLNAME}-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(docs, "ServiceAccount", FULLNAME)["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert deployment_pod(docs)["serviceAccountName"] == account


def test_operator_namespaces_get_a_role_each_and_reach_the_operator():
    docs = render(VALUE_SETS["everything"])
    roles = objects(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["kubernaut-system", "team-a"]
    assert all(r["rules"] == EXPECTED_RULES for r in roles)
    for binding in objects(docs, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == NAMESPACE, binding["metadata"]["name"]
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert config["DATASTORAGE_OPERATOR_NAMESPACES"] == "kubernaut-system,team-a"


def test_rbac_and_service_account_can_be_turned_off():
    docs = render(
        None, ("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=existing")
    )
    assert not objects(docs, "Role") and not objects(docs, "RoleBinding")
    assert not objects(docs, "ClusterRole") and not objects(docs, "ClusterRoleBinding")
    # The helm test Pod's own account stays: it needs a token, bound by the user then.
    assert [a["metadata"]["name"] for a in objects(docs, "ServiceAccount")] == [
        f"{FULLNAME}-smoke-test"
    ]
    assert deployment_pod(docs)["serviceAccountName"] == "existing"


# --- migrations hook -------------------------------------------------------------------------------


def test_migrations_run_as_a_hook_job_before_the_new_pods():
    docs = render(VALUE_SETS["external"])
    job = one(docs, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = job["spec"]["template"]["spec"]
    migrate = pod["containers"][0]
    assert migrate["command"] + migrate["args"] == ["datastorage", "migrate"]
    assert pod["restartPolicy"] == "Never"
    # The release's ConfigMap/Secret do not exist yet before install: the Job reads the URL
    # from a hook Secret created just before it.
    url_ref = env_map(migrate)["DATASTORAGE_DATABASE_URL"]["secretKeyRef"]
    hook_secret = one(docs, "Secret", url_ref["name"])
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    assert "envFrom" not in migrate


def test_migrations_with_the_bundled_database_run_after_it_exists():
    job = one(render(), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    env = env_map(job["spec"]["template"]["spec"]["containers"][0])
    assert env["DATASTORAGE_DATABASE_URL"].startswith(
        f"postgresql://datastorage@{FULLNAME}-postgresql:5432/"
    )
    assert env["DATASTORAGE_DATABASE_PASSWORD_FILE"] == "/etc/datastorage/postgresql/password"


def test_migrations_with_an_existing_secret_read_it_directly():
    docs = render(VALUE_SETS["external-existing-secrets"])
    job = one(docs, "Job")
    env = env_map(job["spec"]["template"]["spec"]["containers"][0])
    assert env["DATASTORAGE_DATABASE_URL"] == {
        "secretKeyRef": {"name": "datastorage-db", "key": "url"}
    }
    assert [s["metadata"]["name"] for s in objects(docs, "Secret")] == []


# --- bundled PostgreSQL and Redis / external ones ------------------------------------------------


def test_bundled_postgresql_and_redis_use_official_images_and_durable_settings():
    docs = render()
    pg = one(docs, "StatefulSet", f"{FULLNAME}-postgresql")
    pg_container = pg["spec"]["template"]["spec"]["containers"][0]
    assert pg_container["image"].startswith("postgres:")
    assert (
        pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    )
    assert env_map(pg_container)["POSTGRES_PASSWORD_FILE"] == "/etc/postgresql-secret/password"
    pg_secret = one(docs, "Secret", f"{FULLNAME}-postgresql")
    assert len(pg_secret["data"]["password"]) >= 32
    assert pg_secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    redis = one(docs, "StatefulSet", f"{FULLNAME}-redis")
    redis_container = redis["spec"]["template"]["spec"]["containers"][0]
    assert redis_container["image"].startswith("redis:")
    args = redis_container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {m["mountPath"] for m in redis_container["volumeMounts"]} >= {"/data"}

    for c in deployment_pod(docs)["containers"]:
        env = env_map(c)
        assert env["REDIS_PASSWORD"] == {
            "secretKeyRef": {"name": f"{FULLNAME}-redis", "key": "password"}
        }
        assert env["DATASTORAGE_DLQ_URL"] == f"redis://:$(REDIS_PASSWORD)@{FULLNAME}-redis:6379/0"
        # $(VAR) expansion only sees variables defined earlier in the list.
        names = [e["name"] for e in c["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("DATASTORAGE_DLQ_URL")


def test_given_passwords_are_used():
    docs = render(None, ("postgresql.auth.password=pg-pass", "redis.auth.password=redis-pass"))
    assert (
        base64.b64decode(one(docs, "Secret", f"{FULLNAME}-postgresql")["data"]["password"])
        == b"pg-pass"
    )
    assert (
        base64.b64decode(one(docs, "Secret", f"{FULLNAME}-redis")["data"]["password"])
        == b"redis-pass"
    )


def test_redis_without_auth_gets_a_plain_url():
    docs = render(None, ("redis.auth.enabled=false",))
    assert not [s for s in objects(docs, "Secret") if s["metadata"]["name"].endswith("-redis")]
    assert (
        one(docs, "ConfigMap", FULLNAME)["data"]["DATASTORAGE_DLQ_URL"]
        == f"redis://{FULLNAME}-redis:6379/0"
    )
    args = one(docs, "StatefulSet", f"{FULLNAME}-redis")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert "--requirepass" not in args


def test_external_database_and_redis_replace_the_bundled_ones():
    docs = render(VALUE_SETS["external"])
    assert not objects(docs, "StatefulSet")
    names = {s["metadata"]["name"] for s in objects(docs, "Service")}
    assert names == {FULLNAME}
    secret = one(docs, "Secret", FULLNAME)
    assert secret["stringData"]["database-url"].startswith(
        "postgresql://datastorage:s3cret@db.example.internal"
    )
    assert secret["stringData"]["dlq-url"] == "redis://:s3cret@redis.example.internal:6379/2"
    assert secret["stringData"]["database-read-url"].startswith(
        "postgresql://datastorage:s3cret@replica.example.internal"
    )
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert "DATASTORAGE_DATABASE_URL" not in config and "DATASTORAGE_DLQ_URL" not in config
    for c in deployment_pod(docs)["containers"]:
        env = env_map(c)
        assert env["DATASTORAGE_DATABASE_URL"] == {
            "secretKeyRef": {"name": FULLNAME, "key": "database-url"}
        }
        assert env["DATASTORAGE_DLQ_URL"] == {"secretKeyRef": {"name": FULLNAME, "key": "dlq-url"}}
        assert env["DATASTORAGE_DATABASE_READ_URL"] == {
            "secretKeyRef": {"name": FULLNAME, "key": "database-read-url"}
        }
        assert not any(m["name"] == "postgresql-password" for m in c["volumeMounts"])


def test_existing_secrets_are_referenced_not_created():
    docs = render(VALUE_SETS["external-existing-secrets"])
    assert not objects(docs, "Secret")
    for c in deployment_pod(docs)["containers"]:
        env = env_map(c)
        assert env["DATASTORAGE_DATABASE_URL"] == {
            "secretKeyRef": {"name": "datastorage-db", "key": "url"}
        }
        assert env["DATASTORAGE_DATABASE_READ_URL"] == {
            "secretKeyRef": {"name": "datastorage-db", "key": "read-url"}
        }
        assert env["DATASTORAGE_DLQ_URL"] == {
            "secretKeyRef": {"name": "datastorage-redis", "key": "url"}
        }


def test_bundled_postgresql_with_an_existing_password_secret():
    docs = render(
        None, ("postgresql.auth.existingSecret=pg-creds", "postgresql.auth.existingSecretKey=pw")
    )
    assert not [s for s in objects(docs, "Secret") if s["metadata"]["name"].endswith("-postgresql")]
    volumes = {v["name"]: v for v in deployment_pod(docs)["volumes"]}
    assert volumes["postgresql-password"]["secret"]["secretName"] == "pg-creds"
    assert volumes["postgresql-password"]["secret"]["items"] == [{"key": "pw", "path": "password"}]


# --- DLQ backends ----------------------------------------------------------------------------------


def test_file_dlq_uses_a_volume_one_replica_and_no_redis():
    docs = render(VALUE_SETS["file-dlq"])
    deployment = one(docs, "Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert config["DATASTORAGE_DLQ_URL"] == "file:///var/lib/datastorage/dlq"
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("persistentVolumeClaim"))
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    server = container(pod, "datastorage")
    assert {"name": volume["name"], "mountPath": "/var/lib/datastorage/dlq"} in server[
        "volumeMounts"
    ]
    assert "DATASTORAGE_DLQ_URL" not in env_map(server)
    assert not [s for s in objects(docs, "StatefulSet") if s["metadata"]["name"].endswith("-redis")]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("dlq.backend=file",), "replicaCount=1"),
        (
            ("dlq.backend=file", "replicaCount=1", "autoscaling.enabled=true"),
            "autoscaling.enabled=false",
        ),
        (("postgresql.enabled=false",), "externalDatabase.url"),
        (("redis.enabled=false",), "externalRedis.url"),
        (("config.dbPool.min=30",), "config.dbPool.min"),
        (
            ("autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"),
            "minReplicas",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_message_naming_the_fix(sets, message):
    proc = helm_template(None, sets, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


# --- optional resources ----------------------------------------------------------------------------


def test_optional_resources_are_off_by_default():
    kinds = {d["kind"] for d in render()}
    assert not kinds & {
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceMonitor",
        "PersistentVolumeClaim",
    }
    assert one(render(), "Service", FULLNAME)["spec"]["type"] == "ClusterIP"
    assert one(render(), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_everything_on_renders_hpa_network_policies_service_monitor_and_node_ports():
    docs = render(VALUE_SETS["everything"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in one(docs, "Deployment", FULLNAME)["spec"]

    service = one(docs, "Service", FULLNAME)
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP", "nodePort": 30090}
    ]
    pg_service = one(docs, "Service", f"{FULLNAME}-postgresql")
    assert pg_service["spec"]["ports"][0]["nodePort"] == 30433

    policies = {p["metadata"]["name"]: p for p in objects(docs, "NetworkPolicy")}
    assert set(policies) == {
        FULLNAME,
        f"{FULLNAME}-postgresql",
        f"{FULLNAME}-redis",
        f"{FULLNAME}-migrate",
    }
    # The migration Job serves nothing: its policy admits no ingress at all.
    migrate_policy = policies[f"{FULLNAME}-migrate"]["spec"]
    assert migrate_policy["policyTypes"] == ["Ingress"] and "ingress" not in migrate_policy
    assert (
        migrate_policy["podSelector"]["matchLabels"].items()
        <= one(docs, "Job")["spec"]["template"]["metadata"]["labels"].items()
    )
    api_rules = policies[FULLNAME]["spec"]["ingress"]
    assert api_rules[0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kubernaut-system"
    }
    # Only pods labelled as clients (the API pods and the migration Job) reach the databases.
    client_label = policies[f"{FULLNAME}-postgresql"]["spec"]["ingress"][0]["from"][0][
        "podSelector"
    ]["matchLabels"]
    server_labels = one(docs, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    job_labels = one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert client_label.items() <= server_labels.items()
    assert client_label.items() <= job_labels.items()

    assert one(docs, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": one(docs, "Deployment", FULLNAME)["spec"]["selector"],
    }
    assert deployment_pod(docs)["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert one(docs, "ConfigMap", FULLNAME)["data"]["DATASTORAGE_COUNT_LIMIT"] == "20000"


def test_service_monitor_scrapes_both_metrics_ports():
    docs = render(VALUE_SETS["everything"])
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    metrics_service = one(docs, "Service", f"{FULLNAME}-metrics")
    assert metrics_service["spec"]["type"] == "ClusterIP"
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= metrics_service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    ports = {p["name"]: p for p in metrics_service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == set(ports)
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    container_ports = {
        p["name"]: p["containerPort"]
        for c in deployment_pod(docs)["containers"]
        for p in c["ports"]
    }
    assert {container_ports[p["targetPort"]] for p in ports.values()} == {8080, 8081}


def test_service_type_and_node_port_are_configurable():
    docs = render(None, ("service.type=NodePort", "service.nodePort=31234"))
    assert one(docs, "Service", FULLNAME)["spec"]["ports"][0]["nodePort"] == 31234
    docs = render(None, ("service.type=NodePort",))
    assert "nodePort" not in one(docs, "Service", FULLNAME)["spec"]["ports"][0]


# --- values.schema.json ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        ("--set", "replicaCount=two"),
        ("--set", "replicaCount=0"),
        ("--set", "dlq.backend=kafka"),
        ("--set", "unknownKey=1"),
        ("--set", "config.logLevel=verbose"),
        ("--set", "config.server=gunicorn"),
        ("--set", "service.type=Ingress"),
        ("--set", "service.nodePort=80"),
        ("--set", "image.pullPolicy=Sometimes"),
        ("--set", "postgresql.persistence.size=lots"),
        ("--set", "redis.auth.password=with@sign"),
        ("--set", "shutdownDelay=-1"),
        ("--set", "config.extraEnv.NOT_OURS=x"),
        ("--set", "externalDatabase.url=mysql://x"),
        ("--set", "operator.namespaces[0]=Bad_Namespace"),
    ],
    ids=lambda bad: bad[1],
)
def test_values_schema_rejects_bad_values(bad):
    proc = run([tool("helm"), "template", RELEASE, str(CHART), *bad], check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    key = bad[1].split("=")[0].split(".")[-1].split("[")[0]
    assert key in proc.stderr or "additional properties" in proc.stderr, proc.stderr


def _leaf_paths(value, prefix=()):
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaf_paths(child, (*prefix, key))
    else:
        yield prefix


def _schema_at(schema, path, root):
    node = schema
    for key in path:
        if "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        props = node.get("properties", {})
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def test_values_schema_types_every_value_and_closes_every_object():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    for path in _leaf_paths(values):
        node = _schema_at(schema, path, schema)
        assert node is not None, f"{'.'.join(path)} is not described by values.schema.json"
        assert "type" in node or "$ref" in node, f"{'.'.join(path)} has no type"

    def closed(node, where):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
        for key, child in node.get("properties", {}).items():
            closed(child, f"{where}.{key}")

    closed(schema, "values")


def test_default_values_validate_against_the_schema_with_jsonschema():
    import jsonschema

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(values)


# --- the tamper-evident log -------------------------------------------------------------------


LOG_SETTINGS = (
    "DATASTORAGE_LOG_SIGNING_KEY_FILE",
    "DATASTORAGE_LOG_ORIGIN",
    "DATASTORAGE_LOG_CHECKPOINT_INTERVAL",
    "DATASTORAGE_LOG_PUBLISH_URL",
    "DATASTORAGE_S3_ENDPOINT_URL",
)


def test_the_log_is_off_without_a_signing_key_secret():
    docs = render()
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert not [name for name in LOG_SETTINGS if name in config]
    pod = deployment_pod(docs)
    assert "log-signing-key" not in {v["name"] for v in pod["volumes"]}
    assert not [n for c in pod["containers"] for n in env_map(c) if n.startswith("AWS_")]


def test_the_signing_key_secret_is_mounted_into_the_api_container_only():
    docs = render("everything.yaml")
    config = one(docs, "ConfigMap", FULLNAME)["data"]
    assert config["DATASTORAGE_LOG_SIGNING_KEY_FILE"] == "/etc/datastorage/log/signing.key"
    assert config["DATASTORAGE_LOG_ORIGIN"] == "audit.example.com/prod"
    assert config["DATASTORAGE_LOG_CHECKPOINT_INTERVAL"] == "5"
    assert config["DATASTORAGE_LOG_PUBLISH_URL"] == "s3://audit-checkpoints/prod"
    assert config["DATASTORAGE_S3_ENDPOINT_URL"] == "http://minio.storage:9000"
    pod = deployment_pod(docs)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "log-signing-key"]
    assert volume["secret"] == {
        "secretName": "datastorage-log-key",
        "defaultMode": 0o440,
        "items": [{"key": "signing.key", "path": "signing.key"}],
    }
    api, operator = container(pod, "datastorage"), container(pod, "operator")
    (mount,) = [m for m in api["volumeMounts"] if m["name"] == "log-signing-key"]
    assert mount == {
        "name": "log-signing-key",
        "mountPath": "/etc/datastorage/log",
        "readOnly": True,
    }
    assert "log-signing-key" not in {m["name"] for m in operator["volumeMounts"]}
    env = env_map(api)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name] == {"secretKeyRef": {"name": "checkpoint-bucket", "key": name}}
    assert env["AWS_REGION"]["secretKeyRef"]["optional"] is True
    assert not [n for n in env_map(operator) if n.startswith("AWS_")]


@pytest.mark.parametrize(
    "bad",
    [
        "log.publishUrl=http://example.com/x",
        "log.origin=has space",
        "log.checkpointInterval=0",
        "log.signingKey.existingSecretKey=",
    ],
)
def test_log_values_are_checked_by_the_schema(bad):
    failed = helm_template(None, (bad,), check=False)
    assert failed.returncode != 0 and "log" in failed.stderr, failed.stderr
