"""The public API contract in the repo: the merged OpenAPI document the gateway serves is the one the running
services describe (committed as gateway/safeharbor_gateway/public-openapi.json), and its reference page is
self-contained.

After changing a public route, a schema or an access rule: `UPDATE_PUBLIC_OPENAPI=1 .venv/bin/python -m pytest
tests/test_api_contract.py` rewrites the committed document from the running services (review the diff).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import pytest
import requests
from conftest import Api
from safeharbor_devstack import Stack
from safeharbor_gateway import contract
from safeharbor_gateway.routing import ROUTES, Route, RouteTable

SERVICES = ("auth", "keydir", "audit", "push")
SERVICE_OWN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
COMMITTED = contract.__file__.rsplit("/", 1)[0] + "/public-openapi.json"


def _service_documents(stack: Stack) -> dict[str, dict[str, Any]]:
    documents = {}
    for service in SERVICES:
        response = requests.get(stack.url(service) + "/openapi.json", timeout=10)
        assert response.status_code == 200, (service, response.status_code)
        documents[service] = response.json()
    return documents


@pytest.mark.owned_stack
def test_committed_public_document_is_the_services_merged(stack: Stack) -> None:
    merged = contract.document_text(contract.merge_public(_service_documents(stack)))
    with open(COMMITTED, encoding="utf-8") as committed:
        current = committed.read()
    if os.environ.get("UPDATE_PUBLIC_OPENAPI") and merged != current:
        with open(COMMITTED, "w", encoding="utf-8") as out:
            out.write(merged)
        pytest.fail(f"{COMMITTED} rewritten from the services: review and commit it, then rerun")
    assert merged == current, (
        "the services' OpenAPI documents changed but gateway/safeharbor_gateway/public-openapi.json did not: "
        "rerun this test with UPDATE_PUBLIC_OPENAPI=1 and commit the result")


def test_gateway_serves_the_committed_document(api: Api) -> None:
    served = api.call("GET", "/openapi.json")
    assert served.status_code == 200
    assert served.json() == contract.public_document()
    paths = served.json()["paths"]
    # The flows docs/API.md explains are in it, and nothing internal is.
    for path in ("/v1/auth/login", "/v1/auth/mfa/totp/confirm", "/v1/keys", "/v1/audit/entries",
                 "/v1/audit/proof/inclusion", "/v1/push/lint"):
        assert path in paths, path
    assert not [p for p in paths if p.startswith("/internal")]


def test_reference_page_is_self_contained(api: Api) -> None:
    page = api.call("GET", "/openapi.html")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'") and "script-src" not in csp and "unsafe-inline" not in csp
    text = page.text
    assert "<script" not in text.lower()
    # Nothing fetched from elsewhere: no absolute URL in any src/href, no @import.
    assert not re.findall(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", text, re.IGNORECASE)
    assert "@import" not in text
    assert "/v1/auth/login" in text and "/v1/keys/proof/consistency" in text


def access_disagreements(documents: dict[str, dict[str, Any]], routes: tuple[Route, ...] = ROUTES) -> list[str]:
    """Where the gateway's route table and the services' own decorators state different access rules, a
    public operation is not routed, or a route has no operation behind it."""
    table = RouteTable(routes)
    problems = []
    used: set[Route] = set()
    for service, document in sorted(documents.items()):
        for template, operations in sorted(document["paths"].items()):
            if template.startswith("/internal/") or template in SERVICE_OWN_PATHS:
                continue
            for method, operation in sorted(operations.items()):
                where = f"{method.upper()} {template} ({service})"
                route = contract.gateway_route(method, template, table)
                if route is None or route.service != service:
                    problems.append(f"{where}: documented by the service, routed to {route and route.service}")
                    continue
                used.add(route)
                gateway, own = contract.route_access(route), contract.service_access(operation)
                if gateway != own:
                    problems.append(f"{where}: gateway route {route.name} allows {gateway}, the service {own}")
    for route in routes:
        if route not in used and route.service in documents:
            problems.append(f"route {route.name} {sorted(route.methods)} {route.pattern.pattern}: "
                            "no operation of its service behind it")
    return problems


@pytest.mark.owned_stack
def test_route_table_and_services_access_rules_agree(stack: Stack) -> None:
    assert access_disagreements(_service_documents(stack)) == []


def _keydir_document() -> dict[str, Any]:
    """keydir's public operations as the committed document holds them (its access rules included)."""
    paths = {template: {m: op for m, op in ops.items() if op.get("tags") == ["keydir"]}
             for template, ops in contract.public_document()["paths"].items()}
    return {"paths": {template: ops for template, ops in paths.items() if ops}}


def test_a_change_on_either_side_alone_is_a_disagreement() -> None:
    assert access_disagreements({"keydir": _keydir_document()}) == []
    loosened = _keydir_document()  # the service alone lets break-glass sessions read the key backup
    loosened["paths"]["/v1/keys/backup"]["get"]["x-safeharbor-access"]["scopes"] = ["break_glass", "full"]
    assert [p for p in access_disagreements({"keydir": loosened}) if "GET /v1/keys/backup" in p]
    stricter = _keydir_document()
    stricter["paths"]["/v1/keys"]["post"]["x-safeharbor-access"]["roles"] = ["admin"]
    assert [p for p in access_disagreements({"keydir": stricter}) if "POST /v1/keys " in p]
    # The route table alone: keys.write loses its scope rule, or keydir's public checkpoint route is dropped.
    changed = tuple(dataclasses.replace(r, scopes=frozenset({"full", "break_glass"})) if r.name == "keys.write"
                    else r for r in ROUTES)
    assert [p for p in access_disagreements({"keydir": _keydir_document()}, changed) if "keys.write" in p]
    dropped = tuple(r for r in ROUTES if r.name != "keys.checkpoint")
    assert [p for p in access_disagreements({"keydir": _keydir_document()}, dropped) if "/checkpoint" in p]
