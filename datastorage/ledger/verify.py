"""The offline verifier's rules, with no I/O: given the leaves in index order, the stored rows and
a signed checkpoint, say what was tampered with.

The caller (the `datastorage verify` command) checks the checkpoint's signature, then streams:
each leaf (index, event id, stored leaf hash) with the event row as GET would return it (or None
when the row is gone, and whether its month was retired by policy), then the rows that are no
leaf. Findings, one line each as `<kind> event_id=<id> leaf_index=<n>`:

- `edited`: the row's canonical bytes no longer hash to its leaf;
- `missing`: a leaf whose row is gone while its month is kept;
- `retired`: a leaf whose month was retired or archived by policy (reported, not a failure);
- `unsequenced`: a row committed longer ago than the grace period that is no leaf (inserted
  behind the service's back, or never sequenced);
- `root-mismatch`: the leaves do not rebuild the checkpoint's root (reordered, replaced or
  forged leaves), or a stored checkpoint disagrees with the tree; when stored level-1 subtree
  hashes (pairs of leaves) are given, the leaves under each one that no longer matches are
  named; when the stored tiles (the lowest stored level of subtrees as rows,
  `ledger.tree.STORED_LEVEL`) are given, each tile whose leaves no longer give its stored hash,
  or whose hash is gone, is named by its range of leaves;
- `truncated`: fewer leaves than the checkpoint's tree size.

The tree is rebuilt from the stored leaf hashes (an edited row is reported as `edited` and does
not also break the root); a leaf hash changed to match an edited row breaks the root instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datastorage.ledger import checkpoint, merkle, note
from datastorage.ledger.leaf import event_leaf_hash

FAILURES = {"edited", "missing", "unsequenced", "root-mismatch", "truncated"}


@dataclass(frozen=True)
class Finding:
    kind: str
    event_id: str | None = None
    leaf_index: int | None = None
    detail: str = ""

    @property
    def is_failure(self) -> bool:
        return self.kind in FAILURES

    def line(self) -> str:
        text = f"{self.kind} event_id={self.event_id or '-'} leaf_index="
        text += "-" if self.leaf_index is None else str(self.leaf_index)
        return f"{text} {self.detail}".rstrip()


class TreeAudit:
    """Feed the leaves in index order (`leaf`), then call `finish`."""

    def __init__(
        self,
        size: int,
        root: bytes,
        other_roots: Mapping[int, bytes] | Iterable[tuple[int, bytes]] | None = None,
        tile_level: int | None = None,
    ):
        """`other_roots`: the stored checkpoints (tree size -> root), or (size, root) pairs in
        ascending size, consumed as the tree reaches each size (constant memory).
        `tile_level`: the level of the stored tiles given to `leaf` (None: none are given)."""
        self.size = size
        self.root = root
        if isinstance(other_roots, Mapping):
            other_roots = sorted(other_roots.items())
        self._others: Iterator[tuple[int, bytes]] = iter(other_roots or ())
        self._next_other = next(self._others, None)
        self._appended = merkle.append_leaves(0, [], [])
        self._tile_level = tile_level
        self._pair: list[tuple[str, bytes]] = []  # the current level-1 pair (event id, hash)
        self.findings: list[Finding] = []

    def leaf(
        self,
        leaf_index: int,
        event_id: str,
        stored_hash: bytes,
        event: Mapping[str, Any] | None,
        retired: bool = False,
        stored_pair_hash: bytes | None = None,
        stored_tile_hash: bytes | None = None,
    ) -> None:
        """One leaf; `stored_pair_hash` is the stored level-1 subtree containing it, if known;
        for the last leaf of a tile, `stored_tile_hash` is the tile's stored hash (None when it
        is not stored)."""
        if leaf_index >= self.size:
            return  # beyond the checkpoint: not covered by it
        expected = self._appended.size
        if leaf_index != expected:
            self.findings.append(
                Finding("root-mismatch", event_id, leaf_index, f"expected leaf_index={expected}")
            )
            return
        if event is None:
            self.findings.append(Finding("retired" if retired else "missing", event_id, leaf_index))
        elif event_leaf_hash(event) != stored_hash:
            self.findings.append(Finding("edited", event_id, leaf_index))
        # Only the closed tiles are wanted from the append (level 64: no tree is that high).
        level = self._tile_level if self._tile_level is not None else 64
        self._appended = merkle.append_leaves(
            self._appended.size, self._appended.frontier, [stored_hash], level
        )
        self._check_tile(stored_tile_hash)
        size = self._appended.size
        while self._next_other is not None and self._next_other[0] <= size:
            other_size, other_root = self._next_other
            if other_size == size and other_root != self._appended.root:
                self.findings.append(
                    Finding("root-mismatch", None, None, f"stored checkpoint tree_size={size}")
                )
            self._next_other = next(self._others, None)
        self._pair.append((event_id, stored_hash))
        if len(self._pair) == 2:
            (left_id, left), (right_id, right) = self._pair
            if stored_pair_hash is not None and merkle.node_hash(left, right) != stored_pair_hash:
                for offset, pair_id in ((2, left_id), (1, right_id)):
                    self.findings.append(
                        Finding("root-mismatch", pair_id, size - offset, "its subtree changed")
                    )
            self._pair = []

    def _check_tile(self, stored: bytes | None) -> None:
        """Compare the tile the last leaf closed, if any, with its stored hash."""
        for level, index, rebuilt in self._appended.nodes:
            if level != self._tile_level or rebuilt == stored:
                continue
            first = index << level
            what = "is not stored" if stored is None else "differs from its leaves"
            self.findings.append(
                Finding(
                    "root-mismatch",
                    None,
                    first,
                    f"stored subtree level={level} index={index} of leaves "
                    f"{first}..{first + (1 << level) - 1} {what}",
                )
            )

    def finish(self) -> list[Finding]:
        if self._appended.size < self.size:
            self.findings.append(
                Finding(
                    "truncated",
                    None,
                    self._appended.size,
                    f"{self._appended.size} leaves, checkpoint has {self.size}",
                )
            )
        elif self._appended.root != self.root:
            self.findings.append(
                Finding("root-mismatch", None, None, f"tree_size={self.size} checkpoint root")
            )
        return self.findings


def stored_checkpoint_roots(
    stored: Iterable[tuple[int, str]], verifiers: Sequence[note.Verifier], origin: str
) -> tuple[dict[int, bytes], list[Finding]]:
    """Roots of the checkpoints the database keeps (size, signed note), for `TreeAudit`; one
    whose signature (by one of `verifiers`: the current and any retired keys), origin or size
    does not hold is a `root-mismatch` finding."""
    findings: list[Finding] = []
    return dict(checked_roots(stored, verifiers, origin, findings)), findings


def checked_roots(
    stored: Iterable[tuple[int, str]],
    verifiers: Sequence[note.Verifier],
    origin: str,
    findings: list[Finding],
) -> Iterator[tuple[int, bytes]]:
    """`stored_checkpoint_roots` as a stream: (size, root) of each stored checkpoint that holds,
    in the order given; each one that does not is added to `findings`."""
    for size, signed in stored:
        try:
            parsed = checkpoint.parse(note.verify(signed.encode(), *verifiers))
            if parsed.origin != origin or parsed.size != size:
                raise checkpoint.CheckpointError("origin or size differs from its row")
        except (note.NoteError, checkpoint.CheckpointError) as exc:
            findings.append(
                Finding("root-mismatch", None, None, f"stored checkpoint tree_size={size}: {exc}")
            )
            continue
        yield size, parsed.root


def unsequenced(
    rows_without_leaf: Iterable[tuple[str, dt.datetime]], now: dt.datetime, grace: dt.timedelta
) -> list[Finding]:
    """Rows that are no leaf, committed (created) longer ago than `grace`."""
    return [
        Finding("unsequenced", event_id)
        for event_id, created_at in rows_without_leaf
        if now - created_at > grace
    ]


def summary(findings: Iterable[Finding], leaves: int) -> tuple[str, int]:
    """The summary line and the exit code (0 clean, 1 tampering found)."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    failed = any(kind in FAILURES for kind in counts)
    detail = ", ".join(f"{kind}={count}" for kind, count in sorted(counts.items())) or "none"
    verdict = "TAMPERING FOUND" if failed else "OK"
    return f"{verdict}: {leaves} leaves checked; findings: {detail}", 1 if failed else 0
