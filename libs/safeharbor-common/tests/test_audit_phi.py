"""PHI sealing: one HPKE-wrapped key-tree root per window, AES-256-GCM under one leaf per event, bound to
the event id; envelopes of the earlier (windowed) format still open."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from safeharbor_common import audit_phi
from safeharbor_common.audit_phi import PhiPublicKey, key_id, leaf_key, open_sealed
from safeharbor_protocol.encoding import b64url_decode, b64url_encode


def test_one_wrapped_root_per_window_one_leaf_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    private = X25519PrivateKey.generate()
    key = PhiPublicKey(key_id(private.public_key()), private.public_key())
    sealed = [key.seal({"ip": f"192.0.2.{i}", "user_agent": None}, event_id=f"e-{i}") for i in range(50)]
    envelopes = [s for s in sealed if s is not None]
    assert len(envelopes) == 50 and len({e["ek"] for e in envelopes}) == 1
    assert {e["alg"] for e in envelopes} == {audit_phi.ALGORITHM} and all("nonce" not in e for e in envelopes)
    headers = [b64url_decode(e["ct"])[:5] for e in envelopes]
    assert headers == [bytes((audit_phi.TREE_DEPTH,)) + i.to_bytes(4, "big") for i in range(50)]  # leaves 0..49
    cache: dict[str, bytes] = {}
    assert [open_sealed(e, private, event_id=f"e-{i}", cache=cache)["ip"] for i, e in enumerate(envelopes)] == \
        [f"192.0.2.{i}" for i in range(50)]
    assert len(cache) == 1  # unwrapped once
    with pytest.raises(InvalidTag):
        open_sealed(envelopes[3], private, event_id="e-4")  # moved to another entry
    with pytest.raises(Exception):
        open_sealed(envelopes[0], X25519PrivateKey.generate(), event_id="e-0")
    raw = bytearray(b64url_decode(envelopes[5]["ct"]))
    raw[4] ^= 1  # names leaf 4 instead of 5: another key
    with pytest.raises(InvalidTag):
        open_sealed({**envelopes[5], "ct": b64url_encode(bytes(raw))}, private, event_id="e-5")
    raw[0] = 200  # a depth no tree has: refused before any work
    with pytest.raises(ValueError):
        open_sealed({**envelopes[5], "ct": b64url_encode(bytes(raw))}, private, event_id="e-5")
    assert key.seal({"ip": None, "user_agent": None}, event_id="none") is None


def test_a_new_root_when_the_tree_is_used_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_phi, "TREE_DEPTH", 2)  # 4 leaves per root
    private = X25519PrivateKey.generate()
    key = PhiPublicKey(key_id(private.public_key()), private.public_key())
    envelopes = [key.seal({"ip": "x"}, event_id=f"w-{i}") for i in range(9)]
    assert len({e["ek"] for e in envelopes if e}) == 3
    assert [b64url_decode(e["ct"])[1:5] for e in envelopes if e][:5] == \
        [i.to_bytes(4, "big") for i in (0, 1, 2, 3, 0)]
    assert all(open_sealed(e, private, event_id=f"w-{i}")["ip"] == "x" for i, e in enumerate(envelopes) if e)


def test_leaves_are_distinct_and_derived_from_the_root_alone() -> None:
    root = os.urandom(32)
    tree = audit_phi._KeyTree(root, 4)
    taken = [tree.take() for _ in range(16)]
    assert tree.exhausted and [leaf for leaf, _ in taken] == list(range(16))
    assert [k for _, k in taken] == [leaf_key(root, leaf=i, depth=4) for i in range(16)]
    assert len({k for _, k in taken}) == 16


def test_windowed_envelopes_written_before_still_open() -> None:
    """The earlier format (alg HPKE-X25519-SHA256-A256GCM: a content key per window, random nonce)."""
    private = X25519PrivateKey.generate()
    content_key, nonce = os.urandom(32), os.urandom(12)
    ek = audit_phi.SUITE.encrypt(content_key, private.public_key(), info=b"safeharbor-audit-phi-content-key")
    ct = AESGCM(content_key).encrypt(nonce, b'{"ip":"192.0.2.7"}', b"safeharbor-audit-phi\x00old-1")
    envelope = {"alg": "HPKE-X25519-SHA256-A256GCM", "kid": key_id(private.public_key()),
                "ek": b64url_encode(ek), "nonce": b64url_encode(nonce), "ct": b64url_encode(ct)}
    assert open_sealed(envelope, private, event_id="old-1") == {"ip": "192.0.2.7"}
    with pytest.raises(InvalidTag):
        open_sealed(envelope, private, event_id="old-2")
    with pytest.raises(ValueError):
        open_sealed({**envelope, "alg": "A128CBC"}, private, event_id="old-1")


def test_a_forked_process_draws_its_own_root() -> None:
    """Leaf keys are used once with a zero nonce: a child must never take the leaves its parent goes on taking."""
    private = X25519PrivateKey.generate()
    key = PhiPublicKey(key_id(private.public_key()), private.public_key())
    parent_first = key.seal({"ip": "x"}, event_id="p-0")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its envelope's wrapped root, then leave at once
        sealed = key.seal({"ip": "y"}, event_id="c-1") or {}
        os.write(write, sealed.get("ek", "").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child_ek = os.read(read, 4096).decode()
    os.close(read)
    parent_next = key.seal({"ip": "z"}, event_id="p-1")
    assert parent_first and parent_next and parent_next["ek"] == parent_first["ek"]
    assert child_ek and child_ek != parent_first["ek"]  # a new root in the child
