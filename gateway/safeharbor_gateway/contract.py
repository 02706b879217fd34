"""The public API contract: one OpenAPI document merged from the services' own, and its reference page.

The merged document is generated (tests/test_api_contract.py rebuilds it from the running services and fails
when the committed copy differs) and shipped with the gateway as package data, so the gateway serves the
contract it was released with and never needs a service to be up to describe the API.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from safeharbor_common import web

from .routing import ROUTES, Route, RouteTable

DOCUMENT_PATH = "/openapi.json"
REFERENCE_PATH = "/openapi.html"
_PACKAGE_FILE = "public-openapi.json"
_SAMPLE_SEGMENT = "sample-id"
_PATH_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")

# The error codes docs/API.md fixes, with the statuses each comes with; any other pair is drift.
ERROR_STATUSES: dict[str, tuple[int, ...]] = {
    "invalid_request": (400, 415), "unauthenticated": (401,), "session_expired": (401,),
    "session_revoked": (401,), "invalid_credentials": (401,), "mfa_required": (401,), "mfa_invalid": (401,),
    "mfa_enrollment_required": (403,), "forbidden": (403,), "not_found": (404,), "method_not_allowed": (405,),
    "request_timeout": (408,), "conflict": (409,), "payload_too_large": (413,), "phi_in_template": (422,),
    "unprocessable": (422,), "rate_limited": (429,), "locked_out": (429,), "internal_error": (500,),
    "upstream_error": (502,), "service_unavailable": (503,), "upstream_timeout": (504,),
}
ERROR_CODES = tuple(ERROR_STATUSES)

# Served by the gateway itself (never forwarded).
_GATEWAY_PATHS: dict[str, dict[str, Any]] = {
    DOCUMENT_PATH: {"get": {"operationId": "gateway_openapi_get", "summary": "This document (the public API)",
                            "responses": {"200": {"description": "OK"}}}},
    REFERENCE_PATH: {"get": {"operationId": "gateway_reference_get",
                             "summary": "This document as a self-contained HTML page",
                             "responses": {"200": {"description": "OK", "content": {"text/html": {}}}}}},
    "/healthz": {"get": {"operationId": "gateway_healthz_get", "summary": "Liveness",
                         "responses": {"200": {"description": "OK"}}}},
    "/readyz": {"get": {"operationId": "gateway_readyz_get", "summary": "Readiness (revocation feed fresh)",
                        "responses": {"200": {"description": "OK"}, "503": {"description": "Not ready"}}}},
}


class ContractError(ValueError):
    """The services' documents cannot be merged (two different schemas under one name)."""


def sample_path(template: str) -> str:
    """An OpenAPI path template with each parameter filled, for matching against the route table."""
    return _PATH_PARAM.sub(_SAMPLE_SEGMENT, template)


def gateway_route(method: str, template: str, routes: RouteTable | None = None) -> Route | None:
    route, _ = (routes or RouteTable()).match(method.upper(), sample_path(template))
    return route


def route_access(route: Route) -> dict[str, Any]:
    """The gateway's rule in the form of a service's x-safeharbor-access (public routes: no roles, no scopes)."""
    if route.public:
        return {"public": True}
    return {"roles": None if route.roles is None else sorted(route.roles), "scopes": sorted(route.scopes)}


def service_access(operation: Mapping[str, Any]) -> dict[str, Any]:
    """The rule a service's own decorators declare for an operation (its OpenAPI x-safeharbor-access)."""
    if "security" not in operation:
        return {"public": True}
    declared = operation.get("x-safeharbor-access") or {"roles": None, "scopes": None}
    return {"roles": declared.get("roles"), "scopes": declared.get("scopes")}


def merge_public(service_documents: Mapping[str, Mapping[str, Any]], *, version: str = "1") -> dict[str, Any]:
    """The public API: every operation the gateway routes to the service that documents it."""
    routes = RouteTable()
    paths: dict[str, dict[str, Any]] = {path: dict(ops) for path, ops in _GATEWAY_PATHS.items()}
    schemas: dict[str, Any] = {}
    for service in sorted(service_documents):
        document = service_documents[service]
        used = False
        for template, operations in sorted(document.get("paths", {}).items()):
            for method, operation in sorted(operations.items()):
                route = gateway_route(method, template, routes)
                if route is None or route.service != service:
                    continue  # internal, health, or not routed to this service: not public
                used = True
                paths.setdefault(template, {})[method] = {
                    **operation,
                    "operationId": f"{service}_{operation['operationId']}",
                    "tags": [service],
                    "x-gateway-route": route.name,
                }
        if not used:
            continue
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            if name == "Error":
                continue
            if name in schemas and schemas[name] != schema:
                raise ContractError(f"schema {name!r} differs between services; rename one")
            schemas[name] = schema
    schemas["Error"] = web.error_schema({"enum": list(ERROR_CODES)})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SafeHarbor public API",
            "version": version,
            "description": "The gateway's contract with frontends; docs/API.md explains the flows.",
        },
        "x-safeharbor-error-statuses": {code: list(statuses) for code, statuses in ERROR_STATUSES.items()},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


