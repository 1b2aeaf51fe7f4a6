"""Scale (docs/scaling.md) with real components: a streaming read replica made by `pg_basebackup
-R`, PgBouncer in transaction mode, and two API server processes on one database.

The replica tests read PostgreSQL's own statistics on the replica to show who answered, and
cause the faults for real: replay paused with `pg_wal_replay_pause()`, the replica crashed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from support import (
    PostgresServer,
    ReplicaServer,
    ServerProcess,
    all_stored_once,
    eventually,
    make_event,
    make_notification,
    run_migrations,
)

from datastorage.config import load_settings
from datastorage.operator.maintenance import run_pass
from datastorage.store import partitions
from datastorage.store.connect import SessionRequired

EVENTS = "/api/v1/audit/events"
NOTIFICATIONS = "/api/v1/audit/notifications"
READS = "datastorage_db_reads_total"
MAX_LAG = 1.0  # seconds: short, so the tests see the bound crossed quickly

# The replica tests share one primary, replica and server: keep them on one xdist worker.
on_the_replica_stack = pytest.mark.xdist_group("replica-stack")


# ---- a primary with a streaming replica, and a server reading from it -----------------------


class ReplicatedStack:
    def __init__(self, log_dir: Path) -> None:
        self.primary = PostgresServer()
        self.url = self.primary.create_database("scaled")
        run_migrations(self.url)
        self.replica = ReplicaServer(self.primary)
        self.server = ServerProcess(
            {
                "DATASTORAGE_DATABASE_URL": self.url,
                "DATASTORAGE_DATABASE_READ_URL": self.replica.url_for("scaled"),
                "DATASTORAGE_READ_MAX_LAG": str(MAX_LAG),
            },
            log_dir,
        )
        self.api = httpx.Client(base_url=self.server.url, timeout=30)

    def reads(self, target: str) -> float:
        return self.server.metric(READS, target=target)

    def scans(self, on: str, table_like: str) -> int:
        """Sequential plus index scans of the tables named like `table_like` (pg_stat_user_tables
        of the primary or of the replica: each server counts only the queries it ran)."""
        url = self.url if on == "primary" else self.replica.url_for("scaled")
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::bigint "
                "FROM pg_stat_user_tables WHERE relname LIKE %s",
                (table_like,),
            ).fetchone()
        return int(row[0])

    def settled_scans(self, on: str, table_like: str) -> int:
        """`scans` once it stops changing: a backend sends its counts about a second after its
        last query, so two equal readings 1.5 s apart include every query run before."""

        def settled() -> int:
            first = self.scans(on, table_like)
            time.sleep(1.5)
            second = self.scans(on, table_like)
            assert first == second
            return second

        return eventually(settled, timeout=30)

    def wait_until_replica_used(self) -> None:
        """The server reads from the replica again (its lag was measured within the bound)."""
        before = self.reads("replica")

        def used() -> None:
            assert self.api.get(EVENTS, params={"limit": 1}).status_code == 200
            assert self.reads("replica") > before

        eventually(used, timeout=30, interval=0.2)

    def destroy(self) -> None:
        self.api.close()
        self.server.stop()
        self.replica.destroy()
        self.primary.destroy()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[ReplicatedStack]:
    built = ReplicatedStack(tmp_path_factory.mktemp("replicated"))
    yield built
    built.destroy()


def _post(api: httpx.Client, event: dict) -> str:
    response = api.post(EVENTS, json=event)
    assert response.status_code == 201, response.text
    return response.json()["event_id"]


@on_the_replica_stack
def test_lists_are_answered_by_the_replica_by_its_own_statistics(stack):
    correlation = f"corr-{uuid.uuid4()}"
    for _ in range(3):
        _post(stack.api, make_event(correlation_id=correlation))
    remediation = f"rem-{uuid.uuid4()}"
    assert stack.api.post(NOTIFICATIONS, json=make_notification(remediation_id=remediation))
    stack.wait_until_replica_used()

    # The replica has replayed the writes once a list shows them (whoever answered).
    def replayed() -> None:
        data = stack.api.get(EVENTS, params={"correlation_id": correlation}).json()["data"]
        assert len(data) == 3

    eventually(replayed, timeout=15)

    replica_events, primary_events = (
        stack.scans("replica", "audit_events%"),
        stack.scans("primary", "audit_events%"),
    )
    replica_notes = stack.scans("replica", "notification_audit%")
    replica_reads = stack.reads("replica")
    queries = 20
    for _ in range(queries):
        page = stack.api.get(EVENTS, params={"correlation_id": correlation})
        assert page.status_code == 200 and len(page.json()["data"]) == 3
        notes = stack.api.get(NOTIFICATIONS, params={"remediation_id": remediation})
        assert notes.status_code == 200 and len(notes.json()["data"]) == 1, notes.text

    # The replica's own counters grew by the queries (a backend reports its statistics when
    # it goes idle, within a second or so); the primary's did not.
    eventually(lambda: stack.scans("replica", "audit_events%") >= replica_events + queries, 20)
    eventually(lambda: stack.scans("replica", "notification_audit%") >= replica_notes + queries)
    assert stack.scans("primary", "audit_events%") < primary_events + queries
    assert stack.reads("replica") >= replica_reads + 2 * queries


@on_the_replica_stack
def test_get_of_a_just_written_event_is_always_200(stack):
    stack.wait_until_replica_used()
    for _ in range(30):
        event_id = _post(stack.api, make_event())
        response = stack.api.get(f"{EVENTS}/{event_id}")
        assert response.status_code == 200, response.text
        assert response.json()["event_id"] == event_id


@on_the_replica_stack
def test_paused_replay_past_the_bound_reads_the_primary(stack):
    stack.wait_until_replica_used()
    stack.replica.pause_replay()
    try:
        correlation = f"corr-{uuid.uuid4()}"
        event_id = _post(stack.api, make_event(correlation_id=correlation))
        primary_reads = stack.reads("primary")

        # Only the primary has the event: once the lag passes the bound, lists show it.
        def listed() -> None:
            page = stack.api.get(EVENTS, params={"correlation_id": correlation})
            assert page.status_code == 200
            assert [e["event_id"] for e in page.json()["data"]] == [event_id]

        eventually(listed, timeout=15, interval=0.2)
        assert stack.reads("primary") > primary_reads
        replica_events = stack.settled_scans("replica", "audit_events%")
        replica_reads = stack.reads("replica")
        for _ in range(10):
            listed()
        # No list ran on the paused replica meanwhile, by the server's count and the replica's.
        assert stack.replica.execute("SELECT pg_is_wal_replay_paused()") == [(True,)]
        assert stack.reads("replica") == replica_reads
        assert stack.settled_scans("replica", "audit_events%") == replica_events
    finally:
        stack.replica.resume_replay()
    stack.wait_until_replica_used()


@on_the_replica_stack
def test_stopped_replica_costs_clients_nothing(stack):
    stack.wait_until_replica_used()
    correlation = f"corr-{uuid.uuid4()}"
    event_id = _post(stack.api, make_event(correlation_id=correlation))
    stack.replica.stop()  # a crash
    try:
        primary_reads = stack.reads("primary")
        for _ in range(10):
            page = stack.api.get(EVENTS, params={"correlation_id": correlation})
            assert page.status_code == 200, page.text
            assert [e["event_id"] for e in page.json()["data"]] == [event_id]
            one = stack.api.get(f"{EVENTS}/{event_id}")
            assert one.status_code == 200, one.text
            assert stack.api.get(NOTIFICATIONS).status_code == 200
            assert stack.api.get("/api/v1/workflows").status_code == 200
        assert stack.reads("primary") >= primary_reads + 40
        ready = stack.api.get("/health/ready")
        assert ready.status_code == 200, ready.text  # the replica is not a dependency
    finally:
        stack.replica.start()
    stack.wait_until_replica_used()


# ---- PgBouncer -------------------------------------------------------------------------------


def test_traffic_goes_through_pgbouncer(pg_server, pgbouncer, tmp_path):
    """The `pgbouncer_too` modules run through this path; here it is shown from PgBouncer's
    side: its statistics count the server's transactions, and no server session was pinned."""
    dbname = "bounced"
    url = pg_server.create_database(dbname)
    run_migrations(url)
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": pgbouncer.url_for(dbname),
            "DATASTORAGE_DATABASE_POOLER": "pgbouncer",
        },
        tmp_path,
    )
    try:

        def transactions() -> int:
            rows = [r for r in pgbouncer.show("STATS") if r[0] == dbname]
            return int(rows[0][1]) if rows else 0  # total_xact_count

        before = transactions()
        with httpx.Client(base_url=server.url, timeout=30) as api:
            correlation = f"corr-{uuid.uuid4()}"
            ids = {_post(api, make_event(correlation_id=correlation)) for _ in range(20)}
            listed = api.get(EVENTS, params={"correlation_id": correlation, "limit": 100})
            assert {e["event_id"] for e in listed.json()["data"]} == ids
        all_stored_once(url, correlation, ids)
        # Counted per transaction as it ends; poll briefly all the same.
        eventually(lambda: transactions() >= before + 21, timeout=20, interval=0.5)
    finally:
        server.stop()


