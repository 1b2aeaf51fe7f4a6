"""Start the local stack (see local-stack.sh) and run test/e2e against it, or keep it up.

The black-box suite only sees environment variables: DATASTORAGE_URL, DATABASE_URL, KUBECONFIG,
E2E_DB_STOP / E2E_DB_START (the shell commands that cause and end a database outage), and the
bearer tokens it calls with: DATASTORAGE_TOKEN (an account allowed everything, named by
E2E_TOKEN_USER) and E2E_READER_TOKEN (an account that may only read).

The API server authenticates callers (DATASTORAGE_AUTH=kubernetes) against a Kubernetes API
stand-in that answers TokenReviews and SubjectAccessReviews from a table (test/kube_api_standin.py),
reached through a kubeconfig of its own; the operator talks to the kmock emulator.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))

from kube_api_standin import Grant, KubeApiStandin, User  # noqa: E402
from support import (  # noqa: E402
    PostgresServer,
    RedisServer,
    ServerProcess,
    eventually,
    free_port,
    run_migrations,
)

KUBECONFIG_TEMPLATE = """apiVersion: v1
kind: Config
clusters: [{{name: local, cluster: {{server: "{url}"}}}}]
users: [{{name: anon, user: {{}}}}]
contexts: [{{name: local, context: {{cluster: local, user: anon, namespace: default}}}}]
current-context: local
"""

AUDIENCE = "datastorage"
NAMESPACE = "default"
ADMIN = ("e2e-admin-token", f"system:serviceaccount:{NAMESPACE}:e2e-admin")
READER = ("e2e-reader-token", f"system:serviceaccount:{NAMESPACE}:e2e-reader")


def start_auth_api(workdir: Path) -> KubeApiStandin:
    """The stand-in API the server reviews tokens with: an admin account (every permission of
    the API group and GET /metrics) and a read-only one, bound like the chart's ClusterRoles."""
    api = KubeApiStandin().start()
    api.write_kubeconfig(workdir / "auth-kubeconfig", namespace=NAMESPACE)
    groups = (
        "system:authenticated",
        "system:serviceaccounts",
        f"system:serviceaccounts:{NAMESPACE}",
    )
    for token, username in (ADMIN, READER):
        api.add_token(token, User(username, groups=groups, audiences=(AUDIENCE,)))
    api.grant(
        f"user:{ADMIN[1]}",
        Grant(("get", "list", "create", "update", "delete"), ("*",), namespaces=(NAMESPACE,)),
        Grant(("get",), non_resource_urls=("/metrics",)),
    )
    readable = ("auditevents", "notifications", "workflows", "auditlog")
    api.grant(f"user:{READER[1]}", Grant(("get", "list"), readable, namespaces=(NAMESPACE,)))
    return api


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.pg = PostgresServer()
        self.database_url = self.pg.create_database("datastorage")
        run_migrations(self.database_url)
        self.redis = RedisServer(appendonly=True)
        self.auth_api = start_auth_api(workdir)
        self.server = ServerProcess(
            {
                "DATASTORAGE_DATABASE_URL": self.database_url,
                "DATASTORAGE_DLQ_URL": self.redis.url,
                "DATASTORAGE_DB_POOL_TIMEOUT": "2",
                "DATASTORAGE_AUTH": "kubernetes",
                "KUBECONFIG": str(workdir / "auth-kubeconfig"),
                "DATASTORAGE_AUTH_AUDIENCES": AUDIENCE,
            },
            workdir,
        )
        self.kube_url, self.kubeconfig = self._start_kubernetes()
        self._start_operator()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def _start_kubernetes(self) -> tuple[str, str]:
        port = free_port()
        self._spawn(
            "kmock",
            [sys.executable, str(REPO / "test/operator/kmock_server.py"), str(port)],
            dict(os.environ),
        )
        url = f"http://127.0.0.1:{port}"
        import httpx

        eventually(lambda: httpx.get(url + "/version", timeout=1).raise_for_status(), 20)
        kubeconfig = self.workdir / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG_TEMPLATE.format(url=url))
        return url, str(kubeconfig)

    def _start_operator(self) -> None:
        health_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "DATASTORAGE_DATABASE_URL": self.database_url,
            "DATASTORAGE_OPERATOR_METRICS_PORT": str(free_port()),
            "DATASTORAGE_OPERATOR_HEALTH_PORT": str(health_port),
            "DATASTORAGE_LOG_FORMAT": "console",
            "DATASTORAGE_LOG_LEVEL": "DEBUG",  # kopf reports its watch start at DEBUG only
        }
        proc = self._spawn(
            "operator",
            [sys.executable, "-m", "datastorage", "operator", "--namespace", "default"],
            env,
        )
        log = self.workdir / "operator.log"
        import httpx

        def watching() -> None:
            assert proc.poll() is None, log.read_text(errors="replace")
            assert "Starting the watch-stream for remediationworkflows" in log.read_text(
                errors="replace"
            )
            httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=1).raise_for_status()

        eventually(watching, 60)

    def environment(self) -> dict[str, str]:
        return {
            "DATASTORAGE_URL": self.server.url,
            "DATABASE_URL": self.database_url,
            "KUBECONFIG": self.kubeconfig,
            "KUBE_FEATURE_WatchListClient": "false",
            "E2E_DB_STOP": shlex.join(self.pg.stop_command()),
            "E2E_DB_START": shlex.join(self.pg.start_command()),
            "E2E_LOG_DIR": str(self.workdir),
            "DATASTORAGE_TOKEN": ADMIN[0],
            "E2E_TOKEN_USER": ADMIN[1],
            "E2E_READER_TOKEN": READER[0],
        }

    def close(self) -> None:
        self.server.stop()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.auth_api.stop()
        self.redis.destroy()
        self.pg.destroy()


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "test"
    workdir = Path(tempfile.mkdtemp(prefix="ds-local-stack-"))
    stack = Stack(workdir)
    try:
        env = stack.environment()
        if action == "up":
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
            print(f"# logs in {workdir}; Ctrl-C stops the stack", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
        command = [sys.executable, "-m", "pytest", "test/e2e", "-p", "no:kmock", *argv[1:]]
        result = subprocess.run(command, env={**os.environ, **env}, cwd=REPO)
        if result.returncode != 0:
            for name in ("operator.log", f"server-{stack.server.port}.log"):
                path = workdir / name
                if path.exists():
                    print(f"---- {name} (last 60 lines) ----")
                    print("\n".join(path.read_text(errors="replace").splitlines()[-60:]))
        return result.returncode
    finally:
        stack.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
