"""Export lines are GET bodies (docs/compliance.md): the export writes each line from the row's
values and embeds event_data as its stored JSON text, never through GET's code, so every line
must read back, type for type, as `GET /api/v1/audit/events/{id}` of that event — for events
that exercise every column, nulls, Unicode and escapes in every text column, and event_data
numbers that JSON readers may read differently (beyond 64 bits, many digits, decimals) — and
an export of them must verify against the log. Checked with and without the log's key (with it
each line also carries `leaf_index`), and for CSV."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import re
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from ledger_helpers import connection_source, new_events, store_events
from support import ServerProcess
from test_export import _verify

from datastorage.ledger.keyfile import keygen, load_signer
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.ledger.sequencer import sequence_once
from datastorage.ledger.signer import CheckpointSigner

EXPORT = "/api/v1/audit/export"
EVENTS = "/api/v1/audit/events"
ORIGIN = "audit.example.com/export-lines"
TEXT = 'q"uote\\back/slash\nnl\rcr\ttab\x01\x0b\x1f\x7f é 日本 🙂 \u2028\u2029 \ufeff\ue000'

# What a request can carry (stored by the write path, logged with the leaf it computes).
EVENT_DATA = [
    {"plain": 1},
    {},
    {"nested": {"list": [1, -2, 3.5, None, True, False, "", {"deep": [[{}]]}]}, "k\u00e9y": TEXT},
    {"huge": 1e300, "tiny": 1e-300, "big": 1.2345678901234567e22, "exact": 1e22},
    {"u64_max": 2**64 - 1, "i64_min": -(2**63), "unsafe": 2**53 + 1, "neg_zero": -0.0},
    {"decimals": [0.1, 1.0, 2.5, 1e-7, 0.30000000000000004, 1e21, 123456789.12345679]},
    {"digits_in_string": "1234567890123456789012345", "n": 7},
]
# Stored with SQL into the database without a log: JSON text jsonb keeps as written that no
# request can produce (digits beyond a double, beyond 64 bits, trailing zeros).
STORED_TEXTS = [
    '{"beyond_u64": 123456789012345678901234567890, "negative": -9223372036854775809}',
    '{"decimals": [0.1000, 1.0, -0.0, 2.50, 1e-7, 1.5E+3, 0.30000000000000004]}',
    '{"many_digits": 3.14159265358979323846264338327950288, "a": [123456789.1234567891]}',
]


@pytest.fixture(scope="module")
def stack(pg_server, tmp_path_factory):
    """Two databases with the same kinds of events: one with a signed log over them, one where
    the log never ran (no checkpoint: lines without leaf_index)."""
    with (
        pg_server.migrated_database("export_lines") as url,
        pg_server.migrated_database("export_lines_nolog") as plain_url,
    ):
        workdir = tmp_path_factory.mktemp("export-lines")
        key_file = workdir / "log.key"
        verifier_key = keygen(ORIGIN, key_file)
        tag = uuid.uuid4().hex[:8]
        asyncio.run(_seed(url, tag, key_file))
        asyncio.run(_seed(plain_url, tag, None))
        signed = ServerProcess(
            {"DATASTORAGE_DATABASE_URL": url, "DATASTORAGE_LOG_SIGNING_KEY_FILE": str(key_file)},
            workdir,
        )
        plain = ServerProcess({"DATASTORAGE_DATABASE_URL": plain_url}, workdir)
        with (
            httpx.Client(base_url=signed.url, timeout=60) as signed_api,
            httpx.Client(base_url=plain.url, timeout=60) as plain_api,
        ):
            yield {
                "signed": signed_api,
                "plain": plain_api,
                "tag": tag,
                "key": verifier_key,
                "dir": workdir,
                "plain_url": plain_url,
            }
        signed.stop()
        plain.stop()


async def _seed(url: str, tag: str, key_file: Path | None) -> None:
    connect = connection_source(url)
    whole_second = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    parent = new_events(1, correlation_id=f"lines-{tag}", event_data=EVENT_DATA[0])[0]
    events = [
        *new_events(
            1,
            correlation_id=f"lines-{tag}",
            parent_event_id=parent["event_id"],
            event_data=EVENT_DATA[1],
            actor_id=TEXT,
            resource_id=TEXT,
            namespace=TEXT,
            cluster_name="c,luster",
            error_code="E\\1",
            error_message=TEXT,
            trace_id="1234567890123456789012",
            span_id='"span"',
            duration_ms=2**62,
            severity="critical",
            is_sensitive=True,
            retention_days=30,
            event_timestamp=whole_second.isoformat().replace("+00:00", "Z"),
        ),
        *(new_events(1, correlation_id=f"lines-{tag}", event_data=d)[0] for d in EVENT_DATA[2:]),
    ]
    events[0]["recorded_by"] = TEXT  # set by the server from the reviewed token, not a request
    async with connect() as conn:
        await store_events(conn, [parent])
        await store_events(conn, events)
        if key_file is None:
            for text in STORED_TEXTS:
                stored = new_events(1, correlation_id=f"lines-{tag}")
                await store_events(conn, stored)
                await conn.execute(
                    "UPDATE audit_events SET event_data = %s::jsonb WHERE event_id = %s",
                    (text, stored[0]["event_id"]),
                )
        while key_file is not None and (await sequence_once(conn, batch_size=1000)).appended:
            pass
    if key_file is not None:
        await CheckpointSigner(connect, load_signer(key_file)).sign_once()
    async with connect() as conn:  # after the checkpoint: a line with leaf_index null
        await store_events(conn, new_events(1, correlation_id=f"lines-{tag}", actor_id=TEXT))


def _typed(value) -> str:
    """JSON text that tells 1 from 1.0 and 10**22 from 1e22 (== on parsed values does not)."""
    return json.dumps(value, sort_keys=True)


def _export_lines(api: httpx.Client, tag: str) -> tuple[list[dict], bytes]:
    response = api.get(EXPORT, params={"correlation_id": f"lines-{tag}"})
    assert response.status_code == 200, response.text
    lines = response.content.split(b"\n")
    return [json.loads(line) for line in lines[:-2]], response.content


def _get(api: httpx.Client, event_id: str) -> dict:
    response = api.get(f"{EVENTS}/{event_id}")
    assert response.status_code == 200, response.text
    return json.loads(response.content)


def test_signed_export_lines_are_get_bodies_and_verify(stack):
    events, content = _export_lines(stack["signed"], stack["tag"])
    assert len(events) == len(EVENT_DATA) + 1
    leaf_indexes = [event.pop("leaf_index") for event in events]
    # The last event came after the checkpoint (null, or an index the proof does not cover).
    assert sum(index is not None for index in leaf_indexes) >= len(EVENT_DATA)
    for event in events:
        stored = _get(stack["signed"], event["event_id"])
        assert list(event) == list(stored)  # same fields, same order
        assert _typed(event) == _typed(stored)
        assert event_leaf_hash(event) == event_leaf_hash(stored)
    by_id = {e["event_id"]: e for e in events}
    tricky = next(e for e in events if e["parent_event_id"] is not None)
    assert tricky["error_message"] == TEXT and tricky["recorded_by"] == TEXT
    assert tricky["event_timestamp"].endswith("Z") and "." not in tricky["event_timestamp"]
    assert len(by_id) == len(events)
    path = stack["dir"] / "lines.ndjson"
    path.write_bytes(content)
    result = _verify(path, stack["key"])
    assert result.returncode == 0, result.stdout + result.stderr
    proven = int(re.search(r"(\d+) proven", result.stdout).group(1))
    assert proven >= len(EVENT_DATA), result.stdout


def test_export_without_a_checkpoint_has_no_leaf_index_and_the_same_lines(stack):
    events, _ = _export_lines(stack["plain"], stack["tag"])
    assert len(events) == len(EVENT_DATA) + len(STORED_TEXTS) + 1
    for event in events:
        assert "leaf_index" not in event
        assert _typed(event) == _typed(_get(stack["plain"], event["event_id"]))


def test_csv_fields_read_back_as_get_shows_them(stack):
    response = stack["plain"].get(
        EXPORT, params={"correlation_id": f"lines-{stack['tag']}", "format": "csv"}
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode(), newline="")))
    assert len(rows) == len(EVENT_DATA) + len(STORED_TEXTS) + 1
    for row in rows:
        stored = _get(stack["plain"], row["event_id"])
        assert list(row) == list(stored)
        for field, value in stored.items():
            if field == "event_data":
                assert _typed(json.loads(row[field])) == _typed(value)
            elif value is None:
                assert row[field] == ""
            elif isinstance(value, bool):
                assert row[field] == str(value).lower()
            else:
                assert row[field] == str(value), field


def test_the_stored_rows_hold_the_numbers_the_cases_are_about(stack):
    with psycopg.connect(stack["plain_url"]) as conn:
        texts = [
            r[0]
            for r in conn.execute(
                "SELECT event_data::text FROM audit_events WHERE correlation_id = %s",
                (f"lines-{stack['tag']}",),
            )
        ]
    assert any("123456789012345678901234567890" in t for t in texts)
    assert any("0.1000" in t for t in texts)
    assert any(len(t) > 300 and "0" * 290 in t for t in texts)  # 1e300 as jsonb writes it
