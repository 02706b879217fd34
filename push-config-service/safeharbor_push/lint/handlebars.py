"""A Handlebars tokenizer and parser, written for linting (not for rendering production payloads).

It follows handlebars.js 4 syntax, which Stream's Go renderer (raymond) implements: mustaches `{{ }}`,
triple-stash `{{{ }}}`, `{{& }}`, comments `{{! }}` / `{{!-- --}}`, blocks `{{#name args}}...{{else}}...
{{/name}}` with `{{else if ...}}` chains and `as |a b|` block parameters, inverse sections `{{^name}}` and
`{{^}}`, sub-expressions `( )`, positional and hash arguments, string/number/boolean/null literals, paths
with `.` or `/`, `this`, `./`, `../`, `[literal]` segments and `@data` variables, escaped mustaches
`\\{{`, and whitespace control `~`. Partials, decorators and raw blocks are recognised and reported, since
a linter cannot see what they would render.

Every node keeps its absolute offset in the source so findings can name a 1-based line and column.
Syntax errors never raise out of `parse`: they come back as `SyntaxIssue`s, so the linter can list every
problem it can still see.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal as TypingLiteral

# handlebars.js lexer: ID = [^\s!"#%-,\.\/;->@\[-\^`\{-~]+ followed by a LITERAL_LOOKAHEAD.
_ID_RE = re.compile(r"[^\s!\"#%-,\./;->@\[-\^`\{-~]+")
_NUMBER_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?=[=~}\s/.)|]|$)")
_KEYWORD_RE = re.compile(r"(true|false|null|undefined)(?=[=~}\s/.)|]|$)")
_LITERAL_SEGMENT_RE = re.compile(r"\[(?:\\\]|[^\]])*\]")
_ELSE_RE = re.compile(r"else(?=[\s~}]|$)")
_BLOCK_PARAMS_RE = re.compile(r"as\s+\|")
# Deeper nesting than any real push template needs; the walkers recurse, so it is bounded here.
MAX_NESTING = 32


# --- expressions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathExpr:
    """`foo.bar`, `../x`, `this/y`, `@root.z`. `parts` exclude `this`, `.` and `..` (counted in `depth`)."""

    original: str
    parts: tuple[str, ...]
    depth: int
    this_prefixed: bool
    data: bool
    start: int

    @property
    def is_simple_id(self) -> bool:
        """A bare identifier such as `truncate`: what handlebars may resolve as a helper name."""
        return not self.data and self.depth == 0 and not self.this_prefixed and len(self.parts) == 1


@dataclass(frozen=True)
class LiteralExpr:
    kind: TypingLiteral["string", "number", "boolean", "null", "undefined"]
    value: str | float | bool | None
    original: str
    start: int


@dataclass(frozen=True)
class SubExpr:
    call: Call
    start: int


Expr = PathExpr | LiteralExpr | SubExpr


@dataclass(frozen=True)
class HashPair:
    key: str
    value: Expr
    start: int


@dataclass(frozen=True)
class Call:
    """`head param* key=value*`: a helper call, or a plain lookup when there are no arguments."""

    head: Expr
    params: tuple[Expr, ...]
    hash: tuple[HashPair, ...]
    start: int
    end: int

    @property
    def has_arguments(self) -> bool:
        return bool(self.params or self.hash)


# --- statements ------------------------------------------------------------------------------------


@dataclass
class TextNode:
    value: str  # after whitespace control
    start: int  # offset of value[0] in the source
    raw: str  # the source text before whitespace control (for literal scanning)
    raw_start: int


@dataclass
class CommentNode:
    value: str
    start: int  # offset of the comment body


@dataclass
class MustacheNode:
    call: Call
    escaped: bool
    start: int
    end: int


@dataclass
class BlockNode:
    call: Call
    program: list[Node]
    inverse: list[Node] | None
    block_params: tuple[str, ...]
    start: int
    end: int
    chained: bool = False  # an `{{else if ...}}` link, closed by its parent's `{{/name}}`
    in_inverse: bool = False


@dataclass
class UnsupportedNode:
    """A partial, decorator or raw block: valid Handlebars whose output a linter cannot know."""

    kind: TypingLiteral["partial", "decorator", "raw-block"]
    text: str
    start: int


Node = TextNode | CommentNode | MustacheNode | BlockNode | UnsupportedNode


@dataclass(frozen=True)
class SyntaxIssue:
    message: str
    text: str
    start: int


@dataclass
class ParseResult:
    source: str
    body: list[Node]
    issues: list[SyntaxIssue] = field(default_factory=list)


class _Fail(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


# --- flat statement scan ---------------------------------------------------------------------------


@dataclass
class _Stmt:
    kind: TypingLiteral[
        "text", "comment", "mustache", "open", "open_inverse", "close", "else", "else_chain", "unsupported"
    ]
    start: int
    end: int
    strip_left: bool = False
    strip_right: bool = False
    text: str = ""
    text_start: int = 0
    call: Call | None = None
    escaped: bool = True
    block_params: tuple[str, ...] = ()
    close_name: PathExpr | None = None
    unsupported: TypingLiteral["partial", "decorator", "raw-block"] = "partial"


class _MustacheParser:
    """Parses the inside of one mustache from `pos`; the source is shared with the statement scanner."""

    def __init__(self, src: str, pos: int) -> None:
        self.src = src
        self.pos = pos
        self.depth = 0

    # -- low level --

    def peek(self, n: int = 1) -> str:
        return self.src[self.pos : self.pos + n]

    def skip_ws(self) -> None:
        while self.pos < len(self.src) and self.src[self.pos].isspace():
            self.pos += 1

    def at_close(self, triple: bool = False) -> bool:
        self.skip_ws()
        rest = self.src[self.pos :]
        if triple:
            return rest.startswith("}}}") or rest.startswith("}~}}")
        return rest.startswith("}}") or rest.startswith("~}}")

    def expect_close(self, triple: bool = False) -> bool:
        """Consumes the closing braces; True when `~` asked to strip the whitespace that follows."""
        self.skip_ws()
        rest = self.src[self.pos :]
        if triple:
            for token, strip in (("}~}}", True), ("}}}", False)):
                if rest.startswith(token):
                    self.pos += len(token)
                    return strip
            raise _Fail("expected '}}}' to close the triple-stash", self.pos)
        for token, strip in (("~}}", True), ("}}", False)):
            if rest.startswith(token):
                self.pos += len(token)
                return strip
        if self.pos >= len(self.src):
            raise _Fail("unclosed mustache: expected '}}'", self.pos)
        raise _Fail(f"unexpected {self.src[self.pos]!r} inside a mustache", self.pos)

    # -- expressions --

    def parse_call(self, *, in_subexpr: bool, triple: bool = False) -> Call:
        self.skip_ws()
        start = self.pos
        head = self.parse_atom()
        params: list[Expr] = []
        pairs: list[HashPair] = []
        while True:
            self.skip_ws()
            if self.pos >= len(self.src):
                raise _Fail("unclosed mustache: expected '}}'", self.pos)
            if in_subexpr and self.peek() == ")":
                break
            if not in_subexpr and (self.at_close(triple) or _BLOCK_PARAMS_RE.match(self.src, self.pos)):
                break
            key_match = _ID_RE.match(self.src, self.pos)
            if key_match is not None:
                after = key_match.end()
                while after < len(self.src) and self.src[after].isspace():
                    after += 1
                if self.src[after : after + 1] == "=":
                    key_start = self.pos
                    self.pos = after + 1
                    self.skip_ws()
                    pairs.append(HashPair(key_match.group(0), self.parse_atom(), key_start))
                    continue
            if pairs:
                raise _Fail("positional argument after a hash argument", self.pos)
            params.append(self.parse_atom())
        end = self.pos
        while end > start and self.src[end - 1].isspace():
            end -= 1
        return Call(head=head, params=tuple(params), hash=tuple(pairs), start=start, end=end)

    def parse_atom(self) -> Expr:
        self.skip_ws()
        start = self.pos
        ch = self.peek()
        if ch == "":
            raise _Fail("unexpected end of template inside a mustache", self.pos)
        if ch == "(":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise _Fail(f"sub-expressions nested deeper than {MAX_NESTING}", self.pos)
            self.pos += 1
            call = self.parse_call(in_subexpr=True)
            self.depth -= 1
            self.skip_ws()
            if self.peek() != ")":
                raise _Fail("unclosed sub-expression: expected ')'", self.pos)
            self.pos += 1
            return SubExpr(call=call, start=start)
        if ch in ("\"", "'"):
            return self.parse_string(ch)
        number = _NUMBER_RE.match(self.src, self.pos)
        if number is not None:
            self.pos = number.end()
            text = number.group(0)
            return LiteralExpr("number", float(text), text, start)
        keyword = _KEYWORD_RE.match(self.src, self.pos)
        if keyword is not None:
            self.pos = keyword.end()
            word = keyword.group(0)
            if word in ("true", "false"):
                return LiteralExpr("boolean", word == "true", word, start)
            return LiteralExpr("null" if word == "null" else "undefined", None, word, start)
        return self.parse_path()

    def parse_string(self, quote: str) -> LiteralExpr:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.src):
            ch = self.src[self.pos]
            if ch == "\\" and self.src[self.pos + 1 : self.pos + 2] == quote:
                chars.append(quote)
                self.pos += 2
                continue
            if ch == quote:
                self.pos += 1
                return LiteralExpr("string", "".join(chars), self.src[start : self.pos], start)
            chars.append(ch)
            self.pos += 1
        raise _Fail("unterminated string literal", start)

    def parse_path(self) -> PathExpr:
        start = self.pos
        data = False
        if self.peek() == "@":
            data = True
            self.pos += 1
        parts: list[str] = []
        depth = 0
        this_prefixed = False
        while True:
            segment_start = self.pos
            segment, special = self.parse_segment()
            if special is not None:
                # As in handlebars.js: `this`, `.` and `..` may only precede the named segments.
                if parts:
                    raise _Fail(f"invalid path: '{special}' after a name", segment_start)
                if special == "..":
                    depth += 1
                else:
                    this_prefixed = True
            else:
                parts.append(segment)
            nxt = self.peek()
            if nxt in (".", "/") and self._segment_follows(self.pos + 1):
                self.pos += 1
                continue
            break
        if data and (depth or this_prefixed or not parts):
            raise _Fail("invalid data variable", start)
        return PathExpr(
            original=self.src[start : self.pos],
            parts=tuple(parts),
            depth=depth,
            this_prefixed=this_prefixed,
            data=data,
            start=start,
        )

    def _segment_follows(self, pos: int) -> bool:
        if pos >= len(self.src):
            return False
        ch = self.src[pos]
        return ch == "[" or ch == "." or _ID_RE.match(self.src, pos) is not None

    def parse_segment(self) -> tuple[str, str | None]:
        """(segment, special) where special is '..', '.', 'this' or None for a named segment."""
        if self.src.startswith("..", self.pos):
            self.pos += 2
            return "..", ".."
        if self.peek() == ".":
            self.pos += 1
            return ".", "."
        if self.peek() == "[":
            literal = _LITERAL_SEGMENT_RE.match(self.src, self.pos)
            if literal is None:
                raise _Fail("unclosed '[' in a path", self.pos)
            self.pos = literal.end()
            return literal.group(0)[1:-1].replace("\\]", "]"), None
        ident = _ID_RE.match(self.src, self.pos)
        if ident is None:
            ch = self.peek() or "end of template"
            raise _Fail(f"unexpected {ch!r} where a name was expected", self.pos)
        self.pos = ident.end()
        word = ident.group(0)
        return word, ("this" if word == "this" else None)

    def parse_block_params(self) -> tuple[str, ...]:
        self.skip_ws()
        match = _BLOCK_PARAMS_RE.match(self.src, self.pos)
        if match is None:
            return ()
        self.pos = match.end()
        names: list[str] = []
        while True:
            self.skip_ws()
            if self.peek() == "|":
                self.pos += 1
                break
            ident = _ID_RE.match(self.src, self.pos)
            if ident is None:
                raise _Fail("malformed block parameters: expected names between '|'", self.pos)
            names.append(ident.group(0))
            self.pos = ident.end()
        if not names:
            raise _Fail("empty block parameters", match.start())
        return tuple(names)


def _find_close(src: str, pos: int, pattern: re.Pattern[str]) -> re.Match[str] | None:
    return pattern.search(src, pos)


_LONG_COMMENT_END = re.compile(r"--(~?)\}\}")
_SHORT_COMMENT_END = re.compile(r"(~?)\}\}")


def _scan(src: str) -> tuple[list[_Stmt], list[SyntaxIssue]]:
    stmts: list[_Stmt] = []
    issues: list[SyntaxIssue] = []
    i = 0
    n = len(src)

    def add_text(start: int, end: int) -> None:
        if end > start:
            stmts.append(_Stmt("text", start, end, text=src[start:end], text_start=start))

    while i < n:
        j = src.find("{{", i)
        if j == -1:
            add_text(i, n)
            break
        if j > 0 and src[j - 1] == "\\" and not (j > 1 and src[j - 2] == "\\"):
            # `\{{...`: an escaped mustache is literal text up to the next mustache.
            add_text(i, j - 1)
            k = src.find("{{", j + 2)
            if k == -1:
                k = n
            elif src[k - 1] == "\\":
                k -= 1
            add_text(j, k)
            i = k
            continue
        if j > 1 and src[j - 1] == "\\" and src[j - 2] == "\\":
            add_text(i, j - 1)  # `\\{{`: one literal backslash, then a real mustache
        else:
            add_text(i, j)
        try:
            stmt = _scan_mustache(src, j)
        except _Fail as exc:
            issues.append(SyntaxIssue(exc.message, _snippet(src, exc.pos), exc.pos))
            # Recover after the next `}}` so later problems are still reported.
            resume = src.find("}}", max(exc.pos, j + 2))
            i = n if resume == -1 else resume + 2
            while i < n and src[i] == "}":
                i += 1
            continue
        stmts.append(stmt)
        i = stmt.end
    return stmts, issues


def _scan_mustache(src: str, j: int) -> _Stmt:
    if src.startswith("{{{{", j):
        end = src.find("}}}}", j)
        text = src[j : (end + 4 if end != -1 else len(src))]
        stmt = _Stmt("unsupported", j, j + len(text), unsupported="raw-block", text=_snippet(src, j))
        if end == -1:
            raise _Fail("unclosed raw block", j)
        return stmt
    p = j + 2
    strip_left = src.startswith("~", p)
    if strip_left:
        p += 1
    parser = _MustacheParser(src, p)

    if src.startswith("!", p):
        long = src.startswith("!--", p)
        body_start = p + (3 if long else 1)
        match = _find_close(src, body_start, _LONG_COMMENT_END if long else _SHORT_COMMENT_END)
        if match is None:
            raise _Fail("unclosed comment", j)
        return _Stmt(
            "comment",
            j,
            match.end(),
            strip_left=strip_left,
            strip_right=bool(match.group(1)),
            text=src[body_start : match.start()],
            text_start=body_start,
        )
    if src.startswith("{", p):  # triple-stash: unescaped output
        parser.pos = p + 1
        call = parser.parse_call(in_subexpr=False, triple=True)
        strip_right = parser.expect_close(triple=True)
        return _Stmt("mustache", j, parser.pos, strip_left, strip_right, call=call, escaped=False)
    if src.startswith("&", p):
        parser.pos = p + 1
        call = parser.parse_call(in_subexpr=False)
        strip_right = parser.expect_close()
        return _Stmt("mustache", j, parser.pos, strip_left, strip_right, call=call, escaped=False)
    if src.startswith(">", p) or src.startswith("#>", p):
        end = src.find("}}", p)
        if end == -1:
            raise _Fail("unclosed partial", j)
        return _Stmt("unsupported", j, end + 2, unsupported="partial", text=src[j : end + 2])
    if src.startswith("*", p) or src.startswith("#*", p):
        end = src.find("}}", p)
        if end == -1:
            raise _Fail("unclosed decorator", j)
        return _Stmt("unsupported", j, end + 2, unsupported="decorator", text=src[j : end + 2])
    if src.startswith("#", p):
        parser.pos = p + 1
        call = parser.parse_call(in_subexpr=False)
        params = parser.parse_block_params()
        strip_right = parser.expect_close()
        return _Stmt("open", j, parser.pos, strip_left, strip_right, call=call, block_params=params)
    if src.startswith("^", p):
        parser.pos = p + 1
        if parser.at_close():
            strip_right = parser.expect_close()
            return _Stmt("else", j, parser.pos, strip_left, strip_right)
        call = parser.parse_call(in_subexpr=False)
        params = parser.parse_block_params()
        strip_right = parser.expect_close()
        return _Stmt("open_inverse", j, parser.pos, strip_left, strip_right, call=call, block_params=params)
    if src.startswith("/", p):
        parser.pos = p + 1
        parser.skip_ws()
        name = parser.parse_path()
        strip_right = parser.expect_close()
        return _Stmt("close", j, parser.pos, strip_left, strip_right, close_name=name)
    parser.skip_ws()
    if _ELSE_RE.match(src, parser.pos):
        parser.pos += 4
        if parser.at_close():
            strip_right = parser.expect_close()
            return _Stmt("else", j, parser.pos, strip_left, strip_right)
        call = parser.parse_call(in_subexpr=False)
        params = parser.parse_block_params()
        strip_right = parser.expect_close()
        return _Stmt("else_chain", j, parser.pos, strip_left, strip_right, call=call, block_params=params)
    if parser.at_close():
        raise _Fail("empty mustache", j)
    call = parser.parse_call(in_subexpr=False)
    if _BLOCK_PARAMS_RE.match(src, parser.pos):
        raise _Fail("block parameters are only allowed on blocks", parser.pos)
    strip_right = parser.expect_close()
    return _Stmt("mustache", j, parser.pos, strip_left, strip_right, call=call)


def _apply_whitespace_control(stmts: list[_Stmt]) -> list[TextNode | None]:
    """The text value of every text statement after `{{~` / `~}}` stripping (None for others)."""
    texts: list[TextNode | None] = [None] * len(stmts)
    for index, stmt in enumerate(stmts):
        if stmt.kind == "text":
            texts[index] = TextNode(stmt.text, stmt.text_start, stmt.text, stmt.text_start)
    for index, stmt in enumerate(stmts):
        if stmt.kind == "text":
            continue
        if stmt.strip_left and index > 0:
            before = texts[index - 1]
            if before is not None:
                before.value = before.value.rstrip()
        if stmt.strip_right and index + 1 < len(stmts):
            after = texts[index + 1]
            if after is not None:
                stripped = after.value.lstrip()
                after.start += len(after.value) - len(stripped)
                after.value = stripped
    return texts


def parse(source: str) -> ParseResult:
    stmts, issues = _scan(source)
    texts = _apply_whitespace_control(stmts)
    body: list[Node] = []
    # Each frame: (block or None for the template root, the list new nodes go to).
    stack: list[tuple[BlockNode | None, list[Node]]] = [(None, body)]

    for stmt, text in zip(stmts, texts, strict=True):
        target = stack[-1][1]
        if stmt.kind == "text":
            if text is not None and text.raw:
                target.append(text)
        elif stmt.kind == "comment":
            target.append(CommentNode(stmt.text, stmt.text_start))
        elif stmt.kind == "mustache":
            assert stmt.call is not None
            target.append(MustacheNode(stmt.call, stmt.escaped, stmt.start, stmt.end))
        elif stmt.kind == "unsupported":
            target.append(UnsupportedNode(stmt.unsupported, stmt.text, stmt.start))
        elif stmt.kind in ("open", "open_inverse"):
            assert stmt.call is not None
            block = BlockNode(stmt.call, [], None, stmt.block_params, stmt.start, stmt.end)
            if len(stack) > MAX_NESTING:
                issues.append(
                    SyntaxIssue(f"blocks nested deeper than {MAX_NESTING}", _snippet(source, stmt.start), stmt.start)
                )
                return ParseResult(source=source, body=[], issues=issues)
            target.append(block)
            if stmt.kind == "open_inverse":
                block.inverse = []
                block.in_inverse = True
                stack.append((block, block.inverse))
            else:
                stack.append((block, block.program))
        elif stmt.kind in ("else", "else_chain"):
            block_or_none = stack[-1][0]
            if block_or_none is None:
                issues.append(SyntaxIssue("'else' outside a block", _snippet(source, stmt.start), stmt.start))
                continue
            if block_or_none.in_inverse:
                issues.append(SyntaxIssue("a second 'else' in one block", _snippet(source, stmt.start), stmt.start))
                continue
            block_or_none.in_inverse = True
            block_or_none.inverse = []
            stack[-1] = (block_or_none, block_or_none.inverse)
            if stmt.kind == "else_chain":
                assert stmt.call is not None
                chained = BlockNode(stmt.call, [], None, stmt.block_params, stmt.start, stmt.end, chained=True)
                if len(stack) > MAX_NESTING:
                    issues.append(
                        SyntaxIssue(
                            f"'else if' chains longer than {MAX_NESTING}", _snippet(source, stmt.start), stmt.start
                        )
                    )
                    return ParseResult(source=source, body=[], issues=issues)
                block_or_none.inverse.append(chained)
                stack.append((chained, chained.program))
        elif stmt.kind == "close":
            assert stmt.close_name is not None
            while (top := stack[-1][0]) is not None and top.chained:
                stack.pop()
            block_or_none = stack[-1][0]
            if block_or_none is None:
                issues.append(
                    SyntaxIssue(
                        f"'{{{{/{stmt.close_name.original}}}}}' closes no open block",
                        _snippet(source, stmt.start),
                        stmt.start,
                    )
                )
                continue
            opened = _block_name(block_or_none.call)
            if opened != stmt.close_name.original:
                issues.append(
                    SyntaxIssue(
                        f"'{{{{/{stmt.close_name.original}}}}}' does not match '{{{{#{opened}}}}}'",
                        _snippet(source, stmt.start),
                        stmt.start,
                    )
                )
            block_or_none.end = stmt.end
            stack.pop()
    while len(stack) > 1:
        block_or_none, _ = stack.pop()
        if block_or_none is not None and not block_or_none.chained:
            issues.append(
                SyntaxIssue(
                    f"'{{{{#{_block_name(block_or_none.call)}}}}}' is never closed",
                    _snippet(source, block_or_none.start),
                    block_or_none.start,
                )
            )
    return ParseResult(source=source, body=body, issues=issues)


def _block_name(call: Call) -> str:
    head = call.head
    if isinstance(head, PathExpr):
        return head.original
    if isinstance(head, LiteralExpr):
        return head.original
    return "(...)"


def _snippet(src: str, pos: int, width: int = 24) -> str:
    return src[pos : pos + width].split("\n", 1)[0] or src[max(0, pos - width) : pos]


def line_column(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset` (columns count characters)."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    last_newline = source.rfind("\n", 0, offset)
    return line, offset - last_newline
