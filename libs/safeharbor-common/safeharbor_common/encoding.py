"""Moved to `safeharbor_protocol.encoding` (issue 18); these names stay importable from here."""
from safeharbor_protocol.encoding import (
    EncodingError,
    b64url_decode,
    b64url_encode,
    parse_decimal,
)

__all__ = [
    "EncodingError",
    "b64url_decode",
    "b64url_encode",
    "parse_decimal",
]
