"""Moved to `safeharbor_protocol.canonical` (issue 18); these names stay importable from here."""
from safeharbor_protocol.canonical import (
    canonical_json,
)

__all__ = [
    "canonical_json",
]
