"""Envelope test vectors: generate (`python -m safeharbor_client.vectors > envelope_vectors.json`) and check.

Keys are derived from fixed labels, so they are the same on every run; HPKE encapsulation is randomised
by design (RFC 9180 gives no seeded API here), so each file is one fixed sample: a second implementation
must open every positive vector, reproduce every intermediate byte string (wrap info, content AAD, padded
payload, content ciphertext from the given content key and nonce, signed bytes, Ed25519 signature) and
refuse every negative vector with the stated error code. See ENVELOPE.md.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from safeharbor_protocol import e2ee
from safeharbor_protocol.canonical import canonical_json
from safeharbor_protocol.encoding import b64url_decode, b64url_encode

from . import envelope as env
from .directory import key_valid_at
from .errors import EnvelopeError
from .keys import DeviceKeyPair, DeviceRef, HybridPqKey, Keyring, VerifiedKey, build_record, verify_record

CREATED_AT = "2025-01-01T00:00:00Z"
TIMESTAMP_MS = 1735732800000  # 2025-01-01T12:00:00Z


def _seed(label: str, size: int = 32) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"safeharbor test vector {label} {counter}".encode()).digest()
        counter += 1
    return out[:size]


def vector_pair(user_id: str, device_id: str, *, with_pq: bool = False) -> DeviceKeyPair:
    label = f"{user_id}/{device_id}"
    pair = DeviceKeyPair(
        user_id=user_id,
        device_id=device_id,
        version=1,
        created_at=CREATED_AT,
        enc_private=X25519PrivateKey.from_private_bytes(_seed(label + " enc")),
        sig_private=Ed25519PrivateKey.from_private_bytes(_seed(label + " sig")),
        pq=HybridPqKey(mlkem_seed=_seed(label + " mlkem", 64), x25519_private=_seed(label + " pq-x25519"))
        if with_pq
        else None,
    )
    pair.record = build_record(pair)
    return pair


def _device_json(pair: DeviceKeyPair) -> dict[str, Any]:
    return {**pair.to_private_json(), "record": pair.record}


def _positive(name: str, description: str, sender: DeviceKeyPair, readers: list[DeviceKeyPair], text: str,
              cid: str) -> dict[str, Any]:
    content_key = _seed(name + " content key")
    nonce = _seed(name + " nonce", 12)
    mid = b64url_encode(_seed(name + " mid", 16))
    recipients = [env.Recipient.from_key(verify_record(p.record or {})) for p in readers]
    sealed = env.seal(text=text, sender=sender, recipients=recipients, channel_cid=cid, message_id=mid,
                      timestamp_ms=TIMESTAMP_MS, content_key=content_key, nonce=nonce, max_chars=1 << 20)
    payload = e2ee.pad(canonical_json({"text": text}))
    return {
        "name": name,
        "description": description,
        "channel_cid": cid,
        "plaintext": text,
        "sender": _device_json(sender),
        "devices": [_device_json(p) for p in readers],
        "content_key": b64url_encode(content_key),
        "nonce": b64url_encode(nonce),
        "message_id": mid,
        "timestamp_ms": TIMESTAMP_MS,
        "suite": sealed.suite,
        "payload_padded_hex": payload.hex(),
        "wrap_info_hex": sealed.wrap_info().hex(),
        "content_aad_hex": sealed.content_aad().hex(),
        "signed_bytes_hex": sealed.signed_bytes().hex(),
        "envelope": sealed.to_text(),
    }


def _mutate(envelope_text: str, change: Any) -> str:
    data = json.loads(envelope_text)
    change(data)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _flip(value: str, index: int = 0) -> str:
    raw = bytearray(b64url_decode(value))
    raw[index] ^= 0x01
    return b64url_encode(bytes(raw))


def generate() -> dict[str, Any]:
    alice = vector_pair("alice", "phone")
    alice_laptop = vector_pair("alice", "laptop")
    bob = vector_pair("bob", "tablet")
    carol = vector_pair("carol", "phone")
    alice_pq = vector_pair("alice-pq", "phone", with_pq=True)
    bob_pq = vector_pair("bob-pq", "tablet", with_pq=True)
    cid = "clinical:demo-room"
    basic = _positive("x25519-three-devices", "alice/phone to bob/tablet and her own two devices",
                      alice, [alice, alice_laptop, bob], "Lab results are in: all normal.", cid)
    pq = _positive("mlkem768x25519-two-devices", "hybrid post-quantum suite: every device has a hybrid key",
                   alice_pq, [alice_pq, bob_pq], "PQ hello", "patient-care:pq-room")
    text = basic["envelope"]
    impostor = replace(alice, sig_private=Ed25519PrivateKey.from_private_bytes(_seed("bob/tablet sig")))
    forged = env.seal(text="forged", sender=impostor,
                      recipients=[env.Recipient.from_key(verify_record(p.record or {})) for p in (alice, bob)],
                      channel_cid=cid, message_id=b64url_encode(_seed("forged mid", 16)), timestamp_ms=TIMESTAMP_MS,
                      content_key=_seed("forged ck"), nonce=_seed("forged nonce", 12)).to_text()
    negative = [
        {"name": "tampered-ciphertext", "envelope": _mutate(text, lambda d: d.update(ct=_flip(d["ct"]))),
         "reader": "bob/tablet", "channel_cid": cid, "expect": "envelope_tampered"},
        {"name": "tampered-header-timestamp", "envelope": _mutate(text, lambda d: d.update(ts=d["ts"] + 1)),
         "reader": "bob/tablet", "channel_cid": cid, "expect": "envelope_tampered"},
        {"name": "tampered-recipient-list",
         "envelope": _mutate(text, lambda d: d["rcp"][0].__setitem__(2, 2)),
         "reader": "bob/tablet", "channel_cid": cid, "expect": "envelope_tampered"},
        {"name": "tampered-other-wrapped-key",
         "envelope": _mutate(text, lambda d: d["ek"].__setitem__(0, _flip(d["ek"][0], 40))),
         "reader": "bob/tablet", "channel_cid": cid, "expect": "envelope_tampered"},
        {"name": "signature-missing", "envelope": _mutate(text, lambda d: d.pop("sig")),
         "reader": "bob/tablet", "channel_cid": cid, "expect": "signature_missing"},
        {"name": "signature-wrong", "envelope": _mutate(text, lambda d: d.update(sig=_flip(d["sig"], 5))),
         "reader": "bob/tablet", "channel_cid": cid, "expect": "signature_invalid"},
        {"name": "forged-by-a-recipient", "envelope": forged, "reader": "alice/phone", "channel_cid": cid,
         "expect": "signature_invalid"},
        {"name": "re-addressed-to-another-channel", "envelope": text, "reader": "bob/tablet",
         "channel_cid": "clinical:other-room", "expect": "misaddressed_message"},
        {"name": "not-a-recipient", "envelope": text, "reader": "carol/phone", "channel_cid": cid,
         "expect": "not_a_recipient"},
        {"name": "unsupported-version", "envelope": _mutate(text, lambda d: d.update(v=2)),
         "reader": "bob/tablet", "channel_cid": cid, "expect": "envelope_unsupported"},
        {"name": "not-an-envelope", "envelope": "hello in clear text", "reader": "bob/tablet",
         "channel_cid": cid, "expect": "envelope_malformed"},
    ]
    return {
        "format": "safeharbor-e2ee envelope test vectors",
        "envelope_version": e2ee.ENVELOPE_VERSION,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "domains": {
            "wrap": e2ee.DOMAIN_WRAP.hex(),
            "content": e2ee.DOMAIN_CONTENT.hex(),
            "signature": e2ee.DOMAIN_SIGNATURE.hex(),
        },
        "positive": [basic, pq],
        "negative": negative,
        "extra_devices": [_device_json(carol)],
    }


def _lookup_for(keys: list[VerifiedKey]) -> Any:
    def lookup(ref: DeviceRef, moment: datetime) -> VerifiedKey:
        return key_valid_at(ref, moment, keys)

    return lookup


def check(vectors: dict[str, Any]) -> list[str]:
    """Re-verify a vectors document with this implementation; returns the names checked."""
    devices: dict[str, DeviceKeyPair] = {}
    for item in [*vectors["extra_devices"], *(d for v in vectors["positive"] for d in [v["sender"], *v["devices"]])]:
        pair = DeviceKeyPair.from_private_json(item)
        devices[f"{pair.user_id}/{pair.device_id}"] = pair
    keys = [verify_record(p.record or {}) for p in devices.values()]
    lookup = _lookup_for(keys)
    checked: list[str] = []
    for vec in vectors["positive"]:
        sealed = env.Envelope.parse(vec["envelope"])
        assert sealed.to_text() == vec["envelope"], "wire form is canonical JSON"
        assert sealed.wrap_info().hex() == vec["wrap_info_hex"]
        assert sealed.content_aad().hex() == vec["content_aad_hex"]
        assert sealed.signed_bytes().hex() == vec["signed_bytes_hex"]
        payload = bytes.fromhex(vec["payload_padded_hex"])
        ct = AESGCM(b64url_decode(vec["content_key"])).encrypt(b64url_decode(vec["nonce"]), payload,
                                                               sealed.content_aad())
        assert ct == sealed.ciphertext, "content ciphertext reproduces from content key and nonce"
        sender = DeviceKeyPair.from_private_json(vec["sender"])
        assert sender.sig_private.sign(sealed.signed_bytes()) == sealed.signature, "Ed25519 is deterministic"
        for device in vec["devices"]:
            pair = DeviceKeyPair.from_private_json(device)
            ring = Keyring(user_id=pair.user_id, device_id=pair.device_id)
            ring.add(pair)
            opened = env.open_envelope(vec["envelope"], keyring=ring, channel_cid=vec["channel_cid"],
                                       sender_key=lookup)
            assert opened.text == vec["plaintext"]
        checked.append(vec["name"])
    for vec in vectors["negative"]:
        reader = devices[vec["reader"]]
        ring = Keyring(user_id=reader.user_id, device_id=reader.device_id)
        ring.add(reader)
        try:
            env.open_envelope(vec["envelope"], keyring=ring, channel_cid=vec["channel_cid"], sender_key=lookup)
        except EnvelopeError as exc:
            assert exc.code == vec["expect"], f"{vec['name']}: got {exc.code}, expected {vec['expect']}"
        else:
            raise AssertionError(f"{vec['name']}: opened but should have been refused")
        checked.append(vec["name"])
    return checked


def packaged_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("safeharbor_client").joinpath("envelope_vectors.json").read_text("utf-8")
    )
    return data


def main() -> None:
    vectors = generate()
    check(vectors)
    json.dump(vectors, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
