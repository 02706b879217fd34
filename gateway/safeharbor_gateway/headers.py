"""What the gateway removes from and adds to headers.

Identity comes only from a verified token (trust rule 1): anything a client could send to claim an
identity, an IP or a service's voice is dropped before a request goes upstream.
"""
from __future__ import annotations

import re

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
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


def upstream_request_headers(incoming: list[tuple[str, str]]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in incoming:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or SPOOFABLE.match(lowered):
            continue
        kept[name] = value
    return kept


# Not relayed from a service's answer: hop-by-hop, what the WSGI server sets, and the request id (the
# gateway adds its own, the same value, to every answer).
_NOT_RELAYED = HOP_BY_HOP | {"content-encoding", "server", "date", "x-request-id"}


def downstream_response_headers(upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in upstream if name.lower() not in _NOT_RELAYED]
