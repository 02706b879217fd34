"""Event validation: meta's size limit judged without encoding (flat meta) agrees with encoding it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safeharbor_audit.schemas import MAX_META_BYTES, AuditEventIn, _flat_meta_within_limit

from .conftest import make_event

_encode = json.JSONEncoder(allow_nan=False).encode
_scalars = (st.text(max_size=900) | st.none() | st.booleans() | st.integers(-(2**60), 2**60)
            | st.floats(allow_nan=True, allow_infinity=True))
_values = (_scalars | st.lists(st.integers(), max_size=3)
           | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _accepted_by_encoding(meta: dict[str, Any]) -> bool:
    try:
        return len(_encode(meta)) <= MAX_META_BYTES
    except ValueError:
        return False


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=40), _values, max_size=30))
def test_meta_limit_agrees_with_encoding(meta: dict[str, Any]) -> None:
    if _flat_meta_within_limit(meta):  # the shortcut only ever accepts what the encoding accepts
        assert _accepted_by_encoding(meta)
    try:
        AuditEventIn.model_validate(make_event(meta=meta))
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == _accepted_by_encoding(meta)


@pytest.mark.parametrize(("meta", "ok"), [
    ({"note": "a" * (MAX_META_BYTES - 12)}, True),   # {"note": "..."} is exactly the limit
    ({"note": "a" * (MAX_META_BYTES - 11)}, False),
    ({"note": "\U0001F600" * 682}, False),             # 12 bytes each once escaped: 12 + 8,184 > 8,192
    ({"note": "\U0001F600" * 600}, True),
    ({"n": float("nan")}, False),
    ({"n": 2**80}, True),                               # outside the shortcut, accepted by the encoding
])
def test_meta_limit_edges(meta: dict[str, Any], ok: bool) -> None:
    if ok:
        AuditEventIn.model_validate(make_event(meta=meta))
    else:
        with pytest.raises(ValidationError):
            AuditEventIn.model_validate(make_event(meta=meta))
