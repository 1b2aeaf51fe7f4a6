"""A leaf is the canonical JSON of what GET returns: events written over HTTP to the real server
(odd values included) are sequenced, and each leaf hash equals SHA-256(0x00 || JCS(GET body))
computed here from the response bytes with the reference canonicalizer."""

from __future__ import annotations

import asyncio
import hashlib
import json

import rfc8785
from ledger_helpers import connection_source, reset_log
from support import make_event

from datastorage.ledger.sequencer import sequence_once

EVENTS = "/api/v1/audit/events"


def _as_ecmascript(text: str) -> int | float:
    """Numbers as a JavaScript verifier reads them: beyond 2**53 an integer is a double."""
    value = int(text)
    return value if abs(value) <= 2**53 - 1 else float(value)


def test_leaves_hash_the_canonical_get_body(api, database_url, db):
    reset_log(db)
    bodies = [
        make_event(),
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
        make_event(event_data={"\U0001f600": 1, "\ufb33": [None, True, "\x01"]}),
    ]
    stored = []
    for body in bodies:
        response = api.post(EVENTS, json=body)
        assert response.status_code == 201, (response.text, body)
        got = api.get(f"{EVENTS}/{response.json()['event_id']}")
        assert got.status_code == 200
        stored.append(got.content)

    async def sequence() -> None:
        # The server queued them when it stored them (with whatever else the session wrote).
        async with connection_source(database_url)() as conn:
            while (await sequence_once(conn, batch_size=1000)).appended:
                pass

    asyncio.run(sequence())
    for content in stored:
        event = json.loads(content, parse_int=_as_ecmascript)
        expected = hashlib.sha256(b"\x00" + rfc8785.dumps(event)).digest()
        (leaf_hash,) = db.execute(
            "SELECT leaf_hash FROM log_leaves WHERE event_id = %s", (event["event_id"],)
        ).fetchone()
        assert bytes(leaf_hash) == expected, event["event_data"]
