"""C2SP signed-note with Ed25519 keys: key strings, signing and verification, with no I/O.

Format (c2sp.org/signed-note): the note text ends with a newline; then one blank line; then one
or more signature lines `— <key name> <base64(4-byte big-endian key id || signature)>` (an EM DASH,
U+2014, and a space first). The signature covers the text, final newline included, blank line
excluded. The key id is the first four bytes of SHA-256(key name || 0x0A || 0x01 || 32-byte
public key), 0x01 being the Ed25519 signature type.

Key strings (the form the Go reference implementation reads and writes):
- verifier key: `<name>+<8 hex digits of key id>+<base64(0x01 || 32-byte public key)>`
- private key:  `PRIVATE+KEY+<name>+<8 hex digits of key id>+<base64(0x01 || 32-byte seed)>`

Verification ignores signatures by unknown keys (a different name or key id), rejects the note
when a signature by a known key fails, and requires at least one known-key signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A key string or note is malformed, or its signature does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not standard base64") from exc


def check_key_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError("key name must be non-empty, without spaces or '+'")


def key_id(name: str, public_key: bytes) -> int:
    """The recommended key id: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()
    return struct.unpack(">I", digest[:4])[0]


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: int
    public_key: Ed25519PublicKey

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([ED25519]) + _raw_public(self.public_key)).decode()
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    key_id: int
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.private_key.public_key())

    def private_key_string(self) -> str:
        seed = self.private_key.private_bytes_raw()
        encoded = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{encoded}"

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def _parse_key_id(text: str) -> int:
    if len(text) != 8 or any(c not in "0123456789abcdef" for c in text):
        raise NoteError("key id must be 8 lowercase hex digits")
    return int(text, 16)


def _parse_key_material(text: str, what: str) -> bytes:
    raw = _b64decode(text, what)
    if len(raw) != 33 or raw[0] != ED25519:
        raise NoteError(f"{what} must be base64 of 0x01 followed by 32 bytes (Ed25519)")
    return raw[1:]


def parse_verifier_key(text: str) -> Verifier:
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("verifier key must be <name>+<key id>+<base64 key>")
    name, hex_id, material = parts
    check_key_name(name)
    declared = _parse_key_id(hex_id)
    public = _parse_key_material(material, "verifier key")
    if key_id(name, public) != declared:
        raise NoteError("verifier key id does not match its name and key")
    return Verifier(name, declared, Ed25519PublicKey.from_public_bytes(public))


def parse_private_key(text: str) -> Signer:
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("private key must be PRIVATE+KEY+<name>+<key id>+<base64 seed>")
    name, hex_id, material = parts[2:]
    check_key_name(name)
    declared = _parse_key_id(hex_id)
    private = Ed25519PrivateKey.from_private_bytes(_parse_key_material(material, "private key"))
    if key_id(name, _raw_public(private.public_key())) != declared:
        raise NoteError("private key id does not match its name and key")
    return Signer(name, declared, private)


def generate_signer(name: str) -> Signer:
    check_key_name(name)
    private = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    return Signer(name, key_id(name, _raw_public(private.public_key())), private)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


def sign(text: str, *signers: Signer) -> bytes:
    """The signed note: text, a blank line, one signature line per signer."""
    _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signature")
    message = text.encode()
    lines = []
    for signer in signers:
        blob = struct.pack(">I", signer.key_id) + signer.sign(message)
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(blob).decode()}\n")
    return (text + "\n" + "".join(lines)).encode()


@dataclass(frozen=True)
class SignatureLine:
    name: str
    key_id: int
    signature: bytes


def split(note: bytes) -> tuple[str, list[SignatureLine]]:
    """(text, signature lines) of a syntactically valid note; the text is everything up to the
    last blank line, its final newline included."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("note is not UTF-8") from exc
    cut = decoded.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = decoded[: cut + 1], decoded[cut + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise NoteError("signature block must end with a newline")
    raw_lines = block[:-1].split("\n")
    if len(raw_lines) > MAX_SIGNATURES:
        raise NoteError("note has too many signatures")
    signatures = []
    for line in raw_lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("signature line must start with an em dash and a space")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise NoteError("signature line must be '— <name> <base64>'")
        name, encoded = fields
        check_key_name(name)
        blob = _b64decode(encoded, "signature")
        if len(blob) < 5:
            raise NoteError("signature is too short")
        signatures.append(SignatureLine(name, struct.unpack(">I", blob[:4])[0], blob[4:]))
    return text, signatures


def verify(note: bytes, *verifiers: Verifier) -> str:
    """The note's text if at least one known key signed it and no known key's signature fails;
    raises NoteError otherwise."""
    text, signatures = split(note)
    message = text.encode()
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = False
    for line in signatures:
        verifier = known.get((line.name, line.key_id))
        if verifier is None:
            continue  # unknown key: ignored, as the specification requires
        if not verifier.verify(message, line.signature):
            raise NoteError(f"signature by {line.name} does not verify")
        verified = True
    if not verified:
        raise NoteError("no signature by a known key")
    return text
