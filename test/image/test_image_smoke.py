"""The built image, run the way the chart runs it (`make image-test`).

Each container of the chart's default render -- the migration Job's `migrate`, the
Deployment's `datastorage` (serve) and `operator` -- is started with podman using the flags
`pod_runtime` derives from its securityContext and volumes: a non-root UID, read-only root
filesystem (and no podman-added tmpfs), all capabilities dropped, no-new-privileges, and only
the chart's volumes mounted (emptyDirs as tmpfs, the PostgreSQL password Secret as a read-only
file). Host networking reaches the loopback PostgreSQL, Redis and Kubernetes API stand-in.
Settings come from the chart's ConfigMap and container env; only addresses, ports and the
stand-ins' credentials are replaced.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import yaml
from chart_helpers import container, env_map, one, pod_templates
from conftest import DB_NAME, DB_PASSWORD, DB_USER
from kube_api_standin import Grant, KubeApiStandin, User
from pod_runtime import SERVICE_ACCOUNT_DIR, ContainerRuntime, container_runtime
from support import REPO, eventually, free_port, make_event

pytestmark = pytest.mark.xdist_group("image")

NAMESPACE = "kubernaut-system"  # the release namespace of chart_helpers.render()
PASSWORD_VOLUME = "postgresql-password"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    podman_bin = shutil.which("podman")
    assert podman_bin
    proc = subprocess.run(
        [podman_bin, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


class Container:
    """One chart container run under podman, detached, removed at the end."""

    def __init__(
        self,
        image: str,
        pod_spec: dict[str, Any],
        name: str,
        env: dict[str, str],
        contents: dict[str, dict[str, str]],
        workdir: Path,
        args: list[str],
    ) -> None:
        self.runtime: ContainerRuntime = container_runtime(pod_spec, name)
        sources = self.runtime.prepare(workdir / name, contents)
        self.flags = self.runtime.flags(sources)
        self.name = f"ds-smoke-{name}-{uuid.uuid4().hex[:8]}"
        spec = container(pod_spec, name)
        assert spec["command"] == ["datastorage"]
        environment = [f"--env={key}={value}" for key, value in sorted(env.items())]
        podman(
            "run",
            "--detach",
            f"--name={self.name}",
            "--network=host",
            *self.flags,
            *environment,
            image,
            *args,
        )

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-6000:]

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip()
        return state == "true"

    def wait(self, timeout: float) -> int:
        proc = podman("wait", self.name, timeout=timeout)
        return int(proc.stdout.strip().splitlines()[-1])

    def terminate(self, grace_seconds: float) -> int:
        """SIGTERM, as the kubelet sends it; the exit code within the pod's grace period."""
        podman("kill", "--signal=TERM", self.name)
        return self.wait(timeout=grace_seconds)

    def inspect(self) -> dict[str, Any]:
        return json.loads(podman("inspect", self.name).stdout)[0]

    def changes(self) -> list[str]:
        """Paths changed in the container's own filesystem layer (podman diff)."""
        return [line for line in podman("diff", self.name).stdout.splitlines() if line.strip()]

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", self.name, check=False)


def chart_env(
    chart_objects, spec: dict[str, Any], database_port: int, overrides: dict[str, str]
) -> dict[str, str]:
    """The container's environment as the chart gives it (ConfigMap via envFrom, plain
    values) with the database URL pointed at the loopback server, then `overrides`; Secret
    references are left to the overrides."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        configmap = one(chart_objects, "ConfigMap", source["configMapRef"]["name"])
        env.update(configmap["data"])
    env.update({k: v for k, v in env_map(spec).items() if isinstance(v, str)})
    env["DATASTORAGE_DATABASE_URL"] = loopback_database_url(
        env["DATASTORAGE_DATABASE_URL"], database_port
    )
    env.update(overrides)
    return env


def loopback_database_url(chart_url: str, port: int) -> str:
    """The chart's database URL (user and database kept) pointed at the loopback server."""
    parts = urlsplit(chart_url)
    user = parts.username
    assert (user, parts.path.lstrip("/")) == (DB_USER, DB_NAME), chart_url
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))


def grace_period(pod_spec: dict[str, Any]) -> float:
    return float(pod_spec.get("terminationGracePeriodSeconds", 30))


