"""One active operator across replicas (docs/operations.md): two `datastorage operator` processes
peer through a KopfPeering object in the Kubernetes stand-in; only the higher-priority one
reconciles
RemediationWorkflows and runs partition maintenance; killed with SIGKILL, it is replaced by the
other once its peering record expires.
"""

from __future__ import annotations

import os

import httpx
import psycopg
import pytest
from conftest import NAMESPACE, KubeEmulator, OperatorProcess
from kubernetes import client, config
from psycopg.rows import dict_row
from support import eventually, run_migrations
from test_workflow_operator import GROUP, PLURAL, VERSION, _unique, workflow

pytestmark = pytest.mark.xdist_group("operator")

PEERING = "datastorage-test"
LIFETIME = 4  # seconds a dead peer's record stays valid
LAST_SUCCESS = "datastorage_partition_maintenance_last_success_timestamp_seconds"


def reconciles(op: OperatorProcess) -> float:
    return sum(
        float(line.split()[-1])
        for line in op.metrics().splitlines()
        if line.startswith("datastorage_workflow_reconcile_total{")
    )


@pytest.fixture()
def cluster(tmp_path, pg_server):
    url = pg_server.create_database(f"peer_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}")
    run_migrations(url)
    kube = KubeEmulator(tmp_path)
    api_client = config.new_client_from_config(config_file=str(kube.kubeconfig))
    api = client.CustomObjectsApi(api_client)
    api.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        NAMESPACE,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    started: list[OperatorProcess] = []

    def start(priority: int, *, active: bool) -> OperatorProcess:
        log_dir = tmp_path / f"operator-{priority}"
        log_dir.mkdir()
        env = {
            "KUBECONFIG": str(kube.kubeconfig),
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_OPERATOR_PEERING": PEERING,
            "DATASTORAGE_OPERATOR_PRIORITY": str(priority),
            "DATASTORAGE_OPERATOR_PEERING_LIFETIME": str(LIFETIME),
            "DATASTORAGE_PARTITION_MAINTENANCE_INTERVAL": "1",
        }
        op = OperatorProcess(env, log_dir, wait_for_watch=active)
        started.append(op)
        return op

    yield start, api, url
    for op in started:
        op.stop()
    api_client.close()
    kube.stop()


def _create(api, name: str, workflow_name: str) -> None:
    api.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, workflow(name, workflow_name)
    )


def _synced(api, name: str) -> None:
    obj = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    status = obj.get("status") or {}
    assert status.get("observedGeneration") == obj["metadata"]["generation"], status


def _catalog(url: str, names: list[str]) -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT workflow_name FROM remediation_workflow_catalog WHERE workflow_name = ANY(%s)",
            (names,),
        ).fetchall()


def test_one_replica_is_active_and_the_other_takes_over(cluster):
    start, api, url = cluster
    high = start(200, active=True)
    eventually(lambda: _positive(high.metric(LAST_SUCCESS)), timeout=30)
    low = start(100, active=False)
    eventually(lambda: _contains(low.log(), "is standing by"), timeout=30)

    names = [_unique("peer") for _ in range(3)]
    workflow_names = [_unique("wf") for _ in names]
    for name, workflow_name in zip(names, workflow_names, strict=True):
        _create(api, name, workflow_name)
    for name in names:
        eventually(lambda name=name: _synced(api, name), timeout=30)
    assert len(_catalog(url, workflow_names)) == 3
    assert reconciles(high) >= 3
    # The standby reconciled nothing and ran no maintenance pass, while passes ran every second.
    passes_before = high.metric(LAST_SUCCESS)
    eventually(lambda: _positive(high.metric(LAST_SUCCESS) - passes_before), timeout=30)
    assert reconciles(low) == 0
    assert low.metric(LAST_SUCCESS) == 0

    high.proc.kill()
    high.proc.wait(10)
    # Taken over once the dead peer's record expires (LIFETIME) plus a check or two.
    eventually(lambda: _contains(low.log(), "is the active replica"), timeout=8 * LIFETIME)
    late = _unique("late")
    late_workflow = _unique("wf")
    _create(api, late, late_workflow)
    eventually(lambda: _synced(api, late), timeout=30)
    assert reconciles(low) >= 1
    assert len(_catalog(url, [late_workflow])) == 1
    eventually(lambda: _positive(low.metric(LAST_SUCCESS)), timeout=8 * LIFETIME)
    assert "is the active replica" in low.log()
    httpx.get(f"http://127.0.0.1:{low.health_port}/healthz", timeout=5).raise_for_status()


def _positive(value: float) -> None:
    assert value > 0


def _contains(text: str, part: str) -> None:
    assert part in text, text[-3000:]
