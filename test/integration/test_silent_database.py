"""A database host that goes silent (packets dropped, as when a network is cut or a host
vanishes without closing its sockets) must not hang writes for the OS's ~15 minutes: with
`DATASTORAGE_DB_TCP_TIMEOUT` a request on a pooled connection fails within that time and its
event goes to the DLQ (202), and once the host answers again the DLQ replays it.

The silence is real: iptables drops every packet to and from this test's own PostgreSQL port
on loopback, so the kernel retransmits into the void exactly as over a cut network.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import httpx
import psycopg
import pytest
from support import PostgresServer, ServerProcess, eventually, make_event, run_migrations

EVENTS = "/api/v1/audit/events"


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, timeout=30)


def _can_drop_packets() -> str | None:
    """Why packets cannot be dropped here (None: they can)."""
    if shutil.which("iptables") is None:
        return "iptables is not installed"
    # A rule for the discard port, added and removed at once: can rules be changed here?
    probe = ["INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"]
    added = _iptables("-I", *probe)
    if added.returncode != 0:
        return f"iptables cannot change rules here: {added.stderr.strip()}"
    _iptables("-D", *probe)
    return None


class Silence:
    """Drop every loopback packet to or from one TCP port while active."""

    def __init__(self, port: int) -> None:
        self.rules = [
            ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
            ["INPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"],
        ]

    def __enter__(self) -> Silence:
        for rule in self.rules:
            added = _iptables("-I", *rule)
            assert added.returncode == 0, added.stderr
        return self

    def __exit__(self, *exc: object) -> None:
        for rule in self.rules:
            _iptables("-D", *rule)


@pytest.fixture()
def silent_capable_pg():
    reason = _can_drop_packets()
    if reason:
        pytest.skip(reason)
    pg = PostgresServer()
    try:
        yield pg
    finally:
        pg.destroy()


def test_a_write_on_a_silent_connection_goes_to_the_dlq_within_the_tcp_timeout(
    silent_capable_pg, tmp_path
):
    pg = silent_capable_pg
    url = pg.create_database("silent")
    run_migrations(url)
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_DLQ_URL": f"file://{tmp_path / 'spool'}",
            "DATASTORAGE_DB_POOL_TIMEOUT": "2",
            "DATASTORAGE_DB_TCP_TIMEOUT": "3",
        },
        tmp_path,
    )
    correlation = f"silent-{uuid.uuid4().hex[:8]}"
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            first = client.post(EVENTS, json=make_event(correlation_id=correlation))
            assert first.status_code == 201  # the pool's connections are open and in use
            with Silence(pg.port):
                started = time.monotonic()
                during = client.post(EVENTS, json=make_event(correlation_id=correlation))
                waited = time.monotonic() - started
                assert during.status_code == 202, during.text
                # Bounded by the TCP timeout (3 s) plus the pool's own timeout, not by the
                # kernel's retransmissions (minutes). Generous: the machine may be loaded.
                assert waited < 60, waited
            queued = during.json()["event_id"]

            def replayed() -> bool:
                return client.get(f"{EVENTS}/{queued}").status_code == 200

            eventually(replayed, timeout=90)
        with psycopg.connect(url, autocommit=True) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM audit_events WHERE correlation_id = %s", (correlation,)
            ).fetchone()
        assert count == 2
    finally:
        server.stop()


def test_the_backend_probes_a_client_that_may_vanish(database_url):
    """The session's own end probes too (so a vanished client's session ends and its locks,
    the log's leader lock among them, are released): the backend carries the keepalive
    settings derived from the timeout, over TCP."""
    from datastorage.config import load_settings
    from datastorage.store.connect import connect_sync

    env = {"DATASTORAGE_DATABASE_URL": database_url, "DATASTORAGE_DB_TCP_TIMEOUT": "18"}
    with connect_sync(load_settings(env), "keepalive-test") as conn:
        shown = [
            conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        ]
        assert conn.info.get_parameters()["tcp_user_timeout"] == "18000"
    assert shown == ["6", "2", "3"]
