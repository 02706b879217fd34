"""The compliance report page (issue 17): self-contained, every value escaped, statuses as words."""
from __future__ import annotations

from safeharbor_client.compliance_html import render


def _document(evidence: dict[str, object]) -> dict[str, object]:
    return {
        "sha256": "ab" * 32, "signature": "", "audit_entry": {"seq": 7, "event_id": "e-1"},
        "report": {
            "report_id": "r-1", "generated_at": "2026-12-03T01:00:00Z", "trigger": "request",
            "rule": "45 CFR 164.312", "summary": {"pass": 0, "warn": 0, "fail": 1, "not_checked": 1},
            "services": {"auth": {"answered": False, "error": "did not answer <b>"}},
            "safeguards": [{"id": "164.312(a)(2)(iii)", "name": "Automatic logoff", "status": "fail",
                            "controls": ["auth.automatic_logoff"]}],
            "controls": [{"id": "auth.automatic_logoff", "service": "auth", "safeguards": ["164.312(a)(2)(iii)"],
                          "title": "Idle timeout", "status": "fail", "evidence": evidence,
                          "measured_at": "2026-12-03T01:00:00Z"}],
            "organisational": [{"id": "org.backups", "reference": "164.308(a)(7)", "title": "Backups",
                                "status": "not_checked"}],
        },
    }


def test_values_are_escaped_and_the_page_has_nothing_from_outside() -> None:
    page = render(_document({"note": "<script>alert(1)</script>", "slots": {"apn": {"in_drift": True}}}),
                  verifier_key="k+00000000+AQ")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "did not answer &lt;b&gt;" in page
    assert '<td class="st fail">FAIL</td>' in page and '<td class="st not_checked">NOT CHECKED</td>' in page
    assert "<li>in_drift: true</li>" in page  # nested evidence as a nested list
    for outside in ("src=", "href=", "url(", "@import"):
        assert outside not in page