@cache
def public_document() -> dict[str, Any]:
    """The committed merged document (package data)."""
    text = resources.files(__package__).joinpath(_PACKAGE_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def document_text(document: Mapping[str, Any]) -> str:
    """The one serialisation of the document: the committed file is byte-for-byte this."""
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


# --- the reference page ------------------------------------------------------------------------------

_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}"
    "h2{border-bottom:1px solid #ccc;margin-top:2.5rem}.op{margin:1rem 0;padding:.5rem 1rem;"
    "border-left:4px solid #2b6cb0;background:#f6f8fa}.m{font-weight:700;text-transform:uppercase}"
    "code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{white-space:pre-wrap;overflow-x:auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}"
)
# The page's only style, allowed by its hash: no inline script, nothing fetched from anywhere.
REFERENCE_CSP = ("default-src 'none'; style-src 'sha256-"
                 + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
                 + "'; frame-ancestors 'none'")


def render_reference(document: Mapping[str, Any]) -> str:
    """A self-contained HTML page of the document (server-rendered; no script, no external resource)."""
    esc = html.escape
    info = document.get("info", {})
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{esc(str(info.get('title', 'API')))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(str(info.get('title', 'API')))} <small>v{esc(str(info.get('version', '')))}</small></h1>",
        f"<p>{esc(str(info.get('description', '')))} Machine-readable: <a href=\"{DOCUMENT_PATH}\">"
        f"{DOCUMENT_PATH}</a>.</p>",
    ]
    by_tag: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for template, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["gateway"])[0]
            by_tag.setdefault(tag, []).append((template, method, operation))
    for tag in sorted(by_tag):
        parts.append(f"<h2 id=\"{esc(tag)}\">{esc(tag)}</h2>")
        for template, method, operation in by_tag[tag]:
            parts.append(_render_operation(template, method, operation))
    schemas = document.get("components", {}).get("schemas", {})
    parts.append("<h2 id=\"schemas\">Schemas</h2>")
    for name, schema in schemas.items():
        parts.append(f"<h3 id=\"schema-{esc(name)}\">{esc(name)}</h3>"
                     f"<pre>{esc(json.dumps(schema, indent=1, sort_keys=True))}</pre>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _render_operation(template: str, method: str, operation: Mapping[str, Any]) -> str:
    esc = html.escape
    access = service_access(operation)
    if access.get("public"):
        who = "public"
    else:
        roles = access.get("roles")
        who = f"roles: {', '.join(roles) if roles else 'any signed-in user'}; scopes: " \
              f"{', '.join(access.get('scopes') or [])}"
    rows = "".join(
        f"<tr><td><code>{esc(str(p.get('name')))}</code></td><td>{esc(str(p.get('in')))}</td>"
        f"<td>{esc(str(p.get('description', '')))}</td></tr>"
        for p in operation.get("parameters", [])
    )
    body = _schema_link(operation.get("requestBody", {}))
    answers = "; ".join(
        f"{esc(status)}{' ' + _schema_link(answer) if _schema_link(answer) else ''}"
        for status, answer in operation.get("responses", {}).items()
    )
    return (
        f"<div class=\"op\"><p><span class=\"m\">{esc(method)}</span> <code>{esc(template)}</code> "
        f"&mdash; {esc(str(operation.get('summary', '')))}</p><p>Access: {esc(who)}</p>"
        + (f"<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>{rows}</table>" if rows else "")
        + (f"<p>Body: {body}</p>" if body else "")
        + f"<p>Answers: {answers}</p></div>"
    )


def _schema_link(part: Mapping[str, Any]) -> str:
    ref = part.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    if not ref:
        return ""
    name = html.escape(ref.rsplit("/", 1)[-1])
    return f"<a href=\"#schema-{name}\">{name}</a>"


__all__ = ["ROUTES", "ContractError", "merge_public", "public_document", "render_reference"]
