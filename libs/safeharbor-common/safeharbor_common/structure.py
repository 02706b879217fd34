"""What the services' structure tests check the same way (issue 18): their functions return typed objects.

A service's views serialise schema objects (or frozen dataclasses) that its functions return, so what its
OpenAPI document states is what the code builds. `untyped_returns` names the public functions and methods of
a package that return a dict of anything instead; a structure test compares that with the free-form documents
the service means to return (a signed body, settings for Flask), each listed with its reason.
"""
from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any


def untyped_dict(annotation: Any) -> bool:
    """A dict or mapping whose values may be anything (`dict`, `dict[str, Any]`, `Mapping[str, object]`),
    alone or inside a union, tuple or list."""
    if annotation in (dict, Mapping, MutableMapping):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (dict, Mapping, MutableMapping):
        return not args or args[-1] in (Any, object)
    if origin in (types.UnionType, typing.Union, tuple, list):
        return any(untyped_dict(arg) for arg in args if arg is not Ellipsis)
    return False


def public_callables(package: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every public function, and public method of a public class, defined in `package` (its migrations aside),
    named from inside the package: `compliance.ComplianceReporter.build`."""
    root = Path(str(importlib.import_module(package).__file__)).parent
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.relative_to(root).parts:
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        prefix = module.__name__.removeprefix(package + ".")
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value):
                yield f"{prefix}.{name}", value
            elif inspect.isclass(value):
                for attr, member in vars(value).items():
                    function = member.__func__ if isinstance(member, staticmethod | classmethod) else member
                    if not attr.startswith("_") and inspect.isfunction(function):
                        yield f"{prefix}.{name}.{attr}", function


def untyped_returns(package: str) -> set[str]:
    """The public functions and methods of `package` whose return annotation is an untyped dict."""
    return {name for name, function in public_callables(package)
            if untyped_dict(typing.get_type_hints(function).get("return"))}


def typed_returns_problems(package: str, allowed: Mapping[str, str]) -> list[str]:
    """What a structure test reports: untyped dicts returned that `allowed` (name: why) does not list, and listed
    names that return a typed object now (they leave the list, so it says what is free-form today)."""
    found = untyped_returns(package)
    return [f"{name} returns a dict of anything: return a schema object or a frozen dataclass (or list it, with why)"
            for name in sorted(found - allowed.keys())] + \
        [f"{name} is listed but no longer returns a dict of anything: take it off the list"
         for name in sorted(allowed.keys() - found)]
