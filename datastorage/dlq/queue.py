"""The dead-letter queue contract: value types, errors, the backend protocol, record encoding.

Writes that cannot reach PostgreSQL are appended here and replayed later by the drain worker
 (docs/operations.md). Two backends implement the same protocol: Redis Streams (`redis://`,
 `rediss://`)
and a local sqlite spool (`file://PATH`); `dlq.factory.open_dlq` builds one from a URL.
Neither ever evicts an entry that was not replayed or dead-lettered; capacity is bounded and a
full queue refuses the whole append (`DLQFull`).

Delivery is at-least-once: an entry claimed by a consumer that dies, or that holds it longer
than `claim_idle` seconds, is handed to another consumer. Replay is idempotent on the database
side, so a duplicate delivery is harmless; a lost one is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

# One stream (Redis) or row kind (spool) per table that can be written through the DLQ.
KINDS = ("audit_events", "notifications")


@dataclass(frozen=True)
class Entry:
    """A queued record as handed out by `claim`."""

    id: str
    kind: str
    record: dict
    attempts: int  # failed replays so far, counted by `release(..., error=...)`
    enqueued_at: float  # epoch seconds


@dataclass(frozen=True)
class StreamStats:
    """Health of one stream, as served by `GET /api/v1/admin/dlq`."""

    stream: str
    depth: int
    oldest_age_seconds: float | None
    dead_lettered: int
    bytes: int = 0  # what the queued records of this stream take (payload, or Redis memory)
    # Room the whole queue has left before appends are refused, the same for every stream:
    # free disk above the floor (file), maxmemory − used_memory (redis); None when unbounded.
    free_bytes: int | None = None


class DLQError(Exception):
    """Base class of every DLQ failure."""


class DLQUnavailable(DLQError):
    """The backend cannot be reached or refuses to work (down, disk full, read-only, ...)."""


class DLQFull(DLQError):
    """The queue holds `capacity` records, or has no room left for the append (disk floor,
    Redis maxmemory); nothing of the refused append was stored."""


class DeadLetterQueue(Protocol):
    """What the write path, the drain worker, health checks and the CLI use."""

    name: str  # "redis" or "file", for health output

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `DLQUnavailable` unless the backend answers."""

    async def append(self, kind: str, records: list[dict]) -> list[str]:
        """Store all records or none; durable when it returns. Returns the entry ids."""

    async def claim(self, kind: str, count: int) -> list[Entry]:
        """Hand out up to `count` entries, oldest first, to this consumer.

        Includes this consumer's own still-pending entries, released entries whose retry delay
        has passed, and entries of consumers idle for longer than `claim_idle`.
        """

    async def ack(self, kind: str, entry_ids: list[str]) -> None:
        """Remove replayed entries for good."""

    async def release(
        self, kind: str, entries: list[Entry], error: str | None, *, retry_after: float = 0.0
    ) -> None:
        """Give entries back for a later retry (by any consumer) after `retry_after` seconds.

        A non-None `error` counts a failed attempt. The delay is capped at `claim_idle`.
        """

    async def dead_letter(self, kind: str, entry: Entry, error: str) -> None:
        """Move an entry to the dead-letter stream with `error` and `entry.attempts`."""

    async def stats(self) -> list[StreamStats]:
        """One `StreamStats` per kind, in `KINDS` order."""

    async def dead_letters(self, kind: str, limit: int = 100) -> list[dict]:
        """Oldest dead letters of a kind: id, record, error, attempts, enqueued_at, dead_lettered_at."""


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown DLQ record kind {kind!r}; expected one of {KINDS}")


def encode_record(record: dict[str, Any]) -> bytes:
    """Serialise one record; raises TypeError for values JSON cannot hold."""
    return orjson.dumps(record)


def decode_record(raw: bytes | str) -> dict:
    return orjson.loads(raw)
