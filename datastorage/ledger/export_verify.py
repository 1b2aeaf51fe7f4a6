"""The NDJSON export format's manifest and its offline verification (docs/compliance.md). No I/O.

An export is one JSON object per line — an event exactly as GET returns it, plus `leaf_index`
when the tamper-evident log has a checkpoint — and a last line `{"manifest": {...}}`:

- `count`: how many event lines precede it; `filters`: the query that selected them;
- `sha256`: hex SHA-256 of every byte before the manifest line;
- `checkpoint`: the latest signed checkpoint (signed note text) when the export started, or null;
  `tree_size`: its size; `proof`: base64 hashes of the subtrees holding no exported leaf
  (`subset_proof`), from which the exported leaves rebuild the checkpoint's root;
- `signature`: a signed note, by the log's key, over `signed_text(...)` — the digest, count,
  filters, checkpoint size and proof — or null when the server had no key.

What verification proves, with only the file and the pinned verifier key:
- each line whose leaf index lies in the checkpoint is, byte for byte in its canonical form, the
  event the log committed to at that index (the root would differ otherwise);
- with a signature: no line was added, removed or changed since the export (the signed digest),
  and the manifest (count, filters, proof) is the server's. Without one, a consistent rewrite of
  lines and manifest together is detectable only for the lines the proof covers.
Lines without a leaf index in the checkpoint (stored after it) are listed as `unproven`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datastorage.ledger import checkpoint as checkpoints
from datastorage.ledger import note
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.ledger.merkle import ProofError
from datastorage.ledger.subset_proof import root_from_subset

FORMAT = "datastorage-export/1"
SIGNED_HEADER = "datastorage export manifest"

EXIT_CLEAN, EXIT_TAMPERED, EXIT_USAGE = 0, 1, 2


def canonical_filters(filters: dict[str, Any]) -> bytes:
    return json.dumps(filters, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_text(
    body_sha256: str, count: int, filters: dict[str, Any], tree_size: int, proof_sha256: str
) -> str:
    """The note text a manifest's signature covers (its first line can never parse as a
    checkpoint's tree size, so the two kinds of note cannot be confused)."""
    return (
        f"{SIGNED_HEADER}\n{FORMAT}\nsha256 {body_sha256}\ncount {count}\n"
        f"filters {hashlib.sha256(canonical_filters(filters)).hexdigest()}\n"
        f"tree_size {tree_size}\nproof {proof_sha256}\n"
    )


@dataclass
class Result:
    lines: list[str] = field(default_factory=list)
    failed: bool = False
    usage: bool = False

    def fail(self, text: str) -> None:
        self.failed = True
        self.lines.append(text)

    @property
    def exit_code(self) -> int:
        if self.usage:
            return EXIT_USAGE
        return EXIT_TAMPERED if self.failed else EXIT_CLEAN


def verify_export_file(path: str, key: str) -> int:
    """`datastorage verify --export FILE --key VKEY`: print the findings, return the exit
    code. VKEY is the verifier key itself or a file holding it. Reads the file, nothing else."""
    key_path = Path(key)
    try:
        if key_path.is_file():
            key = key_path.read_text()
        data = Path(path).read_bytes()
    except OSError as exc:
        print(f"usage: cannot read {exc.filename}: {exc.strerror}")
        return EXIT_USAGE
    result = verify_export(data, key)
    for line in result.lines:
        print(line)
    return result.exit_code


def verify_export(data: bytes, verifier_key: str | None) -> Result:
    """Check an export's bytes against the verifier key; findings as printable lines. Without
    a key (a server whose log is off) only the digest and the count can be checked."""
    result = Result()
    verifier = None
    try:
        if verifier_key is not None:
            verifier = note.parse_verifier_key(verifier_key.strip())
    except note.NoteError as exc:
        result.usage = True
        result.lines.append(f"usage: bad verifier key: {exc}")
        return result
    if not data.endswith(b"\n"):
        result.fail("manifest-missing: the export does not end with a complete line")
        return result
    lines = data[:-1].split(b"\n")
    manifest = _manifest(lines[-1])
    if manifest is None:
        result.fail("manifest-missing: the last line is not a manifest")
        return result
    body = data[: len(data) - len(lines[-1]) - 1]
    _check_digest_and_count(result, manifest, body, len(lines) - 1)
    if verifier is None:
        result.lines.append("unauthenticated: no verifier key; digest and count checked only")
        result.lines.append(f"{'FAILED' if result.failed else 'OK'}: {len(lines) - 1} line(s)")
        return result
    tree = _checkpoint(result, manifest, verifier)
    if result.usage:
        return result
    leaves = _leaves(result, lines[:-1], tree[0] if tree else 0)
    proof = _proof(result, manifest)
    if tree is not None and proof is not None:
        _check_root(result, tree, leaves, proof)
    _check_signature(result, manifest, verifier, body, len(lines) - 1, proof)
    proven = len(leaves)
    result.lines.append(
        f"{'FAILED' if result.failed else 'OK'}: {len(lines) - 1} line(s), {proven} proven "
        f"in the signed log" + (f" of size {tree[0]}" if tree else " (no checkpoint)")
    )
    return result


