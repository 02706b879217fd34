"""The envelope: round trips, every refusal a distinct error, PQ negotiation, sizes."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from factories import FakeDirectory, MemorySeen, keyring, recipients, registered, rotate, verified
from safeharbor_client import envelope as env
from safeharbor_client.errors import (
    EnvelopeMalformed,
    EnvelopeTampered,
    EnvelopeTooLarge,
    MisaddressedMessage,
    NotARecipient,
    ReplayDetected,
    SenderKeyNotValid,
    SenderMismatch,
    SignatureInvalid,
    SignatureMissing,
    UnsupportedEnvelope,
)
from safeharbor_protocol import e2ee
from safeharbor_protocol.encoding import b64url_decode, b64url_encode

CID = "clinical:room-1"


@pytest.fixture
def world():
    alice = registered("alice")
    alice2 = registered("alice", "dev2")
    bob = registered("bob")
    directory = FakeDirectory().publish([alice, alice2, bob])
    return alice, alice2, bob, directory


def _open(text, ring, directory, **kw):
    kw.setdefault("channel_cid", CID)
    return env.open_envelope(text, keyring=ring, sender_key=directory.lookup, **kw)


def test_round_trip_every_recipient_device(world):
    alice, alice2, bob, directory = world
    sealed = env.seal(text="BP 120/80, see you Monday", sender=alice, recipients=recipients(alice, alice2, bob),
                      channel_cid=CID)
    text = sealed.to_text()
    assert "120/80" not in text
    for ring in (keyring(bob), keyring(alice), keyring(alice2, device_id="dev2")):
        opened = _open(text, ring, directory, stream_user_id="alice", stream_message_id=sealed.mid,
                       stream_created_at=datetime.now(UTC), seen=MemorySeen())
        assert opened.text == "BP 120/80, see you Monday"
        assert opened.sender == alice.ref
        assert opened.sender_fingerprint == verified(alice).fingerprint
    assert sealed.suite == e2ee.SUITE_X25519
    # Recipients are sorted and the wire form is canonical JSON.
    assert list(sealed.recipients) == sorted(sealed.recipients)
    assert json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False) == text


def test_not_a_recipient(world):
    alice, _, bob, directory = world
    carol = registered("carol")
    text = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID).to_text()
    with pytest.raises(NotARecipient):
        _open(text, keyring(carol), directory)


@pytest.mark.parametrize("field", ["ct", "n", "ek", "cid", "ts", "rcp", "snd", "mid"])
def test_tampering_any_authenticated_field(world, field):
    alice, _, bob, directory = world
    data = env.seal(text="hello there", sender=alice, recipients=recipients(alice, bob), channel_cid=CID).to_json()
    if field in ("ct", "n"):
        raw = bytearray(b64url_decode(data[field]))
        raw[0] ^= 1
        data[field] = b64url_encode(bytes(raw))
    elif field == "ek":
        raw = bytearray(b64url_decode(data["ek"][1]))
        raw[-1] ^= 1
        data["ek"][1] = b64url_encode(bytes(raw))
    elif field == "cid":
        data["cid"] = "clinical:room-2"
    elif field == "ts":
        data["ts"] += 1
    elif field == "rcp":
        data["rcp"][0][2] = 7
    elif field == "snd":
        data["snd"][1] = "dev2"
    elif field == "mid":
        data["mid"] = env.new_message_id()
    ring = keyring(bob)
    with pytest.raises(EnvelopeTampered):
        _open(json.dumps(data), ring, directory, channel_cid=data["cid"])


def test_tampering_other_recipients_key_is_detected(world):
    alice, alice2, bob, directory = world
    data = env.seal(text="hello", sender=alice, recipients=recipients(alice, alice2, bob), channel_cid=CID).to_json()
    raw = bytearray(b64url_decode(data["ek"][0]))  # alice/dev1's slot, read by bob
    raw[5] ^= 0x40
    data["ek"][0] = b64url_encode(bytes(raw))
    with pytest.raises(EnvelopeTampered):
        _open(json.dumps(data), keyring(bob), directory)


def test_missing_signature(world):
    alice, _, bob, directory = world
    data = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID).to_json()
    del data["sig"]
    with pytest.raises(SignatureMissing):
        _open(json.dumps(data), keyring(bob), directory)


def test_wrong_signature_bytes(world):
    alice, _, bob, directory = world
    data = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID).to_json()
    sig = bytearray(b64url_decode(data["sig"]))
    sig[10] ^= 1
    data["sig"] = b64url_encode(bytes(sig))
    with pytest.raises(SignatureInvalid) as info:
        _open(json.dumps(data), keyring(bob), directory)
    assert type(info.value) is SignatureInvalid


def test_insider_forgery_in_someone_elses_name(world):
    """Bob (a recipient, so he can build valid encryption) claims a message from alice: signature fails."""
    alice, _, bob, directory = world
    impostor = registered("alice")  # bob's own key pair posing as alice/dev1 v1
    impostor.sig_private = bob.sig_private
    text = env.seal(text="stop the meds", sender=impostor, recipients=recipients(alice, bob),
                    channel_cid=CID).to_text()
    with pytest.raises(SignatureInvalid):
        _open(text, keyring(alice), directory)


def test_readdressed_to_another_channel(world):
    alice, _, bob, directory = world
    sealed = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID)
    with pytest.raises(MisaddressedMessage):
        _open(sealed.to_text(), keyring(bob), directory, channel_cid="clinical:other")


def test_replays(world):
    alice, _, bob, directory = world
    sealed = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID)
    seen = MemorySeen()
    now = datetime.now(UTC)
    _open(sealed.to_text(), keyring(bob), directory, stream_message_id=sealed.mid, stream_created_at=now, seen=seen)
    # Reading the same Stream message again is not a replay.
    _open(sealed.to_text(), keyring(bob), directory, stream_message_id=sealed.mid, stream_created_at=now, seen=seen)
    # Re-posted under another Stream id.
    with pytest.raises(ReplayDetected):
        _open(sealed.to_text(), keyring(bob), directory, stream_message_id="other-id-123", seen=seen)
    # Re-posted much later.
    with pytest.raises(ReplayDetected):
        _open(sealed.to_text(), keyring(bob), directory, stream_message_id=sealed.mid,
              stream_created_at=now + timedelta(hours=2))
    # Seen before under another transport id, by this device's memory.
    seen.seen[(CID, sealed.mid)] = "first-transport"
    with pytest.raises(ReplayDetected):
        _open(sealed.to_text(), keyring(bob), directory, seen=seen)


def test_reposted_by_another_user(world):
    alice, _, bob, directory = world
    sealed = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID)
    with pytest.raises(SenderMismatch):
        _open(sealed.to_text(), keyring(bob), directory, stream_user_id="bob")


def test_malformed_and_unsupported(world):
    _, _, bob, directory = world
    for bad in ("plain text from a non-SDK client", "[]", "{}", '{"v": 1}'):
        with pytest.raises(EnvelopeMalformed):
            _open(bad, keyring(bob), directory)
    with pytest.raises(UnsupportedEnvelope):
        _open('{"v": 2}', keyring(bob), directory)
    alice = world[0]
    data = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID).to_json()
    data["s"] = "rsa"
    with pytest.raises(UnsupportedEnvelope):
        _open(json.dumps(data), keyring(bob), directory)
    data = env.seal(text="hi", sender=alice, recipients=recipients(alice, bob), channel_cid=CID).to_json()
    data["extra"] = "x"
    with pytest.raises(EnvelopeMalformed):
        _open(json.dumps(data), keyring(bob), directory)


def test_old_message_verifies_after_both_sides_rotate():
    t0 = datetime.now(UTC) - timedelta(days=2)
    stamp = t0.strftime("%Y-%m-%dT%H:%M:%SZ")
    alice = registered("alice", created_at=stamp)
    bob = registered("bob", created_at=stamp)
    old = env.seal(text="before rotation", sender=alice, recipients=recipients(alice, bob), channel_cid=CID,
                   timestamp_ms=int((t0 + timedelta(hours=1)).timestamp() * 1000))
    alice_v2 = rotate(alice, created_at=(t0 + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    bob_v2 = rotate(bob, created_at=(t0 + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    directory = FakeDirectory().publish([alice, alice_v2, bob, bob_v2])
    ring = keyring(bob, bob_v2)
    assert _open(old.to_text(), ring, directory).text == "before rotation"
    new = env.seal(text="after", sender=alice_v2, recipients=recipients(alice_v2, bob_v2), channel_cid=CID)
    assert _open(new.to_text(), ring, directory).sender.version == 2
    # The replaced key signing a message dated after the rotation is refused.
    late = env.seal(text="stolen old key", sender=alice, recipients=recipients(alice, bob_v2), channel_cid=CID)
    with pytest.raises(SenderKeyNotValid):
        _open(late.to_text(), ring, directory)


def test_unknown_sender_key(world):
    _, _, bob, directory = world
    stranger = registered("mallory")
    text = env.seal(text="x", sender=stranger, recipients=recipients(stranger, bob), channel_cid=CID).to_text()
    with pytest.raises(SenderKeyNotValid):
        _open(text, keyring(bob), directory)


def test_post_quantum_negotiated_only_when_everyone_has_it():
    alice = registered("alice", with_pq=True)
    bob = registered("bob", with_pq=True)
    carol = registered("carol")
    directory = FakeDirectory().publish([alice, bob, carol])
    both = env.seal(text="pq please", sender=alice, recipients=recipients(alice, bob), channel_cid=CID)
    assert both.suite == e2ee.SUITE_PQ
    assert _open(both.to_text(), keyring(bob), directory).text == "pq please"
    mixed = env.seal(text="classic", sender=alice, recipients=recipients(alice, bob, carol), channel_cid=CID)
    assert mixed.suite == e2ee.SUITE_X25519
    assert _open(mixed.to_text(), keyring(carol), directory).text == "classic"
    no_pq = env.seal(text="off", sender=alice, recipients=recipients(alice, bob), channel_cid=CID, allow_pq=False)
    assert no_pq.suite == e2ee.SUITE_X25519
    with pytest.raises(UnsupportedEnvelope):
        env.seal(text="x", sender=alice, recipients=recipients(alice, carol), channel_cid=CID, suite=e2ee.SUITE_PQ)


def test_pq_tampering_detected():
    alice = registered("alice", with_pq=True)
    bob = registered("bob", with_pq=True)
    directory = FakeDirectory().publish([alice, bob])
    data = env.seal(text="pq", sender=alice, recipients=recipients(alice, bob), channel_cid=CID).to_json()
    idx = [r[0] for r in data["rcp"]].index("bob")
    raw = bytearray(b64url_decode(data["ek"][idx]))
    raw[100] ^= 1  # inside the ML-KEM ciphertext: implicit rejection gives another key, the AEAD then fails
    data["ek"][idx] = b64url_encode(bytes(raw))
    with pytest.raises(EnvelopeTampered):
        _open(json.dumps(data), keyring(bob), directory)


def test_size_limit_and_overhead():
    alice = registered("alice")
    others = [registered(f"user{i}") for i in range(40)]
    with pytest.raises(EnvelopeTooLarge):
        env.seal(text="hi", sender=alice, recipients=recipients(alice, *others), channel_cid=CID)
    one = env.seal(text="hi", sender=alice, recipients=recipients(alice), channel_cid=CID).to_text()
    two = env.seal(text="hi", sender=alice, recipients=recipients(alice, others[0]), channel_cid=CID).to_text()
    # Per extra device: ~107 characters of wrapped key plus its [user, device, version] entry.
    assert 110 <= len(two) - len(one) <= 140


def test_padding_hides_exact_length():
    alice = registered("alice")
    a = env.seal(text="a", sender=alice, recipients=recipients(alice), channel_cid=CID)
    b = env.seal(text="a" * 15, sender=alice, recipients=recipients(alice), channel_cid=CID)
    assert len(a.ciphertext) == len(b.ciphertext)
    assert e2ee.unpad(e2ee.pad(b"xyz")) == b"xyz"
    with pytest.raises(ValueError):
        e2ee.unpad(b"\x00" * 32)
