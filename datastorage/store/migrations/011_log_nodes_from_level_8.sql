-- The log keeps subtree hashes from level 8 up only (docs/tamper-evident-log.md, "Tree storage"):
-- a subtree of level 1..7 covers at most 128 leaves, and every root, proof and frontier now
-- computes it from those leaf hashes (one index range of log_leaves) instead of reading a stored
-- row. Storing those levels cost about one log_nodes row per leaf, as much as the leaf itself.
-- The rows below level 8 are never read any more: delete them (about one row per leaf: on a
-- log of millions of leaves this takes a while, and autovacuum reclaims the space later).
--
-- The CHECK of migration 005 (level BETWEEN 1 AND 63) stays: a row of a lower level is unused,
-- not wrong, and a process of an older version still running during an upgrade may insert one.
-- Such a process cannot sequence or sign after this migration (it reads the levels deleted
-- here, finds them missing and stops its worker): upgrade every process that runs the log.
--
-- One level is kept apart, in one row per tile: the level-1 subtree hashes (the pairs of
-- leaves), which is what `verify` uses to name the two events of a reordered pair. Appending to
-- one row per 256 leaves costs next to nothing; `hashes` is the tile's pair hashes in index
-- order (pair p of the tile at bytes [32 p, 32 p + 32)), growing as its pairs complete.
CREATE TABLE IF NOT EXISTS log_pairs (
    tile_index bigint PRIMARY KEY CHECK (tile_index >= 0),
    -- No upper bound: rows altered behind the sequencer's back must not stop it from
    -- appending (verify reports the pairs that no longer match their leaves).
    hashes     bytea  NOT NULL CHECK (octet_length(hashes) > 0 AND octet_length(hashes) % 32 = 0)
);
INSERT INTO log_pairs (tile_index, hashes)
    SELECT node_index / 128, string_agg(hash, ''::bytea ORDER BY node_index)
    FROM log_nodes WHERE level = 1 GROUP BY node_index / 128
    ON CONFLICT DO NOTHING;
DELETE FROM log_nodes WHERE level < 8;
COMMENT ON TABLE log_nodes IS
    'Hashes of complete subtrees of level >= 8 (levels 1..7 are computed from log_leaves)';
COMMENT ON TABLE log_pairs IS
    'Level-1 subtree hashes (pairs of leaves), concatenated per tile of 256 leaves';
