"""C2SP signed-note and tlog-checkpoint: published vectors, strict parsing, and a checkpoint signed
by a `log keygen` key checked here with a plain Ed25519 verification of the exact note bytes."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from datastorage.ledger import checkpoint, keyfile, merkle, note

# The example key and note of the Go reference implementation (golang.org/x/mod/sumdb/note),
# which the C2SP specification was written from; and the example of c2sp.org/signed-note tests.
GO_PRIVATE = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_VERIFIER = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
ENOCH_SIGNATURE = (
    "\u2014 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
SPEC_VERIFIER = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_reference_key_strings_and_signature_are_reproduced_byte_for_byte():
    signer = note.parse_private_key(GO_PRIVATE)
    assert signer.private_key_string() == GO_PRIVATE
    assert str(signer.verifier) == GO_VERIFIER
    assert note.parse_verifier_key(GO_VERIFIER).key_id == 0xC74F20A3
    assert note.sign(GO_TEXT, signer) == (GO_TEXT + "\n" + GO_SIGNATURE).encode()


def test_reference_notes_verify_and_unknown_keys_are_ignored():
    assert note.verify(SPEC_NOTE.encode(), note.parse_verifier_key(SPEC_VERIFIER)) == (
        "This is an example message.\n"
    )
    two = (GO_TEXT + "\n" + GO_SIGNATURE + ENOCH_SIGNATURE).encode()
    peter, enoch = note.parse_verifier_key(GO_VERIFIER), note.parse_verifier_key(ENOCH_VERIFIER)
    assert note.verify(two, peter) == GO_TEXT
    assert note.verify(two, enoch) == GO_TEXT
    assert note.verify(two, peter, enoch) == GO_TEXT
    with pytest.raises(note.NoteError, match="no signature by a known key"):
        note.verify(two)
    with pytest.raises(note.NoteError, match="no signature by a known key"):
        note.verify(two, note.parse_verifier_key(SPEC_VERIFIER))


def test_a_known_key_with_a_bad_signature_rejects_the_note():
    changed = (GO_TEXT.replace("problem,", "problem;") + "\n" + GO_SIGNATURE).encode()
    with pytest.raises(note.NoteError, match="does not verify"):
        note.verify(changed, note.parse_verifier_key(GO_VERIFIER))


@pytest.mark.parametrize(
    "text",
    [
        GO_TEXT + GO_SIGNATURE,  # no blank line
        GO_TEXT + "\n" + GO_SIGNATURE.replace("\u2014", "-"),  # hyphen, not em dash
        GO_TEXT + "\n" + GO_SIGNATURE.rstrip("\n"),  # no final newline
        GO_TEXT + "\n" + GO_SIGNATURE.replace("PeterNeumann ", "PeterNeumann  "),
        GO_TEXT + "\n" + GO_SIGNATURE.replace("=\n", "!\n"),  # not base64
        "tab\there\n\n" + GO_SIGNATURE,  # control character
    ],
)
def test_malformed_notes_are_refused(text):
    with pytest.raises(note.NoteError):
        note.verify(text.encode(), note.parse_verifier_key(GO_VERIFIER))


@pytest.mark.parametrize(
    "key",
    [
        GO_VERIFIER.replace("c74f20a3", "c74f20a4"),  # id does not match
        GO_VERIFIER.replace("PeterNeumann", "Peter Neumann"),
        GO_VERIFIER.replace("+ARpc", "+AhRpc"),
        GO_VERIFIER.replace("+ARpc", "+ZRpc"),  # not Ed25519
        GO_VERIFIER.split("+", 1)[1],
    ],
)
def test_malformed_verifier_keys_are_refused(key):
    with pytest.raises(note.NoteError):
        note.parse_verifier_key(key)


def test_verifier_keys_whose_base64_holds_a_plus_parse():
    for _ in range(200):
        verifier = note.generate_signer("example.com/log").verifier
        if "+" in str(verifier).split("+", 2)[2]:
            assert str(note.parse_verifier_key(str(verifier))) == str(verifier)
            return
    pytest.fail("no generated key had a '+' in its base64")


ROOT = merkle.root_from_leaves([merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")])


def test_checkpoint_text_round_trips_and_matches_the_specified_layout():
    cp = checkpoint.Checkpoint("example.com/log", 2, ROOT)
    text = cp.text()
    assert text == f"example.com/log\n2\n{base64.b64encode(ROOT).decode()}\n"
    assert checkpoint.parse(text) == cp
    with_extension = checkpoint.Checkpoint("o", 0, merkle.EMPTY_ROOT, ("ext a",))
    assert checkpoint.parse(with_extension.text()) == with_extension


@pytest.mark.parametrize(
    "text",
    [
        "o\n02\n" + base64.b64encode(ROOT).decode() + "\n",  # leading zero
        "o\n-2\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n2\n" + base64.b64encode(ROOT).decode(),  # no final newline
        "o\n2\n",
        "\n2\n" + base64.b64encode(ROOT).decode() + "\n",  # empty origin
        "o\n2\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
        "o\n2\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n",  # unpadded
        "o\n2\n" + base64.b64encode(ROOT).decode() + "\n\n",  # empty extension line
        "o\n\u0662\n" + base64.b64encode(ROOT).decode() + "\n",  # non-ASCII digit
    ],
)
def test_malformed_checkpoints_are_refused(text):
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.parse(text)


def test_checkpoint_signed_by_a_keygen_key_verifies_with_a_plain_ed25519_check(tmp_path):
    origin = "audit.example.com/datastorage"
    path = tmp_path / "log.key"
    verifier_key = keyfile.keygen(origin, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith(f"PRIVATE+KEY+{origin}+")
    with pytest.raises(keyfile.KeyFileError):
        keyfile.keygen(origin, path)  # never overwrites a key

    body = checkpoint.Checkpoint(origin, 2, ROOT).text()
    signed = note.sign(body, keyfile.load_signer(path))

    # Everything below follows the C2SP text, without our parsing or verification code.
    name, hex_id, material = verifier_key.split("+", 2)
    raw = base64.b64decode(material)
    assert name == origin and raw[0] == 0x01 and len(raw) == 33
    expected_id = hashlib.sha256(origin.encode() + b"\n\x01" + raw[1:]).digest()[:4]
    assert hex_id == expected_id.hex()
    text, _, signature_block = signed.rpartition(b"\n\n")
    text += b"\n"
    assert text == body.encode()
    assert signature_block.startswith(b"\xe2\x80\x94 " + origin.encode() + b" ")
    assert signature_block.endswith(b"\n") and signature_block.count(b"\n") == 1
    blob = base64.b64decode(signature_block.split(b" ")[2])
    assert blob[:4] == expected_id and struct.unpack(">I", blob[:4])[0] == int(hex_id, 16)
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], text)  # raises if wrong
