"""Key records (signed bytes fixed by API.md), rotation chains, PQ extension, fingerprints, backups."""
from __future__ import annotations

import json

import pytest
from factories import keyring, registered, rotate
from safeharbor_client import backup
from safeharbor_client.directory import verify_chain
from safeharbor_client.errors import BackupError, BackupPasswordInvalid, KeyRecordInvalid, WeakBackupPassword
from safeharbor_client.keys import Keyring, verify_record
from safeharbor_protocol.canonical import canonical_json
from safeharbor_protocol.encoding import b64url_decode
from safeharbor_protocol.keyrecords import fingerprint, record_hash, signed_bytes

FAST = backup.MIN_KDF  # OWASP floor: keeps the tests quick


def test_record_signed_bytes_match_api_md():
    pair = registered("u-1")
    record = pair.record
    assert set(record) == {"user_id", "device_id", "version", "enc_pub", "sig_pub", "created_at", "prev_hash",
                           "signature"}
    expected = canonical_json({k: record[k] for k in ("user_id", "device_id", "version", "enc_pub", "sig_pub",
                                                      "created_at", "prev_hash")})
    assert signed_bytes(record) == expected
    pair.sig_private.public_key().verify(b64url_decode(record["signature"]), expected)
    assert record["prev_hash"] == ""
    verify_record(record, user_id="u-1")
    with pytest.raises(KeyRecordInvalid):
        verify_record(record, user_id="someone-else")


def test_rotation_chain():
    v1 = registered("u-1")
    v2 = rotate(v1)
    assert v2.record["prev_hash"] == record_hash(v1.record)
    verify_record(v2.record, previous=v1.record)
    verify_chain([verify_record(v1.record), verify_record(v2.record)])
    forged = dict(v2.record)
    forged["rotation_signature"] = v2.record["signature"]  # signed by the new key, not the old one
    with pytest.raises(KeyRecordInvalid):
        verify_record(forged, previous=v1.record)


def test_tampered_record_refused():
    record = dict(registered("u-1").record)
    record["enc_pub"] = registered("u-2").record["enc_pub"]
    with pytest.raises(KeyRecordInvalid):
        verify_record(record)


def test_pq_extension_is_signed():
    pair = registered("u-1", with_pq=True)
    key = verify_record(pair.record)
    assert key.pq_pub is not None
    other = registered("u-1", with_pq=True).record["pq_pub"]
    swapped = {**pair.record, "pq_pub": other}
    with pytest.raises(KeyRecordInvalid):
        verify_record(swapped)


def test_fingerprint_is_stable_and_key_bound():
    pair = registered("u-1")
    fp = fingerprint(pair.record)
    assert fp == fingerprint(dict(pair.record)) and len(fp.split()) == 8
    assert fp != fingerprint(registered("u-1").record)


def test_backup_round_trip_and_bindings():
    v1 = registered("u-1", with_pq=True)
    ring = keyring(v1, rotate(v1))
    blob = backup.seal_backup(ring.dumps(), password="correct horse battery", user_id="u-1", key_version=2,
                              params=FAST)
    restored = Keyring.from_json(json.loads(backup.open_backup(blob, password="correct horse battery",
                                                               user_id="u-1", key_version=2)))
    assert set(restored.pairs) == set(ring.pairs)
    pair = restored.pairs[v1.ref]
    assert pair.enc_pub == v1.enc_pub and pair.pq is not None
    with pytest.raises(BackupPasswordInvalid):
        backup.open_backup(blob, password="wrong horse battery", user_id="u-1", key_version=2)
    with pytest.raises(BackupPasswordInvalid):
        backup.open_backup(blob, password="correct horse battery", user_id="u-2", key_version=2)
    with pytest.raises(BackupPasswordInvalid):
        backup.open_backup(blob, password="correct horse battery", user_id="u-1", key_version=1)


def test_backup_refuses_weak_passwords_and_weak_or_absurd_kdf():
    with pytest.raises(WeakBackupPassword):
        backup.seal_backup(b"x", password="short", user_id="u", key_version=1, params=FAST)
    with pytest.raises(WeakBackupPassword):
        backup.seal_backup(b"x", password="aaaaaaaaaaaaaaaa", user_id="u", key_version=1, params=FAST)
    with pytest.raises(BackupError):
        backup.seal_backup(b"x", password="correct horse battery", user_id="u", key_version=1,
                           params=backup.KdfParams(memory_kib=1024, time_cost=1))
    with pytest.raises(BackupError):
        backup.open_backup("not-a-backup", password="correct horse battery", user_id="u", key_version=1)


def test_keyring_merge_keeps_every_version():
    v1 = registered("u-1")
    v2 = rotate(v1)
    other_device = registered("u-1", "dev2")
    ring = keyring(v2, device_id="dev1")
    assert ring.merge([v1, v2, other_device]) == 2
    assert ring.current().version == 2
    assert set(ring.devices()) == {"dev1", "dev2"}
    with pytest.raises(KeyRecordInvalid):
        ring.merge([registered("u-9")])
