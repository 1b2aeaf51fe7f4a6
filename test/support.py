"""Real throwaway services for the tests: PostgreSQL, Redis and the DataStorage server.

Every test tier starts what it needs through these helpers; nothing depends on a developer's
running services. PostgreSQL is started through `datastorage.localpg`, the same code as
`datastorage dev` (as root, it runs as the `postgres` system user: initdb refuses root).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from datastorage import localpg
from datastorage.localpg import free_port

REPO = Path(__file__).resolve().parent.parent


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns without AssertionError (or a truthy value)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result is not False:
                return result
            raise AssertionError("condition still false")
        except (AssertionError, OSError, psycopg.Error, httpx.TransportError):
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


def terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; waits for the process either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def pg_bin_dir() -> Path:
    found = Path(os.environ["PGBIN"]) if os.environ.get("PGBIN") else localpg.system_bin_dir()
    if found is None:
        raise RuntimeError("no PostgreSQL binaries: run `make deps` (apt package postgresql)")
    return found


class PostgresServer(localpg.LocalPostgres):
    """A throwaway PostgreSQL cluster in a temporary directory on a loopback port, started;
    `stop()` without a mode is a crash (`immediate`)."""

    def __init__(self, durable: bool = False, extra: tuple[str, ...] = ()) -> None:
        root = Path(tempfile.mkdtemp(prefix="ds-pg-"))
        os.chmod(root, 0o755)
        options = ["-c max_connections=200"]
        if not durable:
            # No fsync (fast), but commits still reach the OS before they are acknowledged:
            # the fault tests kill PostgreSQL, not the machine, so nothing committed is lost.
            options += ["-c fsync=off", "-c full_page_writes=off"]
        super().__init__(
            pg_bin_dir(), root, options=[*options, *extra], stop_mode="immediate", quiet=True
        )
        self.prepare_root()
        self.initdb(sync=False)
        self.start()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    @contextlib.contextmanager
    def migrated_database(self, prefix: str) -> Iterator[str]:
        """A migrated database of its own (unique name per xdist worker), dropped after."""
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        name = f"{prefix}_{worker}_{uuid.uuid4().hex[:8]}"
        url = self.create_database(name)
        run_migrations(url)
        try:
            yield url
        finally:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A redis-server on a loopback port, no persistence unless asked."""

    def __init__(self, appendonly: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ds-redis-"))
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = extra  # more redis-server arguments, e.g. ("--maxmemory", "8mb")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("no redis-server: run `make deps` (apt package redis-server)")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += list(self.extra)
        self.proc = subprocess.Popen(
            args, stdout=open(self.root / "log", "ab"), stderr=subprocess.STDOUT
        )

        def ready() -> None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                assert sock.recv(16).startswith(b"+PONG")

        eventually(ready, timeout=10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def stored_event_counts(database_url: str, correlation_id: str) -> dict[str, int]:
    """event_id → how many rows `audit_events` holds for it, for one correlation id."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id::text, count(*) FROM audit_events WHERE correlation_id = %s "
            "GROUP BY event_id",
            (correlation_id,),
        ).fetchall()
    return dict(rows)


def all_stored_once(database_url: str, correlation_id: str, ids: set[str]) -> None:
    """Every id acknowledged is in `audit_events` exactly once, and nothing else is."""
    counts = stored_event_counts(database_url, correlation_id)
    assert set(counts) == ids, f"{len(ids - set(counts))} of {len(ids)} missing"
    assert set(counts.values()) == {1}


def run_migrations(database_url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "datastorage", "migrate"],
        check=True,
        env={**os.environ, "DATASTORAGE_DATABASE_URL": database_url},
        cwd=REPO,
    )


class ServerProcess:
    """`datastorage serve` as a subprocess on a free loopback port. `own_group`: in a session
    and process group of its own, like a pod (signals to the test's group do not reach it);
    `wait=False`: started, not yet live (`wait_live()`)."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        args: tuple[str, ...] = (),
        *,
        own_group: bool = False,
        wait: bool = True,
    ) -> None:
        self.own_group = own_group
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATASTORAGE_HTTP_HOST": "127.0.0.1",
            "DATASTORAGE_HTTP_PORT": str(self.port),
            "DATASTORAGE_SHUTDOWN_DELAY": "0",
            # One process: the tests send signals to it and read its metrics.
            "DATASTORAGE_WORKERS": "1",
            "DATASTORAGE_LOG_FORMAT": "console",
            **env,
        }
        self.args = args
        self.log_path = log_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.start(wait=wait)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the server's `/metrics` (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10).raise_for_status().text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def start(self, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datastorage", "serve", *self.args],
            env=self.env,
            cwd=REPO,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=self.own_group,
        )
        if wait:
            self.wait_live()

    def wait_live(self, timeout: float = 30.0) -> None:
        def live() -> None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
            httpx.get(self.url + "/health/live", timeout=1).raise_for_status()

        try:
            eventually(live, timeout=timeout)
        except (httpx.HTTPError, AssertionError) as exc:
            raise RuntimeError(f"server did not come up: {self.log()}") from exc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def now_rfc3339(delta_seconds: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_seconds)
    return moment.isoformat().replace("+00:00", "Z")


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid audit event request body; overrides replace fields (None removes one)."""
    event = {
        "version": "1.0",
        "event_type": "gateway.signal.received",
        "event_timestamp": now_rfc3339(),
        "event_category": "gateway",
        "event_action": "received",
        "event_outcome": "success",
        "correlation_id": f"corr-{uuid.uuid4()}",
        "event_data": {"signal": "HighMemory", "replicas": 3},
    }
    for key, value in overrides.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def make_notification(**fields: Any) -> dict[str, Any]:
    """A valid notification-audit request body; fields replace or add fields."""
    body = {
        "remediation_id": f"rem-{uuid.uuid4()}",
        "notification_id": f"n-{uuid.uuid4()}",
        "recipient": "oncall@example.com",
        "channel": "email",
        "message_summary": "Pod restarted",
        "status": "sent",
        "sent_at": now_rfc3339(),
    }
    body.update(fields)
    return body


class PgBouncerServer:
    """Debian's PgBouncer in transaction pooling mode on a loopback port, in front of one
    PostgreSQL server (every database of it, as `postgres`, trust). As root it runs as the
    `postgres` user, like the server."""

    def __init__(self, pg: localpg.LocalPostgres, pool_size: int = 20) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            raise RuntimeError("no pgbouncer: run `make system-deps` (apt package pgbouncer)")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="ds-bouncer-"))
        os.chmod(self.root, 0o777)
        self.port = free_port()
        (self.root / "userlist.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={pg.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root}/userlist.txt\n"
            "pool_mode = transaction\n"
            "max_client_conn = 1000\n"
            f"default_pool_size = {pool_size}\n"
            f"logfile = {self.root}/pgbouncer.log\n"
            "admin_users = postgres\n"
            "stats_period = 1\n"
        )
        self.proc: subprocess.Popen | None = None
        self.start()

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            localpg.as_owner([self.binary, str(self.root / "pgbouncer.ini")]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

        def ready() -> None:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")

        eventually(ready, timeout=15)

    def show(self, what: str) -> list[tuple]:
        """Rows of the admin console's `SHOW <what>` (pools, stats, servers...)."""
        with psycopg.connect(self.url_for("pgbouncer"), autocommit=True) as conn:
            return conn.execute(f"SHOW {what}", prepare=False).fetchall()

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def destroy(self) -> None:
        if self.proc:
            terminate(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


class ReplicaServer(localpg.LocalPostgres):
    """A streaming hot standby of `primary`, made with `pg_basebackup -R` (the primary's default
    pg_hba already trusts replication from 127.0.0.1), started; `stop()` is a crash."""

    def __init__(self, primary: PostgresServer) -> None:
        root = Path(tempfile.mkdtemp(prefix="ds-replica-"))
        os.chmod(root, 0o755)
        super().__init__(
            pg_bin_dir(),
            root,
            options=["-c max_connections=200", "-c fsync=off", "-c hot_standby=on"],
            stop_mode="immediate",
            quiet=True,
        )
        self.prepare_root()
        backup = [
            str(self.bin / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
        ]
        subprocess.run(localpg.as_owner(backup), check=True, stdout=subprocess.DEVNULL)
        self.start()

    def execute(self, statement: str, dbname: str = "postgres") -> list[tuple]:
        with psycopg.connect(self.url_for(dbname), autocommit=True) as conn:
            cur = conn.execute(statement, prepare=False)
            return cur.fetchall() if cur.description else []

    def pause_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
