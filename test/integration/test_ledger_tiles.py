"""The stored tree keeps subtrees from the tile level up and computes the lower ones from their
leaves: against a real PostgreSQL, roots, inclusion and consistency proofs stay exactly those of
RFC 9162 as the tree grows across tile boundaries (sizes 255, 256, 257, 511, 513, 1000), the
sequencer appending in batches that start and end anywhere inside a tile."""

from __future__ import annotations

import random

import psycopg
import pytest
from ledger_helpers import (
    check_tree,
    connection_source,
    fresh_log_database,
    new_events,
    store_events,
)

from datastorage.ledger import merkle, proofs, tree
from datastorage.ledger.sequencer import sequence_once
from datastorage.store import ledger as store

pytestmark = pytest.mark.asyncio

SIZES = (255, 256, 257, 511, 513, 1000)
WIDTH = 1 << tree.STORED_LEVEL


@pytest.fixture()
def log_db(pg_server):
    return fresh_log_database(pg_server)


async def _grow_to(conn: psycopg.AsyncConnection, size: int, rng: random.Random) -> None:
    """Store events up to `size` leaves and sequence them in random batch sizes."""
    current = (await store.tree_state(conn)).size
    await store_events(conn, new_events(size - current))
    while (await store.tree_state(conn)).size < size:
        await sequence_once(conn, batch_size=rng.choice((1, 2, 7, 37, 100, 300)))


async def _leaf_hashes(conn: psycopg.AsyncConnection) -> list[bytes]:
    cur = await conn.execute("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
    return [bytes(row[0]) for row in await cur.fetchall()]


def _indexes_to_prove(size: int, rng: random.Random) -> set[int]:
    """Leaves on both sides of every tile boundary, the ends, and a random sample."""
    near = {b + d for b in range(0, size + 1, WIDTH) for d in (-2, -1, 0, 1)}
    picked = near | {0, size - 1} | set(rng.sample(range(size), min(size, 40)))
    return {i for i in picked if 0 <= i < size}


async def test_proofs_and_roots_are_those_of_rfc_9162_across_tile_boundaries(log_db):
    rng = random.Random(5)
    checked: list[int] = []
    async with connection_source(log_db)() as conn:
        for size in SIZES:
            await _grow_to(conn, size, rng)
            await check_tree(log_db)
            hashes = await _leaf_hashes(conn)
            assert len(hashes) == size
            reference = merkle.leaves_accessor(hashes)
            root = merkle.root_from_leaves(hashes)
            assert await proofs.root(conn, size) == root
            for index in sorted(_indexes_to_prove(size, rng)):
                cur = await conn.execute(
                    "SELECT event_id::text FROM log_leaves WHERE leaf_index = %s", (index,)
                )
                (event_id,) = await cur.fetchone()
                proof = await proofs.inclusion(conn, event_id, size)
                assert proof.path == merkle.inclusion_proof(index, size, reference)
                merkle.verify_inclusion(index, size, hashes[index], proof.path, root)
            firsts = {*checked, 1, 2, 127, 128, 129, size - 1, size} | set(
                rng.sample(range(1, size + 1), 10)
            )
            for first in sorted(firsts):
                first_root = await proofs.root(conn, first)
                assert first_root == merkle.root_from_leaves(hashes[:first])
                path = await proofs.consistency(conn, first, size)
                assert path == merkle.consistency_proof(first, size, reference)
                merkle.verify_consistency(first, size, first_root, root, path)
            checked.append(size)


async def test_every_subtree_of_1000_leaves_is_stored_or_computed_and_none_is_invented(log_db):
    async with connection_source(log_db)() as conn:
        await _grow_to(conn, 1000, random.Random(9))
        hashes = await _leaf_hashes(conn)
        reference = merkle.leaves_accessor(hashes)
        complete = [(level, index) for level in range(10) for index in range(len(hashes) >> level)]
        found = await tree.subtree_hashes(conn, complete)
        assert found == {node: reference(*node) for node in complete}
        cur = await conn.execute("SELECT DISTINCT level FROM log_nodes ORDER BY level")
        assert [row[0] for row in await cur.fetchall()] == [8, 9]
        # Incomplete subtrees (leaves missing on the right) are absent, not invented.
        beyond = [(0, 1000), (3, 125), (7, 7), (8, 3), (10, 0)]
        assert await tree.subtree_hashes(conn, beyond) == {}
