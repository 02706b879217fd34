"""The published envelope vectors still open, reproduce and refuse exactly as documented."""
from __future__ import annotations

from safeharbor_client.vectors import check, generate, packaged_vectors


def test_packaged_vectors_check():
    names = check(packaged_vectors())
    assert "x25519-three-devices" in names and "forged-by-a-recipient" in names


def test_fresh_vectors_check():
    fresh = generate()
    assert check(fresh)
    # Keys are derived from fixed labels: regenerating keeps them.
    assert fresh["positive"][0]["sender"]["sig_private"] == packaged_vectors()["positive"][0]["sender"]["sig_private"]
