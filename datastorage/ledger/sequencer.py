"""The sequencer: turns committed events into leaves of the one Merkle tree, in commit order.

Each round is one transaction. It takes a transaction-scoped advisory lock without waiting (so one
sequencer runs at a time across every process and replica; the others simply skip the round),
takes the oldest pending rows (only committed rows are visible, so late commits and DLQ replays
become later leaves and nothing relies on id or timestamp order), takes each one's leaf hash as
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
import datetime as dt
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
        if await store.oldest_pending_hashed(conn, batch_size):
            return await _append_hashed(conn, state, batch_size)
        pending = await store.take_pending(conn, batch_size)
        if not pending:
            return Round(0, 0, state.size)
        first: dict[tuple[str, dt.date], bytes | None] = {}
        for p in pending:
            first.setdefault((p.event_id, p.event_date), p.leaf_hash)
        already = await store.sequenced_event_ids(conn, [event_id for event_id, _ in first])
        unhashed = [key for key, leaf in first.items() if leaf is None]
        events = await store.events_by_key(conn, unhashed)
        leaves: list[store.NewLeaf] = []
        for (event_id, event_date), leaf in first.items():
            event = events.get((event_id, event_date))
            if event_id in already or (leaf is None and event is None):
                log.warning(
                    "log: pending event %s (%s) not appended: %s",
                    event_id,
                    event_date,
                    "already a leaf" if event_id in already else "no stored row",
                )
                continue
            already.add(event_id)
            if leaf is None:
                leaf = event_leaf_hash(event)  # type: ignore[arg-type]
            leaves.append(store.NewLeaf(event_id, event_date, leaf))
        if leaves:
            appended = merkle.append_leaves(
                state.size, await frontier(conn, state), [leaf.leaf_hash for leaf in leaves]
            )
            new_state = store.TreeState(appended.size, appended.root)
            await store.append(conn, state.size, leaves, *tree.kept(appended.nodes), new_state)
            state = new_state
        await store.delete_pending(conn, [p.seq for p in pending])
        return Round(len(leaves), len(pending) - len(leaves), state.size)


async def _append_hashed(conn: AsyncConnection, state: store.TreeState, batch_size: int) -> Round:
    """The round when every pending row carries the hash its writer computed (the usual case
    with the log on): PostgreSQL moves the rows into the leaf table, Python folds the hashes."""
    frontier_hashes = await frontier(conn, state)
    taken, leaves = await store.append_hashed(conn, state.size, batch_size)
    if taken > len(leaves):
        log.warning("log: %d pending event(s) not appended: already leaves", taken - len(leaves))
    if not leaves:
        return Round(0, taken, state.size)
    appended = merkle.append_leaves(state.size, frontier_hashes, leaves)
    new_state = store.TreeState(appended.size, appended.root)
    await store.append_nodes(conn, *tree.kept(appended.nodes), new_state)
    return Round(len(leaves), taken - len(leaves), appended.size)


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
