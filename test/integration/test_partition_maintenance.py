"""Partition maintenance against a real PostgreSQL: window, repair, retention, locking, CLI,
and failure isolation of the write path (docs/operations.md). Each test gets its own migrated
database."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from support import REPO, ServerProcess, eventually, make_event, run_migrations

from datastorage.config import load_settings
from datastorage.operator.maintenance import MaintenanceReport, run_pass
from datastorage.store import partitions

OLD_MONTH = dt.date(2010, 1, 1)  # far older than the default retention of 84 months


@pytest.fixture()
def maint_url(pg_server, request):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    name = f"pm_{worker}_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    run_migrations(url)
    yield url
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def conn(maint_url):
    with psycopg.connect(maint_url, autocommit=True) as connection:
        yield connection


def _settings(url: str, **env: str):
    return load_settings(environ={"DATASTORAGE_DATABASE_URL": url, **env})


def _pass(url: str, *, dry_run: bool = False, **env: str) -> MaintenanceReport:
    return asyncio.run(run_pass(_settings(url, **env), dry_run=dry_run))


def _states(conn) -> dict[str, bool]:
    """{partition table: attached} for every table named like a month partition."""
    rows = conn.execute(
        "SELECT c.relname, EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid) "
        "FROM pg_class c WHERE c.relkind = 'r' AND c.relname ~ '^audit_events_[0-9]{4}_[0-9]{2}$'"
    ).fetchall()
    return dict(rows)


def _window_names(premake: int = 3) -> list[str]:
    return [partitions.partition_name(m) for m in partitions.window(premake)]


def _drop_all_partitions(conn) -> None:
    for name in _states(conn):
        conn.execute(f'DROP TABLE "{name}"')


def _create_partition(conn, month: dt.date) -> str:
    name = partitions.partition_name(month)
    end = partitions.add_months(month, 1)
    conn.execute(
        f"CREATE TABLE \"{name}\" PARTITION OF audit_events FOR VALUES FROM ('{month}') TO ('{end}')"
    )
    return name


def _insert_row(conn, day: dt.date) -> None:
    conn.execute(
        "INSERT INTO audit_events (event_id, event_version, event_timestamp, event_date, "
        "event_type, event_category, event_action, event_outcome, actor_type, actor_id, "
        "resource_type, resource_id, correlation_id, event_data) VALUES "
        "(gen_random_uuid(), '1.0', %s, %s, 'gateway.signal.received', 'gateway', 'received', "
        "'success', 'service', 'gateway-service', 'gateway', 'r', 'c', '{}')",
        (dt.datetime.combine(day, dt.time(12), dt.UTC), day),
    )


def _metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_one_pass_on_an_empty_database_creates_the_current_month_and_three_ahead(maint_url, conn):
    _drop_all_partitions(conn)
    created_before = _metric("datastorage_partition_created_total", trigger="maintenance") or 0

    report = _pass(maint_url)

    assert report.ok, report.lines()
    assert report.created == _window_names()
    assert _states(conn) == dict.fromkeys(_window_names(), True)
    assert report.summary is not None
    assert (report.summary.attached, report.summary.detached) == (4, 0)
    assert report.summary.months_ahead == 3
    assert _metric("datastorage_partition_created_total", trigger="maintenance") == (
        created_before + 4
    )
    assert _metric("datastorage_partitions", state="attached") == 4
    assert _metric("datastorage_partition_months_ahead") == 3
    assert _metric("datastorage_partition_maintenance_last_success_timestamp_seconds") > 0

    again = _pass(maint_url)  # idempotent: nothing left to do
    assert again.ok and not again.changed
    assert "nothing to do" in again.lines()


def test_a_dropped_future_month_and_a_detached_current_month_are_repaired(maint_url, conn):
    current, _, future, _ = _window_names()
    conn.execute(f'DROP TABLE "{future}"')
    conn.execute(f'ALTER TABLE audit_events DETACH PARTITION "{current}"')
    # A past month inside retention that someone detached is re-attached too.
    past = _create_partition(conn, partitions.add_months(partitions.current_month(), -2))
    _insert_row(conn, partitions.add_months(partitions.current_month(), -2).replace(day=9))
    conn.execute(f'ALTER TABLE audit_events DETACH PARTITION "{past}"')
    assert _states(conn)[current] is False

    report = _pass(maint_url)

    assert report.ok, report.lines()
    assert report.created == [future]
    assert sorted(report.reattached) == sorted([current, past])
    assert all(_states(conn).values())
    assert (
        conn.execute(
            f"SELECT count(*) FROM audit_events WHERE event_date < "
            f"'{partitions.current_month().isoformat()}'"
        ).fetchone()[0]
        == 1
    )


def test_old_month_is_detached_concurrently_and_dropped_while_writes_continue(maint_url, conn):
    old = _create_partition(conn, OLD_MONTH)
    _insert_row(conn, OLD_MONTH.replace(day=15))
    leftover = _create_partition(conn, dt.date(2011, 3, 1))  # a retirement cut short earlier:
    conn.execute(f'ALTER TABLE audit_events DETACH PARTITION "{leftover}"')  # detached, not dropped
    today = dt.datetime.now(dt.UTC).date()

    # An open transaction that has written into the current month: DETACH CONCURRENTLY must
    # wait for it, and while it waits other sessions keep writing to the current month.
    with psycopg.connect(maint_url) as holder, psycopg.connect(maint_url, autocommit=True) as w:
        _insert_row(holder, today)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(_pass, maint_url)

            def detach_is_waiting() -> None:
                row = conn.execute(
                    "SELECT wait_event_type, query FROM pg_stat_activity "
                    "WHERE application_name = 'datastorage-maintenance' AND state = 'active'"
                ).fetchone()
                assert row is not None and row[0] == "Lock" and "DETACH" in row[1], row

            eventually(detach_is_waiting, timeout=15)
            w.execute("SET statement_timeout = '5s'")
            for _ in range(20):
                _insert_row(w, today)  # not blocked by the detach in progress
            assert not running.done()
            holder.commit()
            report = running.result(timeout=30)

    assert report.ok, report.lines()
    assert sorted(report.retired) == sorted([old, leftover])
    states = _states(conn)
    assert old not in states and leftover not in states
    assert (
        conn.execute(
            "SELECT count(*) FROM audit_events WHERE event_date = %s", (today,)
        ).fetchone()[0]
        >= 21
    )


def test_concurrent_inserts_into_the_current_month_never_fail_during_a_retirement(maint_url, conn):
    for year in (2009, 2010, 2011):
        _create_partition(conn, dt.date(year, 6, 1))
        _insert_row(conn, dt.date(year, 6, 2))
    today = dt.datetime.now(dt.UTC).date()
    stop = threading.Event()
    failures: list[BaseException] = []
    written = [0]

    def writer() -> None:
        with psycopg.connect(maint_url, autocommit=True) as c:
            while not stop.is_set():
                try:
                    _insert_row(c, today)
                    written[0] += 1
                except psycopg.Error as exc:  # pragma: no cover - the failure we look for
                    failures.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        eventually(lambda: written[0] > 20)
        report = _pass(maint_url)
        before = written[0]
        eventually(lambda: written[0] > before + 20)
    finally:
        stop.set()
        thread.join(10)
    assert report.ok, report.lines()
    assert len(report.retired) == 3
    assert failures == []


def test_dry_run_reports_the_retirement_and_retires_nothing(maint_url, conn):
    old = _create_partition(conn, OLD_MONTH)
    _insert_row(conn, OLD_MONTH.replace(day=2))

    report = _pass(maint_url, dry_run=True)

    assert report.ok, report.lines()
    assert report.would_retire == [old] and report.retired == []
    assert any(line.startswith(f"would retire {old}") for line in report.lines())
    assert _states(conn)[old] is True
    assert conn.execute(f'SELECT count(*) FROM "{old}"').fetchone()[0] == 1


def test_retention_is_configurable(maint_url, conn):
    three_ago = _create_partition(conn, partitions.add_months(partitions.current_month(), -3))

    report = _pass(maint_url, DATASTORAGE_PARTITION_RETENTION_MONTHS="2")

    assert report.retired == [three_ago]
    assert three_ago not in _states(conn)


def test_a_pass_skips_while_another_replica_holds_the_lock(maint_url, conn):
    _drop_all_partitions(conn)
    conn.execute("SELECT pg_advisory_lock(%s)", (partitions.MAINTENANCE_LOCK,))
    try:
        skipped = _pass(maint_url)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (partitions.MAINTENANCE_LOCK,))
    assert skipped.ok and not skipped.lock_acquired
    assert skipped.created == []
    assert any("another replica holds the maintenance lock" in line for line in skipped.lines())
    assert _states(conn) == {}

    assert _pass(maint_url).created == _window_names()


def test_two_passes_started_at_once_do_not_conflict(maint_url, conn):
    _drop_all_partitions(conn)
    settings = _settings(maint_url)

    async def both() -> list[MaintenanceReport]:
        return list(
            await asyncio.gather(
                run_pass(settings, dry_run=False), run_pass(settings, dry_run=False)
            )
        )

    reports = asyncio.run(both())

    assert all(r.ok for r in reports), [r.lines() for r in reports]
    assert sorted(reports[0].created + reports[1].created) == sorted(_window_names())
    assert _states(conn) == dict.fromkeys(_window_names(), True)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datastorage", "partitions", *args],
        env={**os.environ, "DATASTORAGE_DATABASE_URL": url, "DATASTORAGE_LOG_FORMAT": "console"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_partitions_status_prints_one_row_per_month(maint_url, conn):
    current = _window_names()[0]
    _insert_row(conn, dt.datetime.now(dt.UTC).date())
    conn.execute(f'ANALYZE "{current}"')
    old = _create_partition(conn, OLD_MONTH)
    conn.execute(f'ALTER TABLE audit_events DETACH PARTITION "{old}"')

    result = _cli(maint_url, "status")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    for column in ("month", "partition", "attached", "rows", "size", "indexes"):
        assert column in header, lines[0]
    rows = {line.split()[1]: line.split() for line in lines[2:]}
    assert set(rows) == {*_window_names(), old}
    assert rows[current][0] == partitions.current_month().strftime("%Y-%m")
    assert rows[current][2] == "yes" and rows[old][2] == "NO"
    assert rows[current][3] == "1"
    assert rows[current][-1] == "yes"


def test_partitions_ensure_dry_run_prints_the_report_then_the_table(maint_url, conn):
    old = _create_partition(conn, OLD_MONTH)

    result = _cli(maint_url, "ensure", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert f"would retire {old}" in result.stdout
    assert "month" in result.stdout and old in result.stdout
    assert _states(conn)[old] is True


@pytest.mark.parametrize("dlq", [False, True], ids=["no-dlq-503", "file-dlq-202"])
def test_a_month_whose_partition_cannot_be_created_affects_only_that_month(
    maint_url, conn, tmp_path, dlq
):
    env = {
        "DATASTORAGE_DATABASE_URL": maint_url,
        # Accept timestamps two months ahead, so two existing months are both writable.
        "DATASTORAGE_TIMESTAMP_MAX_SKEW": str(100 * 86400),
        "DATASTORAGE_PARTITION_LOCK_TIMEOUT": "0.5",
    }
    if dlq:
        env["DATASTORAGE_DLQ_URL"] = f"file://{tmp_path}/spool"
    server = ServerProcess(env, tmp_path)
    try:
        blocked_month = partitions.add_months(partitions.current_month(), 2)
        blocked = partitions.partition_name(blocked_month)
        conn.execute(f'DROP TABLE "{blocked}"')
        blocked_at = dt.datetime.combine(blocked_month.replace(day=15), dt.time(12), dt.UTC)
        with (
            psycopg.connect(maint_url) as other,
            httpx.Client(base_url=server.url, timeout=30) as api,
        ):
            # An uncommitted table of the same name: creating the partition waits on it
            # beyond the lock timeout, exactly like any other lock held on that month.
            other.execute(f'CREATE TABLE "{blocked}" (id int)')
            into_blocked = make_event(event_timestamp=blocked_at.isoformat())
            response = api.post("/api/v1/audit/events", json=into_blocked)
            if dlq:
                assert response.status_code == 202, response.text
            else:
                assert response.status_code == 503, response.text
                assert response.headers.get("Retry-After")

            into_current = make_event()
            assert api.post("/api/v1/audit/events", json=into_current).status_code == 201
            other.rollback()

            if dlq:  # once the month can be created, the queued event reaches the table

                def replayed() -> None:
                    assert (
                        conn.execute(
                            "SELECT count(*) FROM audit_events WHERE correlation_id = %s",
                            (into_blocked["correlation_id"],),
                        ).fetchone()[0]
                        == 1
                    )

                eventually(replayed, timeout=30)
            else:  # the client's retry succeeds and creates the month on the write path
                assert api.post("/api/v1/audit/events", json=into_blocked).status_code == 201
        assert _states(conn)[blocked] is True
    finally:
        server.stop()


def _creator_is_waiting(conn, name: str) -> None:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE 'CREATE TABLE%%' AND query LIKE %s",
        (f"%{name}%",),
    ).fetchone()
    assert row[0] == 1, "no session waits to create the partition"


def _insert_without_waiting(url: str, day: dt.date) -> None:
    """Raises LockNotAvailable if any lock held on audit_events conflicts with an insert."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET lock_timeout = '200ms'")
        _insert_row(c, day)


