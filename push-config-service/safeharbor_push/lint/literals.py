"""PHI-looking literal text: phone numbers, e-mail addresses, SSNs, medical record numbers, dates.

Applied to the template's literal text, its comments (they are stored at Stream too) and string
arguments of helpers. The patterns aim at what people type into a template by mistake; they are
deliberately broad, because a false positive costs an edit and a false negative a disclosure.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)

LITERAL_RULES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    (
        "phi-literal-email",
        "looks like an e-mail address",
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ),
    (
        "phi-literal-ssn",
        "looks like a social security number",
        re.compile(
            r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])"
            r"|(?i:\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\s*[:#]?\s*)\d{9}\b"
        ),
    ),
    (
        "phi-literal-mrn",
        "looks like a medical record number",
        re.compile(
            r"(?i)\b(?:mrn|mr\s?#|mr\s?no\.?|medical\s+record(?:\s+(?:number|num|no\.?|#))?|chart\s*(?:#|no\.?|number)"
            r"|patient\s*(?:id|#|no\.?|number))\s*[:#=-]?\s*[A-Z]{0,4}[-\s]?\d[\dA-Z-]{2,}"
        ),
    ),
    (
        "phi-literal-phone",
        "looks like a phone number",
        re.compile(
            r"(?<![\w-])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?![\w-])"
            r"|(?<![\w-])\+\d{1,3}(?:[\s.-]?\d){6,12}(?![\w-])"
        ),
    ),
    (
        "phi-literal-date",
        "looks like a date",
        re.compile(
            r"(?<![\w-])(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?![\d])"
            r"|(?<![\w/.-])(?:0?[1-9]|1[0-2]|[12]\d|3[01])[/.-](?:0?[1-9]|1[0-2]|[12]\d|3[01])[/.-](?:\d{4}|\d{2})(?![\w/.-])"
            r"|(?i:\b" + _MONTH + r"\.?\s+\d{1,2}(?:st|nd|rd|th)?(?:,?\s+\d{4})?\b)"
            r"|(?i:\b\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"\b\.?(?:,?\s+\d{4})?)"
        ),
    ),
)


_JSON_ESCAPE = re.compile(r"\\[nrtbf\"/\\]")


@dataclass(frozen=True)
class LiteralHit:
    rule: str
    reason: str
    text: str
    start: int  # offset in the scanned string


def scan_literal(text: str) -> Iterator[LiteralHit]:
    """Every PHI-looking match in `text`; a span already claimed by an earlier rule is not reported twice
    (an SSN is not also reported as a phone number)."""
    claimed: list[tuple[int, int]] = []
    # JSON escapes (`\n` in "Seen on\nJan 5") would hide word boundaries: blank them, keeping offsets.
    text = _JSON_ESCAPE.sub(lambda m: " " * len(m.group(0)), text)
    for rule, reason, pattern in LITERAL_RULES:
        for match in pattern.finditer(text):
            start, end = match.span()
            if end <= start:
                continue
            if any(start < c_end and c_start < end for c_start, c_end in claimed) and rule in (
                "phi-literal-phone",
                "phi-literal-date",
            ):
                continue
            claimed.append((start, end))
            yield LiteralHit(rule, reason, match.group(0), start)
