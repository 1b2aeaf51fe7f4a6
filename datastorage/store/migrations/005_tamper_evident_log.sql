-- The tamper-evident log (docs/tamper-evident-log.md): one append-only RFC 6962 Merkle tree over
-- every stored event.

-- Events stored but not yet leaves. A write adds its events here in the same transaction as the
-- insert, so a row appears exactly when its event commits; the sequencer admits committed rows
-- in `seq` order and deletes them in the transaction that makes them leaves. Late commits and
-- DLQ replays are simply later rows: nothing relies on event ids or timestamps being ordered.
CREATE TABLE IF NOT EXISTS log_pending (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid        NOT NULL,
    event_date  date        NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per leaf, never partitioned and never retired: a retired month stays provable.
CREATE TABLE IF NOT EXISTS log_leaves (
    leaf_index   bigint      PRIMARY KEY CHECK (leaf_index >= 0),
    event_id     uuid        NOT NULL UNIQUE,
    event_date   date        NOT NULL,
    leaf_hash    bytea       NOT NULL CHECK (octet_length(leaf_hash) = 32),
    sequenced_at timestamptz NOT NULL DEFAULT now()
);

-- The hash of every complete subtree of level >= 1: node (level, node_index) covers leaves
-- [node_index * 2^level, (node_index + 1) * 2^level). Level 0 is log_leaves.leaf_hash. Any root
-- or proof needs O(log n) of these rows.
CREATE TABLE IF NOT EXISTS log_nodes (
    level      smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    node_index bigint   NOT NULL CHECK (node_index >= 0),
    hash       bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, node_index)
);

-- The tree's current size and root (one row), updated with every append.
CREATE TABLE IF NOT EXISTS log_tree (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash  bytea       NOT NULL CHECK (octet_length(root_hash) = 32),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO log_tree (singleton, tree_size, root_hash)
    VALUES (true, 0, sha256(''::bytea)) ON CONFLICT DO NOTHING;

-- Every signed checkpoint (the signed note byte for byte) and whether it reached the publish
-- target yet.
CREATE TABLE IF NOT EXISTS log_checkpoints (
    tree_size    bigint      PRIMARY KEY CHECK (tree_size > 0),
    root_hash    bytea       NOT NULL CHECK (octet_length(root_hash) = 32),
    note         text        NOT NULL,
    signed_at    timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS log_checkpoints_unpublished_idx
    ON log_checkpoints (tree_size) WHERE published_at IS NULL;

-- What the signer last signed, per origin, kept apart from the tree's tables: the signer checks
-- that the tree it is about to sign extends this one before signing.
CREATE TABLE IF NOT EXISTS log_signer_state (
    origin    text        PRIMARY KEY,
    tree_size bigint      NOT NULL CHECK (tree_size > 0),
    root_hash bytea       NOT NULL CHECK (octet_length(root_hash) = 32),
    signed_at timestamptz NOT NULL DEFAULT now()
);
