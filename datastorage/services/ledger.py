"""The tamper-evident log as the API serves it (docs/tamper-evident-log.md): the latest signed
checkpoint, inclusion and consistency proofs against signed tree sizes, and the verifier key.

Every proof is relative to a signed checkpoint: a size above the latest checkpoint is refused,
since a client could not check a root nobody signed. This service only reads; the sequencer, the
signer and the publisher (`ledger/`) write. It knows no HTTP: it raises `InvalidInput` (a size
out of range, naming the parameter), `NotFound` (no such event, no checkpoint yet) and
`NotYetSequenced` (the event is stored but not yet in a checkpoint of that size).

The service holds only the verifier (public) key; the private key stays with the signer.
"""

from __future__ import annotations

import math

from datastorage.config import ConfigError, Settings
from datastorage.domain.errors import InvalidInput, NotFound, NotYetSequenced
from datastorage.ledger import proofs
from datastorage.ledger.keyfile import KeyFileError, load_signer
from datastorage.ledger.note import Signer, Verifier
from datastorage.store import audit_queries
from datastorage.store import ledger as store
from datastorage.store.connect import DatabaseConnection
from datastorage.store.pool import Database


class LogService:
    def __init__(self, db: Database, verifier: Verifier, *, retry_after: int = 10) -> None:
        self.db = db
        self.verifier = verifier
        self.retry_after = max(1, retry_after)

    @classmethod
    def for_signer(cls, settings: Settings, db: Database, signer: Signer) -> LogService:
        """The reads of the log signed by `signer` (only its public half is kept)."""
        # A client retrying a not-yet-sequenced event waits about one checkpoint interval.
        return cls(db, signer.verifier, retry_after=math.ceil(settings.log_checkpoint_interval))

    @property
    def verifier_key(self) -> str:
        return str(self.verifier)

    async def checkpoint(self) -> str:
        """The latest signed checkpoint, the signed note byte for byte."""
        async with self.db.connection() as conn:
            latest = await store.latest_checkpoint(conn)
        if latest is None:
            raise NotFound("no checkpoint has been signed yet")
        return latest.note

    async def inclusion(self, event_id: str, tree_size: int | None = None) -> proofs.InclusionProof:
        """The proof that the event is leaf `leaf_index` of the tree of `tree_size` leaves
        (default: the latest checkpoint's size)."""
        async with self.db.connection() as conn:
            latest = await _latest_size(conn)
            if tree_size is None:
                size = latest
            else:
                _check_size("tree_size", tree_size, latest)
                size = tree_size
            try:
                if size == 0:
                    raise proofs.NotSequenced(event_id)
                return await proofs.inclusion(conn, event_id, size)
            except proofs.NotSequenced:
                if await audit_queries.get_event(conn, event_id) is None:
                    raise NotFound(f"no audit event {event_id}") from None
                raise NotYetSequenced(
                    f"event {event_id} is not yet a leaf of a signed checkpoint of size {size}",
                    self.retry_after,
                ) from None

    async def consistency(self, first: int, second: int) -> list[bytes]:
        """The proof that the tree of `second` leaves extends the tree of `first` leaves."""
        async with self.db.connection() as conn:
            latest = await _latest_size(conn)
            errors = {}
            if not 1 <= second <= latest:
                errors["second"] = _range_message(latest)
            if not 1 <= first <= second:
                errors["first"] = "must be at least 1 and at most second"
            if errors:
                raise InvalidInput(errors)
            return await proofs.consistency(conn, first, second)


def configured_signer(settings: Settings) -> Signer | None:
    """The configured signing key (None: the log is off). An unreadable or malformed key is a
    configuration error that names the file, never the key: the server refuses to start."""
    if not settings.log_signing_key_file:
        return None
    try:
        return load_signer(settings.log_signing_key_file)
    except KeyFileError as exc:
        raise ConfigError(f"DATASTORAGE_LOG_SIGNING_KEY_FILE: {exc}") from exc


async def _latest_size(conn: DatabaseConnection) -> int:
    latest = await store.latest_checkpoint(conn)
    return 0 if latest is None else latest.size


def _range_message(latest: int) -> str:
    if latest == 0:
        return "no checkpoint has been signed yet"
    return f"must be between 1 and the latest checkpoint size {latest}"


def _check_size(name: str, value: int, latest: int) -> None:
    if not 1 <= value <= latest:
        raise InvalidInput({name: _range_message(latest)})
