"""The log's endpoints (docs/tamper-evident-log.md) on a real server (Hypercorn subprocess) with a
signing key, over a log built by the sequencer and signer: everything a client gets is checked the
way an auditor
would, with the pinned key, the event as GET returns it, RFC 8785 and the RFC 9162 algorithms.
Without a key the endpoints say the log is off."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import uuid

import httpx
import pytest
import rfc8785
from ledger_helpers import fresh_log_database, grow_and_sign, new_events
from support import REPO, ServerProcess

from datastorage.ledger import checkpoint, merkle, note
from datastorage.ledger.keyfile import keygen, load_signer

ORIGIN = "audit.example.com/endpoints"
LOG = "/api/v1/audit/log"


@pytest.fixture(scope="module")
def log_server(pg_server, tmp_path_factory):
    """(client, database URL, signer, verifier key string) of a server with the log on, whose
    database starts empty."""
    root = tmp_path_factory.mktemp("log-server")
    verifier_key = keygen(ORIGIN, root / "signing.key")
    url = fresh_log_database(pg_server)
    env = {
        "DATASTORAGE_DATABASE_URL": url,
        "DATASTORAGE_LOG_SIGNING_KEY_FILE": str(root / "signing.key"),
        "DATASTORAGE_LOG_CHECKPOINT_INTERVAL": "7",
    }
    server = ServerProcess(env, root)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, url, load_signer(root / "signing.key"), verifier_key
    server.stop()


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/" + slug), body
    return body


def test_before_the_first_checkpoint(log_server):
    client, _, _, verifier_key = log_server
    key = client.get(f"{LOG}/key")
    assert key.status_code == 200 and key.headers["content-type"] == "text/plain; charset=utf-8"
    assert key.text.strip() == verifier_key
    _problem(client.get(f"{LOG}/checkpoint"), 404, "not-found")
    _problem(client.get(f"{LOG}/proof/{uuid.uuid4()}"), 404, "not-found")
    body = _problem(client.get(f"{LOG}/consistency?first=1&second=1"), 400, "validation-error")
    assert set(body["field_errors"]) == {"second"}


def test_checkpoint_proofs_and_errors_check_out_with_the_pinned_key(log_server):
    client, url, signer, verifier_key = log_server
    verifier = note.parse_verifier_key(verifier_key)
    events = new_events(5)
    later = new_events(8)
    asyncio.run(grow_and_sign(url, signer, events))
    first = checkpoint.parse(note.verify(client.get(f"{LOG}/checkpoint").content, verifier))
    asyncio.run(grow_and_sign(url, signer, later))

    response = client.get(f"{LOG}/checkpoint")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    latest = checkpoint.parse(note.verify(response.content, verifier))
    assert latest.origin == ORIGIN and latest.size >= 13 and first.size >= 5

    consistency = client.get(
        f"{LOG}/consistency", params={"first": first.size, "second": latest.size}
    )
    assert consistency.status_code == 200, consistency.text
    body = consistency.json()
    assert (body["first"], body["second"]) == (first.size, latest.size)
    proof = [base64.b64decode(h) for h in body["proof"]]
    merkle.verify_consistency(first.size, latest.size, first.root, latest.root, proof)

    for stored in events + later:
        event = client.get(f"/api/v1/audit/events/{stored['event_id']}").json()
        leaf = hashlib.sha256(b"\x00" + rfc8785.dumps(event)).digest()
        for size, root, params in ((latest.size, latest.root, {}), (first.size, first.root, None)):
            params = {"tree_size": size} if params is None else params
            answer = client.get(f"{LOG}/proof/{stored['event_id']}", params=params)
            if size == first.size and stored in later:
                body = _problem(answer, 404, "not-yet-sequenced")
                assert answer.headers["retry-after"] == "7", body
                continue
            assert answer.status_code == 200, answer.text
            proof = answer.json()
            assert proof["event_id"] == stored["event_id"] and proof["tree_size"] == size
            assert base64.b64decode(proof["leaf_hash"]) == leaf
            path = [base64.b64decode(h) for h in proof["inclusion_path"]]
            merkle.verify_inclusion(proof["leaf_index"], size, leaf, path, root)

    some = events[0]["event_id"]
    for params, field in (
        ({"tree_size": latest.size + 1}, "tree_size"),
        ({"tree_size": 0}, "tree_size"),
        ({"tree_size": "x"}, "tree_size"),
    ):
        body = _problem(client.get(f"{LOG}/proof/{some}", params=params), 400, "validation-error")
        assert set(body["field_errors"]) == {field}, body
    _problem(client.get(f"{LOG}/proof/not-a-uuid"), 400, "validation-error")
    _problem(client.get(f"{LOG}/proof/{uuid.uuid4()}"), 404, "not-found")
    for params, fields in (
        ({"first": 2, "second": 1}, {"first"}),
        ({"first": 1, "second": latest.size + 1}, {"second"}),
        ({"first": 0, "second": 1}, {"first"}),
        ({"second": 1}, {"first"}),
    ):
        body = _problem(client.get(f"{LOG}/consistency", params=params), 400, "validation-error")
        assert set(body["field_errors"]) == fields, body
    same = client.get(f"{LOG}/consistency", params={"first": 3, "second": 3}).json()
    assert same == {"first": 3, "second": 3, "proof": []}


def test_without_a_key_the_log_endpoints_say_it_is_off(api):
    for path in ("checkpoint", "key", f"proof/{uuid.uuid4()}", "consistency?first=1&second=1"):
        body = _problem(api.get(f"{LOG}/{path}"), 404, "not-found")
        assert "not enabled" in body["detail"]


def test_a_malformed_key_stops_the_server_before_it_serves(database_url, tmp_path):
    (tmp_path / "bad.key").write_text("PRIVATE+KEY+nope\n")
    env = {
        **os.environ,
        "DATASTORAGE_DATABASE_URL": database_url,
        "DATASTORAGE_LOG_SIGNING_KEY_FILE": str(tmp_path / "bad.key"),
        "DATASTORAGE_HTTP_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "datastorage", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "DATASTORAGE_LOG_SIGNING_KEY_FILE" in done.stderr
    assert "PRIVATE" not in done.stderr.replace("PRIVATE+KEY+<", "")  # no key material