def test_partition_maintenance_refuses_a_transaction_pooler(pgbouncer):
    settings = load_settings(
        {
            "DATASTORAGE_DATABASE_URL": pgbouncer.url_for("postgres"),
            "DATASTORAGE_DATABASE_POOLER": "pgbouncer",
        }
    )
    with pytest.raises(SessionRequired, match="needs a database session"):
        asyncio.run(run_pass(settings, dry_run=True))


# ---- two API servers (two pods) on one database ----------------------------------------------


def test_two_servers_share_one_database_without_operator_action(pg_server, tmp_path):
    url = pg_server.create_database("two_pods")
    run_migrations(url)  # the current month and 3 ahead
    # Both start together and each ensures 6 months ahead (3 more than migrations made), and
    # events dated 40 days back need last month's (or the one before's) partition, which the
    # write path of both creates on demand while the other writes.
    env = {
        "DATASTORAGE_DATABASE_URL": url,
        "DATASTORAGE_PARTITION_PREMAKE": "6",
        "DATASTORAGE_TIMESTAMP_MAX_AGE": str(60 * 86400),
    }
    pods = [ServerProcess(env, tmp_path, own_group=True, wait=False) for _ in range(2)]
    try:
        for pod in pods:
            pod.wait_live()
        correlation = f"corr-{uuid.uuid4()}"
        old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).isoformat().replace("+00:00", "Z")
        stored: set[str] = set()
        failures: list[str] = []
        lock = threading.Lock()

        def write(pod: ServerProcess) -> None:
            with httpx.Client(base_url=pod.url, timeout=30) as api:
                for i in range(25):
                    stamp = {"event_timestamp": old} if i % 2 else {}
                    response = api.post(
                        EVENTS, json=make_event(correlation_id=correlation, **stamp)
                    )
                    with lock:
                        if response.status_code == 201:
                            stored.add(response.json()["event_id"])
                        else:
                            failures.append(response.text)

        threads = [threading.Thread(target=write, args=(pod,)) for pod in pods for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(stored) == 100
        all_stored_once(url, correlation, stored)
        with psycopg.connect(url) as conn:
            months = {p.month for p in partitions.list_partitions(conn) if p.attached}
        assert set(partitions.window(6)) <= months
        assert partitions.month_of(dt.date.fromisoformat(old[:10])) in months
        for pod in pods:
            assert "could not ensure partitions" not in pod.log()
    finally:
        for pod in pods:
            pod.stop()
