"""Session fixtures shared by every tier: a throwaway PostgreSQL and Redis per xdist worker.

Test modules import helpers with `import support` (this directory is on sys.path because it
holds this conftest; there is deliberately no `test/__init__.py`, which would shadow the
standard library's `test` package).
"""

from __future__ import annotations

import os

import psycopg
import pytest
from support import PgBouncerServer, PostgresServer, RedisServer, ServerProcess, run_migrations

# The routes from the API server to this worker's PostgreSQL a test can ask for: modules
# marked `pgbouncer_too` run their `api` tests over both (docs/scaling.md: the service works through
# PgBouncer in transaction mode).
DATABASE_ROUTES = ("direct", "pgbouncer")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("pgbouncer_too") and (
        "api" in metafunc.fixturenames or "server" in metafunc.fixturenames
    ):
        metafunc.parametrize("database_route", DATABASE_ROUTES, indirect=True, scope="session")


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0")


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def database_url(pg_server):
    """A migrated database owned by this worker."""
    url = pg_server.create_database(f"ds_{_worker()}")
    run_migrations(url)
    return url


@pytest.fixture(scope="session")
def database_route(request) -> str:
    """How `server` reaches the database: direct unless parametrised (`pgbouncer_too`)."""
    return getattr(request, "param", "direct")


@pytest.fixture(scope="session")
def pgbouncer(pg_server):
    """PgBouncer in transaction mode in front of this worker's PostgreSQL."""
    bouncer = PgBouncerServer(pg_server)
    yield bouncer
    bouncer.destroy()


@pytest.fixture()
def db(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def database():
    """A PostgreSQL server of this test's own, which it may stop and start, and the URL of a
    migrated database on it."""
    pg = PostgresServer()
    url = pg.create_database("outage")
    run_migrations(url)
    yield pg, url
    pg.destroy()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def server(database_url, database_route, request, tmp_path_factory):
    """`datastorage serve` under Hypercorn against this worker's database, directly or through
    PgBouncer (`database_route`)."""
    env = {"DATASTORAGE_DATABASE_URL": database_url}
    if database_route == "pgbouncer":
        bouncer = request.getfixturevalue("pgbouncer")
        env = {
            "DATASTORAGE_DATABASE_URL": bouncer.url_for(database_url.rsplit("/", 1)[1]),
            "DATASTORAGE_DATABASE_POOLER": "pgbouncer",
        }
    proc = ServerProcess(env, tmp_path_factory.mktemp("server"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def api(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's standalone S3 server over HTTP on a loopback port, one per test worker."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_env(monkeypatch):
    """Credentials moto accepts, in this process's environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
