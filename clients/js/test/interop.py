"""The Python side of clients/js's interop test (run by test/interop.test.ts, never alone).

`make IN OUT`: read the JS device records from IN, verify them, make Python device keys (X25519-only and
hybrid), seal envelopes in both suites to the JS devices and its own, back up its keyring with a password,
and publish every record in a Merkle log with a signed checkpoint, inclusion and consistency proofs.
`open IN OUT`: open the envelopes and the backup the JS SDK made for the Python devices.
Both write what they found as JSON to OUT; the JS test asserts on it.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_client import backup
from safeharbor_client import envelope as env
from safeharbor_client.directory import key_valid_at
from safeharbor_client.errors import EnvelopeError
from safeharbor_client.keys import DeviceKeyPair, Keyring, build_record, verify_record
from safeharbor_protocol import merkle
from safeharbor_protocol.canonical import canonical_json
from safeharbor_protocol.checkpoint import sign_checkpoint, verifier_key_string

CID = "clinical:interop-room"
PASSWORD = "interop backup password 2026"
# The OWASP floor: the format is what is under test here, not the work factor.
FAST_KDF = backup.KdfParams(memory_kib=19456, time_cost=2, parallelism=1)
ORIGIN = "safeharbor.test/interop-keys"


def _pair(user: str, device: str, *, with_pq: bool) -> DeviceKeyPair:
    pair = DeviceKeyPair.generate(user_id=user, device_id=device, version=1, with_pq=with_pq)
    pair.record = build_record(pair)
    return pair


def make(inp: dict[str, Any]) -> dict[str, Any]:
    js_keys = [verify_record(r) for r in inp["records"]]
    plain = _pair("py-alice", "laptop", with_pq=False)
    hybrid = _pair("py-alice", "desktop", with_pq=True)
    # A rotation: version 2 of the laptop, co-signed by version 1.
    rotated = DeviceKeyPair.generate(user_id="py-alice", device_id="laptop", version=2)
    rotated.record = build_record(rotated, previous=plain)
    ring = Keyring(user_id="py-alice", device_id="desktop")
    for p in (plain, hybrid, rotated):
        ring.add(p)
    js_plain = [k for k in js_keys if k.pq_pub is None]
    js_hybrid = [k for k in js_keys if k.pq_pub is not None]
    mine = [env.Recipient.from_key(verify_record(p.record or {})) for p in (plain, hybrid)]
    sealed_x = env.seal(text="From Python, classic suite: Zürich ✓", sender=plain,
                        recipients=[*mine, *(env.Recipient.from_key(k) for k in js_keys)], channel_cid=CID)
    sealed_pq = env.seal(text="From Python, post-quantum suite", sender=hybrid,
                         recipients=[env.Recipient.from_key(verify_record(hybrid.record or {})),
                                     *(env.Recipient.from_key(k) for k in js_hybrid)],
                         channel_cid=CID, max_chars=1 << 20)
    assert sealed_x.suite == env.SUITE_X25519 and sealed_pq.suite == env.SUITE_PQ
    blob = backup.seal_backup(ring.dumps(), password=PASSWORD, user_id="py-alice", key_version=2, params=FAST_KDF)

    # A transparency log of every record, JS and Python, like keydir's: leaf = JCS(record).
    tree = merkle.MemoryNodeStore()
    records = [*inp["records"], plain.record, hybrid.record, rotated.record]
    for record in records:
        tree.append_data(canonical_json(record))
    log_key = Ed25519PrivateKey.generate()
    size = tree.size
    old_size = len(inp["records"])
    leaves = [{"record": r, "leaf_index": i, "inclusion_proof": [h.hex() for h in tree.inclusion_proof(i, size)]}
              for i, r in enumerate(records)]
    return {
        "js_records_verified": len(js_keys),
        "js_plain": len(js_plain),
        "js_hybrid": len(js_hybrid),
        "records": [plain.record, hybrid.record, rotated.record],
        "envelopes": [
            {"suite": sealed_x.suite, "text": sealed_x.to_text(), "plaintext": "From Python, classic suite: Zürich ✓"},
            {"suite": sealed_pq.suite, "text": sealed_pq.to_text(), "plaintext": "From Python, post-quantum suite"},
        ],
        "backup": {"blob": blob, "key_version": 2, "password": PASSWORD, "keyring": ring.to_json()},
        "private": [p.to_private_json() for p in (plain, hybrid, rotated)],
        "log": {
            "verifier_key": verifier_key_string("interop-log", log_key.public_key()),
            "checkpoint": sign_checkpoint(ORIGIN, size, tree.root(size), key_name="interop-log", private_key=log_key),
            "old_checkpoint": sign_checkpoint(ORIGIN, old_size, tree.root(old_size), key_name="interop-log",
                                              private_key=log_key),
            "consistency": [h.hex() for h in tree.consistency_proof(old_size, size)],
            "leaves": leaves,
        },
    }


def open_(inp: dict[str, Any]) -> dict[str, Any]:
    pairs = [DeviceKeyPair.from_private_json(p) for p in inp["python_private"]]
    keys = [verify_record(r) for r in inp["js_records"]] + [verify_record(p.record or {}) for p in pairs]
    ring = Keyring(user_id="py-alice", device_id="desktop")
    for p in pairs:
        ring.add(p)
    opened: list[dict[str, Any]] = []
    for item in inp["envelopes"]:
        try:
            result = env.open_envelope(item["text"], keyring=ring, channel_cid=item.get("cid", CID),
                                       sender_key=lambda ref, at: key_valid_at(ref, at, keys))
            opened.append({"text": result.text, "suite": result.suite, "sender": result.sender.as_list(),
                           "fingerprint": result.sender_fingerprint})
        except EnvelopeError as exc:
            opened.append({"error": exc.code})
    restored = backup.open_backup(inp["backup"]["blob"], password=inp["backup"]["password"],
                                  user_id=inp["backup"]["user_id"], key_version=inp["backup"]["key_version"])
    try:
        backup.open_backup(inp["backup"]["blob"], password=inp["backup"]["password"] + "!",
                           user_id=inp["backup"]["user_id"], key_version=inp["backup"]["key_version"])
        wrong_password = "opened"
    except backup.BackupPasswordInvalid as exc:
        wrong_password = exc.code
    js_ring = Keyring.from_json(json.loads(restored))
    return {"opened": opened, "backup_keyring": js_ring.to_json(), "wrong_password": wrong_password}


def main() -> None:
    command, path_in, path_out = sys.argv[1:4]
    with open(path_in, encoding="utf-8") as fh:
        inp = json.load(fh)
    out = make(inp) if command == "make" else open_(inp)
    with open(path_out, "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False)


if __name__ == "__main__":
    main()
