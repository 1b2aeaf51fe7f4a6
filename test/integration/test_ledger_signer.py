"""The checkpoint signer and publisher against a real PostgreSQL, a directory and an S3 endpoint
(moto's standalone server over HTTP): signed checkpoints verify and are consistent with each
other; a tree rewritten behind the signer's back is never signed; a failing target is counted and
caught up later."""

from __future__ import annotations

import uuid

import boto3
import pytest
from ledger_helpers import connection_source, new_events, reset_log, store_events

from datastorage.ledger import checkpoint, merkle, note, proofs, tree
from datastorage.ledger.publisher import Publisher
from datastorage.ledger.sequencer import sequence_once
from datastorage.ledger.signer import CheckpointSigner, Outcome
from datastorage.objectstore import open_store
from datastorage.store import ledger as store

pytestmark = pytest.mark.asyncio
ORIGIN = "audit.example.com/test-log"


@pytest.fixture()
def log_db(database_url, db):
    reset_log(db)
    return database_url


@pytest.fixture()
def key():
    return note.generate_signer(ORIGIN)


async def _grow(connect, count: int) -> None:
    async with connect() as conn:
        await store_events(conn, new_events(count))
        while (await sequence_once(conn, batch_size=1000)).appended:
            pass


async def test_checkpoints_are_signed_while_the_tree_grows_and_are_mutually_consistent(log_db, key):
    connect = connection_source(log_db)
    signer = CheckpointSigner(connect, key)
    assert await signer.sign_once() == Outcome.UNCHANGED  # an empty tree is not signed
    signed = []
    for count in (1, 6, 9, 1, 31):
        await _grow(connect, count)
        assert await signer.sign_once() == Outcome.SIGNED
        assert await signer.sign_once() == Outcome.UNCHANGED
        async with connect() as conn:
            latest = await store.latest_checkpoint(conn)
        text = note.verify(latest.note.encode(), key.verifier)
        parsed = checkpoint.parse(text)
        assert parsed.origin == ORIGIN and (parsed.size, parsed.root) == (latest.size, latest.root)
        signed.append(parsed)
    assert [c.size for c in signed] == [1, 7, 16, 17, 48]
    async with connect() as conn:
        status = await store.log_status(conn)
    assert status.tree_size == 48 and status.sequencing_lag == 0
    assert status.checkpoint_age is not None and status.checkpoint_age < 60
    async with connect() as conn:
        for older, newer in zip(signed, signed[1:], strict=False):
            proof = await proofs.consistency(conn, older.size, newer.size)
            merkle.verify_consistency(older.size, newer.size, older.root, newer.root, proof)


