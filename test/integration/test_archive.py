"""Archive before retirement (docs/compliance.md) to a directory and to S3 (moto's standalone
server): a month past retention is archived, read back and verified, then dropped; an unreachable
target keeps the month and counts the failure, and a later pass archives it; a corrupted
archive fails `archive verify`; `archive restore` brings the rows back exactly (their leaf
hashes match the log's)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid

import boto3
import psycopg
import pytest
import zstandard
from ledger_helpers import connection_source
from prometheus_client import REGISTRY
from support import REPO, free_port

from datastorage.config import load_settings
from datastorage.ledger.keyfile import keygen, load_signer
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.ledger.sequencer import sequence_once
from datastorage.ledger.signer import CheckpointSigner
from datastorage.operator.maintenance import MaintenanceReport, run_pass
from datastorage.services.archive import decompress
from datastorage.store import ledger as ledger_store
from datastorage.store import partitions

OLD_MONTH = dt.date(2010, 1, 1)
OLD_TABLE = partitions.partition_name(OLD_MONTH)
OBJECT = f"{OLD_TABLE}.ndjson.zst"
ORIGIN = "audit.example.com/archive-test"


@pytest.fixture()
def url(pg_server):
    with pg_server.migrated_database("arch") as database_url:
        yield database_url


@pytest.fixture()
def key_file(tmp_path):
    path = tmp_path / "log.key"
    keygen(ORIGIN, path)
    return path


@pytest.fixture()
def old_month(url, key_file) -> list[tuple]:
    """Twenty events in the old month, all leaves of a signed checkpoint; returns the rows."""
    end = partitions.add_months(OLD_MONTH, 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{OLD_TABLE}" PARTITION OF audit_events '
            f"FOR VALUES FROM ('{OLD_MONTH}') TO ('{end}')"
        )
        conn.execute(
            "INSERT INTO audit_events (event_id, event_version, event_timestamp, event_date, "
            "event_type, event_category, event_action, event_outcome, actor_type, actor_id, "
            "resource_type, resource_id, correlation_id, event_data, error_message) "
            "SELECT gen_random_uuid(), '1.0', ts, ts::date, 'gateway.signal.received', "
            "'gateway', 'received', 'success', 'service', 'gateway-service', 'gateway', 'r', "
            "'c-' || (i % 3), jsonb_build_object('i', i, 'f', 1.5), 'line1\nline2, \"q\" ✓' "
            "FROM generate_series(1, 20) AS i, "
            "LATERAL (SELECT timestamptz '2010-01-01 00:00Z' + i * interval '1 day') AS t(ts)"
        )
        conn.execute(
            f'INSERT INTO log_pending (event_id, event_date) SELECT event_id, event_date FROM "{OLD_TABLE}"'
        )

    async def sign() -> None:
        connect = connection_source(url)
        async with connect() as conn:
            while (await sequence_once(conn, batch_size=1000)).appended:
                pass
        await CheckpointSigner(connect, load_signer(key_file)).sign_once()

    asyncio.run(sign())
    return _rows(url)


def _rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f'SELECT * FROM "{OLD_TABLE}" ORDER BY event_id').fetchall()


def _env(url: str, key_file, archive_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATASTORAGE_DATABASE_URL": url,
        "DATASTORAGE_LOG_SIGNING_KEY_FILE": str(key_file),
        "DATASTORAGE_ARCHIVE_URL": archive_url,
        **extra,
    }


def _pass(env: dict[str, str]) -> MaintenanceReport:
    return asyncio.run(run_pass(load_settings(environ=env), dry_run=False))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATASTORAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "datastorage", "archive", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _table_exists(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s)", (OLD_TABLE,)).fetchone()[0] is not None


def _failures() -> float:
    return REGISTRY.get_sample_value("datastorage_archive_failures_total") or 0.0


async def _leaf_hashes_match(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT l.event_id::text, l.event_date, l.leaf_hash FROM log_leaves l "
            f'JOIN "{OLD_TABLE}" e USING (event_id, event_date)'
        )
        leaves = await cur.fetchall()
        events = await ledger_store.events_by_key(conn, [(i, d) for i, d, _ in leaves])
        for event_id, event_date, leaf_hash in leaves:
            assert event_leaf_hash(events[(event_id, event_date)]) == bytes(leaf_hash)
        return len(leaves)


def test_directory_archive_verify_corruption_and_restore(url, key_file, old_month, tmp_path):
    target = tmp_path / "archive"
    env = _env(url, key_file, f"file://{target}")

    report = _pass(env)

    assert report.ok, report.lines()
    assert report.archived == [f"{OBJECT} written and verified (20 events)"]
    assert report.retired == [OLD_TABLE] and not _table_exists(url)
    listed = _cli(env, "list")
    assert listed.returncode == 0 and "2010-01" in listed.stdout and OBJECT in listed.stdout
    verified = _cli(env, "verify", "2010-01")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK: 20 line(s), 20 proven" in verified.stdout

    restored = _cli(env, "restore", "2010-01")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored 20 event(s)" in restored.stdout
    assert _rows(url) == old_month  # every stored value, created_at included
    assert asyncio.run(_leaf_hashes_match(url)) == 20

    # A corrupted archive: one event changed inside the compressed object.
    data = decompress((target / OBJECT).read_bytes())
    (target / OBJECT).write_bytes(zstandard.compress(data.replace(b'"c-1"', b'"c-X"', 1)))
    corrupt = _cli(env, "verify", "2010-01")
    assert corrupt.returncode == 1, corrupt.stdout
    (target / OBJECT).write_bytes(b"not zstd at all")
    assert _cli(env, "verify", "2010-01").returncode == 1
    assert _cli(env, "restore", "2010-01").returncode == 1


def test_an_unreachable_target_keeps_the_month_until_a_later_pass_archives_it_to_s3(
    url, key_file, old_month, s3_endpoint, s3_env
):
    bucket = f"archive-{uuid.uuid4().hex[:8]}"
    archive_url = f"s3://{bucket}/audit"
    unreachable = _env(
        url, key_file, archive_url, DATASTORAGE_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"
    )
    before = _failures()

    report = _pass(unreachable)

    assert not report.ok and not report.retired
    assert any(e.startswith(f"archive {OLD_TABLE}:") for e in report.errors), report.errors
    assert _failures() == before + 1
    assert _rows(url) == old_month  # kept whole

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    reachable = _env(url, key_file, archive_url, DATASTORAGE_S3_ENDPOINT_URL=s3_endpoint)
    later = _pass(reachable)
    assert later.ok, later.lines()
    assert later.retired == [OLD_TABLE] and not _table_exists(url)
    keys = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in keys["Contents"]] == [f"audit/{OBJECT}"]
    verified = _cli(
        {**reachable, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}},
        "verify",
        "2010-01",
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
