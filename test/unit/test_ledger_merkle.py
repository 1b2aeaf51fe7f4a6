"""RFC 6962/9162 Merkle hashing and proofs: published vectors, an independent reference, and
every proof of every tree up to 300 leaves (verifies; a flipped bit fails)."""

from __future__ import annotations

import hashlib
import random

import pytest

from datastorage.ledger import merkle

# The eight-entry test data of transparency-dev/merkle (originally certificate-transparency):
# leaf inputs, roots of the trees of sizes 1..8, and proofs (indexes 0-based here).
LEAVES = [
    bytes.fromhex(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
LEAF_HASHES = [merkle.leaf_hash(data) for data in LEAVES]
KNOWN = merkle.leaves_accessor(LEAF_HASHES)


def _hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def test_hashes_use_the_rfc_6962_prefixes():
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert merkle.node_hash(b"L", b"R") == hashlib.sha256(b"\x01LR").digest()
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.root_from_leaves([]) == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_published_trees(size):
    assert merkle.root(size, KNOWN).hex() == ROOTS[size - 1]
    assert merkle.root_from_leaves(LEAF_HASHES[:size]).hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION)
def test_published_inclusion_proofs(index, size, expected):
    proof = merkle.inclusion_proof(index, size, KNOWN)
    assert _hexes(proof) == expected
    root = bytes.fromhex(ROOTS[size - 1])
    merkle.verify_inclusion(index, size, LEAF_HASHES[index], proof, root)


@pytest.mark.parametrize(("first", "second", "expected"), CONSISTENCY)
def test_published_consistency_proofs(first, second, expected):
    proof = merkle.consistency_proof(first, second, KNOWN)
    assert _hexes(proof) == expected
    merkle.verify_consistency(
        first, second, bytes.fromhex(ROOTS[first - 1]), bytes.fromhex(ROOTS[second - 1]), proof
    )


# An independent reference: the RFC 9162 definitions written over lists of leaf hashes.


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = _k(len(hashes))
    return merkle.node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def _path(m: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _k(len(hashes))
    if m < k:
        return _path(m, hashes[:k]) + [_mth(hashes[k:])]
    return _path(m - k, hashes[k:]) + [_mth(hashes[:k])]


def _subproof(m: int, hashes: list[bytes], whole: bool) -> list[bytes]:
    if m == len(hashes):
        return [] if whole else [_mth(hashes)]
    k = _k(len(hashes))
    if m <= k:
        return _subproof(m, hashes[:k], whole) + [_mth(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [_mth(hashes[:k])]


def _random_leaves(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [merkle.leaf_hash(rng.randbytes(rng.randint(0, 40))) for _ in range(count)]


def test_generation_matches_the_rfc_definitions_on_small_trees():
    hashes = _random_leaves(40, seed=1)
    get = merkle.leaves_accessor(hashes)
    for n in range(1, 41):
        assert merkle.root(n, get) == _mth(hashes[:n])
        for m in range(n):
            assert merkle.inclusion_proof(m, n, get) == _path(m, hashes[:n])
        for m in range(1, n):
            assert merkle.consistency_proof(m, n, get) == _subproof(m, hashes[:n], True)


# Every proof of every tree up to 300 leaves, from the stored-subtree shape the database keeps.

MAX_SIZE = 300
HASHES = _random_leaves(MAX_SIZE, seed=7)


def _stored_tree() -> dict[tuple[int, int], bytes]:
    appended = merkle.append_leaves(0, [], HASHES)
    stored = {(0, i): h for i, h in enumerate(HASHES)}
    stored.update({(level, index): h for level, index, h in appended.nodes})
    return stored


STORED = _stored_tree()
ROOT_OF = {n: _mth(HASHES[:n]) for n in range(MAX_SIZE + 1)}


def _get(level: int, index: int) -> bytes:
    return STORED[(level, index)]


def _flip(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def test_append_keeps_every_complete_subtree_once_and_the_frontier_gives_the_root():
    assert len(STORED) == 2 * MAX_SIZE - bin(MAX_SIZE).count("1")
    size, frontier = 0, []
    rng = random.Random(3)
    while size < MAX_SIZE:
        chunk = HASHES[size : size + rng.randint(1, 17)]
        appended = merkle.append_leaves(size, frontier, chunk)
        for level, index, value in appended.nodes:
            assert STORED[(level, index)] == value
        size, frontier = appended.size, appended.frontier
        assert appended.root == ROOT_OF[size]
        assert frontier == [_get(*node) for node in merkle.root_plan(size)]


def test_every_inclusion_proof_up_to_300_leaves_verifies():
    for n in range(1, MAX_SIZE + 1):
        root = merkle.root(n, _get)
        assert root == ROOT_OF[n]
        for m in range(n):
            proof = merkle.inclusion_proof(m, n, _get)
            merkle.verify_inclusion(m, n, HASHES[m], proof, root)


def test_every_consistency_proof_up_to_300_leaves_verifies():
    for n in range(1, MAX_SIZE + 1):
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, n, _get)
            merkle.verify_consistency(m, n, ROOT_OF[m], ROOT_OF[n], proof)


def test_any_flipped_bit_in_an_inclusion_proof_root_or_leaf_fails():
    rng = random.Random(11)
    for n in range(1, MAX_SIZE + 1):
        m = rng.randrange(n)
        proof = merkle.inclusion_proof(m, n, _get)
        root = ROOT_OF[n]
        for position in range(len(proof)):
            bad = list(proof)
            bad[position] = _flip(bad[position], rng.randrange(256))
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(m, n, HASHES[m], bad, root)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(m, n, HASHES[m], proof, _flip(root, rng.randrange(256)))
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(m, n, _flip(HASHES[m], rng.randrange(256)), proof, root)
        if n > 1:  # the same proof for another index, a shorter or a longer one, fails too
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion((m + 1) % n, n, HASHES[m], proof, root)
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(m, n, HASHES[m], proof[:-1], root)
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(m, n, HASHES[m], [*proof, root], root)


def test_any_flipped_bit_in_a_consistency_proof_or_either_root_fails():
    rng = random.Random(13)
    for n in range(2, MAX_SIZE + 1):
        m = rng.randrange(1, n)
        proof = merkle.consistency_proof(m, n, _get)
        first, second = ROOT_OF[m], ROOT_OF[n]
        for position in range(len(proof)):
            bad = list(proof)
            bad[position] = _flip(bad[position], rng.randrange(256))
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(m, n, first, second, bad)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, _flip(first, rng.randrange(256)), second, proof)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, first, _flip(second, rng.randrange(256)), proof)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, first, second, proof[:-1])
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, first, second, [*proof, second])


def test_degenerate_sizes():
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, ROOT_OF[5], [])
    merkle.verify_consistency(5, 5, ROOT_OF[5], ROOT_OF[5], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(5, 5, ROOT_OF[5], ROOT_OF[6], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(6, 5, ROOT_OF[6], ROOT_OF[5], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(5, 5, ROOT_OF[5], ROOT_OF[5], [ROOT_OF[5]])
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(0, 0, HASHES[0], [], merkle.EMPTY_ROOT)
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_plan(5, 5)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(0, 1, HASHES[0][:31], [], HASHES[0])


def test_proof_nodes_lists_what_a_store_fetches_in_logarithmic_count():
    size = 10_000_000
    plan = merkle.inclusion_plan(1_234_567, size)
    needed = merkle.proof_nodes(plan, [merkle.root_plan(size)])
    assert len(needed) <= 2 * size.bit_length()
    consistency = merkle.consistency_plan(3_000_001, size)
    assert len(merkle.proof_nodes(consistency)) <= 2 * size.bit_length()
    # Every node named exists in the tree of that size (a complete subtree inside it).
    for level, index in needed:
        assert (index + 1) << level <= size


# The level-by-level append against the plain recursive MTH, for every size up to 600 reached in
# random chunks from every starting size, and its filter of the levels a store keeps.

APPEND_MAX = 600
APPEND_LEAVES = _random_leaves(APPEND_MAX, seed=13)


def _complete_subtrees(size: int) -> dict[tuple[int, int], bytes]:
    """Every complete subtree of level >= 1 of the first `size` leaves, by the recursive MTH."""
    found = {}
    for level in range(1, size.bit_length()):
        width = 1 << level
        for index in range(size // width):
            found[(level, index)] = _mth(APPEND_LEAVES[index * width : (index + 1) * width])
    return found


SUBTREES = _complete_subtrees(APPEND_MAX)
PREFIX_ROOTS = [_mth(APPEND_LEAVES[:size]) for size in range(APPEND_MAX + 1)]


def test_append_in_random_chunks_matches_the_recursive_mth_at_every_size_up_to_600():
    rng = random.Random(17)
    for start in range(APPEND_MAX + 1):
        size = start
        frontier = [SUBTREES.get(node, APPEND_LEAVES[node[1]]) for node in merkle.root_plan(size)]
        closed: dict[tuple[int, int], bytes] = {}
        while size < APPEND_MAX:
            chunk = APPEND_LEAVES[size : size + rng.choice((1, 2, 3, rng.randint(1, 300)))]
            appended = merkle.append_leaves(size, frontier, chunk)
            assert appended.size == size + len(chunk)
            assert appended.root == PREFIX_ROOTS[appended.size]
            closed.update({(level, index): h for level, index, h in appended.nodes})
            size, frontier = appended.size, appended.frontier
        assert closed == {
            (level, index): h
            for (level, index), h in SUBTREES.items()
            if (index + 1) << level > start
        }


def test_append_reports_only_the_levels_asked_for():
    whole = merkle.append_leaves(0, [], APPEND_LEAVES)
    high = merkle.append_leaves(0, [], APPEND_LEAVES, min_level=8)
    assert high.frontier == whole.frontier
    assert high.nodes == [node for node in whole.nodes if node[0] >= 8]
    assert {(level, index) for level, index, _ in high.nodes} == {(8, 0), (8, 1), (9, 0)}


def test_append_refuses_a_frontier_of_the_wrong_length():
    with pytest.raises(merkle.ProofError):
        merkle.append_leaves(5, [APPEND_LEAVES[0]], [APPEND_LEAVES[5]])
