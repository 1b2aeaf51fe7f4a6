"""`datastorage log keygen` and `datastorage verify`: the tamper-evident log's command-line tools.

`verify` trusts only what the auditor gives it — the pinned verifier key and a checkpoint signed
by it — and nothing the database says about itself. It streams every leaf up to the
checkpoint's size with its row (constant memory, one consistent snapshot), recomputes each leaf
from the row, rebuilds the tree from the leaf hashes (`ledger.verify.TreeAudit` names what does
not hold), checks the checkpoints the database keeps against the same tree, and lists the rows
that never became leaves. Exit codes: 0 clean, 1 tampering found, 2 usage error, bad signature
or unreadable input (the database included).

A leaf whose row is gone counts as `retired` (not a failure) when its month is older than the
retention period (`DATASTORAGE_PARTITION_RETENTION_MONTHS`): maintenance removes such months by
policy. Anywhere else it is `missing`.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from datastorage.config import Settings
from datastorage.ledger import checkpoint, note, tree
from datastorage.ledger.keyfile import KeyFileError, keygen
from datastorage.ledger.verify import Finding, TreeAudit, checked_roots, summary, unsequenced
from datastorage.store import ledger_scan, partitions
from datastorage.store.connect import connect_sync
from datastorage.store.errors import DatabaseError

OK, TAMPERED, USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or unreadable trusted input: exit 2 with this message."""


def keygen_command(origin: str, out: str, stdout: TextIO = sys.stdout) -> int:
    """Write a new signing key (mode 0600, never over an existing file); print the verifier key."""
    try:
        verifier = keygen(origin, out)
    except KeyFileError as exc:
        print(f"datastorage log keygen: {exc}", file=sys.stderr)
        return USAGE
    print(verifier, file=stdout)
    return OK


def read_verifier(key: str) -> note.Verifier:
    """The verifier key given as the key string itself or as a file holding it."""
    text = key
    path = Path(key)
    if "+" not in key or path.is_file():
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"--key: cannot read {key}: {exc.strerror}") from exc
    try:
        return note.parse_verifier_key(text)
    except note.NoteError as exc:
        raise UsageError(f"--key: {exc}") from exc


def read_checkpoint(path: str, verifiers: Sequence[note.Verifier]) -> checkpoint.Checkpoint:
    """The checkpoint in the signed note at `path`, its signature checked with a pinned key."""
    try:
        signed = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--checkpoint: cannot read {path}: {exc.strerror}") from exc
    try:
        return checkpoint.parse(note.verify(signed, *verifiers))
    except (note.NoteError, checkpoint.CheckpointError) as exc:
        raise UsageError(f"--checkpoint: {path}: {exc}") from exc


def verify_database(
    settings: Settings,
    signed: checkpoint.Checkpoint,
    verifiers: Sequence[note.Verifier],
    grace: float,
) -> tuple[list[str], int]:
    """(finding lines then the summary line, exit code) for the database of `settings`."""
    retain_from = partitions.retention_cutoff(settings.partition_retention_months)
    with (
        connect_sync(settings, "datastorage-verify", statement_timeout=0) as conn,
        ledger_scan.snapshot(conn),
    ):
        findings: list[Finding] = []  # stored checkpoints that do not verify
        other_roots = checked_roots(
            ledger_scan.stored_checkpoints(conn), verifiers, signed.origin, findings
        )
        audit = TreeAudit(signed.size, signed.root, other_roots, tree.STORED_LEVEL)
        checked = 0
        for leaf in ledger_scan.leaves(conn, signed.size, tree.STORED_LEVEL):
            checked += 1
            audit.leaf(
                leaf.leaf_index,
                leaf.event_id,
                leaf.leaf_hash,
                leaf.event,
                retired=leaf.event is None and leaf.event_date < retain_from,
                stored_pair_hash=leaf.pair_hash,
                stored_tile_hash=leaf.tile_hash,
            )
        for _ in other_roots:  # stored checkpoints above the checkpoint's size: signatures only
            pass
        findings = audit.finish() + findings
        findings += unsequenced(
            ledger_scan.rows_without_leaf(conn, grace),
            dt.datetime.now(dt.UTC),
            dt.timedelta(seconds=grace),
        )
    line, code = summary(findings, checked)
    return [f.line() for f in findings] + [line], code


def verify_command(
    settings: Settings, keys: Sequence[str], checkpoint_file: str, grace: float | None = None
) -> int:
    """`keys`: the pinned verifier keys (the current one and any the log was signed with before
    a key rotation)."""
    try:
        verifiers = [read_verifier(key) for key in keys]
        signed = read_checkpoint(checkpoint_file, verifiers)
        settings.require_database_url()
    except UsageError as exc:
        print(f"datastorage verify: {exc}", file=sys.stderr)
        return USAGE
    try:
        lines, code = verify_database(
            settings,
            signed,
            verifiers,
            settings.log_unsequenced_grace if grace is None else grace,
        )
    except DatabaseError as exc:  # the database cannot be read: not a verdict either way
        print(f"datastorage verify: cannot read the database: {exc}", file=sys.stderr)
        return USAGE
    for line in lines:
        print(line)
    return code
