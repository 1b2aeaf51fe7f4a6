"""RFC 6962 / RFC 9162 Merkle tree hashing and proofs, with no I/O.

This module is meant to be read alone by an auditor. It owns:

- the hashes: leaf = SHA-256(0x00 || data), interior node = SHA-256(0x01 || left || right), and
  the root of an empty tree = SHA-256 of nothing;
- proof *plans*: which complete subtrees an inclusion or consistency proof is made of, so that a
  store holding the hash of every complete subtree can answer any proof with O(log n) lookups
  (`proof_nodes` lists them for one query);
- proof generation from a "hash of complete subtree (level, index)" accessor, following the
  recursive definitions of RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (SUBPROOF);
- proof verification following RFC 9162 §2.1.3.2 and §2.1.4.2 step by step;
- appending leaves to a tree known only by its right frontier (the complete subtrees covering
  it), which yields the new complete subtree hashes the store keeps.

Addressing: the complete subtree (level, index) covers leaves [index * 2**level,
(index + 1) * 2**level). Level 0 is a leaf hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]  # (level, index) of a complete subtree
NodeHash = Callable[[int, int], bytes]  # hash of the complete subtree (level, index)


class ProofError(ValueError):
    """A proof does not verify, or its parameters are impossible."""


# SHA-256 with the leaf prefix already absorbed: a copy of it hashes a leaf without first
# joining the prefix to the leaf's bytes (about a kilobyte for an event).
_LEAF_PREFIX = hashlib.sha256(b"\x00")


def leaf_hash(data: bytes) -> bytes:
    hasher = _LEAF_PREFIX.copy()
    hasher.update(data)
    return hasher.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


# ---- plans: which complete subtrees make up a hash ---------------------------------------------


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees covering leaves [start, end), left to right. `start` must be a
    multiple of the smallest power of two >= end - start, which holds for every range the RFC
    9162 recursions visit (they split at the largest power of two below the size)."""
    nodes: list[Node] = []
    position = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its `range_nodes`: the right-most subtrees are joined
    first, as the RFC's split at the largest power of two does."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _inclusion_ranges(index: int, start: int, end: int) -> list[tuple[int, int]]:
    """RFC 9162 PATH(m, D[start:end]) as the ranges whose MTH form the path, bottom up."""
    if end - start == 1:
        return []
    k = _largest_power_of_two_below(end - start)
    if index < k:
        return [*_inclusion_ranges(index, start, start + k), (start + k, end)]
    return [*_inclusion_ranges(index - k, start + k, end), (start, start + k)]


def _subproof_ranges(m: int, start: int, end: int, whole: bool) -> list[tuple[int, int]]:
    """RFC 9162 SUBPROOF(m, D[start:end], b) as ranges, bottom up."""
    n = end - start
    if m == n:
        return [] if whole else [(start, end)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof_ranges(m, start, start + k, whole), (start + k, end)]
    return [*_subproof_ranges(m - k, start + k, end, False), (start, start + k)]


def inclusion_plan(index: int, size: int) -> list[list[Node]]:
    """For each element of the inclusion proof of leaf `index` in a tree of `size` leaves, the
    complete subtrees whose fold is that element."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    return [range_nodes(a, b) for a, b in _inclusion_ranges(index, 0, size)]


def consistency_plan(first: int, second: int) -> list[list[Node]]:
    """For each element of the consistency proof between sizes `first` and `second`, the complete
    subtrees whose fold is that element (empty when first is 0 or equals second)."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    return [range_nodes(a, b) for a, b in _subproof_ranges(first, 0, second, True)]


def root_plan(size: int) -> list[Node]:
    """The complete subtrees whose fold is the root of a tree of `size` leaves."""
    return range_nodes(0, size)


def proof_nodes(*plans: Iterable[Sequence[Node]]) -> set[Node]:
    """Every (level, index) some plans need (each plan a list of elements, as
    `inclusion_plan` returns; wrap a `root_plan` in a list): what a store fetches in one query."""
    return {node for plan in plans for element in plan for node in element}


# ---- generation from stored complete subtrees --------------------------------------------------


def root(size: int, get: NodeHash) -> bytes:
    return fold([get(level, index) for level, index in root_plan(size)])


def inclusion_proof(index: int, size: int, get: NodeHash) -> list[bytes]:
    return [fold([get(*node) for node in element]) for element in inclusion_plan(index, size)]


