"""Fixtures of the operator suite: the kmock Kubernetes emulator and `datastorage operator`, both
as subprocesses on loopback, a migrated database of their own, and `kubernetes` API clients.

The operator runs exactly as in a pod (`python -m datastorage operator --namespace default`),
configured through environment variables; the tests drive it through the Kubernetes API and
check the catalog with SQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from kubernetes import client, config
from support import REPO, eventually, free_port, run_migrations, terminate

HERE = Path(__file__).resolve().parent
NAMESPACE = "default"
RESYNC_INTERVAL = 2.0  # seconds: short, so a test can watch a resync happen
WATCH_STARTED = "Starting the watch-stream for remediationworkflows"


class KubeEmulator:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "kmock.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "kmock_server.py"), str(self.port)],
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        self.kubeconfig = log_dir / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f'clusters: [{{name: kmock, cluster: {{server: "{self.url}"}}}}]\n'
            "users: [{name: anon, user: {}}]\n"
            f"contexts: [{{name: kmock, context: {{cluster: kmock, user: anon, "
            f"namespace: {NAMESPACE}}}}}]\n"
            "current-context: kmock\n"
        )

        def up() -> None:
            assert self.proc.poll() is None, self.log_path.read_text()
            httpx.get(self.url + "/version", timeout=1).raise_for_status()

        eventually(up, timeout=20)

    def stop(self) -> None:
        terminate(self.proc)


class OperatorProcess:
    """`python -m datastorage operator --namespace default` with its log in a file."""

    def __init__(self, env: dict[str, str], log_dir: Path, wait_for_watch: bool = True) -> None:
        self.wait_for_watch = wait_for_watch  # a standby peer does not watch until it takes over
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.env = {
            **os.environ,
            "DATASTORAGE_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "DATASTORAGE_OPERATOR_HEALTH_PORT": str(self.health_port),
            "DATASTORAGE_OPERATOR_RESYNC_INTERVAL": str(RESYNC_INTERVAL),
            "DATASTORAGE_LOG_FORMAT": "console",
            # kopf reports the start of its watch at DEBUG only.
            "DATASTORAGE_LOG_LEVEL": "DEBUG",
            **env,
        }
        self.log_path = log_dir / "operator.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datastorage", "operator", "--namespace", NAMESPACE],
            env=self.env,
            cwd=REPO,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
        )

        def watching() -> None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited {self.proc.returncode}: {self.log()}")
            if self.wait_for_watch:
                assert WATCH_STARTED in self.log(since_start=True)
            httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).raise_for_status()

        eventually(watching, timeout=30)

    def log(self, since_start: bool = False) -> str:
        text = self.log_path.read_bytes()
        if since_start:
            text = text[self._log_offset :]
        return text.decode(errors="replace")

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        wanted = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        )
        for line in self.metrics().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    emulator = KubeEmulator(tmp_path_factory.mktemp("kmock"))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def operator_database_url(pg_server):
    """A migrated database of the operator suite alone (its catalog counts are exact)."""
    url = pg_server.create_database(f"op_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}")
    run_migrations(url)
    return url


@pytest.fixture(scope="session")
def operator(kube, operator_database_url, tmp_path_factory):
    proc = OperatorProcess(
        {"KUBECONFIG": str(kube.kubeconfig), "DATASTORAGE_DATABASE_URL": operator_database_url},
        tmp_path_factory.mktemp("operator"),
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def api_client(kube):
    api = config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield api
    api.close()


@pytest.fixture()
def custom_api(api_client, operator):
    return client.CustomObjectsApi(api_client)


@pytest.fixture()
def core_api(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture()
def catalog_db(operator_database_url):
    with psycopg.connect(operator_database_url, autocommit=True) as conn:
        yield conn
