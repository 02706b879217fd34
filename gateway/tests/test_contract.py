"""Merging the services' OpenAPI documents into the public one, and rendering its reference page."""
from __future__ import annotations

from typing import Any

import pytest
from safeharbor_gateway import contract


def _op(operation_id: str, **extra: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": "s", "responses": {"200": {"description": "OK"}}, **extra}


def _doc(paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"openapi": "3.1.0", "paths": paths, "components": {"schemas": schemas or {}}}


def test_merge_keeps_only_what_the_gateway_routes_to_the_documenting_service() -> None:
    merged = contract.merge_public({
        "keydir": _doc({
            "/v1/keys/{user_id}/history": {"get": _op("history")},
            "/internal/v1/keys/{user_id}/revoke-all": {"post": _op("revoke_all")},
            "/v1/users": {"get": _op("not_keydirs")},  # routed to auth, not keydir
            "/healthz": {"get": _op("healthz")},
        }, {"KeyRecord": {"type": "object"}}),
        "push": _doc({"/internal/v1/x": {"get": _op("x")}}, {"PushOnly": {"type": "object"}}),
    })
    paths = merged["paths"]
    assert paths["/v1/keys/{user_id}/history"]["get"]["x-gateway-route"] == "keys.lookup"
    assert paths["/v1/keys/{user_id}/history"]["get"]["operationId"] == "keydir_history"
    assert "/internal/v1/keys/{user_id}/revoke-all" not in paths and "/v1/users" not in paths
    assert paths["/healthz"]["get"]["operationId"] == "gateway_healthz_get"  # the gateway's own, not keydir's
    schemas = merged["components"]["schemas"]
    assert "KeyRecord" in schemas and "PushOnly" not in schemas  # nothing public from push here
    assert schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"] == list(contract.ERROR_CODES)


def test_two_different_schemas_under_one_name_are_refused() -> None:
    with pytest.raises(contract.ContractError, match="'Thing'"):
        contract.merge_public({
            "keydir": _doc({"/v1/keys": {"get": _op("a")}}, {"Thing": {"type": "object"}}),
            "audit": _doc({"/v1/audit/entries": {"get": _op("b")}}, {"Thing": {"type": "string"}}),
        })


def test_reference_page_escapes_and_loads_nothing() -> None:
    document = contract.merge_public({
        "keydir": _doc({"/v1/keys": {"get": _op("a", summary="<script>alert(1)</script>")}}),
    })
    page = contract.render_reference(document)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "http" not in page.split("<body>", 1)[1]  # no absolute link or resource
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in contract.REFERENCE_CSP


def test_the_committed_document_is_served_as_is() -> None:
    document = contract.public_document()
    assert document["info"]["title"] == "SafeHarbor public API"
    assert "/v1/auth/login" in document["paths"]
    with open(contract.__file__.rsplit("/", 1)[0] + "/public-openapi.json", encoding="utf-8") as committed:
        assert committed.read() == contract.document_text(document)
