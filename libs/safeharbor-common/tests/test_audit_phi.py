"""PHI sealing: one HPKE key encapsulation per window, AES-256-GCM per event, bound to the event id."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from safeharbor_common import audit_phi
from safeharbor_common.audit_phi import PhiPublicKey, key_id, open_sealed


def test_one_wrapped_key_per_window_and_bound_to_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    private = X25519PrivateKey.generate()
    key = PhiPublicKey(key_id(private.public_key()), private.public_key())
    sealed = [key.seal({"ip": f"192.0.2.{i}", "user_agent": None}, event_id=f"e-{i}") for i in range(50)]
    assert all(s is not None for s in sealed)
    envelopes = [s for s in sealed if s is not None]
    assert len({e["ek"] for e in envelopes}) == 1 and len({e["nonce"] for e in envelopes}) == 50
    cache: dict = {}
    assert [open_sealed(e, private, event_id=f"e-{i}", cache=cache)["ip"] for i, e in enumerate(envelopes)] == \
        [f"192.0.2.{i}" for i in range(50)]
    assert len(cache) == 1  # unwrapped once
    with pytest.raises(InvalidTag):
        open_sealed(envelopes[3], private, event_id="e-4")  # moved to another entry
    with pytest.raises(Exception):
        open_sealed(envelopes[0], X25519PrivateKey.generate(), event_id="e-0")
    monkeypatch.setattr(audit_phi, "WINDOW_EVENTS", 3)
    later = PhiPublicKey(key.kid, key.public)
    eks = {later.seal({"ip": "x"}, event_id=f"w-{i}")["ek"] for i in range(7)}  # type: ignore[index]
    assert len(eks) == 3  # a new content key every 3 events
    assert key.seal({"ip": None, "user_agent": None}, event_id="none") is None