def consistency_proof(first: int, second: int, get: NodeHash) -> list[bytes]:
    return [fold([get(*node) for node in element]) for element in consistency_plan(first, second)]


def leaves_accessor(leaf_hashes: Sequence[bytes]) -> NodeHash:
    """A NodeHash over an in-memory list of leaf hashes (O(2**level) per call): for tests and
    for a verifier that rebuilds a whole tree from its leaves."""

    def get(level: int, index: int) -> bytes:
        if level == 0:
            return leaf_hashes[index]
        return node_hash(get(level - 1, 2 * index), get(level - 1, 2 * index + 1))

    return get


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes, in O(n), by appending them to an empty tree."""
    return fold(append_leaves(0, [], leaf_hashes).frontier)


# ---- appending ---------------------------------------------------------------------------------


class Appended:
    """The result of appending leaves: the new complete subtrees of level >= `min_level` as
    (level, index, hash), and the new right frontier (hashes of `root_plan(size)`)."""

    def __init__(self, size: int, frontier: list[bytes], nodes: list[tuple[int, int, bytes]]):
        self.size = size
        self.frontier = frontier
        self.nodes = nodes

    @property
    def root(self) -> bytes:
        return fold(self.frontier)


def append_leaves(
    size: int, frontier: Sequence[bytes], new_leaves: Iterable[bytes], min_level: int = 1
) -> Appended:
    """Append leaf hashes to a tree of `size` leaves whose frontier (the hashes of
    `root_plan(size)`, left to right) is given. `nodes` of the result lists every complete
    subtree the new leaves close whose level is at least `min_level` (a store that keeps only
    the higher levels asks for those only).

    It works one level at a time: `row` holds the new complete subtrees of the current level,
    the first of index `index`. When that index is odd, its left sibling is the frontier's
    subtree of this level (an odd index at level l means bit l of `size` is set), so it joins
    the row. Pairs of the row are the next level's new subtrees; an unpaired last one is the new
    frontier's subtree of this level."""
    stack = list(frontier)  # the old frontier, highest level first
    if len(stack) != size.bit_count():
        raise ProofError(f"a tree of size {size} has {size.bit_count()} frontier nodes")
    row = list(new_leaves)
    new_size = size + len(row)
    kept: list[bytes] = []  # the new frontier's subtrees below the levels left in `stack`
    nodes: list[tuple[int, int, bytes]] = []
    index, level = size, 0
    sha256 = hashlib.sha256
    while row:
        if index & 1:
            row.insert(0, stack.pop())
            index -= 1
        if len(row) & 1:
            kept.append(row.pop())
        pairs = zip(row[::2], row[1::2], strict=True)  # the row has an even length here
        row = [sha256(b"\x01" + left + right).digest() for left, right in pairs]
        index >>= 1
        level += 1
        if level >= min_level:
            nodes.extend((level, index + offset, h) for offset, h in enumerate(row))
    return Appended(new_size, stack + kept[::-1], nodes)


# ---- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` leads to from `leaf` at `index` in a tree of `size` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn = index, size - 1
    result = leaf
    for element in proof:
        _check_hash(element, "proof element")
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            while fn and not fn & 1:  # fn == sn on a left edge: skip the levels without siblings
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return result


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofError unless `proof` shows `leaf` at `index` in the tree with this root."""
    _check_hash(expected_root, "root")
    if root_from_inclusion_proof(index, size, leaf, proof) != expected_root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree of size `first` with `first_root` is a
    prefix of the tree of size `second` with `second_root`."""
    if not 0 <= first <= second:
        raise ProofError(f"size {second} cannot extend size {first}")
    if first == second or first == 0:
        # Nothing to prove; RFC 9162 leaves these cases out of the algorithm: the proof is empty
        # and, for equal sizes, the roots are equal.
        if proof:
            raise ProofError("consistency proof must be empty for these sizes")
        if first == second and first_root != second_root:
            raise ProofError("equal tree sizes with different roots")
        return
    _check_hash(first_root, "first root")
    _check_hash(second_root, "second root")
    if not proof:
        raise ProofError("consistency proof is empty")
    for element in proof:
        _check_hash(element, "proof element")
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the first tree is a complete subtree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for element in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(element, fr)
            sr = node_hash(element, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the tree is deep")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")
