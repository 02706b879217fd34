"""The canonical-JSON fast path is byte-identical to the RFC 8785 reference implementation."""
from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from safeharbor_common.canonical import canonical_json

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.sampled_from(["\u2028", "\x7f", "\x01\x1f", "é", "😀", "\\\"/", "\ud7ff", "\ue000"])
)
_keys = st.text(max_size=12) | st.sampled_from(["a", "B", "é", "😀", "\ue000", "ab", "a\x00"])
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=6),
    max_leaves=30,
)


def _reference(value: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except Exception as exc:
        return type(exc)


@settings(max_examples=1500, deadline=None)
@given(_json)
def test_same_bytes_as_rfc8785(value: Any) -> None:
    expected = _reference(value)
    if isinstance(expected, bytes):
        assert canonical_json(value) == expected
    else:
        try:
            canonical_json(value)
        except Exception as exc:
            assert isinstance(exc, expected)
        else:
            raise AssertionError(f"accepted what the reference refuses: {value!r}")


def test_known_differences_fall_back_to_the_reference() -> None:
    # Python would write 1.0, 1e-05 and 1e+16; ECMAScript 1, 0.00001 and 10000000000000000.
    for value in (1.0, 0.00001, 1e16, {"é": 1, "z": 2, "😀": 3, "\ue000": 4}):
        assert canonical_json({"v": value}) == rfc8785.dumps({"v": value})
    # Integers beyond 2**53 are refused, as the reference refuses them.
    try:
        canonical_json({"v": 123456789012345678})
    except rfc8785.IntegerDomainError:
        pass
    else:
        raise AssertionError("unsafe integer accepted")


def test_audit_entry_shape() -> None:
    entry = {"seq": 7, "ts": "2026-11-24T01:02:03.456789Z", "actor": "u-1", "meta": {"latency_ms": 1.23},
             "prev": "ab" * 32, "ip": None, "ok": True, "list": [1, "x", None]}
    assert canonical_json(entry) == rfc8785.dumps(entry)
