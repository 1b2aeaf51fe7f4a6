"""`datastorage log keygen` and `datastorage verify` as an auditor runs them: real subprocesses
against a real PostgreSQL, each test on a database of its own, tampered with by plain SQL.

A log is built the way the service builds it (events inserted and queued in one transaction, the
sequencer, the signer with a key made by `log keygen`); the auditor's checkpoint is the latest
signed note, written to a file. Then one kind of tampering at a time: `verify` must exit 1 and
name the kind and the event, or exit 0 when nothing was tampered with.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from ledger_helpers import connection_source, fresh_log_database, grow_and_sign, new_events
from support import REPO, make_event

from datastorage.domain.events import TimeBounds, normalize_event
from datastorage.ledger import note
from datastorage.ledger.keyfile import load_signer
from datastorage.store import audit_writes
from datastorage.store import ledger as store

ORIGIN = "audit.example.com/verify-cli"
COUNT = 12


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datastorage", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    """A key made by `log keygen`: (private key file, the verifier key it printed)."""
    path = tmp_path_factory.mktemp("log-key") / "signing.key"
    made = cli("log", "keygen", "--origin", ORIGIN, "--out", str(path))
    assert made.returncode == 0, made.stderr
    return path, made.stdout.strip()


@pytest.fixture()
def log_db(pg_server):
    return fresh_log_database(pg_server)


async def _grow(url: str, key_file: Path, events: list[dict]) -> None:
    await grow_and_sign(url, load_signer(key_file), events)


def build_log(url: str, key_file: Path, tmp_path: Path, batches=(5, COUNT - 5)) -> list[str]:
    """Store and sequence events in batches (one checkpoint after each), write the latest
    checkpoint to tmp_path/checkpoint; return the event ids in leaf order."""
    for count in batches:
        asyncio.run(_grow(url, key_file, new_events(count)))
    return leaf_ids(url, tmp_path)


def leaf_ids(url: str, tmp_path: Path) -> list[str]:
    with psycopg.connect(url, autocommit=True) as db:
        latest = asyncio.run(_latest(url))
        (tmp_path / "checkpoint").write_text(latest)
        rows = db.execute("SELECT event_id::text FROM log_leaves ORDER BY leaf_index").fetchall()
    return [r[0] for r in rows]


async def _latest(url: str) -> str:
    async with connection_source(url)() as conn:
        return (await store.latest_checkpoint(conn)).note


def verify(url: str, key: str, tmp_path: Path, *extra: str, env=None) -> tuple[int, list[str]]:
    done = cli(
        "verify",
        "--key",
        key,
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--database",
        url,
        *extra,
        env=env,
    )
    assert done.returncode in (0, 1), done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    return done.returncode, lines


# -- acceptance 2: a keygen key's checkpoint checked with nothing but Ed25519 ---------------------


def test_a_checkpoint_signed_with_a_keygen_key_verifies_with_a_plain_ed25519_check(
    log_db, key, tmp_path
):
    key_file, verifier_key = key
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().startswith(f"PRIVATE+KEY+{ORIGIN}+")
    build_log(log_db, key_file, tmp_path)
    signed = (tmp_path / "checkpoint").read_bytes()

    name, hex_id, material = verifier_key.split("+", 2)  # base64 may contain "+"
    raw = base64.b64decode(material)
    assert name == ORIGIN and raw[0] == 0x01 and len(raw) == 33
    public = raw[1:]
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]
    assert hex_id == key_id.hex()

    text, _, signatures = signed.partition(b"\n\n")
    text += b"\n"
    origin, size, root = text.decode().splitlines()
    assert origin == ORIGIN and int(size) == COUNT and len(base64.b64decode(root)) == 32
    (line,) = signatures.decode().splitlines()
    assert line.startswith(f"\u2014 {ORIGIN} ")
    blob = base64.b64decode(line.rsplit(" ", 1)[1])
    assert blob[:4] == key_id and struct.unpack(">I", blob[:4])[0] == int(hex_id, 16)
    Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], text)  # raises if it fails
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public).verify(
            blob[4:], text.replace(root.encode(), b"x")
        )


def test_keygen_refuses_to_overwrite_a_file(key):
    key_file, _ = key
    before = key_file.read_text()
    again = cli("log", "keygen", "--origin", ORIGIN, "--out", str(key_file))
    assert again.returncode == 2 and "not overwriting" in again.stderr
    assert key_file.read_text() == before


# -- acceptance 4: verify names each kind of tampering ---------------------------------------------


def test_an_untouched_database_verifies_clean(log_db, key, tmp_path):
    build_log(log_db, key[0], tmp_path)
    code, lines = verify(log_db, key[1], tmp_path, "--grace", "0")
    assert code == 0 and lines == [f"OK: {COUNT} leaves checked; findings: none"]
    # The key may also be given as a file holding it.
    (tmp_path / "vkey").write_text(key[1] + "\n")
    assert verify(log_db, str(tmp_path / "vkey"), tmp_path)[0] == 0


def test_an_edited_row_is_named(log_db, key, tmp_path, db_for):
    ids = build_log(log_db, key[0], tmp_path)
    db_for(log_db).execute(
        """UPDATE audit_events SET event_data = '{"signal": "Forged"}' WHERE event_id = %s""",
        (ids[7],),
    )
    code, lines = verify(log_db, key[1], tmp_path)
    assert code == 1
    assert lines[:-1] == [f"edited event_id={ids[7]} leaf_index=7"]
    assert lines[-1].startswith("TAMPERING FOUND") and "edited=1" in lines[-1]


def test_a_deleted_row_is_missing(log_db, key, tmp_path, db_for):
    ids = build_log(log_db, key[0], tmp_path)
    db_for(log_db).execute("DELETE FROM audit_events WHERE event_id = %s", (ids[3],))
    code, lines = verify(log_db, key[1], tmp_path)
    assert code == 1 and lines[:-1] == [f"missing event_id={ids[3]} leaf_index=3"]


def test_a_row_inserted_behind_the_log_is_unsequenced_after_the_grace_period(log_db, key, tmp_path):
    build_log(log_db, key[0], tmp_path)
    forged = new_events(1)

    async def insert_only() -> None:  # a row that never went through the log's queue
        async with connection_source(log_db)() as conn:
            await audit_writes.insert_batch(
                conn, forged, client_ids=(), lock_timeout=2, leaf_hashes=True
            )

    asyncio.run(insert_only())
    # Within the grace period it may still be on its way to the tree: not reported.
    assert verify(log_db, key[1], tmp_path, "--grace", "3600")[0] == 0
    code, lines = verify(log_db, key[1], tmp_path, "--grace", "0")
    assert code == 1 and lines[:-1] == [
        f"unsequenced event_id={forged[0]['event_id']} leaf_index=-"
    ]
    # The grace period is also a setting.
    env = {"DATASTORAGE_LOG_UNSEQUENCED_GRACE": "0"}
    assert verify(log_db, key[1], tmp_path, env=env)[0] == 1


def _swap_leaves(db, first: int, second: int) -> None:
    with db.transaction():  # leaf_index is the primary key: swap through a free index
        db.execute("UPDATE log_leaves SET leaf_index = 1000000 WHERE leaf_index = %s", (first,))
        db.execute("UPDATE log_leaves SET leaf_index = %s WHERE leaf_index = %s", (first, second))
        db.execute("UPDATE log_leaves SET leaf_index = %s WHERE leaf_index = 1000000", (second,))


def _tile_line(index: int, what: str = "differs from its leaves") -> str:
    first = index * 256
    return (
        f"root-mismatch event_id=- leaf_index={first} stored subtree level=8 index={index} "
        f"of leaves {first}..{first + 255} {what}"
    )


def test_two_swapped_leaves_are_named(log_db, key, tmp_path, db_for):
    ids = build_log(log_db, key[0], tmp_path)
    _swap_leaves(db_for(log_db), 2, 5)
    code, lines = verify(log_db, key[1], tmp_path)
    assert code == 1
    assert f"root-mismatch event_id={ids[5]} leaf_index=2 its subtree changed" in lines
    assert f"root-mismatch event_id={ids[2]} leaf_index=5 its subtree changed" in lines
    assert "root-mismatch event_id=- leaf_index=- stored checkpoint tree_size=5" in lines
    assert f"root-mismatch event_id=- leaf_index=- tree_size={COUNT} checkpoint root" in lines
    assert not [line for line in lines if line.startswith(("edited", "missing"))]


def test_two_swapped_leaves_in_different_tiles_are_named_with_their_tiles(
    log_db, key, tmp_path, db_for
):
    """Across tiles of 256 leaves: each leaf by its pair, each tile by its stored hash, and the
    first stored checkpoint the swap breaks, in leaf order as the tree is rebuilt."""
    ids = build_log(log_db, key[0], tmp_path, batches=(300, 230))
    _swap_leaves(db_for(log_db), 2, 300)
    code, lines = verify(log_db, key[1], tmp_path)
    assert code == 1
    assert lines[:-1] == [
        f"root-mismatch event_id={ids[300]} leaf_index=2 its subtree changed",
        f"root-mismatch event_id={ids[3]} leaf_index=3 its subtree changed",
        _tile_line(0),
        "root-mismatch event_id=- leaf_index=- stored checkpoint tree_size=300",
        f"root-mismatch event_id={ids[2]} leaf_index=300 its subtree changed",
        f"root-mismatch event_id={ids[301]} leaf_index=301 its subtree changed",
        _tile_line(1),
        "root-mismatch event_id=- leaf_index=- stored checkpoint tree_size=530",
        "root-mismatch event_id=- leaf_index=- tree_size=530 checkpoint root",
    ]


def test_a_stored_tile_changed_or_deleted_is_named(log_db, key, tmp_path, db_for):
    build_log(log_db, key[0], tmp_path, batches=(300, 230))
    db = db_for(log_db)
    db.execute("UPDATE log_nodes SET hash = sha256(hash) WHERE level = 8 AND node_index = 0")
    db.execute("DELETE FROM log_nodes WHERE level = 8 AND node_index = 1")
    code, lines = verify(log_db, key[1], tmp_path)
    assert code == 1
    assert lines[:-1] == [_tile_line(0), _tile_line(1, "is not stored")]


def test_a_truncated_leaf_table_is_named(log_db, key, tmp_path, db_for):
    build_log(log_db, key[0], tmp_path)
    db_for(log_db).execute("DELETE FROM log_leaves WHERE leaf_index >= %s", (COUNT - 3,))
    code, lines = verify(log_db, key[1], tmp_path)
    assert code == 1
    assert (
        f"truncated event_id=- leaf_index={COUNT - 3} {COUNT - 3} leaves, checkpoint has {COUNT}"
        in lines
    )


def test_a_replaced_stored_checkpoint_is_a_root_mismatch(log_db, key, tmp_path, db_for):
    build_log(log_db, key[0], tmp_path)  # checkpoints at sizes 5 and COUNT
    db = db_for(log_db)
    (old,) = db.execute("SELECT note FROM log_checkpoints WHERE tree_size = 5").fetchone()
    # A forger without the key re-signs a different root for size 5 with a key of the same name.
    text = old.split("\n\n")[0] + "\n"
    lines = text.splitlines()
    forged_text = f"{lines[0]}\n{lines[1]}\n{base64.b64encode(b'x' * 32).decode()}\n"
    forged = note.sign(forged_text, note.generate_signer(ORIGIN)).decode()
    db.execute("UPDATE log_checkpoints SET note = %s WHERE tree_size = 5", (forged,))
    code, lines = verify(log_db, key[1], tmp_path)
    assert code == 1
    assert any(
        line.startswith("root-mismatch event_id=- leaf_index=- stored checkpoint tree_size=5")
        for line in lines
    ), lines


def test_a_checkpoint_file_with_a_bad_signature_is_a_usage_error(log_db, key, tmp_path):
    build_log(log_db, key[0], tmp_path)
    path = tmp_path / "checkpoint"
    text = path.read_text()
    path.write_text(text.replace(f"\n{COUNT}\n", f"\n{COUNT + 1}\n", 1))
    done = cli("verify", "--key", key[1], "--checkpoint", str(path), "--database", log_db)
    assert done.returncode == 2 and "does not verify" in done.stderr
    other = note.generate_signer(ORIGIN).verifier
    path.write_text(text)
    done = cli("verify", "--key", str(other), "--checkpoint", str(path), "--database", log_db)
    assert done.returncode == 2 and "no signature by a known key" in done.stderr


def test_a_month_retired_by_policy_is_reported_not_failed(log_db, key, tmp_path):
    now = dt.datetime.now(dt.UTC)
    old_day = (now.replace(day=15) - dt.timedelta(days=31 * 4)).replace(microsecond=0)
    old_bounds = TimeBounds(dt.timedelta(days=400), dt.timedelta(minutes=5))
    stamp = old_day.isoformat().replace("+00:00", "Z")
    old = [normalize_event(make_event(event_timestamp=stamp), old_bounds, now) for _ in range(3)]
    asyncio.run(_grow(log_db, key[0], old))
    asyncio.run(_grow(log_db, key[0], new_events(4)))
    ids = leaf_ids(log_db, tmp_path)
    env = {"DATASTORAGE_DATABASE_URL": log_db, "DATASTORAGE_PARTITION_RETENTION_MONTHS": "2"}
    retired = cli("partitions", "ensure", env=env)
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert f"retired audit_events_{old_day:%Y_%m}" in retired.stdout
    code, lines = verify(log_db, key[1], tmp_path, "--grace", "0", env=env)
    assert code == 0, lines
    assert lines[:-1] == [f"retired event_id={ids[i]} leaf_index={i}" for i in range(3)]
    assert lines[-1] == "OK: 7 leaves checked; findings: retired=3"
    # With a longer retention period the same gap is a deletion.
    code, lines = verify(
        log_db, key[1], tmp_path, env={"DATASTORAGE_PARTITION_RETENTION_MONTHS": "12"}
    )
    assert code == 1 and lines[0] == f"missing event_id={ids[0]} leaf_index=0"


@pytest.fixture()
def db_for():
    opened = []

    def connect(url: str) -> psycopg.Connection:
        conn = psycopg.connect(url, autocommit=True)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


def test_after_a_key_rotation_verify_takes_the_old_and_the_new_key(log_db, key, tmp_path):
    """A new key with the same origin continues the same tree (the signer checks it extends the
    checkpoint the old key signed); checkpoints the old key signed stay checkable with it."""
    asyncio.run(_grow(log_db, key[0], new_events(5)))
    new_key = tmp_path / "new.key"
    made = cli("log", "keygen", "--origin", ORIGIN, "--out", str(new_key))
    assert made.returncode == 0, made.stderr
    asyncio.run(_grow(log_db, new_key, new_events(7)))
    leaf_ids(log_db, tmp_path)  # the latest checkpoint, signed by the new key
    old_verifier, new_verifier = key[1], made.stdout.strip()
    code, lines = verify(log_db, new_verifier, tmp_path)
    assert code == 1 and "stored checkpoint tree_size=5: no signature by a known key" in lines[0]
    code, lines = verify(log_db, new_verifier, tmp_path, "--key", old_verifier)
    assert code == 0 and lines == [f"OK: {COUNT} leaves checked; findings: none"]
