"""The PHI linter: walks the parsed template with its context stack and lists every finding.

Rules:
- `phi-variable`: the template reads a field that is not on the allow-list (policy.py), wherever it is used
  (output, helper argument, condition), after resolving `#with`, `#each`, sections, `../`, `@root`,
  block parameters and `lookup`.
- `phi-helper`: `json` or `implodeMembers`, whatever the arguments.
- `phi-each`: `{{#each}}` (or a section) over people: members, otherMembers, sender, the whole context...
- `unknown-helper`: a helper the linter does not know could print anything.
- `partial`: partials render templates the linter cannot see.
- `phi-literal-phone|email|ssn|mrn|date`: PHI-looking literal text (literals.py).
- `syntax`: the template does not parse as Handlebars.
- `empty-template`: Stream replaces an empty template with its default, which shows message text.
- `invalid-json`: rendered with placeholder values the template is not valid JSON of the right shape.
- `payload-size`: rendered with short placeholders it already exceeds the provider's 4 KB payload limit.
"""
from __future__ import annotations

from dataclasses import dataclass

from .handlebars import (
    BlockNode,
    Call,
    CommentNode,
    Expr,
    LiteralExpr,
    MustacheNode,
    Node,
    PathExpr,
    SubExpr,
    TextNode,
    UnsupportedNode,
    line_column,
    parse,
)
from .literals import scan_literal
from .policy import (
    ELEMENT,
    PHI_HELPERS,
    SAFE_HELPERS,
    UNKNOWN,
    display,
    is_allowed,
    is_people,
    refusal_reason,
)
from .render import check_rendered_json
from .scope import Binding, ResolvedPath, Scope, resolve

PROVIDER_KINDS: dict[str, tuple[str, ...]] = {
    "apn": ("notification",),
    "firebase": ("notification", "data", "apn"),
}

RULES: tuple[str, ...] = (
    "phi-variable",
    "phi-helper",
    "phi-each",
    "unknown-helper",
    "partial",
    "phi-literal-phone",
    "phi-literal-email",
    "phi-literal-ssn",
    "phi-literal-mrn",
    "phi-literal-date",
    "syntax",
    "empty-template",
    "invalid-json",
    "payload-size",
)


@dataclass(frozen=True)
class Finding:
    rule: str
    text: str
    line: int
    column: int
    message: str
    offset: int
    path: str | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "rule": self.rule,
            "text": self.text,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }
        if self.path is not None:
            data["path"] = self.path
        return data


@dataclass(frozen=True)
class LintResult:
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


def lint_template(template: str, *, provider: str, kind: str) -> LintResult:
    if provider not in PROVIDER_KINDS or kind not in PROVIDER_KINDS[provider]:
        raise ValueError(f"unsupported provider/kind {provider}/{kind}")
    linter = _Linter(template)
    if not template.strip():
        linter.add(
            "empty-template",
            "",
            0,
            "an empty template makes Stream use its default, which shows the message text and sender name",
        )
        return linter.result()
    parsed = parse(template)
    for issue in parsed.issues:
        linter.add("syntax", issue.text, issue.start, issue.message)
    linter.walk(parsed.body, Scope())
    if not parsed.issues:
        for problem in check_rendered_json(parsed, provider=provider, kind=kind):
            linter.add(problem.rule, problem.text, problem.offset, problem.message)
    return linter.result()


