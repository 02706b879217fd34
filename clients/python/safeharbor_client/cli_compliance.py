"""`safeharbor compliance report [--html FILE] [--json]`: the live, signed HIPAA §164.312 report (auditors, admins).

The report's signature is checked before anything is shown or written, against the verifier key this client
pinned the first time it saw one for this gateway (state dir); a different key later is refused (exit 4),
like the audit checkpoints' key.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safeharbor_protocol import compliance_report

from .client import AuditVerificationFailed
from .compliance_html import STATUS_LABEL, render

if TYPE_CHECKING:
    from .cli import Cli

EXIT_OK = 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("compliance", help="auditors, admins: the live, signed HIPAA 164.312 report")
    actions = parser.add_subparsers(dest="compliance_action", required=True)
    report = actions.add_parser("report", help="measure every control now; signature checked before it is shown")
    report.add_argument("--html", metavar="FILE", help="also write the report as one printable HTML page")
    report.add_argument("--latest-daily", action="store_true", help="the latest kept daily report, not a new one")


def _pinned_key(cli: Cli) -> str:
    client = cli.client
    served = str(client.call("GET", "/v1/compliance/report/key")).strip()
    slot = f"compliance:{client.gateway_url}"
    memory = client.state.load_directory()
    pinned = memory.get(slot, {}).get("verifier_key")
    if pinned is None:
        memory[slot] = {"verifier_key": served}
        client.state.save_directory(memory)
        return served
    if pinned != served:
        raise AuditVerificationFailed("the gateway now publishes a different compliance report key than the one "
                                      "this client pinned; refusing the report")
    return str(pinned)


def _line(control: dict[str, Any]) -> str:
    evidence = ", ".join(f"{k}={v}" for k, v in control["evidence"].items() if not isinstance(v, dict | list))
    return f"{STATUS_LABEL[control['status']]:<5} {control['id']:<28} {evidence[:110]}"


def run(cli: Cli) -> int:
    args: argparse.Namespace = cli.args
    path = "/v1/compliance/report/latest?trigger=schedule" if args.latest_daily else "/v1/compliance/report"
    document: dict[str, Any] = dict(cli.client.call("GET", path))
    key = _pinned_key(cli)
    try:
        compliance_report.verify_report(document, key)
    except compliance_report.ReportSignatureError as exc:
        raise AuditVerificationFailed(str(exc)) from exc
    report = document["report"]
    written = None
    if args.html:
        target = Path(args.html).expanduser()
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_text(render(document, verifier_key=key), encoding="utf-8")
        partial.replace(target)
        written = str(target)
    summary = report["summary"]
    lines = [f"HIPAA 164.312 report {report['report_id']} ({report['generated_at']}), signature verified",
             f"pass {summary['pass']}  warn {summary['warn']}  fail {summary['fail']}  "
             f"not checked (organisational) {summary['not_checked']}",
             f"sha256 {document['sha256']}, audit entry {(document.get('audit_entry') or {}).get('seq')}", ""]
    lines += [_line(c) for c in report["controls"]]
    lines += ["", *(f"NOT CHECKED  {o['title']} ({o['reference']})" for o in report["organisational"])]
    if written:
        lines += ["", f"HTML written to {written}"]
    cli.emit("\n".join(lines), {**document, "verified": True, "verifier_key": key, "html": written})
    return EXIT_OK
