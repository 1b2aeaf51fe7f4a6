"""Streaming exports of audit events (docs/compliance.md): NDJSON with a verifiable manifest, or
CSV.

Both are async iterators of byte chunks that the HTTP layer streams as they come. Rows are
pulled from a server-side cursor one batch at a time, and a batch is pulled only when the
previous chunk has been handed to the client, so a slow reader slows the export instead of
making the server buffer it: memory stays at one batch plus the leaf-index bitmap (one bit per
leaf of the checkpoint's tree). The manifest's format and what it proves are described in
`ledger/export_verify.py`, which also verifies it offline.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import orjson

from datastorage.config import Settings
from datastorage.domain.events import format_timestamp
from datastorage.ledger import merkle, note
from datastorage.ledger.export_verify import FORMAT, signed_text
from datastorage.ledger.keyfile import load_signer
from datastorage.ledger.subset_proof import LeafSet, proof_ranges
from datastorage.store import export as store
from datastorage.store import ledger as ledger_store
from datastorage.store.audit_queries import EventQuery
from datastorage.store.audit_rows import COLUMNS
from datastorage.store.pool import Database

CSV_COLUMNS = [name for _, name in COLUMNS] + ["created_at"]
# Proof ranges resolved per query of stored subtree hashes.
_PROOF_BATCH = 512


def export_query(filters: dict[str, Any], **narrowing: Any) -> EventQuery:
    """Every event the list filters match, oldest first (no page)."""
    return EventQuery(
        filters=filters,
        descending=False,
        limit=0,
        offset=None,
        cursor=None,
        count_limit=0,
        **narrowing,
    )


class Exporter:
    def __init__(self, settings: Settings, db: Database | None) -> None:
        self.db = db
        self.batch_size = settings.export_batch_size
        self.signer: note.Signer | None = None
        if settings.log_signing_key_file:
            self.signer = load_signer(settings.log_signing_key_file)

    async def ndjson(self, query: EventQuery, echo: dict[str, Any]) -> AsyncIterator[bytes]:
        """The export's lines, then the manifest line; `echo` is the filters as given."""
        assert self.db is not None
        async with self.db.connection() as conn:
            async for chunk in self.ndjson_on(conn, query, echo):
                yield chunk

    async def ndjson_on(
        self, conn: Any, query: EventQuery, echo: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """`ndjson` on a connection the caller owns (the archive uses maintenance's)."""
        digest = hashlib.sha256()
        count = 0
        async with store.snapshot(conn) as checkpoint:
            leaves = LeafSet(checkpoint.size) if checkpoint else None
            async for batch in store.event_batches(conn, query, self.batch_size):
                chunk = bytearray()
                for event, leaf_index in batch:
                    if checkpoint is not None:
                        event["leaf_index"] = leaf_index
                        if leaf_index is not None and leaf_index < checkpoint.size:
                            leaves.add(leaf_index)  # type: ignore[union-attr]
                    chunk += orjson.dumps(event)
                    chunk += b"\n"
                count += len(batch)
                digest.update(chunk)
                yield bytes(chunk)
            proof = (
                [h async for h in self._proof(conn, checkpoint.size, leaves)]
                if checkpoint is not None and leaves is not None
                else []
            )
        yield self._manifest(digest.hexdigest(), count, echo, checkpoint, proof)

    async def _proof(self, conn: Any, size: int, leaves: LeafSet) -> AsyncIterator[bytes]:
        """The subset proof's hashes: each range's complete subtrees fetched in batches."""
        for ranges in _batched(proof_ranges(size, leaves.any_in), _PROOF_BATCH):
            plans = [merkle.range_nodes(start, end) for start, end in ranges]
            stored = await ledger_store.node_hashes(conn, (n for plan in plans for n in plan))
            for plan in plans:
                yield merkle.fold([stored[node] for node in plan])

    def _manifest(
        self,
        body_sha256: str,
        count: int,
        filters: dict[str, Any],
        checkpoint: ledger_store.StoredCheckpoint | None,
        proof: list[bytes],
    ) -> bytes:
        tree_size = checkpoint.size if checkpoint else 0
        signature = None
        if self.signer is not None:
            text = signed_text(
                body_sha256, count, filters, tree_size, hashlib.sha256(b"".join(proof)).hexdigest()
            )
            signature = note.sign(text, self.signer).decode()
        manifest = {
            "format": FORMAT,
            "count": count,
            "filters": filters,
            "sha256": body_sha256,
            "exported_at": format_timestamp(dt.datetime.now(dt.UTC)),
            "checkpoint": checkpoint.note if checkpoint else None,
            "tree_size": checkpoint.size if checkpoint else None,
            "proof": [base64.b64encode(h).decode() for h in proof],
            "signature": signature,
        }
        return orjson.dumps({"manifest": manifest}) + b"\n"

    async def csv(self, query: EventQuery) -> AsyncIterator[bytes]:
        """RFC 4180 CSV (CRLF line ends, quotes doubled), a header row, the GET fields in table
        order; event_data as its JSON text, booleans as true/false, null as an empty field."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        assert self.db is not None
        async with self.db.connection() as conn, store.snapshot(conn):
            async for batch in store.event_batches(conn, query, self.batch_size):
                writer.writerows(_csv_row(event) for event, _ in batch)
                yield _drain(out)
        yield _drain(out)


def _csv_row(event: dict[str, Any]) -> list[str]:
    return [_csv_value(event[name]) for name in CSV_COLUMNS]


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return data


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
