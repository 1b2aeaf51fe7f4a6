"""The checkpoint signer: signs a C2SP checkpoint of the tree at most every interval while it
grows, and never signs two inconsistent checkpoints.

Before signing size n with root r it proves, from the stored subtree hashes, that the tree it is
about to sign extends the last tree it signed — kept in `log_signer_state`, apart from the tree's
tables, and also remembered by this process — and that the stored subtrees give the stored root.
On any mismatch (a shorter tree, another root at the same size, a consistency proof that fails)
it stops signing for good, logs an error and calls `on_consistency_failure` (the lead wires it to
`datastorage_log_consistency_failures_total`).

One signer runs at a time (an advisory transaction lock); the checkpoint and the new signer state
are written in the same transaction.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable

from datastorage.ledger import merkle, note, tree
from datastorage.ledger.background import StopWorker, repeat
from datastorage.ledger.checkpoint import Checkpoint
from datastorage.ledger.sequencer import ConnectionSource
from datastorage.store import ledger as store

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SIGNED = "signed"
    UNCHANGED = "unchanged"  # nothing new since the last checkpoint
    BUSY = "busy"  # another process holds the signer lock
    INCONSISTENT = "inconsistent"  # refused; signing has stopped
    STOPPED = "stopped"  # an earlier round found an inconsistency


class Inconsistent(Exception):
    pass


def _check_extends(
    last: store.TreeState, current: store.TreeState, get: merkle.NodeHash, what: str
) -> None:
    if current.size < last.size:
        raise Inconsistent(f"tree size {current.size} is below the {what} {last.size}")
    try:
        proof = merkle.consistency_proof(last.size, current.size, get)
        merkle.verify_consistency(last.size, current.size, last.root, current.root, proof)
    except merkle.ProofError as exc:
        raise Inconsistent(
            f"tree of size {current.size} does not extend the {what} {last.size}: {exc}"
        ) from exc


class CheckpointSigner:
    def __init__(
        self,
        connect: ConnectionSource,
        signer: note.Signer,
        *,
        origin: str | None = None,
        interval: float = 10.0,
        on_consistency_failure: Callable[[], None] | None = None,
        on_signed: Callable[[store.StoredCheckpoint], None] | None = None,
    ) -> None:
        self.connect = connect
        self.signer = signer
        self.origin = origin or signer.name
        self.interval = interval
        self.on_consistency_failure = on_consistency_failure
        self.on_signed = on_signed
        self.stopped = False
        self._remembered: store.TreeState | None = None  # the last this process signed

    async def sign_once(self) -> Outcome:
        if self.stopped:
            return Outcome.STOPPED
        try:
            async with self.connect() as conn, conn.transaction():
                if not await store.try_lock(conn, store.SIGNER_LOCK):
                    return Outcome.BUSY
                current = await store.tree_state(conn)
                last = await store.signer_state(conn, self.origin)
                if current.size == 0 or last == current:
                    return Outcome.UNCHANGED
                known = [
                    (s, w)
                    for s, w in (
                        (last, "last signed size"),
                        (self._remembered, "size this process signed"),
                    )
                    if s is not None
                ]
                plans = [[merkle.root_plan(current.size)]]
                plans += [
                    merkle.consistency_plan(s.size, current.size)
                    for s, _ in known
                    if s.size <= current.size
                ]
                stored = await tree.subtree_hashes(conn, merkle.proof_nodes(*plans))

                def get(level: int, index: int) -> bytes:
                    if (level, index) not in stored:
                        raise merkle.ProofError(f"subtree ({level}, {index}) is missing")
                    return stored[(level, index)]

                try:
                    computed = merkle.root(current.size, get)
                except merkle.ProofError as exc:
                    raise Inconsistent(f"tree of size {current.size}: {exc}") from exc
                if computed != current.root:
                    raise Inconsistent(f"stored subtrees do not give the root of {current.size}")
                for state, what in known:
                    _check_extends(state, current, get, what)
                text = Checkpoint(self.origin, current.size, current.root).text()
                signed = store.StoredCheckpoint(
                    current.size, current.root, note.sign(text, self.signer).decode()
                )
                await store.record_checkpoint(conn, self.origin, current, signed.note)
        except Inconsistent as exc:
            self.stopped = True
            log.error("log: refusing to sign, signing stopped: %s", exc)
            if self.on_consistency_failure:
                self.on_consistency_failure()
            return Outcome.INCONSISTENT
        self._remembered = current
        if self.on_signed:
            self.on_signed(signed)
        return Outcome.SIGNED

    async def _step(self) -> bool:
        if await self.sign_once() in (Outcome.INCONSISTENT, Outcome.STOPPED):
            raise StopWorker
        return False

    async def run(self, stop: asyncio.Event) -> None:
        await repeat(stop, self.interval, self._step, "signer")
