"""Real throwaway services for the tests: PostgreSQL, Redis and the DataStorage server.

Every test tier starts what it needs through these helpers; nothing depends on a developer's
running services. As root, PostgreSQL runs as the `postgres` system user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def pg_bin_dir() -> Path:
    if os.environ.get("PGBIN"):
        return Path(os.environ["PGBIN"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        raise RuntimeError("no PostgreSQL binaries: run `make deps` (apt package postgresql)")
    return Path(candidates[0]).parent


def _as_postgres_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory on a loopback port."""

    def __init__(self, durable: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.bin = pg_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="ds-pg-"))
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if not durable:
            # No fsync (fast), but commits still reach the OS before they are acknowledged:
            # the fault tests kill PostgreSQL, not the machine, so nothing committed is lost.
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self.options = " ".join(options + list(extra))
        subprocess.run(
            _as_postgres_user(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start_command(self) -> list[str]:
        pg_ctl = str(self.bin / "pg_ctl")
        log = str(self.root / "log")
        return _as_postgres_user(
            [pg_ctl, "-D", str(self.data), "-l", log, "-w", "-o", self.options, "start"]
        )

    def stop_command(self, mode: str = "immediate") -> list[str]:
        return _as_postgres_user(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"]
        )

    def start(self) -> None:
        subprocess.run(self.start_command(), check=True, stdout=subprocess.DEVNULL)

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(
            self.stop_command(mode),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

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
    """`datastorage serve` as a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], log_dir: Path, args: tuple[str, ...] = ()) -> None:
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
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datastorage", "serve", *self.args],
            env=self.env,
            cwd=REPO,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
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
    import datetime as dt

    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_seconds)
    return moment.isoformat().replace("+00:00", "Z")


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid audit event request body; overrides replace fields (None removes one)."""
    import uuid

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
    import uuid

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
