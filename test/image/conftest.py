"""Fixtures of the container smoke test (`make image-test`): the built image, loopback
PostgreSQL (with a password-checked role, like the chart's), Redis and the Kubernetes API
stand-in, and the chart's default render that says how each container is run.

The chart helpers live in test/chart; the kmock emulator process in test/operator.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql
from support import REPO, PostgresServer, RedisServer

sys.path.insert(0, str(REPO / "test" / "chart"))

from chart_helpers import render  # noqa: E402

IMAGE = os.environ.get("DATASTORAGE_IMAGE", "localhost/datastorage:dev")
DB_USER = "datastorage"
DB_NAME = "datastorage"
DB_PASSWORD = "smoke-test-password"


def _load_operator_fixtures():
    spec = importlib.util.spec_from_file_location(
        "operator_fixtures", REPO / "test" / "operator" / "conftest.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def image() -> str:
    podman = shutil.which("podman")
    if not podman:
        pytest.fail("podman is not installed: `make image-test` installs it (make image-deps)")
    found = subprocess.run([podman, "image", "exists", IMAGE], check=False)
    if found.returncode != 0:
        pytest.fail(f"image {IMAGE} not found: build it with `make image`")
    return IMAGE


@pytest.fixture(scope="session")
def chart_objects():
    """The chart's default render: what a plain `helm install` runs."""
    return render()


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL with a `datastorage` role that must give its password (scram), owning the
    `datastorage` database, as the chart's bundled PostgreSQL is set up."""
    server = PostgresServer()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(DB_USER), sql.Literal(DB_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DB_NAME), sql.Identifier(DB_USER)
            )
        )
        hba = server.data / "pg_hba.conf"
        rule = f"host {DB_NAME} {DB_USER} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())  # first match wins
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis():
    server = RedisServer(appendonly=True)
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    emulator = _load_operator_fixtures().KubeEmulator(tmp_path_factory.mktemp("kmock"))
    yield emulator
    emulator.stop()
