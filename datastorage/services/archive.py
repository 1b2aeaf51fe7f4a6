"""Archive before retirement (docs/compliance.md): a month past retention is exported (NDJSON with
its manifest, zstd-compressed) to `DATASTORAGE_ARCHIVE_URL`, read back and verified, and only then
may maintenance retire it. Also what `datastorage archive list | verify | restore` do.

One object per month, `audit_events_YYYY_MM.ndjson.zst`. The export is the HTTP export's code
(`Exporter.ndjson_on`) filtered to the month, so an archive verifies exactly like an export,
offline, with `datastorage verify --export` after decompression. "Verified" means: the object
decompresses, its manifest's digest and count match its lines, the count equals the month's
rows when it was written, and — with the log's key — the checkpoint, proof and signature hold.

The object is built in memory (compressed: about a tenth of the NDJSON) because the object
store takes whole objects; a multipart upload would lift that limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import orjson
import zstandard

from datastorage.config import Settings
from datastorage.ledger.export_verify import Result, verify_export
from datastorage.objectstore import ObjectStore, open_store
from datastorage.services.export import Exporter, export_query
from datastorage.services.ledger import configured_signer
from datastorage.store import export as export_store
from datastorage.store import partitions

SUFFIX = ".ndjson.zst"
_RESTORE_BATCH = 1000


class ArchiveError(Exception):
    """The month could not be archived and verified; it must be kept."""


def object_name(month: dt.date) -> str:
    return partitions.partition_name(month) + SUFFIX


def month_of_object(name: str) -> dt.date | None:
    return partitions.month_from_name(name[: -len(SUFFIX)]) if name.endswith(SUFFIX) else None


def month_bounds(month: dt.date) -> dict[str, dt.datetime]:
    """since/until (inclusive) covering the UTC month."""
    start = dt.datetime.combine(month, dt.time(), dt.UTC)
    end = dt.datetime.combine(partitions.add_months(month, 1), dt.time(), dt.UTC)
    return {"since": start, "until": end - dt.timedelta(microseconds=1)}


@dataclass(frozen=True)
class Archived:
    month: dt.date
    name: str


class Archive:
    def __init__(self, settings: Settings, store: ObjectStore | None = None) -> None:
        if store is None:
            if not settings.archive_url:
                raise ArchiveError("DATASTORAGE_ARCHIVE_URL is not set")
            store = open_store(settings.archive_url, s3_endpoint_url=settings.s3_endpoint_url)
        self.store = store
        signer = configured_signer(settings)
        self.exporter = Exporter(settings, None, signer)
        self.verifier_key = None if signer is None else str(signer.verifier)

    # -- maintenance -----------------------------------------------------------------------------

    async def ensure_archived(self, conn: Any, month: dt.date, rows: int) -> str:
        """Make sure a verified archive of the month exists: keep a verifying one, otherwise
        write it and read it back. Returns what was done; raises ArchiveError."""
        name = object_name(month)
        existing = await self._fetch(name)
        if existing is not None and not self.check(existing).failed:
            return f"{name} already archived"
        data = await self._compressed_export(conn, month)
        try:
            await asyncio.to_thread(self.store.put, name, data)
        except Exception as exc:  # any target failure keeps the month
            raise ArchiveError(f"writing {name}: {exc}") from exc
        stored = await self._fetch(name)
        if stored is None:
            raise ArchiveError(f"{name} is missing right after it was written")
        result = self.check(stored)
        if result.failed or result.usage:
            raise ArchiveError(f"{name} does not verify: {'; '.join(result.lines[-3:])}")
        count = _manifest(decompress(stored))["count"]
        if count != rows:
            raise ArchiveError(f"{name} holds {count} events, the month {rows}")
        return f"{name} written and verified ({count} events)"

    async def _compressed_export(self, conn: Any, month: dt.date) -> bytes:
        query = export_query({}, event_data=None, **month_bounds(month))
        echo = {"month": month.strftime("%Y-%m")}
        sink = io.BytesIO()
        compressor = zstandard.ZstdCompressor(level=6).stream_writer(sink, closefd=False)
        async for chunk in self.exporter.ndjson_on(conn, query, echo):
            compressor.write(chunk)
        compressor.close()
        return sink.getvalue()

    async def _fetch(self, name: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self.store.get, name)
        except Exception as exc:
            raise ArchiveError(f"reading {name}: {exc}") from exc

    # -- the CLI ---------------------------------------------------------------------------------

    def check(self, compressed: bytes, verifier_key: str | None = None) -> Result:
        try:
            data = decompress(compressed)
        except zstandard.ZstdError as exc:
            result = Result()
            result.fail(f"archive-corrupt: not a zstd stream: {exc}")
            return result
        return verify_export(data, verifier_key or self.verifier_key)

    def list(self) -> list[Archived]:
        return [
            Archived(month, name)
            for name in self.store.list(partitions.PARENT)
            if (month := month_of_object(name)) is not None
        ]

    def verify(self, month: dt.date, verifier_key: str | None = None) -> Result:
        data = self.store.get(object_name(month))
        if data is None:
            result = Result(usage=True)
            result.lines.append(f"no archive of {month:%Y-%m}")
            return result
        return self.check(data, verifier_key)

    async def restore(self, conn: Any, month: dt.date, lock_timeout: float) -> int:
        """Load a verified archived month back into audit_events; returns the rows inserted."""
        result = self.verify(month)
        if result.failed or result.usage:
            raise ArchiveError("; ".join(result.lines))
        data = decompress(self.store.get(object_name(month)) or b"")
        await partitions.ensure_month(conn, month, lock_timeout)
        inserted = 0
        lines = data.split(b"\n")[:-2]  # the last line is the manifest
        async with conn.transaction():
            for start in range(0, len(lines), _RESTORE_BATCH):
                events = [orjson.loads(line) for line in lines[start : start + _RESTORE_BATCH]]
                for event in events:
                    event.pop("leaf_index", None)
                inserted += await export_store.restore_events(conn, events)
        return inserted


def decompress(data: bytes) -> bytes:
    """The whole of a streamed zstd frame (its header does not state the size)."""
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _manifest(data: bytes) -> dict[str, Any]:
    return orjson.loads(data[:-1].rsplit(b"\n", 1)[-1])["manifest"]
