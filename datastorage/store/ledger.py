"""SQL of the tamper-evident log: pending events, leaves, stored subtree hashes, the tree state,
checkpoints and the signer's last signed state (tables of migration 005).

The Merkle rules live in `ledger/merkle.py`; this module only stores and fetches what it names.
Every function runs inside the caller's transaction: the sequencer and the signer hold an advisory
transaction lock (`try_lock`) so that one of each runs at a time across processes and replicas.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from psycopg import AsyncConnection, sql
from psycopg.errors import UniqueViolation
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from datastorage.ledger.leaf import event_leaf_hash_if_exact
from datastorage.store.audit_rows import STORED_NAMES, row_to_event

SEQUENCER_LOCK = 0x64617461_0012  # arbitrary constants shared by every process
SIGNER_LOCK = 0x64617461_0013
PUBLISHER_LOCK = 0x64617461_0014
LEADER_LOCK = 0x64617461_0015  # held by the one process that runs the log's workers

Node = tuple[int, int]


# A queued event as `log_pending.events` packs it (see Registration): its event id's 16 bytes, its
# day number's 4 bytes and its leaf hash's 32 (NO_HASH: none). The sequencer hands these bytes
# to the leaf table's binary COPY as they are.
Packed = tuple[bytes, bytes, bytes]


class PendingEvent(NamedTuple):
    """A queued event, readable."""

    event_id: str
    event_date: dt.date
    leaf_hash: bytes | None  # None: the sequencer hashes the stored row

    @classmethod
    def of(cls, packed: Packed) -> PendingEvent:
        event_id, day, leaf = packed
        return cls(
            str(uuid.UUID(bytes=event_id)),
            dt.date.fromordinal(_DATE_EPOCH + _DAYS.unpack(day)[0]),
            None if leaf == NO_HASH else leaf,
        )


@dataclass(frozen=True)
class TreeState:
    size: int
    root: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str


# Registration. Every statement that stores audit events also queues them, in its own
# transaction, whether or not a signing key is configured: the queue is then complete when the
# log is turned on later, and no stored event can miss its leaf. Only rows actually inserted are
# queued (an idempotent resend skipped by ON CONFLICT is not), so each stored event is queued
# once. With the log on, the writer also queues each event's leaf hash, computed from the event
# it is storing (`leaf.event_leaf_hash_if_exact`): the sequencer then only appends hashes, and
# the leaf commits to what the writer stored, not to what the row holds when the sequencer
# comes by. A pending row without a hash (log off, a float in the event, or queued by an older
# version) is hashed from its stored row by the sequencer. SQL typed by hand into audit_events
# is never queued: `verify` reports such a row as `unsequenced`.
#
# A statement queues all its events in one `log_pending` row (migration 013): `events` packs
# them, 52 bytes each (`_PACKED`): the event id (16 bytes, as uuid_send writes it), the event
# date (days since 2000-01-01, 4 bytes big-endian, as int4send writes it) and the leaf hash (32
# bytes; all zero bytes: none). One row per event cost PostgreSQL about 15 µs per event more
# (a heap row and an index entry written, then deleted, and the JSON parameter parsed). Rows of
# the older kind (one event in event_id, event_date, leaf_hash) are still read.
_PACKED = struct.Struct(">16s4s32s")
NO_HASH = bytes(32)
_DATE_EPOCH = dt.date(2000, 1, 1).toordinal()
_DAYS = struct.Struct(">i")
# The same record made by PostgreSQL from an event's columns.
_RECORD = (
    "uuid_send({id}) || int4send({date} - DATE '2000-01-01') || "
    "coalesce({hash}, '\\x" + "00" * 32 + "'::bytea)"
)


def _day(date: str | dt.date) -> bytes:
    if isinstance(date, str):
        date = dt.date.fromisoformat(date)
    return _DAYS.pack(date.toordinal() - _DATE_EPOCH)


class Queued:
    """The (event_id, event_date, leaf hash or None) of events one statement stores, gathered
    as they are written and passed as one JSON parameter. `leaf_hashes`: with their leaf
    hashes (the log is on). A key added twice with different content gets no hash (which one is
    stored is the statement's choice): the sequencer hashes that row from the table."""

    def __init__(self, leaf_hashes: bool) -> None:
        self.leaf_hashes = leaf_hashes
        self._found: dict[tuple[Any, Any], bytes | None] = {}

    @classmethod
    def of(cls, events: Iterable[dict[str, Any]], leaf_hashes: bool) -> Queued:
        queued = cls(leaf_hashes)
        for event in events:
            queued.add(event)
        return queued

    def __bool__(self) -> bool:
        return bool(self._found)

    def __len__(self) -> int:
        return len(self._found)

    def add(self, event: dict[str, Any]) -> None:
        """An event about to be stored: stamped, so it holds exactly the fields GET will
        return, with the values GET will return (else it is queued without a hash)."""
        key = (event["event_id"], event["event_date"])
        leaf = None
        if self.leaf_hashes and event.keys() == STORED_NAMES:
            leaf = event_leaf_hash_if_exact(event)
        if key in self._found and self._found[key] != leaf:
            leaf = None
        self._found[key] = leaf

    def packed(self) -> bytes:
        """Every event as `log_pending.events` records (`register`)."""
        days: dict[Any, bytes] = {}
        records = []
        for (event_id, date), leaf in self._found.items():
            day = days.get(date)
            if day is None:
                day = days[date] = _day(date)
            records.append(bytes.fromhex(event_id.replace("-", "")) + day + (leaf or NO_HASH))
        return b"".join(records)

    def hashed(self) -> str:
        """The events with a hash, as the JSON parameter of a `registering` statement (the
        others are queued without one all the same)."""
        return _json_keys((key, h) for key, h in self._found.items() if h is not None)


def _json_keys(items: Iterable[tuple[tuple[Any, Any], bytes | None]]) -> str:
    # orjson serializes it in C: psycopg adapts list parameters element by element in Python,
    # about eight times the client CPU for these three columns.
    rows = [
        {"event_id": event_id, "event_date": date, "leaf_hash": None if h is None else h.hex()}
        for (event_id, date), h in items
    ]
    return orjson.dumps(rows).decode()


_KEYS = sql.SQL(
    "(SELECT event_id, event_date, decode(leaf_hash, 'hex') AS leaf_hash "
    "FROM json_to_recordset(%s::json) AS r(event_id uuid, event_date date, leaf_hash text)) k"
)


def registering(insert: sql.Composable, result: sql.Composable) -> sql.Composed:
    """`insert` (an INSERT INTO audit_events ... RETURNING event_id, event_date, ...) as one
    statement that also queues the rows it stored (one pending row, none when it stored
    nothing), and answers `result` (a SELECT ... FROM stored). Its parameters are the
    insert's, then `Queued.hashed()` of the rows offered."""
    record = _RECORD.format(id="s.event_id", date="s.event_date", hash="k.leaf_hash")
    return sql.SQL(
        "WITH stored AS ({insert}), queued AS ("
        "INSERT INTO log_pending (events, event_count) "
        "SELECT string_agg({record}, ''::bytea), count(*) FROM stored s LEFT JOIN {keys} "
        "ON k.event_id = s.event_id AND k.event_date = s.event_date HAVING count(*) > 0) {result}"
    ).format(insert=insert, record=sql.SQL(record), keys=_KEYS, result=result)


async def register(conn: AsyncConnection, queued: Queued) -> None:
    """Queue stored events for sequencing; call in the transaction that inserts them."""
    if queued:
        await conn.execute(
            "INSERT INTO log_pending (events, event_count) VALUES (%b, %s)",
            (queued.packed(), len(queued)),
        )


async def try_session_lock(conn: AsyncConnection, key: int) -> bool:
    """Take a session-scoped advisory lock without waiting: held until this connection ends
    (PostgreSQL releases it when the holding process dies, even by kill -9)."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    (taken,) = await cur.fetchone()
    return bool(taken)


async def try_lock(conn: AsyncConnection, key: int) -> bool:
    """Take a transaction-scoped advisory lock without waiting (released at commit/rollback)."""
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,))
    (taken,) = await cur.fetchone()
    return bool(taken)


# The oldest pending rows holding up to `limit` events (at least one row, whatever its size),
# deleted (the caller's transaction makes them leaves), their events as packed records in queue
# order; a row of the older kind is packed here.
_TAKE = """
WITH oldest AS (
    SELECT seq, event_count, sum(event_count) OVER (ORDER BY seq) AS upto
    FROM (SELECT seq, event_count FROM log_pending ORDER BY seq LIMIT %(limit)s) o
), taken AS (
    DELETE FROM log_pending p USING oldest o
    WHERE p.seq = o.seq AND o.upto - o.event_count < %(limit)s
    RETURNING p.seq, coalesce(p.events, {record}) AS events
)
SELECT events FROM taken ORDER BY seq
""".format(record=_RECORD.format(id="p.event_id", date="p.event_date", hash="p.leaf_hash"))


async def take_pending(conn: AsyncConnection, limit: int) -> list[Packed]:
    """The oldest committed pending events, about `limit` of them, in queue order, deleted
    from the queue (call in the transaction that makes them leaves)."""
    cur = await conn.execute(_TAKE, {"limit": limit}, binary=True)
    return unpack_pending(b"".join([row[0] for row in await cur.fetchall()]))


def unpack_pending(packed: bytes) -> list[Packed]:
    return list(_PACKED.iter_unpack(packed))


# Every queued event's packed record, oldest row first (read with binary=True; `unpack_pending`).
PENDING_EVENTS = "SELECT coalesce(events, {record}) FROM log_pending ORDER BY seq".format(
    record=_RECORD.format(id="event_id", date="event_date", hash="leaf_hash")
)


async def pending_events(conn: AsyncConnection) -> list[PendingEvent]:
    """Every queued event in queue order, left in the queue (tests and diagnostics)."""
    cur = await conn.execute(PENDING_EVENTS, binary=True)
    packed = unpack_pending(b"".join([row[0] for row in await cur.fetchall()]))
    return [PendingEvent.of(event) for event in packed]


@dataclass(frozen=True)
class LogStatus:
    tree_size: int
    sequencing_lag: float  # seconds since the oldest pending event was queued (0: none)
    checkpoint_age: float | None  # seconds since the latest checkpoint was signed (None: none)


async def log_status(conn: AsyncConnection) -> LogStatus:
    """What the log's gauges report (docs/tamper-evident-log.md), in one query. The oldest pending
    row is the first in `seq` order (read through the primary key: no scan, however long the
    queue)."""
    cur = await conn.execute(
        "SELECT (SELECT tree_size FROM log_tree),"
        " coalesce(extract(epoch FROM now() - (SELECT queued_at FROM log_pending"
        " ORDER BY seq LIMIT 1)), 0),"
        " extract(epoch FROM now() - (SELECT signed_at FROM log_checkpoints"
        " ORDER BY tree_size DESC LIMIT 1))"
    )
    size, lag, age = await cur.fetchone()
    return LogStatus(size, max(0.0, float(lag)), None if age is None else max(0.0, float(age)))


async def events_by_key(
    conn: AsyncConnection, keys: Sequence[tuple[str, dt.date]]
) -> dict[tuple[str, dt.date], dict[str, Any]]:
    """The stored events with these (event_id, event_date), in the shape GET returns."""
    if not keys:
        return {}
    cur = conn.cursor(row_factory=dict_row)
    # Read jsonb as the API's pool does (orjson), so a leaf is computed from what GET returns.
    set_json_loads(orjson.loads, cur)
    # Two arrays rather than a join with unnest(): the event_id index answers them, the dates
    # prune partitions, and no plan can turn into a scan of whole months.
    await cur.execute(
        "SELECT * FROM audit_events WHERE event_id = ANY(%s::uuid[]) AND event_date = ANY(%s::date[])",
        ([k[0] for k in keys], sorted({k[1] for k in keys})),
    )
    wanted = set(keys)
    found = ((str(r["event_id"]), r["event_date"], r) for r in await cur.fetchall())
    return {(i, d): row_to_event(r) for i, d, r in found if (i, d) in wanted}


async def tree_state(conn: AsyncConnection, *, for_update: bool = False) -> TreeState:
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(f"SELECT tree_size, root_hash FROM log_tree{lock}")
    size, root = await cur.fetchone()
    return TreeState(size, bytes(root))


async def stored_hashes(
    conn: AsyncConnection, nodes: Iterable[Node], leaf_ranges: Iterable[tuple[int, int]]
) -> dict[Node, bytes]:
    """In one query: the hashes of these stored subtrees (`log_nodes`, level >= 1), and of the
    leaves in these index ranges [start, end) as (0, index). What is not stored is absent."""
    levels, indexes = [], []
    for level, index in set(nodes):
        levels.append(level)
        indexes.append(index)
    starts, ends = [], []
    for first, end in set(leaf_ranges):
        starts.append(first)
        ends.append(end)
    if not levels and not starts:
        return {}
    # Lateral subqueries: each node and each range is read through its primary key, so the plan
    # stays an index lookup per item whatever the size of either table (a join may otherwise
    # hash a whole scan of log_nodes).
    cur = await conn.execute(
        "SELECT k.level, k.node_index, n.hash "
        "FROM unnest(%s::smallint[], %s::bigint[]) AS k(level, node_index) "
        "CROSS JOIN LATERAL (SELECT hash FROM log_nodes "
        "WHERE level = k.level AND node_index = k.node_index) n "
        "UNION ALL SELECT 0, l.leaf_index, l.leaf_hash "
        "FROM unnest(%s::bigint[], %s::bigint[]) AS r(first, stop) "
        "CROSS JOIN LATERAL (SELECT leaf_index, leaf_hash FROM log_leaves "
        "WHERE leaf_index >= r.first AND leaf_index < r.stop) l",
        (levels, indexes, starts, ends),
        binary=True,
    )
    return {(level, index): bytes(h) for level, index, h in await cur.fetchall()}


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
_COPY_TRAILER = b"\xff\xff"
# One log_leaves row in binary COPY: 4 fields, each its length then its bytes.
_LEAF_ROW = struct.Struct(">hiqi16si4si32s")


async def append_leaves(
    conn: AsyncConnection, first_index: int, leaves: Sequence[Packed]
) -> list[Packed]:
    """Store leaves from index `first_index` on, every one with its hash, leaving out events
    that are leaves already (the unique index on event_id finds them: no lookup per leaf in
    the usual case). Returns the leaves stored."""
    try:
        async with conn.transaction():  # a savepoint: a failed COPY leaves the round usable
            await _copy_leaves(conn, first_index, leaves)
        return list(leaves)
    except UniqueViolation:
        pass
    cur = await conn.execute(
        "SELECT uuid_send(event_id) FROM log_leaves WHERE event_id = ANY(%s)",
        ([uuid.UUID(bytes=event_id) for event_id, _, _ in leaves],),
        binary=True,
    )
    already = {bytes(row[0]) for row in await cur.fetchall()}
    fresh = [leaf for leaf in leaves if leaf[0] not in already]
    if fresh:
        await _copy_leaves(conn, first_index, fresh)
    return fresh


async def _copy_leaves(conn: AsyncConnection, first_index: int, leaves: Sequence[Packed]) -> None:
    """One binary COPY of log_leaves rows made from the leaves' packed bytes."""
    pack = _LEAF_ROW.pack
    rows = [
        pack(4, 8, first_index + offset, 16, event_id, 4, day, 32, leaf)
        for offset, (event_id, day, leaf) in enumerate(leaves)
    ]
    async with conn.cursor().copy(
        "COPY log_leaves (leaf_index, event_id, event_date, leaf_hash) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        await copy.write(b"".join([_COPY_SIGNATURE, *rows, _COPY_TRAILER]))


async def append_nodes(
    conn: AsyncConnection,
    nodes: Sequence[tuple[int, int, bytes]],
    pairs: Sequence[tuple[int, bytes]],
    new_state: TreeState,
) -> None:
    """Store new subtree hashes (`log_nodes`), append new pair hashes to their tiles' rows
    (`log_pairs`, in index order: rounds run one at a time) and store the new tree state (the
    leaves are stored already), in one statement."""
    await conn.execute(
        "WITH added AS (INSERT INTO log_nodes (level, node_index, hash) "
        "SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[])), "
        "paired AS (INSERT INTO log_pairs (tile_index, hashes) "
        "SELECT * FROM unnest(%s::bigint[], %s::bytea[]) "
        "ON CONFLICT (tile_index) DO UPDATE SET hashes = log_pairs.hashes || EXCLUDED.hashes) "
        "UPDATE log_tree SET tree_size = %s, root_hash = %s, updated_at = now()",
        (
            [node[0] for node in nodes],
            [node[1] for node in nodes],
            [node[2] for node in nodes],
            [tile for tile, _ in pairs],
            [hashes for _, hashes in pairs],
            new_state.size,
            new_state.root,
        ),
    )


async def leaf_of_event(conn: AsyncConnection, event_id: str) -> tuple[int, bytes] | None:
    """(leaf index, leaf hash) of an event, or None when it is not a leaf."""
    cur = await conn.execute(
        "SELECT leaf_index, leaf_hash FROM log_leaves WHERE event_id = %s", (event_id,)
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], bytes(row[1]))


# ---- checkpoints and the signer's state -------------------------------------------------------


async def signer_state(conn: AsyncConnection, origin: str) -> TreeState | None:
    cur = await conn.execute(
        "SELECT tree_size, root_hash FROM log_signer_state WHERE origin = %s", (origin,)
    )
    row = await cur.fetchone()
    return None if row is None else TreeState(row[0], bytes(row[1]))


async def record_checkpoint(
    conn: AsyncConnection, origin: str, state: TreeState, signed_note: str
) -> None:
    """Store a signed checkpoint and make it the signer's last signed state."""
    await conn.execute(
        "INSERT INTO log_checkpoints (tree_size, root_hash, note) VALUES (%s, %s, %s)",
        (state.size, state.root, signed_note),
    )
    await conn.execute(
        "INSERT INTO log_signer_state (origin, tree_size, root_hash) VALUES (%s, %s, %s) "
        "ON CONFLICT (origin) DO UPDATE SET tree_size = EXCLUDED.tree_size, "
        "root_hash = EXCLUDED.root_hash, signed_at = now()",
        (origin, state.size, state.root),
    )


async def latest_checkpoint(conn: AsyncConnection) -> StoredCheckpoint | None:
    cur = await conn.execute(
        "SELECT tree_size, root_hash, note FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1"
    )
    row = await cur.fetchone()
    return None if row is None else StoredCheckpoint(row[0], bytes(row[1]), row[2])


async def unpublished_checkpoints(conn: AsyncConnection, limit: int) -> list[StoredCheckpoint]:
    cur = await conn.execute(
        "SELECT tree_size, root_hash, note FROM log_checkpoints WHERE published_at IS NULL "
        "ORDER BY tree_size LIMIT %s",
        (limit,),
    )
    return [StoredCheckpoint(r[0], bytes(r[1]), r[2]) for r in await cur.fetchall()]


async def mark_published(conn: AsyncConnection, sizes: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE log_checkpoints SET published_at = now() WHERE tree_size = ANY(%s)",
        (list(sizes),),
    )
