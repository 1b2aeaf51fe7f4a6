"""The C2SP tlog-checkpoint note text: format and strict parse, with no I/O.

The text is at least three non-empty lines, each ending in a newline: the origin (non-empty),
the tree size in ASCII decimal without leading zeroes, the base64 root hash (32 bytes, RFC 6962
tree); any further lines are extension lines, which must be non-empty. The text is then signed
as a signed note (`note.py`) whose key name is the origin.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from datastorage.ledger.merkle import HASH_SIZE


class CheckpointError(ValueError):
    """A checkpoint text is malformed."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        _check(self)
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(line + "\n" for line in (*lines, *self.extensions))


def _check(checkpoint: Checkpoint) -> None:
    if not checkpoint.origin or "\n" in checkpoint.origin:
        raise CheckpointError("origin must be one non-empty line")
    if checkpoint.size < 0:
        raise CheckpointError("tree size must not be negative")
    if len(checkpoint.root) != HASH_SIZE:
        raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")
    for line in checkpoint.extensions:
        if not line or "\n" in line:
            raise CheckpointError("extension lines must be non-empty single lines")


def parse(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs an origin, a tree size and a root hash")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise CheckpointError("origin line is empty")
    if not size_text.isascii() or not size_text.isdigit():
        raise CheckpointError("tree size must be ASCII decimal digits")
    if len(size_text) > 1 and size_text[0] == "0":
        raise CheckpointError("tree size must not have leading zeroes")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError("root hash is not standard base64") from exc
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_text:
        raise CheckpointError(f"root hash must be the base64 of {HASH_SIZE} bytes")
    if any(not line for line in extensions):
        raise CheckpointError("extension lines must be non-empty")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))
