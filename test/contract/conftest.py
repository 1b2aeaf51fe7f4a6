"""The contract tier: one real server (Hypercorn, PostgreSQL, Redis DLQ) per xdist worker.

Every test here talks to it over HTTP only and proves its claims with SQL and the server's
own metrics: `stored_rows()` counts what reached the database, `dlq_enqueued()` what was
ever queued to the DLQ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from support import ServerProcess

from datastorage.ledger.keyfile import keygen

# Every table a request can write to.
TABLES = ("audit_events", "notification_audit", "remediation_workflow_catalog")


@dataclass
class ContractStack:
    server: ServerProcess
    database_url: str
    redis_url: str

    @property
    def url(self) -> str:
        return self.server.url

    def stored_rows(self) -> dict[str, int]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in TABLES
            }

    def metric(self, name: str) -> float:
        """Sum of every sample of one metric family on /metrics."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
        return sum(float(value) for value in pattern.findall(text))

    def dlq_enqueued(self) -> float:
        return self.metric("datastorage_dlq_enqueued_total")


@pytest.fixture(scope="session")
def contract_stack(database_url, redis_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-server")
    keygen("contract.example.com/log", root / "log.key")  # the log on: its endpoints too
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": database_url,
            "DATASTORAGE_DLQ_URL": redis_server.url,
            "DATASTORAGE_LOG_SIGNING_KEY_FILE": str(root / "log.key"),
        },
        root,
    )
    yield ContractStack(server, database_url, redis_server.url)
    server.stop()


@pytest.fixture()
def client(contract_stack):
    with httpx.Client(base_url=contract_stack.url, timeout=30) as http:
        yield http
