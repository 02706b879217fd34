"""The wire formats live once, in safeharbor_protocol (issue 18): safeharbor-common has no module of the same
name, neither a copy nor a re-export, so every importer names the protocol package."""
from __future__ import annotations

import importlib.util
import pkgutil
from types import ModuleType

import pytest
import safeharbor_common
import safeharbor_protocol

MOVED = ("canonical", "encoding", "merkle", "checkpoint")


@pytest.mark.parametrize("name", MOVED)
def test_moved_module_is_gone(name: str) -> None:
    assert importlib.util.find_spec(f"safeharbor_common.{name}") is None
    assert importlib.util.find_spec(f"safeharbor_protocol.{name}") is not None


def test_no_module_in_both_packages() -> None:
    def names(package: ModuleType) -> set[str]:
        return {module.name for module in pkgutil.iter_modules(package.__path__)}

    protocol = names(safeharbor_protocol)
    assert set(MOVED) <= protocol
    assert names(safeharbor_common) & protocol == set()


def test_the_compliance_report_format_is_not_re_exported() -> None:
    """The signed report's format is named where it lives (safeharbor_protocol.compliance_report)."""
    from safeharbor_common import compliance

    for name in ("REPORT_FORMAT", "ReportSignatureError", "report_note_text", "report_sha256", "verify_report"):
        assert not hasattr(compliance, name), name
