"""Proofs answered from the stored tree: each fetches the O(log n) subtree hashes its plan names
in one query (`merkle.proof_nodes`, `tree.subtree_hashes`), then folds them with the pure
functions of `merkle`."""

from __future__ import annotations

from dataclasses import dataclass

from datastorage.ledger import merkle, tree
from datastorage.store import ledger as store
from datastorage.store.connect import DatabaseConnection as AsyncConnection


class NotSequenced(LookupError):
    """The event is not a leaf of the tree of the asked size (yet)."""


@dataclass(frozen=True)
class InclusionProof:
    event_id: str
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    path: list[bytes]


async def _fetch(conn: AsyncConnection, *plans: list[list[merkle.Node]]) -> merkle.NodeHash:
    stored = await tree.subtree_hashes(conn, merkle.proof_nodes(*plans))

    def get(level: int, index: int) -> bytes:
        try:
            return stored[(level, index)]
        except KeyError:
            raise merkle.ProofError(f"subtree ({level}, {index}) is not stored") from None

    return get


async def inclusion(conn: AsyncConnection, event_id: str, tree_size: int) -> InclusionProof:
    """Inclusion proof of an event in the tree of `tree_size` leaves (at most the current size)."""
    leaf = await store.leaf_of_event(conn, event_id)
    if leaf is None or leaf[0] >= tree_size:
        raise NotSequenced(event_id)
    index, leaf_hash = leaf
    plan = merkle.inclusion_plan(index, tree_size)
    get = await _fetch(conn, plan)
    return InclusionProof(
        event_id, index, tree_size, leaf_hash, merkle.inclusion_proof(index, tree_size, get)
    )


async def consistency(conn: AsyncConnection, first: int, second: int) -> list[bytes]:
    get = await _fetch(conn, merkle.consistency_plan(first, second))
    return merkle.consistency_proof(first, second, get)


async def root(conn: AsyncConnection, size: int) -> bytes:
    """The root of the tree of `size` leaves (any size up to the current one)."""
    get = await _fetch(conn, [merkle.root_plan(size)])
    return merkle.root(size, get)
