"""Normalising templates before comparing what SafeHarbor approved with what Stream holds.

Stream may hand a template back re-indented or with keys in another order; neither changes the payload.
Whitespace outside JSON strings is dropped, whitespace inside mustaches collapsed, and when the result
is JSON once bare mustaches stand in as string tokens, it is re-serialised with sorted keys.
"""
from __future__ import annotations

import hashlib
import json
import re

_WS = re.compile(r"\s+")


def _mustache_end(text: str, start: int) -> int:
    closing = "}}}" if text.startswith("{{{", start) else "}}"
    end = text.find(closing, start + 2)
    return len(text) if end == -1 else end + len(closing)


def _normalise_mustache(raw: str) -> str:
    triple = raw.startswith("{{{") and raw.endswith("}}}")
    width = 3 if triple else 2
    inner = _WS.sub(" ", raw[width:-width]).strip()
    inner = re.sub(r"^~\s*", "~", inner)
    inner = re.sub(r"\s*~$", "~", inner)
    return raw[:width] + inner + raw[-width:]


def normalise_template(text: str | None) -> str:
    if not text:
        return ""
    out: list[str] = []
    bare: list[tuple[str, str]] = []
    in_string = False
    i = 0
    n = len(text)
    while i < n:
        if text.startswith("{{", i):
            end = _mustache_end(text, i)
            mustache = _normalise_mustache(text[i:end])
            if in_string:
                out.append(mustache)
            else:
                # A bare mustache (`"badge": {{unread_count}}`) becomes a JSON string token for the
                # canonical re-serialisation and is put back afterwards.
                token = f'"\\u0001hb{len(bare)}\\u0001"'
                bare.append((token, mustache))
                out.append(token)
            i = end
            continue
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif not ch.isspace():
            out.append(ch)
        i += 1
    compact = "".join(out)
    try:
        result = json.dumps(json.loads(compact), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        result = compact
    for token, mustache in bare:
        result = result.replace(token, mustache)
    return result


def same_template(a: str | None, b: str | None) -> bool:
    return normalise_template(a) == normalise_template(b)


def sha256_hex(text: str | None) -> str:
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()
