"""Black-box suite: driven only by environment variables, talks HTTP (and kubectl, SQL).

DATASTORAGE_URL (required), DATABASE_URL (SQL proof), KUBECONFIG (custom resources),
E2E_DB_STOP / E2E_DB_START (shell commands that cause and end a database outage; set by
hack/local-stack.sh and hack/kind-e2e.sh), DATASTORAGE_TOKEN (the bearer token every call of
the `http` client carries, when the service authenticates callers; E2E_TOKEN_USER is its
account) and E2E_READER_TOKEN (an account that may only read).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import requests


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("DATASTORAGE_URL"):
        skip = pytest.mark.skip(
            reason="DATASTORAGE_URL is not set: run via make e2e-local or "
            "make e2e, which start the stack"
        )
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def base_url() -> str:
    return os.environ["DATASTORAGE_URL"].rstrip("/")


@pytest.fixture(scope="session")
def http(base_url):
    session = requests.Session()
    token = os.environ.get("DATASTORAGE_TOKEN")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"

    class Client:
        def get(self, path: str, **kw: Any) -> requests.Response:
            return session.get(base_url + path, timeout=30, **kw)

        def post(self, path: str, **kw: Any) -> requests.Response:
            return session.post(base_url + path, timeout=30, **kw)

        def patch(self, path: str, **kw: Any) -> requests.Response:
            return session.patch(base_url + path, timeout=30, **kw)

        def delete(self, path: str, **kw: Any) -> requests.Response:
            return session.delete(base_url + path, timeout=30, **kw)

    return Client()
