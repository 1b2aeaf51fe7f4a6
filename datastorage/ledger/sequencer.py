"""The sequencer: turns committed events into leaves of the one Merkle tree, in commit order.

Each round is one transaction. It takes a transaction-scoped advisory lock without waiting (so one
sequencer runs at a time across every process and replica; the others simply skip the round),
takes the oldest pending rows, each holding the events one statement stored (only committed rows
are visible, so late commits and DLQ replays become later leaves and nothing relies on id or
timestamp order), takes each one's leaf hash as
its writer queued it (or, when none was queued, reads the event in the GET shape and hashes its
canonical bytes), appends the leaves and the new complete-subtree hashes the store keeps
(`ledger.tree`), updates the tree state and deletes the pending rows. A crash (even kill -9)
mid-round rolls the whole round back: nothing is lost and nothing is half-appended.

An event that is already a leaf (registered twice), or that was queued without a hash and whose
row is gone, is dropped from pending without becoming a leaf; the verifier reports a row that
never became a leaf as `unsequenced`. An event queued with its hash becomes a leaf even if its
row was deleted meanwhile: it was stored, and `verify` reports the deletion.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from datastorage.ledger import merkle, tree
from datastorage.ledger.background import StopWorker, repeat
from datastorage.ledger.leaf import event_leaf_hash
from datastorage.store import ledger as store
from datastorage.store.connect import DatabaseConnection as AsyncConnection

log = logging.getLogger(__name__)

ConnectionSource = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


class TreeCorrupted(RuntimeError):
    """The stored subtree hashes do not give the stored root: the tree tables were altered."""


@dataclass(frozen=True)
class Round:
    appended: int  # new leaves
    dropped: int  # pending rows that did not become leaves (already leaves, or row gone)
    size: int  # tree size after the round (-1: another sequencer held the lock)


async def frontier(conn: AsyncConnection, state: store.TreeState) -> list[bytes]:
    """The stored hashes of `merkle.root_plan(state.size)`, checked against the stored root."""
    plan = merkle.root_plan(state.size)
    stored = await tree.subtree_hashes(conn, plan)
    missing = [node for node in plan if node not in stored]
    if missing:
        raise TreeCorrupted(f"subtree hashes {missing} of a tree of size {state.size} are missing")
    hashes = [stored[node] for node in plan]
    if merkle.fold(hashes) != state.root:
        raise TreeCorrupted(f"stored subtrees do not give the stored root at size {state.size}")
    return hashes


async def sequence_once(conn: AsyncConnection, batch_size: int) -> Round:
    """One round in its own transaction on `conn`."""
    async with conn.transaction():
        if not await store.try_lock(conn, store.SEQUENCER_LOCK):
            return Round(0, 0, -1)
        state = await store.tree_state(conn, for_update=True)
        pending = await store.take_pending(conn, batch_size)
        if not pending:
            return Round(0, 0, state.size)
        frontier_hashes = await frontier(conn, state)
        leaves = await _stored_leaves(conn, state.size, await _hashed(conn, pending))
        if leaves:
            appended = merkle.append_leaves(
                state.size, frontier_hashes, [leaf for _, _, leaf in leaves]
            )
            state = store.TreeState(appended.size, appended.root)
            await store.append_nodes(conn, *tree.kept(appended.nodes), state)
        return Round(len(leaves), len(pending) - len(leaves), state.size)


async def _stored_leaves(
    conn: AsyncConnection, size: int, leaves: list[store.Packed]
) -> list[store.Packed]:
    """Store `leaves` from index `size` on; an event that is a leaf already is left out (and
    named in a warning). Returns the leaves stored."""
    if not leaves:
        return leaves
    stored = await store.append_leaves(conn, size, leaves)
    if len(stored) < len(leaves):
        kept = {event_id for event_id, _, _ in stored}
        for leaf in leaves:
            if leaf[0] not in kept:
                event = store.PendingEvent.of(leaf)
                log.warning(
                    "log: pending event %s (%s) not appended: already a leaf",
                    event.event_id,
                    event.event_date,
                )
    return stored


async def _hashed(conn: AsyncConnection, pending: list[store.Packed]) -> list[store.Packed]:
    """The first registration of each event, each with its leaf hash: the one its writer
    queued or, when none was queued, the hash of its stored row (an event without one and
    without a row is dropped)."""
    if len({event_id for event_id, _, _ in pending}) < len(pending):
        first: dict[bytes, store.Packed] = {}
        for event in pending:
            first.setdefault(event[0], event)
        pending = list(first.values())
    unhashed = {p[0]: store.PendingEvent.of(p) for p in pending if p[2] == store.NO_HASH}
    if not unhashed:
        return pending
    stored = await store.events_by_key(
        conn, [(e.event_id, e.event_date) for e in unhashed.values()]
    )
    leaves = []
    for event_id, day, leaf in pending:
        if leaf == store.NO_HASH:
            readable = unhashed[event_id]
            row = stored.get((readable.event_id, readable.event_date))
            if row is None:
                log.warning(
                    "log: pending event %s (%s) not appended: no stored row",
                    readable.event_id,
                    readable.event_date,
                )
                continue
            leaf = event_leaf_hash(row)
        leaves.append((event_id, day, leaf))
    return leaves


class Sequencer:
    """Runs rounds until stopped: at once again while a full batch was taken, else every
    `interval` seconds."""

    def __init__(
        self,
        connect: ConnectionSource,
        *,
        batch_size: int = 5000,
        interval: float = 0.5,
        on_round: Callable[[Round], None] | None = None,
    ) -> None:
        self.connect = connect
        self.batch_size = batch_size
        self.interval = interval
        self.on_round = on_round

    async def run_once(self) -> Round:
        async with self.connect() as conn:
            result = await sequence_once(conn, self.batch_size)
        if self.on_round:
            self.on_round(result)
        return result

    async def _step(self) -> bool:
        try:
            result = await self.run_once()
        except TreeCorrupted:
            log.error("log: the tree's tables were altered; sequencing stopped", exc_info=True)
            raise StopWorker from None
        return result.appended + result.dropped >= self.batch_size

    async def run(self, stop: asyncio.Event) -> None:
        await repeat(stop, self.interval, self._step, "sequencer")
