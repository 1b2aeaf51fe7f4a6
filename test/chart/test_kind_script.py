"""hack/kind-e2e.sh decisions, tested without a cluster or a container engine.

kind, kubectl, helm, docker, podman and the test command are stubs that record their arguments
(script_stubs.py). The scenarios: Docker path (NodePort host mappings 28090/25433), Podman path
(kubectl port-forward on the first free 28090+100n / 25433+100n), cluster kept on failure and
deleted on success, and a clear failure when no container engine works.
"""

from __future__ import annotations

import pytest
import yaml
from chart_helpers import REPO
from script_stubs import StubBin, host_port_lock, listening_on, port_in_use

ALL_TOOLS = ("kind", "kubectl", "helm", "docker", "podman")
CLUSTER = "datastorage-e2e"


@pytest.fixture()
def stubs(tmp_path):
    return StubBin(tmp_path, ALL_TOOLS)


@pytest.fixture()
def free_default_ports():
    with host_port_lock():
        if port_in_use(28090) or port_in_use(25433):
            pytest.skip("28090/25433 are in use on this machine")
        yield


def helm_install_call(stubs):
    [call] = [c for c in stubs.calls_of("helm") if c.startswith("helm upgrade --install")]
    return call


def test_docker_path_uses_the_node_port_host_mappings(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", STUB_PODMAN_INFO_RC="1")
    assert proc.returncode == 0, proc.stderr

    config = yaml.safe_load(stubs.read("kind-config.yaml"))
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    mappings = {
        (m["containerPort"], m["hostPort"]) for m in config["nodes"][0]["extraPortMappings"]
    }
    assert mappings == {(30090, 28090), (30433, 25433)}

    install = helm_install_call(stubs)
    for flag in (
        "--wait",
        "service.type=NodePort",
        "service.nodePort=30090",
        "postgresql.service.type=NodePort",
        "postgresql.service.nodePort=30433",
        "image.pullPolicy=Never",
        f"{REPO}/chart",
    ):
        assert flag in install, flag
    assert not [c for c in stubs.calls_of("kubectl") if "port-forward" in c]

    env = stubs.pytest_env()
    assert env["DATASTORAGE_URL"] == "http://127.0.0.1:28090"
    assert (
        env["DATABASE_URL"]
        == "postgresql://datastorage:datastorage-e2e@127.0.0.1:25433/datastorage"
    )
    assert env["KUBECONFIG"].endswith("/kubeconfig")
    assert env["PWD"] == str(REPO)

    docker = stubs.calls_of("docker")
    assert any(c.startswith("docker build") for c in docker)
    assert any(c.startswith("docker save") for c in docker)
    assert any(
        c.startswith("kind load image-archive") and CLUSTER in c for c in stubs.calls_of("kind")
    )
    assert not stubs.calls_of("podman") or stubs.calls_of("podman") == ["podman info"]
    assert stubs.read("kind-provider.log").strip() == ""  # no podman provider
    assert f"kind delete cluster --name {CLUSTER}" in stubs.calls


def test_podman_path_port_forwards_on_the_first_free_ports(stubs):
    with host_port_lock():
        if port_in_use(28190) or port_in_use(25533):
            pytest.skip("28190/25533 are in use on this machine")
        with listening_on(28090):
            proc = stubs.run("kind-e2e.sh", STUB_DOCKER_INFO_RC="1", STUB_RUN_OUTAGE="1")
    assert proc.returncode == 0, proc.stderr

    assert set(stubs.read("kind-provider.log").split()) == {"podman"}
    config = yaml.safe_load(stubs.read("kind-config.yaml"))
    assert "extraPortMappings" not in config["nodes"][0]  # the podman provider ignores them
    forwards = [c for c in stubs.calls_of("kubectl") if "port-forward" in c]
    api = [c for c in forwards if "service/datastorage " in c]
    postgresql = [c for c in forwards if "service/datastorage-postgresql " in c]
    assert api and all(c.endswith("28190:8080") for c in api)
    assert postgresql and all(c.endswith("25533:5432") for c in postgresql)
    assert all("--address 127.0.0.1" in c for c in forwards)
    # E2E_DB_START replaced the PostgreSQL forward (bound to the stopped pod) with a new one.
    assert len(postgresql) == 2 and len(api) == 1

    env = stubs.pytest_env()
    assert env["DATASTORAGE_URL"] == "http://127.0.0.1:28190"
    assert env["DATABASE_URL"].endswith("@127.0.0.1:25533/datastorage")
    assert any(c.startswith("podman build") for c in stubs.calls_of("podman"))
    assert any(c.startswith("podman save") for c in stubs.calls_of("podman"))
    assert not [c for c in stubs.calls_of("docker") if c != "docker info"]
    assert "service.type=NodePort" in helm_install_call(stubs)
    assert f"kind delete cluster --name {CLUSTER}" in stubs.calls


def test_explicit_podman_provider_is_honoured(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", KIND_EXPERIMENTAL_PROVIDER="podman")
    assert proc.returncode == 0, proc.stderr
    assert "docker info" not in stubs.calls
    assert [c for c in stubs.calls_of("kubectl") if "port-forward" in c]


def test_cluster_is_kept_when_a_test_fails(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", STUB_PYTEST_RC="3")
    assert proc.returncode == 3
    assert not [c for c in stubs.calls if c.startswith("kind delete")]
    assert "kept" in proc.stderr
    assert f"kind delete cluster --name {CLUSTER}" in proc.stderr  # how to clean up later
    assert "export KUBECONFIG=" in proc.stderr
    assert any("get pods" in c for c in stubs.calls_of("kubectl"))  # diagnostics


def test_cluster_is_kept_when_the_install_fails(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", STUB_HELM_RC="1")
    assert proc.returncode != 0
    assert not (stubs.dir / "pytest-env.txt").exists()
    assert not [c for c in stubs.calls if c.startswith("kind delete")]


def test_keep_cluster_keeps_it_after_success(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", KEEP_CLUSTER="1")
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in stubs.calls if c.startswith("kind delete")]
    assert "KEEP_CLUSTER=1" in proc.stderr


def test_a_leftover_cluster_is_replaced(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", STUB_KIND_CLUSTERS=f"other {CLUSTER}")
    assert proc.returncode == 0, proc.stderr
    kind = stubs.calls_of("kind")
    first_delete = kind.index(f"kind delete cluster --name {CLUSTER}")
    create = next(i for i, c in enumerate(kind) if c.startswith("kind create cluster"))
    assert first_delete < create


def test_arguments_reach_the_test_command(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", "-k", "smoke", "-x")
    assert proc.returncode == 0, proc.stderr
    assert stubs.pytest_env()["ARGS"] == "-k smoke -x"


def test_fails_clearly_when_no_container_engine_is_installed(tmp_path):
    stubs = StubBin(tmp_path, ("kind", "kubectl", "helm"))
    proc = stubs.run("kind-e2e.sh")
    assert proc.returncode != 0
    assert "no working container engine" in proc.stderr
    assert "docker is not installed" in proc.stderr and "podman is not installed" in proc.stderr
    assert "make e2e-local" in proc.stderr
    assert not stubs.calls_of("kind")


def test_fails_clearly_when_docker_has_no_engine_and_podman_is_missing(tmp_path):
    stubs = StubBin(tmp_path, ("kind", "kubectl", "helm", "docker"))
    proc = stubs.run("kind-e2e.sh", STUB_DOCKER_INFO_RC="1")
    assert proc.returncode != 0
    assert "no Docker engine answers" in proc.stderr
    assert "podman is not installed" in proc.stderr
    assert not [c for c in stubs.calls if c.startswith("kind create")]


def test_fails_clearly_when_kind_is_missing(tmp_path):
    stubs = StubBin(tmp_path, ("kubectl", "helm", "docker"))
    proc = stubs.run("kind-e2e.sh")
    assert proc.returncode != 0
    assert "kind is not on PATH" in proc.stderr


def test_outage_commands_scale_the_bundled_postgresql(stubs, free_default_ports):
    proc = stubs.run("kind-e2e.sh", STUB_RUN_OUTAGE="1")
    assert proc.returncode == 0, proc.stderr
    env = stubs.pytest_env()
    assert env["E2E_DB_STOP"].startswith("bash ") and env["E2E_DB_START"].startswith("bash ")
    kubectl = stubs.calls_of("kubectl")
    stop = "kubectl -n datastorage-e2e scale statefulset/datastorage-postgresql --replicas=0"
    start = "kubectl -n datastorage-e2e scale statefulset/datastorage-postgresql --replicas=1"
    assert kubectl.index(stop) < kubectl.index(start)
    assert any("wait --for=delete pod/datastorage-postgresql-0" in c for c in kubectl)
    assert any("rollout status statefulset/datastorage-postgresql" in c for c in kubectl)
