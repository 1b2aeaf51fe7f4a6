"""The log's signing key on disk: `datastorage log keygen` and loading the key at start-up.

The file holds one line, the signed-note private key string (`note.py`), readable by its owner
only. The verifier key, which auditors pin, is derived from it and never needs to be stored.
"""

from __future__ import annotations

import os
from pathlib import Path

from datastorage.ledger.note import NoteError, Signer, generate_signer, parse_private_key


class KeyFileError(ValueError):
    """The key file cannot be written or read, or does not hold a private key."""


def keygen(origin: str, out: str | Path) -> str:
    """Write a new Ed25519 key named `origin` to `out` (refusing to overwrite a file) and
    return its verifier key string."""
    try:
        signer = generate_signer(origin)
    except NoteError as exc:
        raise KeyFileError(f"origin {origin!r}: {exc}") from exc
    try:
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{out} already exists; not overwriting a key") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create {out}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "w") as handle:
        handle.write(signer.private_key_string() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return str(signer.verifier)


def load_signer(path: str | Path) -> Signer:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return parse_private_key(text)
    except NoteError as exc:  # the message never includes the key material
        raise KeyFileError(f"{path}: {exc}") from exc
