"""The hashes of complete subtrees of the stored tree, whatever their level.

The database keeps the hash of every complete subtree of level `STORED_LEVEL` (a "tile" of 256
leaves) and above in `log_nodes`, and every leaf hash in `log_leaves`; it does not keep the
levels in between as rows. Level 1 (the pairs of leaves) is kept apart, one row per tile in
`log_pairs` (`kept`), for `verify` alone: it names the two events of a reordered pair. Storing
one row per leaf for levels 1..7 cost the sequencer about as much as the leaf itself, while a
subtree below a tile is rebuilt from at most 128 leaf hashes read in one index range. This
module is the one place that knows the split: every root, proof and frontier of the stored tree
asks `subtree_hashes` and never reads `log_nodes` itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from datastorage.ledger import merkle
from datastorage.store import ledger as store
from datastorage.store.connect import DatabaseConnection as AsyncConnection

STORED_LEVEL = 8  # the lowest level of `log_nodes` (migration 011 removed the ones below)
_PAIRS_PER_TILE = 1 << (STORED_LEVEL - 1)

Row = tuple[int, int, bytes]  # (level, index, hash) of a complete subtree


def kept(closed: Iterable[Row]) -> tuple[list[Row], list[tuple[int, bytes]]]:
    """What the store keeps of the subtrees an append closed (`merkle.append_leaves` asked for
    every level): the rows of level >= STORED_LEVEL, and the level-1 hashes joined per tile as
    (tile index, bytes to append to that tile's pairs), in index order."""
    rows: list[Row] = []
    pairs: dict[int, list[bytes]] = {}
    for level, index, digest in closed:
        if level >= STORED_LEVEL:
            rows.append((level, index, digest))
        elif level == 1:
            pairs.setdefault(index // _PAIRS_PER_TILE, []).append(digest)
    return rows, [(tile, b"".join(hashes)) for tile, hashes in pairs.items()]


async def subtree_hashes(
    conn: AsyncConnection, nodes: Iterable[merkle.Node]
) -> dict[merkle.Node, bytes]:
    """The hashes of these complete subtrees (level, index), in one query: stored ones read,
    leaves and the subtrees of level 1..STORED_LEVEL-1 computed from leaf hashes read by index
    range. A subtree that is not stored or whose leaves are not all there is absent."""
    wanted = set(nodes)
    below = [(level, index) for level, index in wanted if level < STORED_LEVEL]
    stored = await store.stored_hashes(
        conn,
        (node for node in wanted if node[0] >= STORED_LEVEL),
        _merged((index << level, (index + 1) << level) for level, index in below),
    )
    found = {node: stored[node] for node in wanted if node in stored}
    for level, index in below:
        if level == 0:
            continue
        first = index << level
        leaves = [stored.get((0, i)) for i in range(first, first + (1 << level))]
        if None not in leaves:
            found[(level, index)] = merkle.root_from_leaves(leaves)  # type: ignore[arg-type]
    return found


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Index ranges [start, end) with touching or overlapping ones joined: a proof's subtrees
    below a tile are the siblings on one leaf's path, so they usually make one range."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
