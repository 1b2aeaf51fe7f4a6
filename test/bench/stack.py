"""What the benchmark runs against: its own durable PostgreSQL, Redis, and server processes.

Everything is started through test/support.py (the same helpers as the integration tests) and
registered with `Stack`, whose `close()` stops it all in reverse order; run.py calls it on
exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # test/: support

import httpx  # noqa: E402
import psycopg  # noqa: E402
import support  # noqa: E402
from kube_api_standin import Grant, KubeApiStandin, User  # noqa: E402

from datastorage.config import load_settings  # noqa: E402

BENCH_DATABASE = "bench"
# The bearer token of the load clients when the server authenticates (a writer account).
BENCH_TOKEN = "bench-writer-token"
BENCH_WRITER = "system:serviceaccount:bench:writer"


class Stack:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.pg: support.PostgresServer | None = None
        self.redis: support.RedisServer | None = None
        self.pgbouncer: support.PgBouncerServer | None = None
        self.database_url = ""
        self._servers: list[support.ServerProcess] = []
        self.auth_api: KubeApiStandin | None = None

    # -- PostgreSQL ------------------------------------------------------------------------

    def start_postgres(self) -> None:
        """fsync and synchronous_commit on (PostgreSQL defaults), like production."""
        self.pg = support.PostgresServer(durable=True)
        self.database_url = self.pg.create_database(BENCH_DATABASE)
        with _stdout_to_stderr():  # stdout carries only the table
            support.run_migrations(self.database_url)

    @property
    def postgres_pid(self) -> int | None:
        if self.pg is None:
            return None
        try:
            return int((self.pg.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @staticmethod
    def pg_tool(name: str) -> str:
        """A PostgreSQL client program of the same installation (pgbench, psql, ...)."""
        return str(support.pg_bin_dir() / name)

    def ensure_postgres_running(self) -> None:
        """After an outage scenario, whatever happened: PostgreSQL is up again."""
        if self.pg is None:
            return
        if not self.pg.running():
            self.pg.start()

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True, options="-c TimeZone=UTC")

    def reset_events(self) -> None:
        """Empty audit_events (all partitions) and checkpoint, so a scenario starts clean and
        no checkpoint left over from the previous one lands inside its window."""
        with self.connect() as conn:
            conn.execute("TRUNCATE audit_events")
            conn.execute("CHECKPOINT")

    def settings(self) -> dict[str, str]:
        names = (
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_level",
            "shared_buffers",
            "max_connections",
            "max_wal_size",
            "checkpoint_timeout",
            "work_mem",
            "jit",
        )
        with self.connect() as conn:
            return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}

    def route_through_pgbouncer(self) -> None:
        """Servers started from now on reach PostgreSQL through PgBouncer in transaction mode
        (as many server connections as the raw baselines use); the baselines stay direct."""
        assert self.pg is not None
        self.pgbouncer = support.PgBouncerServer(self.pg, pool_size=25)

    # -- Redis -----------------------------------------------------------------------------

    def start_redis(self) -> support.RedisServer:
        if self.redis is None:
            # AOF with fsync on every write, as the Helm chart runs it.
            self.redis = support.RedisServer(appendonly=True)
        return self.redis

    # -- authentication --------------------------------------------------------------------

    def auth_env(self) -> dict[str, str]:
        """Server settings that review every request with a Kubernetes API stand-in (over
        HTTP, through a kubeconfig) in which BENCH_TOKEN may write audit events."""
        if self.auth_api is None:
            api = KubeApiStandin().start()
            api.add_token(BENCH_TOKEN, User(BENCH_WRITER))
            api.grant(f"user:{BENCH_WRITER}", Grant(("create",), ("auditevents",)))
            api.write_kubeconfig(self.log_dir / "auth-kubeconfig")
            self.auth_api = api
        return {
            "DATASTORAGE_AUTH": "kubernetes",
            "KUBECONFIG": str(self.log_dir / "auth-kubeconfig"),
        }

    # -- servers ---------------------------------------------------------------------------

    def start_server(
        self,
        server: str = "hypercorn",
        workers: int | None = None,
        *,
        own_group: bool = False,
        **env: str,
    ) -> support.ServerProcess:
        """A server process (`own_group`: in a process group of its own, like a pod)."""
        # Always explicit: support.ServerProcess pins the tests' servers to one process, and
        # the bench measures the server's own default (one worker per CPU) unless told.
        args = ["--server", server, "--workers", str(workers or load_settings().workers)]
        database = {"DATASTORAGE_DATABASE_URL": self.database_url}
        if self.pgbouncer is not None:
            database = {
                "DATASTORAGE_DATABASE_URL": self.pgbouncer.url_for(BENCH_DATABASE),
                "DATASTORAGE_DATABASE_POOLER": "pgbouncer",
            }
        process = support.ServerProcess(
            {**database, **env}, self.log_dir, tuple(args), own_group=own_group
        )
        self._servers.append(process)
        _wait_ready(process.url)
        return process

    def stop_server(self, process: support.ServerProcess) -> None:
        process.stop()
        with contextlib.suppress(ValueError):
            self._servers.remove(process)

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        for process in reversed(self._servers):
            with contextlib.suppress(Exception):
                process.stop()
        self._servers.clear()
        if self.auth_api is not None:
            with contextlib.suppress(Exception):
                self.auth_api.stop()
            self.auth_api = None
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.destroy()
            self.redis = None
        if self.pgbouncer is not None:
            with contextlib.suppress(Exception):
                self.pgbouncer.destroy()
            self.pgbouncer = None
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.destroy()
            self.pg = None


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server at {url} not ready within {timeout:.0f} s")
        time.sleep(0.1)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what children print to stdout (the migrate command's summary) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
