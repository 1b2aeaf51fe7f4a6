"""A leaf is the canonical JSON of what GET returns: events written over HTTP to the real server
(odd values included) are sequenced, and each leaf hash equals SHA-256(0x00 || JCS(GET body))
computed here from the response bytes with the reference canonicalizer.

Both ways a leaf hash is made are checked: with the log off the writer queues no hash and the
sequencer hashes the stored row; with the log on the writer hashes the event it stores (when
every value in it comes back from PostgreSQL exactly) and the sequencer only appends that hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import psycopg
import pytest
import rfc8785
from ledger_helpers import connection_source, fresh_log_database, queued_events, reset_log
from support import ServerProcess, eventually, make_event

from datastorage.ledger.keyfile import keygen
from datastorage.ledger.sequencer import sequence_once

EVENTS = "/api/v1/audit/events"


def _as_ecmascript(text: str) -> int | float:
    """Numbers as a JavaScript verifier reads them: beyond 2**53 an integer is a double."""
    value = int(text)
    return value if abs(value) <= 2**53 - 1 else float(value)


def _bodies() -> list[dict]:
    return [
        make_event(),
        # Floats: PostgreSQL writes them back its own way, so the sequencer hashes the row.
        make_event(
            event_data={
                "float": 1.5,
                "whole": 2.0,
                "big": 2**60,
                "huge": 1e300,
                "small": 1e-7,
                "é": "ü\u2028",
            },
            namespace="ns",
            duration_ms=2**40,
        ),
        # A key in U+E000..U+FFFF sorts differently by UTF-16 units: the reference path.
        make_event(event_data={"\U0001f600": 1, "\ufb33": [None, True, "\x01"]}),
        # Only exact values, odd ones: the writer's hash must equal the row's.
        make_event(
            event_data={
                "edge": [2**53 - 1, -(2**53 - 1), 0, -1, True, False, None],
                "text": 'quote " backslash \\ tab \t nl \n ctl \x1f del \x7f \u2028 é 😀',
                "nested": {"b": {"c": [[], {}, [{"z": "1", "a": "2"}]]}, "a": ""},
                "\U0001f600 key": "emoji key",
                "ümlaut": "x",
            },
            actor_id="Mixed Case / ünicode",
            error_message="line one\nline two",
        ),
        make_event(event_data={"big": 2**53 + 1}),
    ]


def _post_and_get(client: httpx.Client, bodies: list[dict]) -> list[bytes]:
    stored = []
    for body in bodies:
        response = client.post(EVENTS, json=body)
        assert response.status_code == 201, (response.text, body)
        got = client.get(f"{EVENTS}/{response.json()['event_id']}")
        assert got.status_code == 200
        stored.append(got.content)
    return stored


def _leaf(db, event_id: str) -> bytes | None:
    row = db.execute("SELECT leaf_hash FROM log_leaves WHERE event_id = %s", (event_id,)).fetchone()
    return None if row is None else bytes(row[0])


def _check_leaves(db, stored: list[bytes]) -> None:
    for content in stored:
        event = json.loads(content, parse_int=_as_ecmascript)
        expected = hashlib.sha256(b"\x00" + rfc8785.dumps(event)).digest()
        assert _leaf(db, event["event_id"]) == expected, event["event_data"]


def test_the_sequencer_hashes_the_get_body_of_rows_queued_without_a_hash(api, database_url, db):
    reset_log(db)
    stored = _post_and_get(api, _bodies())
    ids = [json.loads(content)["event_id"] for content in stored]
    queued = [q for q in queued_events(db) if q.event_id in ids and q.leaf_hash is None]
    assert len(queued) == len(ids)  # the log is off on this server: no writer hashes

    async def sequence() -> None:
        # The server queued them when it stored them (with whatever else the session wrote).
        async with connection_source(database_url)() as conn:
            while (await sequence_once(conn, batch_size=1000)).appended:
                pass

    asyncio.run(sequence())
    _check_leaves(db, stored)


@pytest.fixture()
def log_on_server(pg_server, tmp_path):
    url = fresh_log_database(pg_server)
    keygen("audit.example.com/fidelity", tmp_path / "signing.key")
    env = {
        "DATASTORAGE_DATABASE_URL": url,
        "DATASTORAGE_LOG_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
    }
    server = ServerProcess(env, tmp_path)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, url
    server.stop()


def test_the_writers_hash_equals_the_hash_of_the_get_body(log_on_server):
    """The server's own sequencer appends what its writers queued (the store-level test in
    test_ledger_registration shows which events are queued with a hash)."""
    client, url = log_on_server
    with psycopg.connect(url, autocommit=True) as db:
        stored = _post_and_get(client, _bodies())
        ids = [json.loads(content)["event_id"] for content in stored]
        eventually(lambda: all(_leaf(db, i) for i in ids), timeout=30)
        _check_leaves(db, stored)


def test_a_batch_writers_hash_equals_the_hash_of_the_get_body(log_on_server):
    """A batch is stored by COPY, whose rows carry event_data as the very bytes the writer's
    leaf was computed from (sorted keys): GET must give back what those bytes hash to."""
    client, url = log_on_server
    with psycopg.connect(url, autocommit=True) as db:
        response = client.post(f"{EVENTS}/batch", json=_bodies())
        assert response.status_code == 201, response.text
        ids = response.json()["event_ids"]
        stored = []
        for event_id in ids:
            got = client.get(f"{EVENTS}/{event_id}")
            assert got.status_code == 200
            stored.append(got.content)
        eventually(lambda: all(_leaf(db, i) for i in ids), timeout=30)
        _check_leaves(db, stored)
