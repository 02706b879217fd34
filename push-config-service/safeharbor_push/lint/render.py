"""Renders a parsed template with placeholder values and checks that the payload is JSON of the right shape.

Two passes: every condition true (each block iterated twice, so separators between items show), then
every condition false (else branches, empty iterations). `@first`, `@last` and `@index` take their real
values. Counters render as numbers, everything else as a short string, so `"badge": {{unread_count}}` is
valid and `"badge": {{message.id}}` is not. JSON errors are mapped back to the template position.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from .handlebars import (
    BlockNode,
    Call,
    CommentNode,
    Expr,
    LiteralExpr,
    MustacheNode,
    Node,
    ParseResult,
    PathExpr,
    SubExpr,
    TextNode,
    UnsupportedNode,
)
from .policy import ELEMENT, UNKNOWN, is_numeric
from .scope import Binding, ResolvedPath, Scope, resolve

PLACEHOLDER = "placeholder"
MAX_RENDERED_CHARS = 256 * 1024
MAX_RENDER_STEPS = 100_000  # nested #each doubles the work per level: bound it
PAYLOAD_LIMITS = {"apn": 4096, "firebase": 4096}
_HTML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;", "`": "&#x60;", "=": "&#x3D;"}


@dataclass(frozen=True)
class RenderProblem:
    rule: str
    text: str
    offset: int
    message: str


class _TooLarge(Exception):
    pass


@dataclass
class _Output:
    # (output offset, text, source offset, literal): literal chunks map character by character.
    chunks: list[tuple[int, str, int, bool]] = field(default_factory=list)
    length: int = 0

    def write(self, text: str, source_offset: int, *, literal: bool) -> None:
        if not text:
            return
        self.chunks.append((self.length, text, source_offset, literal))
        self.length += len(text)
        if self.length > MAX_RENDERED_CHARS:
            raise _TooLarge()

    def text(self) -> str:
        return "".join(chunk[1] for chunk in self.chunks)

    def source_offset(self, position: int, source_length: int) -> int:
        for out_start, text, src_start, literal in self.chunks:
            if out_start <= position < out_start + len(text):
                return src_start + (position - out_start) if literal else src_start
        return source_length


@dataclass(frozen=True)
class _Data:
    index: int = 0
    first: bool = True
    last: bool = True


class _Renderer:
    def __init__(self, truthy: bool) -> None:
        self.truthy = truthy
        self.out = _Output()
        self.steps = 0

    def render(self, nodes: list[Node] | None, scope: Scope, data: _Data) -> None:
        for node in nodes or ():
            self.steps += 1
            if self.steps > MAX_RENDER_STEPS:
                raise _TooLarge()
            if isinstance(node, TextNode):
                self.out.write(node.value, node.start, literal=True)
            elif isinstance(node, MustacheNode):
                value = self.value(node.call, scope, data)
                if node.escaped:
                    value = "".join(_HTML_ESCAPES.get(ch, ch) for ch in value)
                self.out.write(value, node.start, literal=False)
            elif isinstance(node, BlockNode):
                self.block(node, scope, data)
            elif isinstance(node, CommentNode | UnsupportedNode):
                continue

    def block(self, node: BlockNode, scope: Scope, data: _Data) -> None:
        call = node.call
        head = call.head
        name = head.parts[0].lower() if isinstance(head, PathExpr) and head.is_simple_id else None
        if name in ("if", "unless"):
            condition = self.condition(call.params[0], scope, data) if call.params else False
            if name == "unless":
                condition = not condition
            self.render(node.program if condition else node.inverse, scope, data)
            return
        context: ResolvedPath
        if name in ("with", "each") and call.params:
            context = self.origin(call.params[0], scope)
        elif not call.has_arguments and name not in ("with", "each"):
            context = self.origin(head, scope)
        else:
            context = (UNKNOWN,)
        if not self.truthy:
            self.render(node.inverse, scope, data)
            return
        if name == "each":
            element = (*context, ELEMENT)
            for index in range(2):
                bindings: dict[str, Binding] = {}
                if node.block_params:
                    bindings[node.block_params[0]] = element
                    for extra in node.block_params[1:]:
                        bindings[extra] = None
                self.render(node.program, scope.push(element, bindings), _Data(index, index == 0, index == 1))
            return
        bindings = {node.block_params[0]: context} if node.block_params else {}
        self.render(node.program, scope.push(context, bindings), data)

    def condition(self, expr: Expr, scope: Scope, data: _Data) -> bool:
        if isinstance(expr, PathExpr) and expr.data and len(expr.parts) == 1:
            name = expr.parts[0].lower()
            if name == "first":
                return data.first
            if name == "last":
                return data.last
            if name == "index":
                return data.index != 0
        if isinstance(expr, LiteralExpr):
            return bool(expr.value)
        return self.truthy

    def origin(self, expr: Expr, scope: Scope) -> ResolvedPath:
        if isinstance(expr, PathExpr):
            return resolve(expr, scope) or (UNKNOWN,)
        return (UNKNOWN,)

    def value(self, call: Call, scope: Scope, data: _Data) -> str:
        head = call.head
        helper = head.parts[0].lower() if isinstance(head, PathExpr) and head.is_simple_id else None
        if helper in ("equal", "eq", "ne"):
            return "true"
        if helper == "json":
            return '{"placeholder":"placeholder"}'
        if helper == "lookup" and call.params:
            base = self.origin(call.params[0], scope)
            key = call.params[1] if len(call.params) > 1 else None
            segment = str(key.value) if isinstance(key, LiteralExpr) and key.kind == "string" else UNKNOWN
            return "1" if is_numeric((*base, segment)) else PLACEHOLDER
        if call.has_arguments or helper in ("truncate", "implodemembers"):
            return PLACEHOLDER
        return self.atom(head, scope, data)

    def atom(self, expr: Expr, scope: Scope, data: _Data) -> str:
        if isinstance(expr, LiteralExpr):
            if expr.kind == "string":
                return str(expr.value)
            if expr.kind == "number":
                return expr.original
            if expr.kind == "boolean":
                return "true" if expr.value else "false"
            return ""
        if isinstance(expr, SubExpr):
            return self.value(expr.call, scope, data)
        if expr.data and len(expr.parts) == 1:
            name = expr.parts[0].lower()
            if name == "index":
                return str(data.index)
            if name in ("first", "last"):
                return "true" if getattr(data, name) else "false"
        resolved = resolve(expr, scope)
        if resolved is not None and is_numeric(resolved):
            return "1"
        return PLACEHOLDER


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def check_rendered_json(parsed: ParseResult, *, provider: str, kind: str) -> list[RenderProblem]:
    passes = {
        truthy: _check_variant(parsed, provider=provider, kind=kind, truthy=truthy) for truthy in (True, False)
    }
    problems: list[RenderProblem] = []
    for truthy, found in passes.items():
        other = passes[not truthy]
        for problem in found:
            if problem in other:
                if truthy:  # the same problem in both passes is reported once, without naming a pass
                    problems.append(problem)
                continue
            suffix = " (when every condition is true)" if truthy else " (when every condition is false)"
            problems.append(RenderProblem(problem.rule, problem.text, problem.offset, problem.message + suffix))
    return problems


def _check_variant(parsed: ParseResult, *, provider: str, kind: str, truthy: bool) -> list[RenderProblem]:
    """Problems of one rendering pass; messages do not name the pass so both passes deduplicate."""
    source = parsed.source
    renderer = _Renderer(truthy)
    try:
        renderer.render(parsed.body, Scope(), _Data())
    except _TooLarge:
        return [RenderProblem("payload-size", "", 0, "the template expands to an oversized payload")]
    text = renderer.out.text()
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        offset = renderer.out.source_offset(exc.pos, len(source))
        return [
            RenderProblem(
                "invalid-json",
                _near(source, offset),
                offset,
                f"rendered with placeholder values, the payload is not valid JSON: {exc.msg}",
            )
        ]
    except ValueError as exc:
        return [RenderProblem("invalid-json", "", 0, f"the rendered payload is not valid JSON: {exc}")]
    problems: list[RenderProblem] = []
    shape = _shape_problem(document, provider=provider, kind=kind)
    if shape is not None:
        problems.append(RenderProblem("invalid-json", _near(source, 0), 0, shape))
    size = len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    limit = PAYLOAD_LIMITS[provider]
    if size > limit:
        problems.append(
            RenderProblem(
                "payload-size",
                "",
                0,
                f"with short placeholders the payload is already {size} bytes (the limit is {limit})",
            )
        )
    return problems


def _shape_problem(document: object, *, provider: str, kind: str) -> str | None:
    if not isinstance(document, dict):
        return "the payload must be a JSON object"
    if (provider == "apn" or kind == "apn") and not isinstance(document.get("aps"), dict):
        return "an APNs payload must contain an 'aps' object"
    if kind == "data":
        bad = [key for key, value in document.items() if not isinstance(value, str)]
        if bad:
            return f"Firebase data values must be strings (not: {', '.join(sorted(bad)[:5])})"
    for value in _walk_numbers(document):
        if math.isinf(value) or math.isnan(value):
            return "numbers must be finite"
    return None


def _walk_numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _walk_numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _walk_numbers(item)]
    return []


def _near(source: str, offset: int) -> str:
    snippet = source[offset : offset + 24].split("\n", 1)[0]
    if snippet:
        return snippet
    line_start = source.rfind("\n", 0, offset) + 1
    return source[line_start:offset][-24:]
