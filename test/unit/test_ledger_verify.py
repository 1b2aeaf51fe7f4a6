"""The verifier's rules on in-memory trees: each kind of tampering is named with its event."""

from __future__ import annotations

import datetime as dt
import uuid

from datastorage.ledger import checkpoint, merkle, note
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.ledger.verify import TreeAudit, stored_checkpoint_roots, summary, unsequenced

ORIGIN = "audit.example.com/verify"


def _events(count: int) -> list[dict]:
    return [
        {"event_id": str(uuid.UUID(int=i + 1)), "event_data": {"n": i}, "event_date": "2026-03-01"}
        for i in range(count)
    ]


EVENTS = _events(10)
HASHES = [event_leaf_hash(e) for e in EVENTS]
TREE = merkle.append_leaves(0, [], HASHES)
TILE_LEVEL = 2  # tiles of four leaves, so that ten leaves make two complete tiles
TILES = {index: value for level, index, value in TREE.nodes if level == TILE_LEVEL}
PAIRS = {index: value for level, index, value in TREE.nodes if level == 1}


def _audit(leaves, rows, size=10, root=TREE.root, other_roots=None, retired=(), tiles=TILES):
    audit = TreeAudit(size, root, other_roots, TILE_LEVEL)
    for index, event_id, stored_hash in leaves:
        closes_tile = (index + 1) % (1 << TILE_LEVEL) == 0
        audit.leaf(
            index,
            event_id,
            stored_hash,
            rows.get(event_id),
            retired=event_id in retired,
            stored_pair_hash=PAIRS.get(index // 2),
            stored_tile_hash=tiles.get(index >> TILE_LEVEL) if closes_tile else None,
        )
    return [(f.kind, f.event_id, f.leaf_index) for f in audit.finish()]


def _leaves():
    return [(i, e["event_id"], HASHES[i]) for i, e in enumerate(EVENTS)]


ROWS = {e["event_id"]: e for e in EVENTS}


def test_an_untouched_log_is_clean():
    assert _audit(_leaves(), ROWS) == []
    assert summary([], 10) == ("OK: 10 leaves checked; findings: none", 0)


def test_an_edited_row_is_named():
    rows = {**ROWS, EVENTS[3]["event_id"]: {**EVENTS[3], "event_data": {"n": 99}}}
    assert _audit(_leaves(), rows) == [("edited", EVENTS[3]["event_id"], 3)]


def test_a_deleted_row_is_missing_unless_its_month_was_retired():
    rows = {k: v for k, v in ROWS.items() if k != EVENTS[5]["event_id"]}
    assert _audit(_leaves(), rows) == [("missing", EVENTS[5]["event_id"], 5)]
    findings = _audit(_leaves(), rows, retired={EVENTS[5]["event_id"]})
    assert findings == [("retired", EVENTS[5]["event_id"], 5)]


def test_retired_is_reported_but_not_a_failure():
    from datastorage.ledger.verify import Finding

    line, code = summary([Finding("retired", "x", 1)], 10)
    assert code == 0 and "retired=1" in line


def test_swapped_leaves_break_the_root_and_are_named_by_their_pairs_and_tiles():
    leaves = _leaves()
    leaves[2], leaves[7] = (2, *leaves[7][1:]), (7, *leaves[2][1:])
    ids = [e["event_id"] for e in EVENTS]
    assert _audit(leaves, ROWS) == [
        ("root-mismatch", None, 0),  # the tile of leaves 0..3 (closed by leaf 3)
        ("root-mismatch", ids[7], 2),  # the pair of leaves 2..3
        ("root-mismatch", ids[3], 3),
        ("root-mismatch", None, 4),  # the tile of leaves 4..7
        ("root-mismatch", ids[6], 6),  # the pair of leaves 6..7
        ("root-mismatch", ids[2], 7),
        ("root-mismatch", None, None),  # the checkpoint's root
    ]


def test_leaves_swapped_in_the_incomplete_tail_are_named_by_their_pair():
    leaves = _leaves()
    leaves[8], leaves[9] = (8, *leaves[9][1:]), (9, *leaves[8][1:])
    ids = [e["event_id"] for e in EVENTS]
    assert _audit(leaves, ROWS) == [
        ("root-mismatch", ids[9], 8),
        ("root-mismatch", ids[8], 9),
        ("root-mismatch", None, None),
    ]


def test_a_stored_tile_changed_or_deleted_is_named_while_the_root_still_holds():
    changed = {**TILES, 1: merkle.node_hash(TILES[0], TILES[1])}
    assert _audit(_leaves(), ROWS, tiles=changed) == [("root-mismatch", None, 4)]
    audit = TreeAudit(10, TREE.root, None, TILE_LEVEL)
    for index, event_id, stored_hash in _leaves():
        # the tile of leaves 0..3 is changed, the one of leaves 4..7 is gone
        stored_tile = changed[1] if index == 3 else None
        audit.leaf(index, event_id, stored_hash, ROWS[event_id], stored_tile_hash=stored_tile)
    assert [f.line() for f in audit.finish()] == [
        "root-mismatch event_id=- leaf_index=0 stored subtree level=2 index=0 of leaves 0..3 "
        "differs from its leaves",
        "root-mismatch event_id=- leaf_index=4 stored subtree level=2 index=1 of leaves 4..7 "
        "is not stored",
    ]


def test_a_leaf_hash_rewritten_to_match_an_edited_row_breaks_the_root():
    edited = {**EVENTS[4], "event_data": {"n": -1}}
    leaves = _leaves()
    leaves[4] = (4, edited["event_id"], event_leaf_hash(edited))
    findings = _audit(leaves, {**ROWS, edited["event_id"]: edited})
    assert ("root-mismatch", EVENTS[4]["event_id"], 4) in findings  # its pair
    assert ("root-mismatch", None, 4) in findings  # the tile of leaves 4..7
    assert ("root-mismatch", None, None) in findings


def test_a_truncated_tail_is_reported():
    assert _audit(_leaves()[:7], ROWS) == [("truncated", None, 7)]


def test_leaves_beyond_the_checkpoint_are_not_judged():
    smaller = merkle.root_from_leaves(HASHES[:6])
    assert _audit(_leaves(), ROWS, size=6, root=smaller) == []


def test_rows_that_are_no_leaf_are_unsequenced_after_the_grace_period():
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    rows = [("old", now - dt.timedelta(minutes=10)), ("new", now - dt.timedelta(seconds=5))]
    findings = unsequenced(rows, now, dt.timedelta(minutes=5))
    assert [(f.kind, f.event_id) for f in findings] == [("unsequenced", "old")]
    assert findings[0].line() == "unsequenced event_id=old leaf_index=-"


def test_a_replaced_stored_checkpoint_is_reported():
    key = note.generate_signer(ORIGIN)
    good = note.sign(
        checkpoint.Checkpoint(ORIGIN, 4, merkle.root_from_leaves(HASHES[:4])).text(), key
    )
    lie = checkpoint.Checkpoint(ORIGIN, 6, merkle.root_from_leaves(HASHES[:5] + HASHES[:1])).text()
    stored = [(4, good.decode()), (6, note.sign(lie, key).decode())]
    roots, findings = stored_checkpoint_roots(stored, [key.verifier], ORIGIN)
    assert findings == []
    assert [f[0] for f in _audit(_leaves(), ROWS, other_roots=roots)] == ["root-mismatch"]
    forged = note.sign(lie, note.generate_signer(ORIGIN)).decode()  # another key, same name
    roots, findings = stored_checkpoint_roots([(6, forged)], [key.verifier], ORIGIN)
    assert roots == {} and [f.kind for f in findings] == ["root-mismatch"]


def test_stored_roots_can_be_streamed_in_ascending_size():
    """verify streams the stored checkpoints beside the leaves instead of loading them all."""
    good = {size: merkle.root_from_leaves(HASHES[:size]) for size in (2, 5, 9)}
    consumed = []

    def stream(roots):
        for pair in sorted(roots.items()):
            consumed.append(pair[0])
            yield pair

    assert _audit(_leaves(), ROWS, other_roots=stream(good)) == []
    assert consumed == [2, 5, 9]
    bad = {**good, 5: merkle.root_from_leaves(HASHES[:4] + HASHES[:1])}
    assert _audit(_leaves(), ROWS, other_roots=stream(bad)) == [("root-mismatch", None, None)]
