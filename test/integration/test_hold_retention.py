"""Retention that respects legal holds (docs/compliance.md): a retired month keeps its held events
in place (list and GET unchanged) until a pass after the release; a hold placed concurrently with
a retirement pass, in either order, is never lost. Each test has its own database and server."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid

import httpx
import psycopg
import pytest
from ledger_helpers import connection_source
from support import ServerProcess, eventually

from datastorage.config import load_settings
from datastorage.ledger import merkle, proofs
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.ledger.sequencer import sequence_once
from datastorage.operator.maintenance import MaintenanceReport, run_pass
from datastorage.store import ledger as ledger_store
from datastorage.store import partitions
from datastorage.store.audit_rows import fetch_by_ids
from datastorage.store.holds import HOLDS_LOCK

OLD_MONTH = dt.date(2010, 1, 1)  # far past the default retention of 84 months
OLD_TABLE = partitions.partition_name(OLD_MONTH)
HOLDS = "/api/v1/audit/legal-holds"
EVENTS = "/api/v1/audit/events"


@pytest.fixture()
def url(pg_server):
    with pg_server.migrated_database("hold") as database_url:
        yield database_url


@pytest.fixture()
def api(url, tmp_path):
    server = ServerProcess({"DATASTORAGE_DATABASE_URL": url}, tmp_path)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


@pytest.fixture()
def old_month(url) -> dict[str, list[str]]:
    """The old month with three events of correlation `held` and two of `other`."""
    end = partitions.add_months(OLD_MONTH, 1)
    ids: dict[str, list[str]] = {"held": [], "other": []}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{OLD_TABLE}" PARTITION OF audit_events '
            f"FOR VALUES FROM ('{OLD_MONTH}') TO ('{end}')"
        )
        for correlation, count in (("held", 3), ("other", 2)):
            for day in range(1, count + 1):
                event_id = str(uuid.uuid4())
                ids[correlation].append(event_id)
                stamp = dt.datetime.combine(OLD_MONTH.replace(day=day), dt.time(12), dt.UTC)
                conn.execute(
                    "INSERT INTO audit_events (event_id, event_version, event_timestamp, "
                    "event_date, event_type, event_category, event_action, event_outcome, "
                    "actor_type, actor_id, resource_type, resource_id, correlation_id, "
                    "event_data) VALUES (%s, '1.0', %s, %s, 'gateway.signal.received', "
                    "'gateway', 'received', 'success', 'service', 'gateway-service', 'gateway',"
                    " 'r', %s, '{\"k\": \"v\"}')",
                    (event_id, stamp, stamp.date(), correlation),
                )
        conn.execute(
            f'INSERT INTO log_pending (event_id, event_date) SELECT event_id, event_date FROM "{OLD_TABLE}"'
        )
    asyncio.run(_sequence(url))
    return ids


async def _sequence(url: str) -> None:
    async with connection_source(url)() as conn:
        while (await sequence_once(conn, batch_size=100)).appended:
            pass


async def _proves(url: str, event_id: str) -> None:
    """The event's stored row hashes to its leaf, whose inclusion proof verifies."""
    async with connection_source(url)() as conn:
        state = await ledger_store.tree_state(conn)
        proof = await proofs.inclusion(conn, event_id, state.size)
        event = (await fetch_by_ids(conn, [event_id]))[event_id]
    assert event_leaf_hash(event) == proof.leaf_hash
    merkle.verify_inclusion(proof.leaf_index, state.size, proof.leaf_hash, proof.path, state.root)


def _pass(url: str) -> MaintenanceReport:
    settings = load_settings(environ={"DATASTORAGE_DATABASE_URL": url})
    return asyncio.run(run_pass(settings, dry_run=False))


def _listed(api, correlation_id: str) -> list[str]:
    response = api.get(EVENTS, params={"correlation_id": correlation_id, "limit": 1000})
    assert response.status_code == 200, response.text
    return sorted(
        e["event_id"] for e in response.json()["data"] if e["event_type"].startswith("gateway")
    )


def _table_exists(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s)", (OLD_TABLE,)).fetchone()[0] is not None


def _assert_waiting_on_holds_lock(url: str) -> None:
    """Some session waits for the holds advisory lock right now."""
    with psycopg.connect(url) as conn:
        (waiting,) = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (HOLDS_LOCK,),
        ).fetchone()
        activity = conn.execute(
            "SELECT state, wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity "
            "WHERE datname = current_database()"
        ).fetchall()
    assert waiting > 0, activity


