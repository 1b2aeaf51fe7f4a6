"""Streaming export (docs/compliance.md): NDJSON lines in the GET shape with a manifest that
`datastorage verify --export` checks offline (clean → 0; an altered, removed or added line or
an altered manifest → 1; a wrong key → 2), CSV that round-trips through Python's csv module, the
list's filters and their errors, and backpressure to a slow reader."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from ledger_helpers import connection_source, new_events, store_events
from support import REPO, ServerProcess

from datastorage.ledger.keyfile import keygen, load_signer
from datastorage.ledger.sequencer import sequence_once
from datastorage.ledger.signer import CheckpointSigner
from datastorage.store.ledger import LEADER_LOCK

EXPORT = "/api/v1/audit/export"
EVENTS = "/api/v1/audit/events"
ORIGIN = "audit.example.com/export-test"


@pytest.fixture(scope="module")
def stack(pg_server, tmp_path_factory):
    """A database of its own with a signed log over some events, and a server with the key."""
    with pg_server.migrated_database("export") as url:
        yield from _stack(url, tmp_path_factory)


def _stack(url: str, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("export")
    key_file = workdir / "log.key"
    verifier_key = keygen(ORIGIN, key_file)
    tag = uuid.uuid4().hex[:8]

    async def seed() -> None:
        connect = connection_source(url)
        async with connect() as conn:
            await store_events(conn, new_events(3, correlation_id="noise"))
            await store_events(conn, new_events(5, correlation_id=f"case-{tag}"))
            await store_events(conn, new_events(3, correlation_id="noise"))
            await store_events(
                conn,
                new_events(
                    1,
                    correlation_id=f"case-{tag}",
                    error_message='a, "quoted"\nsecond line; naïve ✓ 日本',
                    actor_id="comma,actor",
                    event_data={"text": 'x,"y"\r\nz', "emoji": "🙂"},
                ),
            )
            while (await sequence_once(conn, batch_size=1000)).appended:
                pass
        await CheckpointSigner(connect, load_signer(key_file)).sign_once()
        async with connect() as conn:  # stored after the checkpoint: not provable yet
            await store_events(conn, new_events(1, correlation_id=f"case-{tag}"))

    asyncio.run(seed())
    # The tests hold the log's leader lock, so the server's own workers (elected by that lock)
    # never sequence the last event or sign a newer checkpoint: the exports see exactly the log
    # the seed built, whatever the timing.
    leader = psycopg.connect(url, autocommit=True)
    assert leader.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0]
    server = ServerProcess(
        {"DATASTORAGE_DATABASE_URL": url, "DATASTORAGE_LOG_SIGNING_KEY_FILE": str(key_file)},
        workdir,
    )
    with leader, httpx.Client(base_url=server.url, timeout=60) as client:
        yield {
            "api": client,
            "tag": tag,
            "key": verifier_key,
            "dir": workdir,
            "url": url,
            "server": server,
        }
    server.stop()


def _export(stack, **params) -> httpx.Response:
    response = stack["api"].get(EXPORT, params={"correlation_id": f"case-{stack['tag']}", **params})
    assert response.status_code == 200, response.text
    return response


def _verify(path: Path, key: str) -> subprocess.CompletedProcess:
    # No database or network settings at all: verification reads the file and the key only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASTORAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "datastorage", "verify", "--export", str(path), "--key", key],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ndjson_lines_are_the_get_shape_and_the_manifest_describes_them(stack):
    response = _export(stack)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    lines = response.content.split(b"\n")
    assert lines[-1] == b""
    events, manifest = [json.loads(x) for x in lines[:-2]], json.loads(lines[-2])["manifest"]
    assert len(events) == 7 and manifest["count"] == 7
    assert manifest["filters"]["correlation_id"] == f"case-{stack['tag']}"
    assert manifest["tree_size"] == 12 and manifest["checkpoint"].startswith(ORIGIN + "\n12\n")
    assert manifest["signature"]
    stamps = [e["event_timestamp"] for e in events]
    assert stamps == sorted(stamps)  # oldest first
    assert sum(e["leaf_index"] is not None for e in events) >= 6
    for event in events:
        event.pop("leaf_index")
        stored = stack["api"].get(f"{EVENTS}/{event['event_id']}")
        assert stored.json() == event


def test_verify_accepts_an_untouched_export_offline(stack):
    path = stack["dir"] / "clean.ndjson"
    path.write_bytes(_export(stack).content)
    result = _verify(path, stack["key"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 7 line(s)" in result.stdout
    assert "unproven line=" in result.stdout or "6 proven" not in result.stdout


def _tampered(stack, name: str, change) -> subprocess.CompletedProcess:
    lines = _export(stack).content.split(b"\n")[:-1]
    change(lines)
    path = stack["dir"] / f"{name}.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return _verify(path, stack["key"])


def _alter_line(lines: list[bytes]) -> None:
    event = json.loads(lines[1])
    event["event_outcome"] = "failure" if event["event_outcome"] != "failure" else "success"
    lines[1] = json.dumps(event).encode()


def _alter_manifest(lines: list[bytes]) -> None:
    doc = json.loads(lines[-1])
    doc["manifest"]["filters"]["correlation_id"] = "something-else"
    lines[-1] = json.dumps(doc).encode()


def _remove_and_fix_digest(lines: list[bytes]) -> None:
    """A careful forger: drops a line and recomputes the digest and count."""
    import hashlib

    del lines[0]
    doc = json.loads(lines[-1])
    body = b"".join(line + b"\n" for line in lines[:-1])
    doc["manifest"]["sha256"] = hashlib.sha256(body).hexdigest()
    doc["manifest"]["count"] -= 1
    lines[-1] = json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("altered-line", _alter_line),
        ("removed-line", lambda lines: lines.pop(2)),
        ("added-line", lambda lines: lines.insert(1, lines[3])),
        ("altered-manifest", _alter_manifest),
        ("removed-and-rehashed", _remove_and_fix_digest),
        ("no-manifest", lambda lines: lines.pop()),
    ],
)
def test_verify_finds_every_kind_of_tampering(stack, name, change):
    result = _tampered(stack, name, change)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout or "manifest-missing" in result.stdout


def test_verify_with_another_key_is_a_usage_error(stack, tmp_path):
    path = stack["dir"] / "other-key.ndjson"
    path.write_bytes(_export(stack).content)
    other = keygen(ORIGIN, tmp_path / "other.key")
    assert _verify(path, other).returncode == 2
    assert _verify(path, "not a key").returncode == 2


def test_csv_round_trips_through_the_csv_module(stack):
    response = _export(stack, format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert b"\r\n" in response.content
    rows = list(csv.DictReader(io.StringIO(response.content.decode(), newline="")))
    assert len(rows) == 7
    tricky = [r for r in rows if r["actor_id"] == "comma,actor"]
    assert len(tricky) == 1
    stored = stack["api"].get(f"{EVENTS}/{tricky[0]['event_id']}").json()
    assert tricky[0]["error_message"] == stored["error_message"]
    assert json.loads(tricky[0]["event_data"]) == stored["event_data"]
    for row in rows:
        stored = stack["api"].get(f"{EVENTS}/{row['event_id']}").json()
        for field, value in stored.items():
            expected = (
                ""
                if value is None
                else json.dumps(value)
                if isinstance(value, dict)
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
            if isinstance(value, dict):
                assert json.loads(row[field]) == value
            else:
                assert row[field] == expected, field


def test_export_takes_the_list_filters_and_names_bad_ones(stack):
    api = stack["api"]
    bad = api.get(EXPORT, params={"since": "yesterday-ish", "format": "xml"})
    assert bad.status_code == 400
    assert {"since", "format"} <= set(bad.json()["field_errors"])
    bad_data = api.get(EXPORT, params={"event_data": "[1]"})
    assert bad_data.status_code == 400 and "event_data" in bad_data.json()["field_errors"]
    narrowed = _export(stack, event_data=json.dumps({"emoji": "🙂"}))
    assert json.loads(narrowed.content.split(b"\n")[-2])["manifest"]["count"] == 1


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_slow_reader_does_not_make_the_server_buffer_the_export(stack):
    """~120 MB of export behind a reader that stops after the first chunk: the server's memory
    stays far below the export's size while it waits, because it pulls rows only as the client
    reads."""
    with psycopg.connect(stack["url"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_events (event_id, event_version, event_timestamp, event_date, "
            "event_type, event_category, event_action, event_outcome, actor_type, actor_id, "
            "resource_type, resource_id, correlation_id, event_data) "
            "SELECT gen_random_uuid(), '1.0', now() - interval '1 hour', "
            "(now() - interval '1 hour')::date, 'gateway.signal.received', 'gateway', "
            "'received', 'success', 'service', 'gateway-service', 'gateway', 'r', 'bulk', "
            "jsonb_build_object('i', i, 'pad', repeat('p', 1000)) "
            "FROM generate_series(1, 100000) AS i"
        )
    pid = stack["server"].proc.pid
    before = _rss_kib(pid)
    received = 0
    with stack["api"].stream("GET", EXPORT, params={"correlation_id": "bulk"}) as response:
        assert response.status_code == 200
        chunks = response.iter_raw(65536)
        received += len(next(chunks))
        # The server has now sent what the socket buffers take; it must be parked, not reading
        # ahead. Watch its memory for a while (a buffering server would grow by ~120 MB).
        peak = 0
        for _ in range(20):
            peak = max(peak, _rss_kib(pid))
            with psycopg.connect(stack["url"]) as probe:
                probe.execute("SELECT pg_sleep(0.1)")
        print("RSS KiB before, peak:", before, peak)
        assert peak - before < 60 * 1024, (before, peak)
        for chunk in chunks:
            received += len(chunk)
    assert received > 100_000 * 1000
