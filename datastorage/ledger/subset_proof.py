"""Proof that a subset of a tree's leaves belongs to it, with no I/O (used by exports,
docs/compliance.md).

An export carries some leaves of the tree of a signed checkpoint, each with its leaf index. The
proof is the list of hashes of the largest subtrees, in the RFC 9162 split (left part = largest
power of two below the size), that contain none of those leaves, in left-to-right recursion
order. With the leaves and the proof a verifier recomputes the root and compares it with the
checkpoint: every exported leaf is then proven at its index, and none can be dropped or added
without the root changing. For a contiguous range of leaves the proof has O(log n) hashes; for k
scattered leaves at most O(k log(n / k)) — one inclusion proof per leaf would cost k log n.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from datastorage.ledger.merkle import ProofError, node_hash

# has_leaf(start, end): whether the subset holds a leaf index in [start, end).
HasLeaf = Callable[[int, int], bool]


def _split(size: int) -> int:
    return 1 << ((size - 1).bit_length() - 1)


def proof_ranges(size: int, has_leaf: HasLeaf) -> Iterator[tuple[int, int]]:
    """The leaf ranges [start, end) whose Merkle tree hashes form the proof, in order."""

    def walk(start: int, end: int) -> Iterator[tuple[int, int]]:
        if not has_leaf(start, end):
            yield start, end
        elif end - start > 1:
            middle = start + _split(end - start)
            yield from walk(start, middle)
            yield from walk(middle, end)

    if size > 0:
        yield from walk(0, size)


def root_from_subset(size: int, leaves: Mapping[int, bytes], proof: Iterable[bytes]) -> bytes:
    """The root of a tree of `size` leaves from some of its leaf hashes (by index) and the
    proof; raises ProofError when the proof has too few or too many hashes."""
    if size <= 0:
        raise ProofError("a subset proof needs a non-empty tree")
    if any(not 0 <= index < size for index in leaves):
        raise ProofError(f"a leaf index lies outside the tree of size {size}")
    indexes = sorted(leaves)
    hashes = iter(proof)

    def has_leaf(start: int, end: int) -> bool:
        position = bisect.bisect_left(indexes, start)
        return position < len(indexes) and indexes[position] < end

    def walk(start: int, end: int) -> bytes:
        if not has_leaf(start, end):
            try:
                return next(hashes)
            except StopIteration:
                raise ProofError("the proof has too few hashes") from None
        if end - start == 1:
            return leaves[start]
        middle = start + _split(end - start)
        return node_hash(walk(start, middle), walk(middle, end))

    root = walk(0, size)
    if next(hashes, None) is not None:
        raise ProofError("the proof has too many hashes")
    return root


_NONZERO = re.compile(rb"[^\x00]")


class LeafSet:
    """A set of leaf indexes below `size`, one bit each (1M-leaf tree: 128 KiB), answering
    "any index in [start, end)?" in C-speed byte scans: what a server streaming an export
    collects to build the proof afterwards without keeping the rows."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.bits = bytearray((size + 7) // 8)

    def add(self, index: int) -> None:
        self.bits[index >> 3] |= 1 << (index & 7)

    def _bit(self, index: int) -> bool:
        return bool(self.bits[index >> 3] >> (index & 7) & 1)

    def any_in(self, start: int, end: int) -> bool:
        first_byte, last_byte = (start + 7) >> 3, end >> 3
        if first_byte >= last_byte:
            return any(self._bit(i) for i in range(start, end))
        if any(self._bit(i) for i in range(start, first_byte << 3)):
            return True
        if _NONZERO.search(self.bits, first_byte, last_byte):
            return True
        return any(self._bit(i) for i in range(last_byte << 3, end))