@pytest.fixture(scope="module")
def pods(chart_objects):
    return dict(pod_templates(chart_objects))


@pytest.fixture(scope="module")
def deployment_pod(pods):
    [pod] = [spec for key, spec in pods.items() if key.startswith("Deployment/")]
    return pod


@pytest.fixture(scope="module")
def secret_contents():
    return {PASSWORD_VOLUME: {"password": DB_PASSWORD}}


@pytest.fixture(scope="module")
def run_container(image, tmp_path_factory, secret_contents):
    started: list[Container] = []
    workdir = tmp_path_factory.mktemp("volumes")

    def start(pod_spec, name, env, args, contents=None):
        box = Container(
            image, pod_spec, name, env, {**secret_contents, **(contents or {})}, workdir, args
        )
        started.append(box)
        return box

    yield start
    for box in started:
        box.remove()


def assert_confined(box: Container) -> None:
    """podman applied the chart's confinement, and nothing was written outside the volumes."""
    host = box.inspect()["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges" in host["SecurityOpt"]
    assert len(host["CapDrop"]) >= 14  # podman lists every default capability for ALL
    assert box.inspect()["Config"]["User"] == f"{box.runtime.user}:{box.runtime.group}"
    # The engine creates the mount points (and their parents); anything else is a write.
    # (/var/run is a link to /run in the image.)
    mount_points = {Path(m.path.replace("/var/run/", "/run/", 1)) for m in box.runtime.mounts}
    mount_points |= {parent for path in mount_points for parent in path.parents}
    writes = [c for c in box.changes() if Path(c.split(" ", 1)[1]) not in mount_points]
    assert writes == []


@pytest.fixture(scope="module")
def migrated(pods, chart_objects, postgres, run_container):
    """`datastorage migrate` run as the chart's migration Job runs it."""
    [pod] = [spec for key, spec in pods.items() if key.startswith("Job/")]
    spec = container(pod, "migrate")
    env = chart_env(chart_objects, spec, postgres.port, {})
    box = run_container(pod, "migrate", env, spec["args"])
    code = box.wait(timeout=300)
    assert code == 0, box.logs()
    assert_confined(box)
    return box.logs()


def test_migrate_applies_the_schema_with_the_mounted_password(migrated, postgres):
    assert "applied" in migrated and "migration(s)" in migrated
    with psycopg.connect(postgres.url_for(DB_NAME)) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert "audit_events" in tables or any(t.startswith("audit_events") for t in tables)
    # The role really needs the password the Secret volume carried.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            f"postgresql://{DB_USER}:wrong@127.0.0.1:{postgres.port}/{DB_NAME}", connect_timeout=5
        ).close()


SMOKE_TOKEN = "image-smoke-token"
SMOKE_USER = f"system:serviceaccount:{NAMESPACE}:smoke"


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """The TokenReview/SubjectAccessReview stand-in the chart's `auth.mode: kubernetes` needs."""
    standin = KubeApiStandin().start()
    standin.add_token(SMOKE_TOKEN, User(SMOKE_USER))
    standin.grant(f"user:{SMOKE_USER}", Grant(verbs=("create", "get"), resources=("auditevents",)))
    standin.kubeconfig = standin.write_kubeconfig(
        tmp_path_factory.mktemp("reviews") / "kubeconfig", NAMESPACE
    )
    yield standin
    standin.stop()


