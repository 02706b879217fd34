"""Key records: the bytes API.md fixes, the self-signature, the version chain, the PQ extension, revocations."""
from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from safeharbor_protocol import keyrecords
from safeharbor_protocol.encoding import b64url_encode
from safeharbor_protocol.keyrecords import RecordError

# A fixed Ed25519 key (RFC 8032 test 1's secret) so the signed bytes and the signature are known values.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ENC_PUB = b64url_encode(bytes(range(1, 33)))


def _record(**overrides: object) -> dict[str, object]:
    record = keyrecords.make_record(
        user_id="u-alice", device_id="phone", version=1, enc_pub=ENC_PUB,
        signing_key=Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET), created_at="2026-01-02T03:04:05.000000Z",
    )
    record.update(overrides)
    return record


def test_signed_bytes_are_the_canonical_json_of_the_seven_fields_only() -> None:
    record = _record(extra="ignored")
    expected = (
        '{"created_at":"2026-01-02T03:04:05.000000Z","device_id":"phone",'
        f'"enc_pub":"{ENC_PUB}","prev_hash":"",'
        '"sig_pub":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","user_id":"u-alice","version":1}'
    )
    assert keyrecords.signed_bytes(record) == expected.encode()
    assert keyrecords.record_hash(record) == b64url_encode(hashlib.sha256(expected.encode()).digest())
    # Ed25519 is deterministic: the signature over these bytes is one known value.
    assert record["signature"] == b64url_encode(
        Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET).sign(expected.encode()))
    keyrecords.verify_self_signature(record)


def test_leaf_data_is_the_whole_record_canonicalised() -> None:
    record = _record()
    assert keyrecords.leaf_data(record) == json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device_id": "laptop"}, "signature does not verify"),
        ({"signature": "AAAA"}, "64-byte"),
        ({"sig_pub": "not base64!"}, "sig_pub"),
        ({"sig_pub": b64url_encode(b"\x01" * 31)}, "32-byte"),
    ],
)
def test_self_signature_refuses_changed_records(change: dict[str, object], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        keyrecords.verify_self_signature(_record(**change))


def test_missing_signed_field_is_named() -> None:
    record = _record()
    del record["created_at"]
    with pytest.raises(RecordError, match="created_at"):
        keyrecords.signed_bytes(record)


def test_rotation_chain_and_revocation() -> None:
    first_key = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    first = _record()
    second = keyrecords.make_record(
        user_id="u-alice", device_id="phone", version=2, enc_pub=ENC_PUB, signing_key=Ed25519PrivateKey.generate(),
        created_at="2026-02-02T03:04:05.000000Z", previous=first, previous_signing_key=first_key,
    )
    keyrecords.verify_link(first, None)
    keyrecords.verify_link(second, first)
    with pytest.raises(RecordError, match="prev_hash"):
        keyrecords.verify_link({**second, "prev_hash": first["prev_hash"]}, first)
    unsigned = {k: v for k, v in second.items() if k != "rotation_signature"}
    with pytest.raises(RecordError, match="rotation_signature"):
        keyrecords.verify_link(unsigned, first)

    log_key = Ed25519PrivateKey.generate()
    leaf = keyrecords.sign_revocation(
        keyrecords.revocation_body(second, revoked_at="2026-03-01T00:00:00Z", reason="lost", revoked_by="u-alice"),
        log_key,
    )
    assert keyrecords.leaf_kind(leaf) == keyrecords.REVOCATION_LEAF
    keyrecords.verify_revocation(leaf, log_key.public_key())
    with pytest.raises(RecordError, match="log_signature"):
        keyrecords.verify_revocation({**leaf, "reason": "compromised"}, log_key.public_key())


def test_pq_extension_signed_by_the_record_key() -> None:
    signing_key = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    pq_pub = b64url_encode(_mlkem_public() + X25519PrivateKey.generate().public_key().public_bytes_raw())
    record = _record(pq_pub=pq_pub)
    record["pq_signature"] = b64url_encode(signing_key.sign(keyrecords.pq_signed_bytes(record)))
    keyrecords.verify_pq_extension(record)
    with pytest.raises(RecordError, match="pq_signature"):
        keyrecords.verify_pq_extension({**record, "version": 2})
    with pytest.raises(RecordError, match="pq_signature without pq_pub"):
        keyrecords.verify_pq_extension({**_record(), "pq_signature": record["pq_signature"]})


def test_times_are_rfc3339_with_a_zone() -> None:
    moment = keyrecords.parse_time("2026-01-02T03:04:05.5+01:00")
    assert keyrecords.format_time(moment) == "2026-01-02T02:04:05.500000Z"
    for bad in ("2026-01-02T03:04:05", "yesterday", 12):
        with pytest.raises(RecordError):
            keyrecords.parse_time(bad)  # type: ignore[arg-type]


def test_fingerprint_is_eight_groups_of_four_hex_digits_over_user_device_and_keys() -> None:
    record = _record()
    printed = keyrecords.fingerprint(record)
    groups = printed.split(" ")
    assert len(groups) == 8 and all(len(g) == 4 and int(g, 16) >= 0 for g in groups)
    assert keyrecords.fingerprint({**record, "version": 7, "created_at": "x"}) == printed
    assert keyrecords.fingerprint({**record, "enc_pub": b64url_encode(bytes(32))}) != printed


def _mlkem_public() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import mlkem

    return mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()


# Every small-order X25519 public key (libsodium's list: order 1, 2, 4 and 8, and the non-canonical p,
# p + 1): any exchange with one gives the all-zero secret, whichever private key makes it.
SMALL_ORDER_X25519 = [
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",
    "ed" + "ff" * 30 + "7f",
    "ee" + "ff" * 30 + "7f",
]


@pytest.mark.parametrize("point", SMALL_ORDER_X25519)
def test_small_order_x25519_keys_are_refused(point: str) -> None:
    with pytest.raises(RecordError, match="not a usable X25519 public key"):
        keyrecords.check_x25519_public(b64url_encode(bytes.fromhex(point)))


def test_real_x25519_keys_pass() -> None:
    for _ in range(20):
        keyrecords.check_x25519_public(b64url_encode(X25519PrivateKey.generate().public_key().public_bytes_raw()))
