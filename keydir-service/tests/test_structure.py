"""Issue 18: keydir-service's functions return typed objects (the schemas in schemas.py, the ORM rows) and the
views serialise them, so what the OpenAPI document states is what the code builds. A public function or method
that returns a dict of anything (`dict[str, Any]`, alone or in a union, tuple or list) fails here, unless it is
one of the documents below, each with why it stays one."""
from __future__ import annotations

from safeharbor_common.structure import typed_returns_problems

ALLOWED = {
    "config.load_config": "the settings as Flask's app.config takes them (KeydirSettings is the typed form)",
    "config.KeydirSettings.as_config": "the same, from the typed settings",
    "service.lookup_users": "the measured hot path (100 records with proofs): validating and dumping a schema "
                            "object cost ~1.2 ms a lookup; test_published_schema.py holds the answer to the "
                            "published LookupResponse instead",
    "log.TransparencyLog.verify": "an operator's report from the manage CLI, not an API answer",
    "compliance.checkpoint_age": "a control's evidence: free-form per control in the controls document",
    "compliance.log_verifies": "a control's evidence: free-form per control in the controls document",
}


def test_public_functions_return_typed_objects() -> None:
    assert typed_returns_problems("safeharbor_keydir", ALLOWED) == []
