"""Issue 18: audit-service's functions return typed objects (the schemas in schemas.py, frozen dataclasses) and
the views serialise them, so what the OpenAPI document states is what the code builds. A public function or
method that returns a dict of anything (`dict[str, Any]`, alone or in a union, tuple or list) fails here,
unless it is one of the free-form documents below, each with why it stays a plain JSON object."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safeharbor_common.structure import typed_returns_problems, untyped_dict

ALLOWED = {
    "config.load_config": "the settings as Flask's app.config takes them (AuditSettings is the typed form)",
    "compliance.load_config": "the compliance settings, set into Flask's app.config beside the others",
    "compliance.ComplianceReporter.build": "the report body: hashed as canonical JSON and signed, kept as measured",
    "compliance.ComplianceReporter.measure": "the report body's controls and services, each peer's evidence as sent",
    "compliance.log_verifies": "a control's evidence: free-form per control in the controls document",
    "compliance.checkpoint_age": "a control's evidence: free-form per control in the controls document",
    "compliance.retention": "a control's evidence: free-form per control in the controls document",
    "compliance.phi_encryption": "a control's evidence: free-form per control in the controls document",
    "retention.build_archive": "the archive file: its body is digested as sorted JSON and the digest signed",
    "verify.VerifyReport.as_dict": "the JSON form of the typed VerifyReport, which the view and the CLI print",
}


def test_public_functions_return_typed_objects() -> None:
    assert typed_returns_problems("safeharbor_audit", ALLOWED) == []


def test_the_check_tells_an_untyped_dict_from_a_typed_result() -> None:
    from safeharbor_audit.schemas import EntriesResponse

    for untyped in (dict, dict[str, Any], dict[str, object] | None, Mapping[str, Any], tuple[int, dict[str, Any]],
                    list[dict[str, Any]]):
        assert untyped_dict(untyped), untyped
    for typed in (EntriesResponse, EntriesResponse | None, dict[str, bytes], list[str], tuple[str, ...], None):
        assert not untyped_dict(typed), typed