def test_held_events_survive_retirement_until_the_pass_after_release(url, api, old_month):
    assert api.put(f"{HOLDS}/held", json={"reason": "litigation"}).status_code == 201
    before = {i: api.get(f"{EVENTS}/{i}").content for i in old_month["held"]}

    report = _pass(url)

    assert report.ok, report.lines()
    assert report.kept_for_holds == [f"{OLD_TABLE} (2 unheld events deleted)"]
    assert _listed(api, "held") == sorted(old_month["held"])
    assert _listed(api, "other") == []
    for event_id, body in before.items():
        after = api.get(f"{EVENTS}/{event_id}")
        assert after.status_code == 200 and after.content == body  # byte for byte
    for event_id in old_month["other"]:
        assert api.get(f"{EVENTS}/{event_id}").status_code == 404
    for event_id in old_month["held"]:
        asyncio.run(_proves(url, event_id))  # still provable from the rows that stayed

    again = _pass(url)  # still held: nothing more goes
    assert again.ok and _listed(api, "held") == sorted(old_month["held"])

    released = api.delete(f"{HOLDS}/held", params={"reason": "case closed"})
    assert released.status_code == 200
    assert _listed(api, "held") == sorted(old_month["held"])  # gone only at the next pass
    final = _pass(url)
    assert final.ok and final.retired == [OLD_TABLE]
    assert _listed(api, "held") == [] and not _table_exists(url)


def test_a_hold_committed_while_the_pass_waits_keeps_its_events(url, api, old_month):
    """Order 1: the hold change is in flight when the pass reaches the month. The pass waits
    for it, then sees the hold."""
    current = partitions.partition_name(partitions.current_month())
    blocker = psycopg.connect(url)
    # The hold's self-audit insert into the current month waits behind this lock, after the
    # hold change took the holds lock: the change is mid-transaction, deterministically.
    blocker.execute(f'LOCK TABLE "{current}" IN ACCESS EXCLUSIVE MODE')
    responses: list[httpx.Response] = []
    placing = threading.Thread(
        target=lambda: responses.append(api.put(f"{HOLDS}/held", json={"reason": "race"}))
    )
    placing.start()
    with psycopg.connect(url, autocommit=True) as probe:

        def hold_waits() -> None:
            (waiting,) = probe.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = %s AND NOT l.granted",
                (current,),
            ).fetchone()
            assert waiting > 0

        eventually(hold_waits)
    reports: list[MaintenanceReport] = []
    passing = threading.Thread(target=lambda: reports.append(_pass(url)))
    passing.start()
    eventually(lambda: _assert_waiting_on_holds_lock(url))
    blocker.rollback()  # let the hold commit
    blocker.close()
    placing.join(30)
    passing.join(60)

    assert responses[0].status_code == 201, responses[0].text
    assert reports[0].ok, reports[0].lines()
    assert reports[0].kept_for_holds and not reports[0].retired
    assert _listed(api, "held") == sorted(old_month["held"])
    assert _listed(api, "other") == []


def test_a_hold_placed_while_the_pass_retires_waits_and_is_kept(url, api, old_month):
    """Order 2: the pass has decided (nothing held) and is detaching the month when the hold
    arrives. The hold waits for the month's retirement to finish, then is stored with its
    self-audit event: the hold is not lost, and no event held at decision time was dropped."""
    blocker = psycopg.connect(url)
    # DETACH ... CONCURRENTLY waits for this open transaction on audit_events, while the pass
    # holds the holds lock.
    blocker.execute("SELECT count(*) FROM audit_events WHERE event_date < '2010-02-01'")
    reports: list[MaintenanceReport] = []
    passing = threading.Thread(target=lambda: reports.append(_pass(url)))
    passing.start()
    with psycopg.connect(url, autocommit=True) as probe:

        def detach_waits() -> None:
            (waiting,) = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND wait_event_type = 'Lock'",
                ("%DETACH PARTITION%",),
            ).fetchone()
            assert waiting > 0

        eventually(detach_waits, timeout=20)
    responses: list[httpx.Response] = []
    placing = threading.Thread(
        target=lambda: responses.append(api.put(f"{HOLDS}/held", json={"reason": "late"}))
    )
    placing.start()
    eventually(lambda: _assert_waiting_on_holds_lock(url))
    assert not responses  # the hold waits for the retirement of the month
    blocker.rollback()
    blocker.close()
    passing.join(60)
    placing.join(30)

    assert reports[0].ok, reports[0].lines()
    assert reports[0].retired == [OLD_TABLE]
    assert responses[0].status_code == 201, responses[0].text
    assert api.get(f"{HOLDS}/held").status_code == 200
    placed = api.get(
        EVENTS, params={"correlation_id": "held", "event_type": "datastorage.legal_hold.placed"}
    )
    assert len(placed.json()["data"]) == 1
