"""The signed HIPAA compliance report: its hash and the C2SP signed note over it.

audit-service signs (`safeharbor_audit.compliance`); the `safeharbor compliance verify` CLI and auditors
verify with nothing but the published verifier key.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from . import checkpoint as cp
from .canonical import canonical_json

REPORT_FORMAT = "safeharbor-compliance-report/1"


class ReportSignatureError(ValueError):
    """The report's signature, hash or verifier key does not check out."""


def report_sha256(report: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the report's RFC 8785 canonical JSON: what the signature and the audit entry name."""
    return hashlib.sha256(canonical_json(report)).hexdigest()


def report_note_text(key_name: str, report_id: str, sha256_hex: str) -> str:
    """The C2SP signed note's text: key name (as a checkpoint's origin line), format, report id, hash."""
    return f"{key_name}\n{REPORT_FORMAT}\n{report_id}\nsha256 {sha256_hex}\n"


def verify_report(document: Mapping[str, Any], verifier_key: str) -> str:
    """Checks a report document (`{report, sha256, signature}`) against a verifier key; returns the hash."""
    try:
        verifier = cp.parse_verifier_key(verifier_key)
        report = document["report"]
        digest = report_sha256(report)
        text, _ = cp.open_note(str(document["signature"]), [verifier])
    except (cp.NoteError, cp.VerifierKeyError, KeyError, TypeError, ValueError) as exc:
        raise ReportSignatureError(f"the report's signature does not verify: {exc}") from exc
    if text != report_note_text(verifier.name, str(report.get("report_id")), digest):
        raise ReportSignatureError("the report was changed after it was signed")
    if document.get("sha256") not in (None, digest):
        raise ReportSignatureError("the report's stated sha256 is not its hash")
    return digest
