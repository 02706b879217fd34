"""C2SP signed-note / tlog-checkpoint: the Go sumdb/note reference vector and round trips."""
from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol.checkpoint import Checkpoint, NoteError, VerifierKeyError

# golang.org/x/mod/sumdb/note (note_test.go / package doc): the PeterNeumann example.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann " + GO_SIGNATURE + "\n"
ROOT8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


def go_private_key() -> Ed25519PrivateKey:
    material = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])
    assert material[0] == 1
    return Ed25519PrivateKey.from_private_bytes(material[1:])


def test_go_reference_note_is_reproduced_byte_for_byte() -> None:
    key = go_private_key()
    assert cp.verifier_key_string("PeterNeumann", key.public_key()) == GO_VERIFIER_KEY
    assert cp.sign_note(GO_TEXT, [("PeterNeumann", key)]) == GO_NOTE
    text, names = cp.open_note(GO_NOTE, [cp.parse_verifier_key(GO_VERIFIER_KEY)])
    assert (text, names) == (GO_TEXT, ["PeterNeumann"])


def test_go_reference_note_tampered_fails() -> None:
    verifier = cp.parse_verifier_key(GO_VERIFIER_KEY)
    with pytest.raises(NoteError):
        cp.open_note(GO_NOTE.replace("cryptography", "cryptographY"), [verifier])


def test_checkpoint_round_trip_and_format() -> None:
    key = Ed25519PrivateKey.generate()
    note = cp.sign_checkpoint("safeharbor.example/audit", 8, ROOT8, key_name="safeharbor.example/audit",
                              private_key=key)
    lines = note.split("\n")
    assert lines[:4] == ["safeharbor.example/audit", "8", base64.b64encode(ROOT8).decode(), ""]
    assert lines[4].startswith("\u2014 safeharbor.example/audit ")
    vkey = cp.verifier_key_string("safeharbor.example/audit", key.public_key())
    assert cp.verify_checkpoint(note, vkey) == Checkpoint("safeharbor.example/audit", 8, ROOT8)
    assert cp.verify_checkpoint(note, [vkey], origin="safeharbor.example/audit").size == 8
    with pytest.raises(NoteError):
        cp.verify_checkpoint(note, vkey, origin="other.example/log")


def test_unknown_signatures_are_ignored_and_rotation_works() -> None:
    old, new, witness = (Ed25519PrivateKey.generate() for _ in range(3))
    note = cp.sign_checkpoint("log.example", 3, ROOT8, key_name="log.example", private_key=old,
                              extra_signers=[("log.example", new), ("witness.example", witness)])
    for key in (old, new):
        assert cp.verify_checkpoint(note, cp.verifier_key_string("log.example", key.public_key())).size == 3
    with pytest.raises(NoteError):
        cp.verify_checkpoint(note, cp.verifier_key_string("log.example", Ed25519PrivateKey.generate().public_key()))


@pytest.mark.parametrize("mutate", [
    lambda n: n.replace("\n8\n", "\n9\n"),
    lambda n: n.replace("\n8\n", "\n08\n"),
    lambda n: n.replace("\n\n", "\n"),
    lambda n: n[:-1],
    lambda n: n.replace("\u2014", "-"),
    lambda n: "",
    lambda n: n + "garbage\n",
])
def test_bad_notes_raise_note_error(mutate: object) -> None:
    key = Ed25519PrivateKey.generate()
    note = cp.sign_checkpoint("log.example", 8, ROOT8, key_name="log.example", private_key=key)
    vkey = cp.verifier_key_string("log.example", key.public_key())
    with pytest.raises(NoteError):
        cp.verify_checkpoint(mutate(note), vkey)  # type: ignore[operator]


@pytest.mark.parametrize("bad", [
    "", "PeterNeumann", "PeterNeumann+c74f20a3", "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a3+ApC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
])
def test_bad_verifier_keys_raise(bad: str) -> None:
    with pytest.raises(VerifierKeyError):
        cp.parse_verifier_key(bad)


def test_body_validation() -> None:
    with pytest.raises(NoteError):
        cp.format_checkpoint_body("bad\norigin", 1, ROOT8)
    with pytest.raises(NoteError):
        cp.format_checkpoint_body("log", 1, b"short")
    with pytest.raises(NoteError):
        cp.sign_checkpoint("log", 1, ROOT8, key_name="has space", private_key=Ed25519PrivateKey.generate())