def test_maintenance_waiting_to_create_a_month_does_not_hold_up_other_months(maint_url, conn):
    blocked = _window_names()[2]
    conn.execute(f'DROP TABLE "{blocked}"')
    today = dt.datetime.now(dt.UTC).date()
    with psycopg.connect(maint_url) as other, ThreadPoolExecutor(1) as pool:
        other.execute(f'CREATE TABLE "{blocked}" (id int)')  # uncommitted: the name is taken
        running = pool.submit(_pass, maint_url, DATASTORAGE_PARTITION_LOCK_TIMEOUT="20")
        try:
            eventually(lambda: _creator_is_waiting(conn, blocked), timeout=15)
            _insert_without_waiting(maint_url, today)
        finally:
            other.rollback()
        report = running.result(timeout=30)
    assert report.ok, report.lines()
    assert report.created == [blocked]


def test_write_path_waiting_to_create_a_month_does_not_hold_up_other_months(
    maint_url, conn, tmp_path
):
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": maint_url,
            "DATASTORAGE_TIMESTAMP_MAX_SKEW": str(100 * 86400),
            "DATASTORAGE_PARTITION_LOCK_TIMEOUT": "20",
        },
        tmp_path,
    )
    blocked_month = partitions.add_months(partitions.current_month(), 2)
    blocked = partitions.partition_name(blocked_month)
    conn.execute(f'DROP TABLE "{blocked}"')
    blocked_at = dt.datetime.combine(blocked_month.replace(day=15), dt.time(12), dt.UTC)
    today = dt.datetime.now(dt.UTC).date()
    try:
        with (
            psycopg.connect(maint_url) as other,
            httpx.Client(base_url=server.url, timeout=60) as api,
            ThreadPoolExecutor(1) as pool,
        ):
            other.execute(f'CREATE TABLE "{blocked}" (id int)')
            posting = pool.submit(
                api.post,
                "/api/v1/audit/events",
                json=make_event(event_timestamp=blocked_at.isoformat()),
            )
            try:
                eventually(lambda: _creator_is_waiting(conn, blocked), timeout=15)
                _insert_without_waiting(maint_url, today)
            finally:
                other.rollback()
                posting.result(timeout=60)
    finally:
        server.stop()
