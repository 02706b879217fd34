"""The canonical-JSON fast path is byte-identical to the RFC 8785 reference implementation."""
from __future__ import annotations

import enum
import uuid
from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from safeharbor_protocol.canonical import canonical_json

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


class _Str(str):
    pass


class _Int(int):
    pass


class _Float(float):
    pass


class _Colour(enum.IntEnum):
    RED = 1


# Subclasses and look-alikes the guard's exact type tests send to the reference path.
_odd_scalars = (
    st.text(max_size=8).map(_Str)
    | st.integers(min_value=-(2**55), max_value=2**55).map(_Int)
    | st.floats(allow_nan=False, allow_infinity=False).map(_Float)
    | st.just(_Colour.RED)
    | st.sampled_from([2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 1e-4, 1e16, 9.999999999999999e15, 5e-324])
)
_json_odd = st.recursive(
    _scalars | _odd_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.lists(children, max_size=4).map(tuple)
    | st.dictionaries(_keys, children, max_size=6),
    max_leaves=30,
)
# The shape audit-service stores: fixed ASCII keys, strings, a sequence number, an encrypted envelope and a
# free-form `meta` (any JSON an emitter sends).
_audit_entry = st.fixed_dictionaries(
    {
        "seq": st.integers(min_value=0, max_value=2**53 - 1),
        "event_id": st.uuids().map(str),
        "ts": st.just("2026-11-24T01:02:03.456789Z"),
        "actor": st.text(),
        "role": st.none() | st.text(max_size=32),
        "resource": st.none() | st.text(),
        "meta": st.dictionaries(_keys, _json, max_size=6),
        "phi": st.none() | st.fixed_dictionaries({"alg": st.just("A256GCM"), "ct": st.text(alphabet="ab-_0")}),
        "prev": st.binary(min_size=32, max_size=32).map(bytes.hex),
    }
)


def _reference(value: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except Exception as exc:
        return type(exc)


def _same_as_reference(value: Any) -> None:
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


@settings(max_examples=1500, deadline=None)
@given(_json)
def test_same_bytes_as_rfc8785(value: Any) -> None:
    _same_as_reference(value)


@settings(max_examples=800, deadline=None)
@given(_json_odd)
def test_subclasses_tuples_and_boundaries_same_bytes_as_rfc8785(value: Any) -> None:
    _same_as_reference(value)


@settings(max_examples=800, deadline=None)
@given(_audit_entry)
def test_audit_entries_same_bytes_as_rfc8785(value: Any) -> None:
    _same_as_reference(value)


def test_deep_nesting_goes_to_the_reference() -> None:
    value: Any = "leaf"
    for _ in range(70):
        value = {"k": [value]}
    assert canonical_json(value) == rfc8785.dumps(value)


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
    assert canonical_json({"id": uuid.UUID(int=1).hex, "e": _Colour.RED}) == rfc8785.dumps(
        {"id": uuid.UUID(int=1).hex, "e": _Colour.RED}
    )
    entry = {"seq": 7, "ts": "2026-11-24T01:02:03.456789Z", "actor": "u-1", "meta": {"latency_ms": 1.23},
             "prev": "ab" * 32, "ip": None, "ok": True, "list": [1, "x", None]}
    assert canonical_json(entry) == rfc8785.dumps(entry)