def test_serve_writes_and_reads_an_event_then_stops_on_sigterm(
    migrated, deployment_pod, chart_objects, postgres, redis, reviews, run_container
):
    spec = container(deployment_pod, "datastorage")
    port = free_port()
    env = chart_env(
        chart_objects,
        spec,
        postgres.port,
        {
            "DATASTORAGE_HTTP_HOST": "127.0.0.1",
            "DATASTORAGE_HTTP_PORT": str(port),
            "DATASTORAGE_DLQ_URL": redis.url,
            # As for the operator below: the stand-in speaks plain HTTP, so its kubeconfig
            # takes the place of the service-account credentials, in the same mount.
            "KUBECONFIG": f"{SERVICE_ACCOUNT_DIR}/kubeconfig",
        },
    )
    assert env["DATASTORAGE_AUTH"] == "kubernetes"  # the chart's default, kept here
    box = run_container(
        deployment_pod,
        "datastorage",
        env,
        spec["args"],
        contents={
            "serviceaccount": {
                "kubeconfig": Path(reviews.kubeconfig).read_text(),
                "namespace": NAMESPACE,
            }
        },
    )
    url = f"http://127.0.0.1:{port}"
    token = {"Authorization": f"Bearer {SMOKE_TOKEN}"}

    def ready() -> None:
        assert box.running(), box.logs()
        response = httpx.get(url + "/health/ready", timeout=2)
        assert response.status_code == 200, response.text

    eventually(ready, timeout=90, interval=0.5)
    assert httpx.get(url + "/health/ready").json()["checks"]["dlq"]["status"] == "up"

    body = make_event()
    refused = httpx.post(url + "/api/v1/audit/events", json=body, timeout=10)
    assert refused.status_code == 401, refused.text  # auth is on in the image as charted
    created = httpx.post(url + "/api/v1/audit/events", json=body, headers=token, timeout=10)
    assert created.status_code == 201, created.text
    event_id = created.json()["event_id"]
    fetched = httpx.get(f"{url}/api/v1/audit/events/{event_id}", headers=token, timeout=10)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["correlation_id"] == body["correlation_id"]
    assert fetched.json()["event_data"] == body["event_data"]
    assert fetched.json()["recorded_by"] == SMOKE_USER

    assert_confined(box)
    assert box.terminate(grace_period(deployment_pod)) == 0, box.logs()


def test_operator_reconciles_a_workflow_then_stops_on_sigterm(
    migrated, deployment_pod, chart_objects, postgres, kube, run_container
):
    spec = container(deployment_pod, "operator")
    health_port = free_port()
    env = chart_env(
        chart_objects,
        spec,
        postgres.port,
        {
            "DATASTORAGE_OPERATOR_METRICS_PORT": str(free_port()),
            "DATASTORAGE_OPERATOR_HEALTH_PORT": str(health_port),
            # The stand-in API server speaks plain HTTP, which the in-cluster configuration
            # (https to KUBERNETES_SERVICE_HOST) cannot reach: its kubeconfig takes the place
            # of the service-account credentials, in the same mount.
            "KUBECONFIG": f"{SERVICE_ACCOUNT_DIR}/kubeconfig",
        },
    )
    env.pop("DATASTORAGE_DLQ_URL", None)  # its Redis password comes from a Secret reference
    # One replica here: peering (tested with two operators in test/operator) would wait for a
    # KopfPeering object the chart creates and this stand-in does not hold.
    env.pop("DATASTORAGE_OPERATOR_PEERING", None)
    kubeconfig = Path(kube.kubeconfig).read_text()
    box = run_container(
        deployment_pod,
        "operator",
        env,
        spec["args"],
        contents={"serviceaccount": {"kubeconfig": kubeconfig, "namespace": NAMESPACE}},
    )

    def healthy() -> None:
        assert box.running(), box.logs()
        httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=2).raise_for_status()

    eventually(healthy, timeout=90, interval=0.5)

    sample = yaml.safe_load((REPO / "manifests/samples/restart-pod.yaml").read_text())
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    sample["metadata"] = {"name": name, "namespace": NAMESPACE}
    obj_url = f"{kube.url}/apis/kubernaut.ai/v1alpha1/namespaces/{NAMESPACE}/remediationworkflows"
    created = httpx.post(obj_url, json=sample, timeout=10)
    assert created.status_code in (200, 201), created.text

    def synced() -> dict[str, Any]:
        assert box.running(), box.logs()
        status = httpx.get(f"{obj_url}/{name}", timeout=5).json().get("status", {})
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", status
        return status

    status = eventually(synced, timeout=60, interval=0.5)
    with psycopg.connect(postgres.url_for(DB_NAME)) as conn:
        row = conn.execute(
            "SELECT workflow_name, version FROM remediation_workflow_catalog"
            " WHERE workflow_id = %s",
            (status["workflowId"],),
        ).fetchone()
    assert row == (sample["spec"]["workflowName"], sample["spec"]["version"])

    assert_confined(box)
    assert box.terminate(grace_period(deployment_pod)) == 0, box.logs()