class _Linter:
    def __init__(self, source: str) -> None:
        self.source = source
        self._findings: dict[tuple[str, int, str], Finding] = {}

    def add(self, rule: str, text: str, offset: int, message: str, path: str | None = None) -> None:
        line, column = line_column(self.source, offset)
        key = (rule, offset, message)
        if key not in self._findings:
            self._findings[key] = Finding(rule, text, line, column, message, offset, path)

    def result(self) -> LintResult:
        ordered = sorted(self._findings.values(), key=lambda f: (f.offset, f.rule, f.message))
        return LintResult(tuple(ordered))

    # -- statements --

    def walk(self, nodes: list[Node] | None, scope: Scope) -> None:
        for node in nodes or ():
            if isinstance(node, TextNode):
                self.scan_text(node.raw, node.raw_start)
            elif isinstance(node, CommentNode):
                self.scan_text(node.value, node.start)
            elif isinstance(node, MustacheNode):
                self.evaluate_call(node.call, scope, usage="output")
            elif isinstance(node, BlockNode):
                self.block(node, scope)
            elif isinstance(node, UnsupportedNode):
                if node.kind == "partial":
                    self.add("partial", node.text, node.start, "partials are refused: the linter cannot see them")
                else:
                    self.add("syntax", node.text, node.start, f"{node.kind}s are not supported in push templates")

    def scan_text(self, text: str, offset: int) -> None:
        for hit in scan_literal(text):
            self.add(hit.rule, hit.text, offset + hit.start, hit.reason)

    def block(self, node: BlockNode, scope: Scope) -> None:
        call = node.call
        head = call.head
        name = head.parts[0].lower() if isinstance(head, PathExpr) and head.is_simple_id else None
        if name in ("if", "unless"):
            if len(call.params) != 1:
                self.add("syntax", self.text_of(call), call.start, f"#{name} takes exactly one argument")
            self.arguments(call, scope)
            self.walk(node.program, scope)
            self.walk(node.inverse, scope)
        elif name in ("with", "each"):
            if len(call.params) != 1:
                self.add("syntax", self.text_of(call), call.start, f"#{name} takes exactly one argument")
                context: ResolvedPath = (UNKNOWN,)
            else:
                context = self.evaluate(call.params[0], scope, usage="context")
            for pair in call.hash:
                self.evaluate(pair.value, scope, usage="argument")
            if name == "each":
                if call.params:
                    self.check_each(call.params[0], context)
                element = (*context, ELEMENT)
                bindings: dict[str, Binding] = {}
                if node.block_params:
                    bindings[node.block_params[0]] = element
                    for extra in node.block_params[1:]:
                        bindings[extra] = None
                self.walk(node.program, scope.push(element, bindings))
            else:
                bindings = {node.block_params[0]: context} if node.block_params else {}
                self.walk(node.program, scope.push(context, bindings))
            self.walk(node.inverse, scope)
        elif name is not None and (name in PHI_HELPERS or name in SAFE_HELPERS):
            self.evaluate_call(call, scope, usage="argument")
            self.walk(node.program, scope.push((UNKNOWN,)))
            self.walk(node.inverse, scope)
        elif call.has_arguments:
            self.evaluate_call(call, scope, usage="argument")
            self.walk(node.program, scope.push((UNKNOWN,)))
            self.walk(node.inverse, scope.push((UNKNOWN,)))
        else:
            # A section (`{{#message}}`, `{{^members}}`): like #with for an object, #each for an array.
            context = self.evaluate(head, scope, usage="context")
            self.check_each(head, context)
            bindings = {node.block_params[0]: context} if node.block_params else {}
            self.walk(node.program, scope.push(context, bindings))
            self.walk(node.inverse, scope)

    def check_each(self, expr: Expr, context: ResolvedPath) -> None:
        if is_people(context):
            self.add(
                "phi-each",
                self.expr_text(expr),
                expr.start,
                f"iterating over {display(context)} exposes people (names, custom fields)",
                display(context),
            )

    # -- expressions --

    def arguments(self, call: Call, scope: Scope) -> None:
        for param in call.params:
            self.evaluate(param, scope, usage="argument")
        for pair in call.hash:
            self.evaluate(pair.value, scope, usage="argument")

    def evaluate(self, expr: Expr, scope: Scope, *, usage: str) -> ResolvedPath:
        """Checks `expr` and returns the path its value comes from (UNKNOWN for derived values).

        usage "context" (the argument of #with/#each, the object given to lookup) does not count as
        reading; what is read inside the block is checked there."""
        if isinstance(expr, PathExpr):
            resolved = resolve(expr, scope)
            if resolved is None:
                return (UNKNOWN,)
            if usage != "context":
                self.check_read(expr.original, expr.start, resolved)
            return resolved
        if isinstance(expr, LiteralExpr):
            if expr.kind == "string" and isinstance(expr.value, str):
                self.scan_text(expr.value, expr.start + 1)
            return (UNKNOWN,)
        return self.evaluate_call(expr.call, scope, usage=usage, subexpr=expr)

    def evaluate_call(
        self, call: Call, scope: Scope, *, usage: str, subexpr: SubExpr | None = None
    ) -> ResolvedPath:
        head = call.head
        helper = head.parts[0].lower() if isinstance(head, PathExpr) and head.is_simple_id else None
        if helper in PHI_HELPERS:
            assert isinstance(head, PathExpr)
            self.add("phi-helper", head.original, head.start, PHI_HELPERS[helper])
            self.arguments(call, scope)
            return (UNKNOWN,)
        if helper == "lookup" and call.params:
            return self.lookup(call, scope, usage=usage)
        if helper in SAFE_HELPERS:
            self.arguments(call, scope)
            return (UNKNOWN,)
        if not call.has_arguments:
            if isinstance(head, SubExpr):
                return self.evaluate(head, scope, usage=usage)
            return self.evaluate(head, scope, usage=usage)
        # Arguments, and a head that is no known helper: Stream would call a missing helper.
        self.add(
            "unknown-helper",
            self.expr_text(head),
            head.start,
            f"unknown helper '{self.expr_text(head)}': only {', '.join(sorted(SAFE_HELPERS))} are allowed",
        )
        if isinstance(head, SubExpr):
            self.evaluate(head, scope, usage="argument")
        self.arguments(call, scope)
        return (UNKNOWN,)

    def lookup(self, call: Call, scope: Scope, *, usage: str) -> ResolvedPath:
        base = self.evaluate(call.params[0], scope, usage="context")
        segment = UNKNOWN
        if len(call.params) > 1:
            key = call.params[1]
            if isinstance(key, LiteralExpr) and key.kind in ("string", "number"):
                value = key.value
                segment = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            else:
                self.evaluate(key, scope, usage="argument")
        for extra in call.params[2:]:
            self.evaluate(extra, scope, usage="argument")
        resolved = (*base, segment)
        if usage != "context":
            self.check_read(self.text_of(call), call.start, resolved)
        return resolved

    def check_read(self, text: str, offset: int, resolved: ResolvedPath) -> None:
        if not is_allowed(resolved):
            self.add("phi-variable", text, offset, refusal_reason(resolved), display(resolved))

    def text_of(self, call: Call) -> str:
        return self.source[call.start : call.end]

    def expr_text(self, expr: Expr) -> str:
        if isinstance(expr, PathExpr | LiteralExpr):
            return expr.original
        end = self.source.find(")", expr.call.end)
        return self.source[expr.start : (end + 1 if end != -1 else expr.call.end)]
