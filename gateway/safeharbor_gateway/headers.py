"""What the gateway removes from and adds to headers.

Identity comes only from a verified token (trust rule 1): anything a client could send to claim an
identity, an IP or a service's voice is dropped before a request goes upstream. Hop-by-hop headers (RFC 9110
section 7.6.1), including any a message names in its own `Connection` header, end at the gateway in both
directions.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Not forwarded to a service: the client's expectation (gunicorn answers `100 Continue` itself, and the body
# goes upstream whole) and the client's request id (the gateway sends its own, once).
_NOT_FORWARDED = HOP_BY_HOP | {"expect", "x-request-id"}
SPOOFABLE = re.compile(
    r"^(x-user(-.*)?|x-forwarded(-.*)?|forwarded|x-actor(-.*)?|x-remote-(user|addr)|remote-user|"
    r"x-auth(enticated)?-.*|x-role(s)?|x-email|x-real-ip|x-client-ip|x-original-.*|x-safeharbor-.*|"
    r"x-service-token|x-impersonate(-.*)?)$",
    re.IGNORECASE,
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=63072000; includeSubDomains"


_UNSAFE = re.compile(r"[\r\n\x00]")  # a value that could split the request (HTTP servers refuse them too)


def connection_named(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The header names a message's `Connection` header lists (lower case)."""
    return frozenset(token.strip().lower() for name, value in headers if name.lower() == "connection"
                     for token in value.split(",") if token.strip())


def upstream_request_headers(incoming: list[tuple[str, str]]) -> dict[str, str]:
    named = connection_named(incoming)
    kept: dict[str, str] = {}
    for name, value in incoming:
        lowered = name.lower()
        if lowered in _NOT_FORWARDED or lowered in named or SPOOFABLE.match(lowered) or _UNSAFE.search(value):
            continue
        kept[name] = value
    return kept


# Not relayed from a service's answer: hop-by-hop, what the WSGI server sets, and the request id (the
# gateway adds its own, the same value, to every answer).
_NOT_RELAYED = HOP_BY_HOP | {"content-encoding", "server", "date", "x-request-id"}


def downstream_response_headers(upstream: list[tuple[str, str]],
                                internal_hosts: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    named = connection_named(upstream)
    out: list[tuple[str, str]] = []
    for name, value in upstream:
        lowered = name.lower()
        if lowered in _NOT_RELAYED or lowered in named:
            continue
        if lowered in ("location", "content-location"):
            value = public_location(value, internal_hosts)
        out.append((name, value))
    return out


def internal_hosts_of(upstream_urls: Iterable[str]) -> frozenset[str]:
    """What names a service's own address: each upstream's host:port, and its host name when that is a
    name (`auth`), not an IP address that other things may share."""
    hosts: set[str] = set()
    for url in upstream_urls:
        parts = urlsplit(url)
        hosts.add(parts.netloc.lower())
        if parts.hostname and not re.fullmatch(r"[0-9.]+|.*:.*", parts.hostname):
            hosts.add(parts.hostname.lower())
    return frozenset(hosts)


def public_location(value: str, internal_hosts: frozenset[str]) -> str:
    """A service's absolute URL naming its own (internal) address becomes a path on the gateway."""
    try:
        parts = urlsplit(value)
        netloc, host = parts.netloc.lower(), (parts.hostname or "").lower()
    except ValueError:
        return value
    if not netloc or (netloc not in internal_hosts and host not in internal_hosts):
        return value
    return urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))
