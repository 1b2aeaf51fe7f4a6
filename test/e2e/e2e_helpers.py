"""Helpers of the black-box suite (plain functions, importable from the test modules)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import support


def env_or_skip(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set by the stack script")
    return value


def run_shell(command: str) -> None:
    subprocess.run(command, shell=True, check=True, timeout=300)


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """support.eventually with the patience a deployed stack needs."""
    return support.eventually(check, timeout=timeout, interval=interval)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def event(**overrides: Any) -> dict[str, Any]:
    body = {
        "version": "1.0",
        "event_type": "gateway.signal.received",
        "event_timestamp": now(),
        "event_category": "gateway",
        "event_action": "received",
        "event_outcome": "success",
        "correlation_id": f"e2e-{uuid.uuid4()}",
        "event_data": {"source": "e2e"},
    }
    body.update(overrides)
    return body
