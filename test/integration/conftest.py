"""Fixtures of the integration tier beyond the session-wide ones of `test/conftest.py`: an S3
endpoint (moto's standalone server, reached over HTTP) for checkpoint publication."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server over HTTP, one per test worker."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
