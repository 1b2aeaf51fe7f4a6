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
DELETE FROM log_nodes WHERE level < 8;
COMMENT ON TABLE log_nodes IS
    'Hashes of complete subtrees of level >= 8 (levels 1..7 are computed from log_leaves)';
