"""Envelope size and speed: `python clients/python/bench_envelope.py` (numbers quoted in README.md)."""
from __future__ import annotations

import statistics
import time
from datetime import datetime

from safeharbor_client import envelope as env
from safeharbor_client.directory import key_valid_at
from safeharbor_client.keys import DeviceKeyPair, DeviceRef, Keyring, VerifiedKey, build_record, verify_record


def pair(user: str, pq: bool) -> DeviceKeyPair:
    p = DeviceKeyPair.generate(user_id=user, device_id="dev-0123456789ab", version=1, with_pq=pq)
    p.record = build_record(p)
    return p


def run(n: int, pq: bool, rounds: int = 30) -> tuple[int, float, float]:
    sender = pair("00000000-0000-4000-8000-000000000000", pq)
    others = [pair(f"00000000-0000-4000-8000-{i:012d}", pq) for i in range(1, n)]
    keys = [verify_record(p.record or {}) for p in [sender, *others]]
    recipients = [env.Recipient.from_key(k) for k in keys]
    reader = others[0] if others else sender
    ring = Keyring(user_id=reader.user_id, device_id=reader.device_id)
    ring.add(reader)

    def lookup(ref: DeviceRef, moment: datetime) -> VerifiedKey:
        return key_valid_at(ref, moment, keys)

    text = "Lab results are in; please call the clinic to discuss the next steps."
    seal_t, open_t, size = [], [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        sealed = env.seal(text=text, sender=sender, recipients=recipients, channel_cid="clinical:room",
                          max_chars=1 << 20).to_text()
        t1 = time.perf_counter()
        env.open_envelope(sealed, keyring=ring, channel_cid="clinical:room", sender_key=lookup)
        t2 = time.perf_counter()
        seal_t.append(t1 - t0)
        open_t.append(t2 - t1)
        size = len(sealed)
    return size, statistics.median(seal_t) * 1000, statistics.median(open_t) * 1000


if __name__ == "__main__":
    for pq in (False, True):
        sizes = {}
        for n in (1, 2, 10):
            size, seal_ms, open_ms = run(n, pq)
            sizes[n] = size
            print(f"{'pq' if pq else 'x25519':7} devices={n:2}  chars={size:6}  seal={seal_ms:6.2f} ms  "
                  f"open={open_ms:6.2f} ms")
        print(f"{'pq' if pq else 'x25519':7} per extra device: {(sizes[10] - sizes[1]) / 9:.0f} characters")
