"""Where a Handlebars path points: the context stack of `#with`/`#each`/sections and block parameters.

`{{#with message}}{{text}}{{/with}}` reads message.text; `{{#each members as |m|}}{{m.name}}{{/each}}`
reads members[].name; `{{../channel.id}}` climbs one context; `{{@root.message.text}}` starts at the root.
"""
from __future__ import annotations

from dataclasses import dataclass

from .handlebars import PathExpr
from .policy import SAFE_DATA_VARIABLES, UNKNOWN

ResolvedPath = tuple[str, ...]
# A block parameter is bound to a context path, or to None for an index/key (no PHI, no fields).
Binding = ResolvedPath | None


@dataclass(frozen=True)
class Scope:
    contexts: tuple[ResolvedPath, ...] = ((),)
    params: tuple[dict[str, Binding], ...] = ()

    def push(self, context: ResolvedPath, bindings: dict[str, Binding] | None = None) -> Scope:
        return Scope((*self.contexts, context), (*self.params, bindings or {}))

    @property
    def current(self) -> ResolvedPath:
        return self.contexts[-1]


def resolve(path: PathExpr, scope: Scope) -> ResolvedPath | None:
    """The absolute path `path` reads, or None for a value that carries no data (`@index`, `@first`)."""
    if path.data:
        head = path.parts[0]
        if head == "root":
            return path.parts[1:]
        if head.lower() in SAFE_DATA_VARIABLES and len(path.parts) == 1:
            return None
        return ("@" + head, *path.parts[1:])
    if path.depth:
        index = len(scope.contexts) - 1 - path.depth
        return scope.contexts[max(index, 0)] + path.parts
    if not path.this_prefixed and path.parts:
        for frame in reversed(scope.params):
            if path.parts[0] in frame:
                binding = frame[path.parts[0]]
                if binding is None:
                    return None if len(path.parts) == 1 else (UNKNOWN,)
                return binding + path.parts[1:]
    return scope.current + path.parts
