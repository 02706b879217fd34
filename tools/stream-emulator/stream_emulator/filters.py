"""Stream's MongoDB-like `filter_conditions` and `sort`, evaluated in memory.

Supported: implicit equality, `$eq $ne $in $nin $gt $gte $lt $lte $exists $contains $autocomplete`, and
`$and $or $nor`. A field whose value is a list (e.g. channel `members`) matches `$in` when any element is
listed and `$eq <scalar>` when it contains the scalar; `$eq <list>` means the same set.
Unknown operators are an input error, as on Stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import input_error

Getter = Callable[[str], Any]
_MISSING = object()


def _cmp(a: Any, b: Any, op: str) -> bool:
    try:
        if op == "$gt":
            return bool(a > b)
        if op == "$gte":
            return bool(a >= b)
        if op == "$lt":
            return bool(a < b)
        return bool(a <= b)
    except TypeError:
        return False


def _match_op(value: Any, op: str, arg: Any) -> bool:
    is_list = isinstance(value, list)
    if op == "$eq":
        if is_list:
            return sorted(map(str, value)) == sorted(map(str, arg)) if isinstance(arg, list) else arg in value
        return value is not _MISSING and value == arg
    if op == "$ne":
        return not _match_op(value, "$eq", arg)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise input_error(f"{op} expects an array")
        hit = any(v in arg for v in value) if is_list else (value is not _MISSING and value in arg)
        return hit if op == "$in" else not hit
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return value is not _MISSING and value is not None and _cmp(value, arg, op)
    if op == "$exists":
        present = value is not _MISSING and value is not None
        return present if arg else not present
    if op == "$contains":
        return is_list and arg in value
    if op == "$autocomplete":
        return isinstance(value, str) and isinstance(arg, str) and arg.lower() in value.lower()
    raise input_error(f"operator {op} is not supported")


def matches(cond: Any, get: Getter) -> bool:
    if cond is None:
        return True
    if not isinstance(cond, dict):
        raise input_error("filter_conditions must be an object")
    for key, spec in cond.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(spec, list) or not all(isinstance(c, dict) for c in spec):
                raise input_error(f"{key} expects an array of objects")
            results = [matches(c, get) for c in spec]
            ok = all(results) if key == "$and" else any(results)
            if key == "$nor":
                ok = not any(results)
            if not ok:
                return False
            continue
        if key.startswith("$"):
            raise input_error(f"operator {key} is not supported at the top level")
        value = get(key)
        if isinstance(spec, dict) and spec and all(k.startswith("$") for k in spec):
            for op, arg in spec.items():
                if not _match_op(value, op, arg):
                    return False
        elif not _match_op(value, "$eq", spec):
            return False
    return True


_OPERATORS = (
    "$eq",
    "$ne",
    "$in",
    "$nin",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$exists",
    "$contains",
    "$autocomplete",
)


def validate(cond: Any) -> None:
    """Check the whole filter up front, so a bad operator fails even when nothing would be compared."""
    if cond is None:
        return
    if not isinstance(cond, dict):
        raise input_error("filter_conditions must be an object")
    for key, spec in cond.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(spec, list) or not all(isinstance(c, dict) for c in spec):
                raise input_error(f"{key} expects an array of objects")
            for c in spec:
                validate(c)
        elif key.startswith("$"):
            raise input_error(f"operator {key} is not supported at the top level")
        elif isinstance(spec, dict) and spec and all(k.startswith("$") for k in spec):
            for op, arg in spec.items():
                if op not in _OPERATORS:
                    raise input_error(f"operator {op} is not supported")
                if op in ("$in", "$nin") and not isinstance(arg, list):
                    raise input_error(f"{op} expects an array")


def missing() -> Any:
    """Sentinel a getter returns for an absent field."""
    return _MISSING


def normalize_sort(sort: Any) -> list[tuple[str, int]]:
    if sort in (None, [], {}):
        return []
    items = sort if isinstance(sort, list) else [sort]
    out: list[tuple[str, int]] = []
    for item in items:
        if not isinstance(item, dict):
            raise input_error("sort must be an array of {field, direction}")
        if "field" in item:
            direction = item.get("direction", 1)
            out.append((str(item["field"]), -1 if direction in (-1, "-1", "desc") else 1))
        else:
            for k, v in item.items():
                out.append((str(k), -1 if v in (-1, "-1", "desc") else 1))
    return out


def apply_sort(items: list[Any], sort: list[tuple[str, int]], get: Callable[[Any, str], Any]) -> list[Any]:
    """Stable multi-key sort; missing values always go last whatever the direction."""
    out = list(items)
    for field, direction in reversed(sort):
        present = [i for i in out if get(i, field) not in (None, _MISSING)]
        absent = [i for i in out if get(i, field) in (None, _MISSING)]
        try:
            present.sort(key=lambda i: get(i, field), reverse=direction < 0)
        except TypeError:
            present.sort(key=lambda i: str(get(i, field)), reverse=direction < 0)
        out = present + absent
    return out
