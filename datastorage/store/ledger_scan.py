"""SQL of `datastorage verify`: stream the whole log and the rows it covers, in constant memory.

Every query runs on a server-side (named) cursor inside one read-only REPEATABLE READ
transaction (`snapshot`), so the verifier sees one consistent state while the service keeps
writing, and never holds more than one batch of rows in memory, whatever the size of the log.
Rows are read with orjson, as the API reads them, so a leaf is recomputed from exactly what GET
returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import Connection, IsolationLevel
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from datastorage.store.audit_rows import row_to_event

BATCH = 5000  # rows a server-side cursor fetches at a time


@dataclass(frozen=True)
class LeafRow:
    leaf_index: int
    event_id: str
    event_date: dt.date
    leaf_hash: bytes
    pair_hash: bytes | None  # the stored level-1 subtree holding this leaf, if complete
    tile_hash: bytes | None  # last leaf of a tile: the tile's stored hash (None: not stored)
    event: dict[str, Any] | None  # the row in the GET shape; None when it is gone


@contextmanager
def snapshot(conn: Connection) -> Iterator[None]:
    """One read-only REPEATABLE READ transaction for every query of a verification."""
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    set_json_loads(orjson.loads, conn)
    with conn.transaction():
        yield


_LEAVES = """
SELECT l.leaf_index AS leaf_index_, l.event_id::text AS leaf_event_id_,
       l.event_date AS leaf_event_date_, l.leaf_hash AS leaf_hash_, n.hash AS tile_hash_,
       substring(p.hashes FROM ((l.leaf_index / 2 %% %(pairs)s) * 32 + 1)::int FOR 32)
           AS pair_hash_,
       e.*
  FROM log_leaves l
  LEFT JOIN audit_events e ON e.event_id = l.event_id AND e.event_date = l.event_date
  LEFT JOIN log_pairs p ON p.tile_index = l.leaf_index / %(width)s
  LEFT JOIN log_nodes n ON n.level = %(level)s AND n.node_index = l.leaf_index / %(width)s
       AND (l.leaf_index + 1) %% %(width)s = 0
 WHERE l.leaf_index < %(size)s
 ORDER BY l.leaf_index
"""


def leaves(conn: Connection, size: int, tile_level: int) -> Iterator[LeafRow]:
    """Leaves 0..size-1 in index order, each with its row and, for the last leaf of each tile
    (subtree of level `tile_level`), the tile's stored hash (call inside `snapshot`)."""
    with conn.cursor("verify_leaves", row_factory=dict_row) as cur:
        cur.itersize = BATCH
        width = 1 << tile_level
        cur.execute(
            _LEAVES, {"size": size, "level": tile_level, "width": width, "pairs": width // 2}
        )
        for row in cur:
            tile, pair = row["tile_hash_"], row["pair_hash_"]
            yield LeafRow(
                row["leaf_index_"],
                row["leaf_event_id_"],
                row["leaf_event_date_"],
                bytes(row["leaf_hash_"]),
                bytes(pair) if pair else None,  # empty: the pair is not complete yet
                None if tile is None else bytes(tile),
                None if row["event_id"] is None else row_to_event(row),
            )


def rows_without_leaf(conn: Connection, older_than: float) -> Iterator[tuple[str, dt.datetime]]:
    """(event_id, created_at) of stored events that are no leaf, stored more than `older_than`
    seconds before the snapshot (call inside `snapshot`)."""
    with conn.cursor("verify_unsequenced") as cur:
        cur.itersize = BATCH
        cur.execute(
            "SELECT e.event_id::text, e.created_at FROM audit_events e "
            "WHERE e.created_at < now() - make_interval(secs => %s) "
            "AND NOT EXISTS (SELECT 1 FROM log_leaves l WHERE l.event_id = e.event_id) "
            "ORDER BY e.created_at",
            (older_than,),
        )
        yield from cur


def stored_checkpoints(conn: Connection) -> Iterator[tuple[int, str]]:
    """(tree size, signed note) of every checkpoint the database keeps, smallest first."""
    with conn.cursor("verify_checkpoints") as cur:
        cur.itersize = BATCH
        cur.execute("SELECT tree_size, note FROM log_checkpoints ORDER BY tree_size")
        yield from cur
