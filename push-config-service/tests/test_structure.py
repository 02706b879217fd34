"""Issue 18: push-config-service's functions return typed objects (the schemas in schemas.py, the ORM rows, the
linter's frozen dataclasses) and the views serialise them, so what the OpenAPI document states is what the code
builds. A public function or method that returns a dict of anything (`dict[str, Any]`, alone or in a union,
tuple or list) fails here, unless it is one of the free-form documents below, each with why it stays one."""
from __future__ import annotations

from safeharbor_common.structure import typed_returns_problems

ALLOWED = {
    "config.load_config": "the settings as Flask's app.config takes them (PushSettings is the typed form)",
    "compliance.templates_in_sync": "a control's evidence: free-form per control in the controls document",
    "compliance.templates_phi_safe": "a control's evidence: free-form per control in the controls document",
    "lint.linter.Finding.as_dict": "the JSON form of the typed Finding: a refused template's error body, the CLI",
}


def test_public_functions_return_typed_objects() -> None:
    assert typed_returns_problems("safeharbor_push", ALLOWED) == []