async def test_a_rewritten_tree_is_never_signed_and_signing_stops(log_db, db, key):
    connect = connection_source(log_db)
    failures = []
    signer = CheckpointSigner(connect, key, on_consistency_failure=lambda: failures.append(1))
    await _grow(connect, 5)
    assert await signer.sign_once() == Outcome.SIGNED
    # Someone rebuilds the log with one leaf changed, then more events arrive.
    leaves = [
        bytes(r[0]) for r in db.execute("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
    ]
    forged = [merkle.leaf_hash(b"forged"), *leaves[1:]]
    rebuilt = merkle.append_leaves(0, [], forged, tree.STORED_LEVEL)
    db.execute("UPDATE log_leaves SET leaf_hash = %s WHERE leaf_index = 0", (forged[0],))
    db.execute("TRUNCATE log_nodes")
    for level, index, value in rebuilt.nodes:
        db.execute("INSERT INTO log_nodes VALUES (%s, %s, %s)", (level, index, value))
    db.execute("UPDATE log_tree SET root_hash = %s", (rebuilt.root,))
    await _grow(connect, 3)
    assert await signer.sign_once() == Outcome.INCONSISTENT
    assert failures == [1]
    await _grow(connect, 2)
    assert await signer.sign_once() == Outcome.STOPPED
    # A fresh process (no memory) refuses too: the signer state is kept apart from the tree.
    assert await CheckpointSigner(connect, key).sign_once() == Outcome.INCONSISTENT
    assert db.execute("SELECT max(tree_size) FROM log_checkpoints").fetchone()[0] == 5


async def test_a_truncated_tree_is_never_signed(log_db, db, key):
    connect = connection_source(log_db)
    signer = CheckpointSigner(connect, key)
    await _grow(connect, 6)
    assert await signer.sign_once() == Outcome.SIGNED
    db.execute("DELETE FROM log_leaves WHERE leaf_index >= 4")
    db.execute("DELETE FROM log_nodes WHERE (node_index + 1) * (1 << level) > 4")
    kept = [bytes(r[0]) for r in db.execute("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")]
    db.execute(
        "UPDATE log_tree SET tree_size = 4, root_hash = %s", (merkle.root_from_leaves(kept),)
    )
    fresh = CheckpointSigner(connect, key)
    assert await fresh.sign_once() == Outcome.INCONSISTENT


async def test_a_tree_whose_stored_root_is_not_its_subtrees_is_never_signed(log_db, db, key):
    connect = connection_source(log_db)
    await _grow(connect, 3)
    db.execute("UPDATE log_tree SET root_hash = sha256('x'::bytea)")
    assert await CheckpointSigner(connect, key).sign_once() == Outcome.INCONSISTENT


async def _sign_and_publish(connect, key, publisher, counts) -> list[int]:
    signer = CheckpointSigner(connect, key)
    sizes = []
    for count in counts:
        await _grow(connect, count)
        assert await signer.sign_once() == Outcome.SIGNED
        async with connect() as conn:
            sizes.append((await store.latest_checkpoint(conn)).size)
    await publisher.publish_once()
    return sizes


async def test_checkpoints_are_published_to_a_directory_with_their_history(log_db, key, tmp_path):
    connect = connection_source(log_db)
    target = open_store(f"file://{tmp_path}/published")
    publisher = Publisher(connect, target)
    sizes = await _sign_and_publish(connect, key, publisher, (2, 3, 4))
    assert target.list("checkpoints/") == sorted(f"checkpoints/{s}" for s in sizes)
    async with connect() as conn:
        latest = await store.latest_checkpoint(conn)
        assert await store.unpublished_checkpoints(conn, 10) == []
    assert (tmp_path / "published" / "checkpoint").read_text() == latest.note
    note.verify((tmp_path / "published" / "checkpoint").read_bytes(), key.verifier)
    assert await publisher.publish_once() == 0


async def test_a_failing_target_is_counted_and_caught_up_in_order(log_db, key, tmp_path):
    connect = connection_source(log_db)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    failures = []
    target = open_store(f"file://{blocker}")
    publisher = Publisher(connect, target, on_failure=failures.append)
    await _sign_and_publish(connect, key, publisher, (1, 2))
    assert len(failures) == 1
    async with connect() as conn:
        assert [c.size for c in await store.unpublished_checkpoints(conn, 10)] == [1, 3]
    blocker.unlink()
    await _grow(connect, 1)
    assert await CheckpointSigner(connect, key).sign_once() == Outcome.SIGNED
    assert await publisher.publish_once() == 3
    assert target.list() == ["checkpoint", "checkpoints/1", "checkpoints/3", "checkpoints/4"]
    assert checkpoint.parse(note.verify(target.get("checkpoint"), key.verifier)).size == 4


async def test_checkpoints_are_published_to_s3(log_db, key, s3_endpoint, s3_env):
    bucket = f"log-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    connect = connection_source(log_db)
    target = open_store(f"s3://{bucket}/audit/log", s3_endpoint_url=s3_endpoint)
    sizes = await _sign_and_publish(connect, key, Publisher(connect, target), (3, 5))
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    keys = sorted(item["Key"] for item in listed["Contents"])
    assert keys == ["audit/log/checkpoint"] + [f"audit/log/checkpoints/{s}" for s in sizes]
    assert checkpoint.parse(note.verify(target.get("checkpoint"), key.verifier)).size == 8
    assert target.get("checkpoints/404") is None


async def test_an_unreachable_s3_endpoint_is_counted(log_db, key, s3_env):
    connect = connection_source(log_db)
    target = open_store("s3://nowhere/log", s3_endpoint_url="http://127.0.0.1:9")
    failures = []
    await _sign_and_publish(
        connect, key, Publisher(connect, target, on_failure=failures.append), (1,)
    )
    assert len(failures) == 1
