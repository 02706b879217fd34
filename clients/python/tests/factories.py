"""Test data: users' device keys, registered records, keyrings, a sender lookup over a fake directory."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from safeharbor_client.directory import key_valid_at
from safeharbor_client.envelope import Recipient
from safeharbor_client.keys import DeviceKeyPair, DeviceRef, Keyring, VerifiedKey, build_record, verify_record


def registered(user_id: str, device_id: str = "dev1", *, version: int = 1, with_pq: bool = False,
               previous: DeviceKeyPair | None = None, created_at: str | None = None) -> DeviceKeyPair:
    pair = DeviceKeyPair.generate(user_id=user_id, device_id=device_id, version=version, with_pq=with_pq,
                                  created_at=created_at)
    pair.record = build_record(pair, previous=previous)
    return pair


def rotate(pair: DeviceKeyPair, *, created_at: str | None = None, with_pq: bool = False) -> DeviceKeyPair:
    return registered(pair.user_id, pair.device_id, version=pair.version + 1, previous=pair,
                      created_at=created_at, with_pq=with_pq)


def keyring(*pairs: DeviceKeyPair, device_id: str | None = None) -> Keyring:
    ring = Keyring(user_id=pairs[0].user_id, device_id=device_id or pairs[0].device_id)
    for p in pairs:
        ring.add(p)
    return ring


def verified(pair: DeviceKeyPair) -> VerifiedKey:
    assert pair.record is not None
    return verify_record(pair.record)


def recipients(*pairs: DeviceKeyPair) -> list[Recipient]:
    return [Recipient.from_key(verified(p)) for p in pairs]


@dataclass
class FakeDirectory:
    """Every published key version; `lookup` is a SenderKeyLookup with time validity."""

    keys: list[VerifiedKey] = field(default_factory=list)

    def publish(self, pairs: Iterable[DeviceKeyPair]) -> FakeDirectory:
        self.keys.extend(verified(p) for p in pairs)
        return self

    def lookup(self, ref: DeviceRef, moment: datetime) -> VerifiedKey:
        return key_valid_at(ref, moment, self.keys)


@dataclass
class MemorySeen:
    seen: dict[tuple[str, str], str] = field(default_factory=dict)

    def remember(self, *, cid: str, mid: str, transport_id: str, ts_ms: int) -> str | None:
        first = self.seen.setdefault((cid, mid), transport_id)
        return None if first == transport_id else first