def _manifest(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("manifest"), dict):
        return None
    return value["manifest"]


def _check_digest_and_count(
    result: Result, manifest: dict[str, Any], body: bytes, count: int
) -> None:
    if manifest.get("format") != FORMAT:
        result.fail(f"manifest-altered: unknown format {manifest.get('format')!r}")
    if manifest.get("sha256") != hashlib.sha256(body).hexdigest():
        result.fail("body-altered: the SHA-256 of the lines differs from the manifest's")
    if manifest.get("count") != count:
        result.fail(f"count-mismatch: {count} line(s), the manifest says {manifest.get('count')}")


def _checkpoint(
    result: Result, manifest: dict[str, Any], verifier: note.Verifier
) -> tuple[int, bytes] | None:
    text = manifest.get("checkpoint")
    if text is None:
        result.lines.append("no-checkpoint: the log had no checkpoint; nothing is proven")
        return None
    try:
        parsed = checkpoints.parse(note.verify(str(text).encode(), verifier))
    except (note.NoteError, checkpoints.CheckpointError) as exc:
        result.usage = True
        result.lines.append(f"bad-signature: the checkpoint does not verify: {exc}")
        return None
    if manifest.get("tree_size") != parsed.size:
        result.fail("manifest-altered: tree_size differs from the checkpoint's")
    return parsed.size, parsed.root


def _leaves(result: Result, lines: list[bytes], tree_size: int) -> dict[int, bytes]:
    leaves: dict[int, bytes] = {}
    for number, raw in enumerate(lines, start=1):
        try:
            event = json.loads(raw)
        except ValueError:
            result.fail(f"line-altered line={number}: not JSON")
            continue
        if not isinstance(event, dict):
            result.fail(f"line-altered line={number}: not an object")
            continue
        index = event.pop("leaf_index", None)
        event_id = event.get("event_id")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < tree_size:
            if tree_size:
                result.lines.append(f"unproven line={number} event_id={event_id}")
            continue
        if index in leaves:
            result.fail(f"duplicate-leaf line={number} event_id={event_id} leaf_index={index}")
            continue
        leaves[index] = event_leaf_hash(event)
    return leaves


def _proof(result: Result, manifest: dict[str, Any]) -> list[bytes] | None:
    try:
        return [base64.b64decode(h, validate=True) for h in manifest.get("proof") or []]
    except (ValueError, TypeError):
        result.fail("manifest-altered: the proof is not base64")
        return None


def _check_root(
    result: Result, tree: tuple[int, bytes], leaves: dict[int, bytes], proof: list[bytes]
) -> None:
    size, root = tree
    try:
        computed = root_from_subset(size, leaves, proof)
    except ProofError as exc:
        result.fail(f"proof-invalid: {exc}")
        return
    if computed != root:
        result.fail(
            "root-mismatch: the exported lines and the proof do not rebuild the checkpoint's "
            "root (a line was altered, added or removed)"
        )


def _check_signature(
    result: Result,
    manifest: dict[str, Any],
    verifier: note.Verifier,
    body: bytes,
    count: int,
    proof: list[bytes] | None,
) -> None:
    signature = manifest.get("signature")
    if signature is None:
        result.lines.append("unsigned-manifest: the server had no signing key")
        return
    try:
        signed = note.verify(str(signature).encode(), verifier)
    except note.NoteError:
        result.fail("manifest-altered: the manifest signature does not verify")
        return
    expected = signed_text(
        hashlib.sha256(body).hexdigest(),
        count,
        manifest.get("filters") or {},
        manifest.get("tree_size") or 0,
        hashlib.sha256(b"".join(proof or [])).hexdigest(),
    )
    if signed != expected:
        result.fail("manifest-altered: lines or manifest differ from what the server signed")
