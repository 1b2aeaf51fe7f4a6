"""Subset proofs of exports: for every tree size up to 40 and many subsets, the exported leaves
plus the proof rebuild exactly the root `merkle` computes; a changed, dropped or added leaf, or
a proof with a hash too many or too few, does not. The server's bitmap answers like a set."""

from __future__ import annotations

import hashlib
import random

import pytest

from datastorage.ledger import merkle
from datastorage.ledger.subset_proof import LeafSet, proof_ranges, root_from_subset


def _leaves(size: int) -> list[bytes]:
    return [merkle.leaf_hash(str(i).encode()) for i in range(size)]


def _proof(leaves: list[bytes], chosen: set[int]) -> list[bytes]:
    get = merkle.leaves_accessor(leaves)
    bits = LeafSet(len(leaves))
    for index in chosen:
        bits.add(index)
    return [
        merkle.fold([get(*node) for node in merkle.range_nodes(start, end)])
        for start, end in proof_ranges(len(leaves), bits.any_in)
    ]


def _subsets(size: int, rng: random.Random) -> list[set[int]]:
    subsets = [set(), set(range(size)), {0}, {size - 1}, set(range(size // 3, size // 2 + 1))]
    subsets += [{i for i in range(size) if rng.random() < p} for p in (0.1, 0.5, 0.9)]
    return subsets


@pytest.mark.parametrize("size", range(1, 41))
def test_the_exported_leaves_and_the_proof_rebuild_the_root(size):
    rng = random.Random(size)
    leaves = _leaves(size)
    root = merkle.root_from_leaves(leaves)
    for chosen in _subsets(size, rng):
        proof = _proof(leaves, chosen)
        given = {i: leaves[i] for i in chosen}
        assert root_from_subset(size, given, proof) == root
        if chosen:
            victim = min(chosen)
            changed = {**given, victim: merkle.leaf_hash(b"forged")}
            assert root_from_subset(size, changed, proof) != root
            dropped = {i: h for i, h in given.items() if i != victim}
            assert not _proves(size, dropped, proof, root)
        missing = set(range(size)) - chosen
        if missing:
            extra = {**given, min(missing): leaves[min(missing)]}
            assert not _proves(size, extra, proof, root)


def _proves(size: int, given: dict[int, bytes], proof: list[bytes], root: bytes) -> bool:
    """A wrong leaf set either misuses the proof (ProofError) or rebuilds another root."""
    try:
        return root_from_subset(size, given, proof) == root
    except merkle.ProofError:
        return False


def test_a_proof_with_a_hash_too_many_or_too_few_is_refused():
    leaves = _leaves(13)
    proof = _proof(leaves, {4, 5})
    given = {4: leaves[4], 5: leaves[5]}
    with pytest.raises(merkle.ProofError):
        root_from_subset(13, given, proof[:-1])
    with pytest.raises(merkle.ProofError):
        root_from_subset(13, given, [*proof, hashlib.sha256(b"x").digest()])
    with pytest.raises(merkle.ProofError):
        root_from_subset(13, {13: leaves[0]}, proof)


def test_a_contiguous_range_needs_only_logarithmically_many_hashes():
    size = 1_000_000
    bits = LeafSet(size)
    for index in range(123_456, 654_321):
        bits.add(index)
    assert len(list(proof_ranges(size, bits.any_in))) <= 2 * size.bit_length()


def test_the_bitmap_answers_range_questions_like_a_set():
    rng = random.Random(7)
    size = 300
    chosen = {i for i in range(size) if rng.random() < 0.03}
    bits = LeafSet(size)
    for index in chosen:
        bits.add(index)
    for _ in range(2000):
        start = rng.randrange(size)
        end = rng.randrange(start, size + 1)
        assert bits.any_in(start, end) == any(start <= i < end for i in chosen)
